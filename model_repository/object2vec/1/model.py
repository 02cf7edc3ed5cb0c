"""The file Triton's Python backend loads for the front door; the model is
server.frontdoor.model."""

import os
import sys

# The stub starts its interpreter without applying PYTHONPATH, which is where the launchers put
# the project and its virtual environment; apply it before importing the project.
sys.path[:0] = [
    p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path
]

from server.frontdoor.model import TritonPythonModel  # noqa: E402

__all__ = ["TritonPythonModel"]
