"""The SageMaker adapter as an ASGI app, on uvicorn or granian: the servers it was measured
against (bench.sagemaker_adapter). Not the product's path: server/sagemaker/http1.py serves the adapter.

    python -m bench.asgi_adapter uvicorn|granian PORT TRITON_URL

The same Adapter (server/sagemaker/adapter.py) decides and answers; only HTTP/1.1 is the server's.
"""

from __future__ import annotations

import os
import sys

from server.sagemaker.adapter import Adapter, ExecutionParameters
from server.sagemaker.http1 import Head


class AsgiAdapter:
    def __init__(self, adapter: Adapter):
        self.adapter = adapter

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        head = Head(scope["method"], scope["path"], dict(scope["headers"]))
        answer = self.adapter.admit(head)
        if answer is None:
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            answer = await self.adapter.respond(head, b"".join(chunks))
        headers = [(b"content-length", str(len(answer.body)).encode()), *answer.headers]
        if answer.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


def main() -> None:
    server, port, triton_url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    app = AsgiAdapter(Adapter(triton_url, 16 * 1024 * 1024, ExecutionParameters(1, 6)))
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            app,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            ws="none",
            lifespan="off",
            access_log=False,
            proxy_headers=False,
            log_level="warning",
        )
    elif server == "granian":
        from granian import Granian
        from granian.constants import HTTPModes, Interfaces, Loops

        os.environ["O2V_BENCH_TRITON_URL"] = triton_url  # granian's worker builds the app
        Granian(
            "bench.asgi_adapter:app_from_env",
            factory=True,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGINL,
            http=HTTPModes.http1,
            websockets=False,
            workers=1,
            runtime_threads=1,
            loop=Loops.uvloop,
            log_enabled=False,
        ).serve()
    else:
        raise SystemExit(f"server {server!r}: uvicorn or granian")


def app_from_env() -> AsgiAdapter:
    return AsgiAdapter(
        Adapter(os.environ["O2V_BENCH_TRITON_URL"], 16 * 1024 * 1024, ExecutionParameters(1, 6))
    )


if __name__ == "__main__":
    main()
