"""The SageMaker endpoint (/ping, /invocations, /execution-parameters), run in the launcher's
process in front of Triton, which stays on loopback.

    adapter.py   the routes: a SageMaker request -> one binary inference on the front door
    http1.py     the HTTP/1.1 server (httptools): limits, deadlines, keep-alive
    upstream.py  the client side: pooled connections to Triton

Imports contract and server.common only: never the front door, never the launcher.
"""
