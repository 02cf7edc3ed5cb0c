"""The front door: runs inside Triton's Python backend stub as the `object2vec` model.

    model.py       TritonPythonModel: tensors in and out, nothing else (the repository's
                   object2vec/1/model.py imports it)
    payload.py     JSON / JSON Lines bodies -> instances, and answers -> bytes
    scanner.py     the usual body read straight into token arrays (compiled with numba)
    answers.py     a request's answers, kept as one matrix where they are one
    ragged.py      token sequences as one flat array plus lengths
    dispatch.py    instances -> calls to enc0 / enc1 / pair, and their outputs back
    cutting.py     where splitting a network call by length pays (measured at load)
    neighbours.py  the neighbours=<k> search over the exported catalogue

Imports contract and server.common only.
"""
