"""Triton configs for the model repository, generated from facts.json and serving settings.

    python -m server.configs [--repository model_repository] [--gpu-copies 2] ...

Every model gets `config.pbtxt`; the ONNX models also get `configs/embedding.pbtxt` and
`configs/classification.pbtxt`, which differ only in `instance_group`: the preferred network
(enc0 and enc1 in embedding mode, pair in classification mode) gets `gpu_copies` copies of
KIND_AUTO (GPUs where there are any, the CPU otherwise), the other network one KIND_CPU copy.
The server picks one with `--model-config-name`, which INFERENCE_PREFERRED_MODE sets.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from export.facts import (
    ENCODER_INPUT,
    ENCODER_MODELS,
    ENCODER_OUTPUT,
    FRONT_DOOR,
    PAIR_INPUTS,
    PAIR_MODEL,
    PAIR_OUTPUT,
    Facts,
)
from server.payload import DEFAULT_MAX_INSTANCES

# INFERENCE_PREFERRED_MODE -> the models that get the GPU copies.
MODES: dict[str, tuple[str, ...]] = {
    "embedding": ENCODER_MODELS,
    "classification": (PAIR_MODEL,),
}

# The front door's one input and one output.
BODY_INPUT = "body"
RESPONSE_OUTPUT = "response"


@dataclass(frozen=True)
class ServingSettings:
    gpu_copies: int = 2  # copies of the preferred network per GPU (KIND_AUTO)
    cpu_copies: int = 1  # copies of every ONNX model outside the preferred mode
    network_max_batch_size: int = 4096  # instances per call to enc0/enc1/pair
    # No waiting: the front door already batches, and requests queue while an instance is busy
    # (docs/performance.md: 0 beat 200/500 µs on the realistic model).
    network_queue_delay_us: int = 0
    front_door_max_batch_size: int = 64  # requests per front door execute
    front_door_queue_delay_us: int = 0
    front_door_copies: int = 1
    intra_op_thread_count: int = 0  # ONNX Runtime's default (all cores) when 0
    inter_op_thread_count: int = 0
    # ONNX Runtime's idle threads spin, waiting for work; on a small CPU they take the cores the
    # front door needs. Read by the embedded server's ONNX Runtime backend.
    allow_spinning: bool = False
    max_body_bytes: int = 16 * 1024 * 1024
    max_instances: int = DEFAULT_MAX_INSTANCES  # per request, all its bodies together
    # 0: one call per network per front door execute. Above 0: instances are also split into
    # length groups whose padded size stays under this multiple of their real tokens.
    max_padding_ratio: float = 0.0
    # GPU settings of the ONNX models; the CUDA provider is the C++ backend's default on a GPU.
    accelerator: str = "cuda"  # cuda | tensorrt
    tensorrt_fp16: bool = False
    tensorrt_engine_cache: str = ""  # a folder: engines survive restarts
    warmup: bool = True  # a warm-up request per model instance, so the first user is not slow
    # Triton's response cache on the front door (needs --cache-config on the server). It keys on
    # the body alone, not on the content_type / accept parameters: opt in where clients send
    # each body in one format.
    response_cache: bool = False


def _quote(value: object) -> str:
    """A protobuf text-format string: JSON's escapes (quote, backslash, newline) are the same."""
    return json.dumps(str(value))


def _tensor(name: str, data_type: str, dims: str) -> str:
    return f"  {{ name: {_quote(name)} data_type: {data_type} dims: [ {dims} ] }}"


def _tensors(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]\n"


def _parameters(values: dict[str, object]) -> str:
    return "".join(
        f"parameters {{ key: {_quote(k)} value: {{ string_value: {_quote(v)} }} }}\n"
        for k, v in values.items()
    )


def _instance_group(count: int, kind: str) -> str:
    return f"instance_group [ {{ count: {count} kind: {kind} }} ]\n"


def _tensorrt(settings: ServingSettings) -> str:
    if settings.accelerator != "tensorrt":
        return ""
    params = {"precision_mode": "FP16" if settings.tensorrt_fp16 else "FP32"}
    if settings.tensorrt_engine_cache:
        params |= {
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": settings.tensorrt_engine_cache,
        }
    body = " ".join(
        f"parameters {{ key: {_quote(k)} value: {_quote(v)} }}" for k, v in params.items()
    )
    return (
        "optimization { execution_accelerators { gpu_execution_accelerator: [ "
        f'{{ name: "tensorrt" {body} }} ] }} }}\n'
    )


