"""What more than one of the server's processes uses; imports contract only.

settings.py       typed settings with one parser (environment, CLI, config parameters)
drain.py          the stop protocol between the launcher and every Python model instance
onnx_sessions.py  ONNX Runtime sessions: the front door's in-process networks and the
                  stand-in backend
tensors.py        an input tensor's shape checked against its config
memory.py         giving freed memory back to the system
"""
