"""The serving side, one package per process it runs in (docs/architecture.md):

    launcher/             the supervisor: one plan (host, repository, configs, tritonserver's
                          arguments), then tritonserver supervised; `python -m server` (embedded)
                          and `python -m server.launcher.entrypoint` (the image)
    sagemaker/            the SageMaker endpoint (/ping, /invocations): our HTTP/1.1 server in
                          the launcher's process, Triton on loopback behind it
    frontdoor/            the front door model, inside Triton's Python backend stub: JSON in,
                          networks called, JSON out
    onnxruntime_backend/  the embedded server's stand-in for Triton's C++ ONNX Runtime backend,
                          inside a stub of its own
    common/               what more than one of them uses: settings, the drain protocol, ONNX
                          Runtime sessions, tensor checks, memory release

Imports point one way (python -m bench.imports enforces it): launcher -> sagemaker -> common;
frontdoor -> common; onnxruntime_backend -> common; common -> contract. The front door never
imports the launcher or the endpoint, and the endpoint never imports the front door.
"""