def _warmup(settings: ServingSettings, inputs: tuple[str, ...]) -> str:
    if not settings.warmup:
        return ""
    # Zeros are padding: a valid input for every vocabulary, and it runs the whole graph.
    tensors = " ".join(
        f'inputs {{ key: "{n}" value: {{ data_type: TYPE_INT64 dims: [ 16 ] zero_data: true }} }}'
        for n in inputs
    )
    return f'model_warmup [ {{ name: "warmup" batch_size: 1 {tensors} }} ]\n'


def onnx_config(name: str, facts: Facts, settings: ServingSettings, instance_group: str) -> str:
    names = PAIR_INPUTS if name == PAIR_MODEL else (ENCODER_INPUT,)
    if name == PAIR_MODEL:
        inputs = [_tensor(n, "TYPE_INT64", "-1") for n in PAIR_INPUTS]
        outputs = [_tensor(PAIR_OUTPUT, "TYPE_FP32", str(facts.output_dim))]
    else:
        inputs = [_tensor(ENCODER_INPUT, "TYPE_INT64", "-1")]
        outputs = [_tensor(ENCODER_OUTPUT, "TYPE_FP32", str(facts.enc_dim))]
    return (
        f'name: "{name}"\nbackend: "onnxruntime"\n'
        f"max_batch_size: {settings.network_max_batch_size}\n"
        + _tensors("input", inputs)
        + _tensors("output", outputs)
        + "dynamic_batching { max_queue_delay_microseconds: "
        + f"{settings.network_queue_delay_us} }}\n"
        + instance_group
        + _tensorrt(settings)
        + _warmup(settings, names)
        + _parameters(
            {
                "intra_op_thread_count": settings.intra_op_thread_count,
                "inter_op_thread_count": settings.inter_op_thread_count,
                "allow_spinning": int(settings.allow_spinning),
            }
        )
    )


def front_door_config(settings: ServingSettings) -> str:
    return (
        f'name: "{FRONT_DOOR}"\nbackend: "python"\n'
        f"max_batch_size: {settings.front_door_max_batch_size}\n"
        + _tensors("input", [_tensor(BODY_INPUT, "TYPE_STRING", "1")])
        + _tensors("output", [_tensor(RESPONSE_OUTPUT, "TYPE_STRING", "1")])
        + "dynamic_batching { max_queue_delay_microseconds: "
        + f"{settings.front_door_queue_delay_us} }}\n"
        + _instance_group(settings.front_door_copies, "KIND_CPU")
        + ("response_cache { enable: true }\n" if settings.response_cache else "")
        + _parameters(
            {
                "max_body_bytes": settings.max_body_bytes,
                "max_instances": settings.max_instances,
                "network_max_batch_size": settings.network_max_batch_size,
                "max_padding_ratio": settings.max_padding_ratio,
            }
        )
    )


def write_configs(repository: Path, settings: ServingSettings | None = None) -> list[Path]:
    """Writes every config of the repository from its facts.json; returns the paths written."""
    settings = settings or ServingSettings()
    repository = Path(repository)
    facts = Facts.load(repository)
    written = []

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)

    for name in (*ENCODER_MODELS, PAIR_MODEL):
        cpu = _instance_group(settings.cpu_copies, "KIND_CPU")
        write(repository / name / "config.pbtxt", onnx_config(name, facts, settings, cpu))
        for mode, preferred in MODES.items():
            group = _instance_group(settings.gpu_copies, "KIND_AUTO") if name in preferred else cpu
            write(
                repository / name / "configs" / f"{mode}.pbtxt",
                onnx_config(name, facts, settings, group),
            )
    write(repository / FRONT_DOOR / "config.pbtxt", front_door_config(settings))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    defaults = ServingSettings()
    for name, value in vars(defaults).items():
        kind = (
            (lambda v: v.lower() in ("1", "true", "yes"))
            if isinstance(value, bool)
            else type(value)
        )
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    args = vars(parser.parse_args(argv))
    repository = args.pop("repository")
    for path in write_configs(repository, ServingSettings(**args)):
        print(path)


if __name__ == "__main__":
    main()
