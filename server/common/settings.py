"""Every serving setting, typed, with one parser: the config CLI, the launchers and the
benchmarks all read settings through this module.

A setting is a dataclass field made by `setting`, whose metadata says everything about it once:
its environment variable, its lowest value or its choices, and its help (docs/configuration.md
and every --help are generated from them: server.launcher.reference).
`parse_setting` turns one text into one value with the same rules everywhere (booleans:
true/false, 1/0, yes/no), and says what is wrong with a text it refuses.

    ServingSettings   what goes into the generated Triton configs
    (server.launcher.launch.Launch is a settings dataclass of the same kind: the process's options)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, get_args, get_type_hints

from contract.errors import MISCONFIGURED, ServiceError
from contract.names import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_INSTANCES
from contract.neighbours import DEFAULT_MAX_NEIGHBOUR_SCORES, DEFAULT_MAX_NEIGHBOURS

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")
SPINNING = ("auto", "on", "off")  # ServingSettings.spinning
T = TypeVar("T")


def setting(
    default: Any,
    env: str | None = None,
    minimum: float | None = None,
    choices: tuple[str, ...] | None = None,
    help: str = "",  # noqa: A002 - argparse's word for it
    read_by: str = "",
):
    """A dataclass field that is a setting: everything said about it is said here, once
    (docs/configuration.md and every --help are generated from it). `read_by` names the code
    that reads a variable with a rule of its own (a precedence, a mode it applies in): then
    `from_env` leaves it alone, and it is documented all the same."""
    metadata = {
        "env": None if read_by else env,
        "variable": env,
        "minimum": minimum,
        "choices": choices,
        "help": help,
    }
    return field(default=default, metadata=metadata)


def kind_of(cls: type, name: str) -> type:
    """The type a setting's text is parsed to (`int | None` -> int; str where unknown)."""
    hint = get_type_hints(cls)[name]
    hint = next((a for a in get_args(hint) if a is not type(None)), hint)
    return hint if isinstance(hint, type) else str


def parse_setting(cls: type, name: str, text: str, label: str | None = None) -> Any:
    """The value of setting `name` of `cls` from its text; ServiceError when it is not one."""
    spec = {f.name: f for f in fields(cls)}[name]
    label = label or spec.metadata.get("env") or name
    kind = kind_of(cls, name)
    text = text.strip()
    if kind is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ServiceError(MISCONFIGURED, f"{label}={text!r}: use true or false")
        return text.lower() in _TRUE
    try:
        value = kind(text)
    except ValueError:
        raise ServiceError(MISCONFIGURED, f"{label}={text!r} is not {kind.__name__}") from None
    choices = spec.metadata.get("choices")
    if choices and value not in choices:
        raise ServiceError(MISCONFIGURED, f"{label}={text!r}: use {' or '.join(choices)}")
    minimum = spec.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise ServiceError(MISCONFIGURED, f"{label}={text!r} must be at least {minimum}")
    return value


