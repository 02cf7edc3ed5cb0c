"""The NGC image's entrypoint: settings -> a plan -> tritonserver, supervised (the embedded
server's main, server.launcher.embedded, takes the same path: server.launcher.plan).

    python -m server.launcher.entrypoint        # in the image: tritonserver on $MODEL_REPOSITORY
    python -m server.launcher.entrypoint serve  # SageMaker: /ping, /invocations and
                                                # /execution-parameters on $SAGEMAKER_BIND_TO_PORT
                                                # (8080), the repository at /opt/ml/model when
                                                # the model artifact holds one, else
                                                # $MODEL_REPOSITORY

The launcher stays in front of tritonserver as its supervisor (`server.launcher.process`): SIGTERM
or SIGINT drains and stops everything, and exits 0.

Every setting (environment variables, all optional) is listed with its default and bounds in
docs/configuration.md, generated from the settings themselves; `--help` prints the same list.

At every start the configs are generated again from the repository's facts.json, so they describe
the model that is there (`server.launcher.configs.refresh_configs`): with the settings they were
last written with (`python -m server.launcher.configs ...` records them in configs.json), or, when
any O2V_* config variable is set, the defaults plus those values. A config edited by hand is served
as it is and named at start (O2V_* settings overwrite it). A read-only repository that needs new
configs is served from a writable copy (model files linked, not copied).
"""

from __future__ import annotations

import os
import sys

from server.launcher.launch import Launch, installed_triton_version
from server.launcher.plan import Plan, assemble, serve
from server.launcher.reference import plain


def main(argv: list[str] | None = None) -> int:
    """The image's entrypoint: tritonserver (found on PATH), supervised."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--help"], ["-h"]):
        print(f"{__doc__}\n{plain()}")
        return 0
    sagemaker = bool(argv) and argv[0] == "serve"
    extra = tuple(argv[1:] if sagemaker else argv)

    def make() -> Plan:
        launch = Launch.from_env(
            os.environ,
            sagemaker=sagemaker,
            extra_args=extra,
            triton_version=installed_triton_version(),
        )
        return assemble(launch, os.environ.get("TRITONSERVER", "tritonserver"), None, os.environ)

    return serve(make)


if __name__ == "__main__":
    sys.exit(main())
