"""One entrypoint for the NGC image and the embedded server: settings -> tritonserver options.

    python -m server.entrypoint            # in the image: tritonserver on $MODEL_REPOSITORY
    python -m server.entrypoint serve      # SageMaker: /ping, /invocations and
                                           # /execution-parameters on $SAGEMAKER_BIND_TO_PORT
                                           # (8080), the repository at /opt/ml/model when the
                                           # model artifact holds one, else $MODEL_REPOSITORY

The launcher stays in front of tritonserver as its supervisor (`server.process`): SIGTERM or
SIGINT drains and stops everything, and exits 0.

Environment (all optional):

    INFERENCE_PREFERRED_MODE    embedding | classification (default): which network gets the
                                GPU copies (--model-config-name)
    MODEL_REPOSITORY            where the model repository is (image: /models)
    O2V_GPU_COPIES              copies of the preferred network per GPU
    O2V_FRONT_DOOR_COPIES       copies of the front door (default 0: one per two cores, <= 16)
    O2V_NETWORKS                auto | bls | in_process: how the front door runs the networks
                                (auto: bls on a GPU or with the C++ ONNX Runtime backend, as on
                                the NGC image; in_process on the embedded CPU server)
    O2V_ACCELERATOR             cuda (ONNX Runtime's CUDA provider) | tensorrt
    O2V_TENSORRT_FP16           true | false
    O2V_TENSORRT_ENGINE_CACHE   a folder where TensorRT engines are kept across restarts
    O2V_WARMUP                  true | false: one warm-up request per model instance at load
    O2V_PYTHON_SHM_BYTES        shared memory of each Python backend instance (default 64 MB)
    O2V_LOG_VERBOSE             tritonserver --log-verbose level (default 0)
    O2V_RESPONSE_CACHE_BYTES    size of Triton's response cache for the front door (default 0:
                                off); it keys on the body alone, not on content_type/accept
    O2V_HTTP_PORT, O2V_GRPC_PORT, O2V_METRICS_PORT
                                Triton's ports (default 8000, 8001, 8002)
    O2V_EXIT_TIMEOUT_SECS       how long a stop waits for in-flight requests (default 5)
    O2V_MAX_RESTARTS            restarts of tritonserver after a model's Python stub died,
                                within 10 minutes, before the launcher exits 3 (default 5;
                                0: exit at the first, for the orchestrator to replace it)
    O2V_ADMIN_KEY               opens the restricted APIs (logging, trace, shared memory,
                                model repository) to requests carrying `admin-key: <key>`;
                                unset, they are closed
    SAGEMAKER_BIND_TO_PORT      the SageMaker adapter's port (default 8080)
    O2V_HTTP_READ_TIMEOUT_S, O2V_HTTP_KEEP_ALIVE_S, O2V_HTTP_MAX_HEADER_BYTES,
    O2V_HTTP_MAX_CONCURRENCY, O2V_HTTP_MAX_CONNECTIONS, O2V_UPSTREAM_TIMEOUT_S,
    O2V_UPSTREAM_CONNECTIONS, O2V_HTTP_WRITE_TIMEOUT_S, O2V_HTTP_MAX_NEIGHBOUR_REQUESTS
                                the SageMaker endpoint's timeouts and limits
                                (server.sagemaker.AdapterSettings: defaults 30 s, 75 s,
                                64 KiB, 256, 4096, 60 s, 64, 30 s, 4)
    O2V_MAX_NEIGHBOURS          neighbours (instances x k) one request may ask for (default
                                100,000: about 4 MB of answer)
    O2V_PROBE_INTERVAL_S        how often the supervisor sends a real inference over HTTP and
                                gRPC (default 2; 0: off); O2V_PROBE_TIMEOUT_S (default 5) and
                                O2V_PROBE_FAILURES (default 3) decide when a protocol that
                                stopped answering gets tritonserver restarted

At every start the configs are generated again from the repository's facts.json, so they
describe the model that is there (`server.configs.refresh_configs`): with the settings they
were last written with (`python -m server.configs ...` records them in configs.json), or, when
any O2V_* config variable is set, the defaults plus those values. A config edited by hand is
served as it is and named at start (O2V_* settings overwrite it). A read-only repository that
needs new configs is served from a writable copy (model files linked, not copied).
"""

from __future__ import annotations

import os
import sys

from server.launch import (
    Launch,
    LaunchError,
    check_exposure,
    installed_triton_version,
    prepare_repository,
    run,
    tritonserver_args,
)


def main(argv: list[str] | None = None) -> int:
    """The image's entrypoint: tritonserver (found on PATH), supervised."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sagemaker = bool(argv) and argv[0] == "serve"
    extra = tuple(argv[1:] if sagemaker else argv)
    try:
        launch = Launch.from_env(
            os.environ,
            sagemaker=sagemaker,
            extra_args=extra,
            triton_version=installed_triton_version(),
        )
        check_exposure(launch)
        repository = prepare_repository(launch)
    except (LaunchError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = [
        os.environ.get("TRITONSERVER", "tritonserver"),
        *tritonserver_args(launch, repository),
    ]
    return run(launch, repository, command, dict(os.environ))


if __name__ == "__main__":
    sys.exit(main())
