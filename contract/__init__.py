"""What every part of the project agrees on, and nothing else: the bottom layer.

    contract.names     model, tensor and parameter names; media types; default limits
    contract.facts     facts.json: what the server needs to know about an exported model
    contract.padding   token id 0 is padding; right-padding of sequences
    contract.example   the hosted documentation's example request

It imports nothing of the project's; `export`, `client`, `server`, `bench` and `tests` import
it (python -m bench.imports prints the graph).
"""
