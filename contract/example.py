"""The hosted documentation's example request: three `in0` instances, ids up to 10178.

python -m contract.example > request.json            # the body, as application/json
python -m contract.example --jsonl > request.jsonl   # the same instances, one a line
"""

import json
import sys

from contract.names import JSON

DOC_EXAMPLE: list[list[int]] = [
    [6, 17, 606, 19, 53, 67, 52, 12, 5, 10, 15, 10178, 7, 33, 652, 80, 15, 69, 821, 4],
    [22, 1016, 32, 13, 25, 11, 5, 64, 573, 45, 5, 80, 15, 67, 21, 7, 9, 107, 4],
    [774, 14, 21, 206],
]
DOC_EXAMPLE_BODY: bytes = json.dumps({"instances": [{"in0": s} for s in DOC_EXAMPLE]}).encode()
DOC_EXAMPLE_CONTENT_TYPE = JSON
DOC_EXAMPLE_LINES: bytes = b"".join(json.dumps({"in0": s}).encode() + b"\n" for s in DOC_EXAMPLE)

if __name__ == "__main__":
    sys.stdout.buffer.write(DOC_EXAMPLE_LINES if "--jsonl" in sys.argv[1:] else DOC_EXAMPLE_BODY)
