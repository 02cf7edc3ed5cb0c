"""The launcher: one process that plans a tritonserver start and supervises it.

    plan.py        the plan, assembled once: host, repository, settings, tritonserver's
                   arguments (launch.Launch is its settings)
    launch.py      settings from the environment, the repository, tritonserver's arguments
    host.py        what this machine has: GPUs, cores, the backends tritonserver can load
    configs.py     the Triton configs generated from the repository's facts.json
    process.py     tritonserver as a child that behaves, and the supervisor
    probe.py       one inference every few seconds: does the server answer?
    embedded.py    main: the PyPI tritonserver (python -m server)
    entrypoint.py  main: the NGC image (docker/Dockerfile)

May import server.sagemaker (the endpoint runs in this process) and server.common.
"""