def from_texts(cls: type[T], texts: Mapping[str, str], base: T | None = None) -> T:
    """`base` (else the defaults) with the settings named in `texts` parsed and replaced."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(texts) - known)
    if unknown:
        raise ServiceError(
            MISCONFIGURED, f"unknown setting(s) {', '.join(unknown)}: known are {sorted(known)}"
        )
    values = {name: parse_setting(cls, name, text, label=name) for name, text in texts.items()}
    return dataclasses.replace(base if base is not None else cls(), **values)


def env_texts(cls: type, env: Mapping[str, str]) -> dict[str, str]:
    """{setting: text} for every setting of `cls` whose variable is set (and not blank)."""
    return {
        f.name: env[f.metadata["env"]]
        for f in fields(cls)
        if f.metadata.get("env") and env.get(f.metadata["env"], "").strip()
    }


def from_env(cls: type[T], env: Mapping[str, str], base: T | None = None) -> T:
    """`base` (else the defaults) with every setting whose variable is set in `env`."""
    values = {name: parse_setting(cls, name, text) for name, text in env_texts(cls, env).items()}
    return dataclasses.replace(base if base is not None else cls(), **values)


def add_arguments(parser, cls: type) -> None:
    """One --option per setting of `cls`, parsed by `parse_setting`."""
    defaults = cls()
    for f in fields(cls):

        def convert(text: str, name: str = f.name) -> Any:
            try:
                return parse_setting(cls, name, text, label="--" + name.replace("_", "-"))
            except ServiceError as error:
                raise ValueError(str(error)) from None

        convert.__name__ = kind_of(cls, f.name).__name__
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=convert,
            default=getattr(defaults, f.name),
            help=f"{f.metadata.get('help', '')} (default {getattr(defaults, f.name)!r}"
            + (f"; env {f.metadata['env']})" if f.metadata.get("env") else ")"),
        )


@dataclass(frozen=True)
class ServingSettings:
    """What the generated configs say; see server.launcher.configs for where each one goes."""

    gpu_copies: int = setting(
        2,
        "O2V_GPU_COPIES",
        minimum=1,
        help="copies per GPU of the network INFERENCE_PREFERRED_MODE prefers",
    )
    cpu_copies: int = setting(
        1, minimum=1, help="copies of every ONNX model outside the preferred mode"
    )
    network_max_batch_size: int = setting(4096, minimum=1, help="instances per call to a network")
    # bounds a call's activations: tokens x enc_dim x 4 bytes a layer
    network_max_batch_tokens: int = setting(
        65_536,
        minimum=1,
        help="padded tokens per call to a network (a call of one sequence may pass it)",
    )
    # No waiting: the front door already batches, and requests queue while an instance is busy
    # (docs/performance.md compares delays).
    network_queue_delay_us: int = setting(
        0, minimum=0, help="the networks' dynamic batching delay in microseconds"
    )
    front_door_max_batch_size: int = setting(64, minimum=1, help="requests per front door execute")
    front_door_queue_delay_us: int = setting(
        0, minimum=0, help="the front door's dynamic batching delay in microseconds"
    )
    front_door_copies: int = setting(
        0,
        "O2V_FRONT_DOOR_COPIES",
        minimum=0,
        help="copies of the front door (0: one per two cores, at most 16)",
    )
    # auto is decided for the machine by server.launcher.host.resolve
    networks: str = setting(
        "auto",
        "O2V_NETWORKS",
        choices=("auto", "bls", "in_process"),
        help=(
            "how the front door runs the networks: bls (calls to enc0 / enc1 / pair), "
            "in_process (ONNX Runtime in its own process), auto (bls on a GPU or with the C++ "
            "ONNX Runtime backend, in_process otherwise)"
        ),
    )
    intra_op_thread_count: int = setting(
        0,
        minimum=0,
        help=(
            "ONNX Runtime's threads per session (0: its default, every core; shared among the "
            "front door's copies where they run the networks)"
        ),
    )
    inter_op_thread_count: int = setting(
        0, minimum=0, help="ONNX Runtime's inter-op threads (0: its default)"
    )
    # auto decides per network by how long one of its runs takes (onnx_sessions.SPIN_ABOVE_S);
    # read by the front door's own sessions and by the stand-in backend
    spinning: str = setting(
        "auto",
        "O2V_SPINNING",
        choices=SPINNING,
        help=(
            "whether ONNX Runtime's idle threads spin waiting for work (auto: for networks "
            "whose run is short)"
        ),
    )
    max_body_bytes: int = setting(
        DEFAULT_MAX_BODY_BYTES, minimum=1, help="largest request body in bytes (else 413)"
    )
    max_instances: int = setting(
        DEFAULT_MAX_INSTANCES, minimum=1, help="instances per request, all bodies together"
    )
    # what one answer may weigh, all bodies together
    max_neighbours: int = setting(
        DEFAULT_MAX_NEIGHBOURS,
        "O2V_MAX_NEIGHBOURS",
        minimum=1,
        help="neighbours (instances x k) one request may ask for",
    )
    # what one search may cost, all bodies together
    max_neighbour_scores: int = setting(
        DEFAULT_MAX_NEIGHBOUR_SCORES,
        "O2V_MAX_NEIGHBOUR_SCORES",
        minimum=1,
        help="scores (instances x catalogue items x width) one neighbours request may compute",
    )
    # only where the front door runs the networks itself: it measures at load what a call and a
    # padded token cost each network here (server.frontdoor.cutting); BLS calls are never cut
    call_cutting: str = setting(
        "measured",
        "O2V_CALL_CUTTING",
        choices=("measured", "off"),
        help=(
            "measured: the front door cuts a network's calls by length where the padding "
            "saved pays for a call; off: one call per network per execute"
        ),
    )
    metrics_interval_s: float = setting(
        1.0,
        "O2V_METRICS_INTERVAL_S",
        minimum=0.0,
        help=(
            "seconds between the front door's metric updates on Triton's /metrics "
            "(docs/metrics.md; 0: its metrics off)"
        ),
    )
    # GPU settings of the ONNX models; the CUDA provider is the C++ backend's default on a GPU.
    accelerator: str = setting(
        "cuda",
        "O2V_ACCELERATOR",
        choices=("cuda", "tensorrt"),
        help="the ONNX models' GPU execution provider",
    )
    tensorrt_fp16: bool = setting(False, "O2V_TENSORRT_FP16", help="TensorRT in half precision")
    tensorrt_engine_cache: str = setting(
        "",
        "O2V_TENSORRT_ENGINE_CACHE",
        help="a folder where TensorRT engines are kept across restarts",
    )
    # so that the first user is not slow
    warmup: bool = setting(
        True, "O2V_WARMUP", help="one warm-up request per model instance at load"
    )
    # Needs --cache-config on the server. It keys on the body alone, not on the content_type /
    # accept parameters: opt in where clients send each body in one format.
    response_cache: bool = setting(
        False,
        help=(
            "Triton's response cache on the front door (the launcher sets it from "
            "O2V_RESPONSE_CACHE_BYTES)"
        ),
    )
