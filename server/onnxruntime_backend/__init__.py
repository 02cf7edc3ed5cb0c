"""The embedded server's stand-in for Triton's C++ ONNX Runtime backend (model.py, run by the
Python backend) and its load-time checks (graph_checks.py); imports contract and
server.common."""
