"""Triton configs for the model repository, generated from facts.json and serving settings.

    python -m server.launcher.configs [--repository model_repository] [--gpu-copies 2] ...

Every model gets `config.pbtxt`; the ONNX models also get `configs/embedding.pbtxt` and
`configs/classification.pbtxt`, which differ only in `instance_group`: the preferred network
(enc0 and enc1 in embedding mode, pair in classification mode) gets `gpu_copies` copies of
KIND_AUTO (GPUs where there are any, the CPU otherwise), the other network one KIND_CPU copy.
The server picks one with `--model-config-name`, which INFERENCE_PREFERRED_MODE sets.

Each config is built as data, parsed into Triton's own `ModelConfig` protobuf (an unknown field
or a wrong type fails here, not when Triton loads it) and written by protobuf's text format,
which also escapes every string. The front door's config depends on the settings only; the
committed `model_repository/object2vec/config.pbtxt` is this module's output for the defaults
(a test keeps them equal).

Configs always describe the model that is there: `configs.json` at the repository's top
records the settings they were written with and what each file held. At every start the
launcher generates them again from `facts.json` (`refresh_configs`): a file that still holds
what was written (or is missing) gets the new text, so a model exported over another is served
with its own dims; the settings recorded are kept unless O2V_* variables give new ones. A file
that differs from what was written was edited by hand: it is the user's, served as it is (the
server then checks it against the graph at load, as the C++ ONNX Runtime backend does), and
named at start; delete it to have it generated again.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from contract.facts import Facts
from contract.flat import RAGGED_FILE, RAGGED_LENGTHS
from contract.names import (
    BODY_INPUT,
    ENCODER_INPUT,
    ENCODER_MODELS,
    ENCODER_OUTPUT,
    FRONT_DOOR,
    PAIR_INPUTS,
    PAIR_MODEL,
    PAIR_OUTPUT,
    RESPONSE_OUTPUT,
)
from contract.neighbours import (
    DEEP_ITEMS_OUTPUT,
    DEEP_SCORES_OUTPUT,
    ITEMS_OUTPUT,
    NEIGHBOURS_MODEL,
    QUERY_INPUT,
    SCORES_OUTPUT,
    Catalogue,
)
from server.common.settings import ServingSettings, add_arguments
from server.launcher.host import NGC_BACKENDS, PLAIN_TRITON, Host, resolve

# INFERENCE_PREFERRED_MODE -> the models that get the GPU copies (nearest neighbours are
# embedding traffic: an in0 encoded, then searched).
MODES: dict[str, tuple[str, ...]] = {
    "embedding": (*ENCODER_MODELS, NEIGHBOURS_MODEL),
    "classification": (PAIR_MODEL,),
}
Config = dict[str, Any]


def _tensor(name: str, data_type: str, dims: list[int]) -> Config:
    return {"name": name, "data_type": data_type, "dims": dims}


def _parameters(values: dict[str, object]) -> Config:
    return {key: {"string_value": str(value)} for key, value in values.items()}


def _instance_group(count: int, kind: str) -> list[Config]:
    return [{"count": count, "kind": kind}]


def _tensorrt(settings: ServingSettings) -> Config:
    if settings.accelerator != "tensorrt":
        return {}
    params = {"precision_mode": "FP16" if settings.tensorrt_fp16 else "FP32"}
    if settings.tensorrt_engine_cache:
        params |= {
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": settings.tensorrt_engine_cache,
        }
    accelerator = {"name": "tensorrt", "parameters": params}
    return {
        "optimization": {"execution_accelerators": {"gpu_execution_accelerator": [accelerator]}}
    }


def _warmup(settings: ServingSettings, inputs: list[Config]) -> Config:
    """One zero request: for token ids that is padding, valid for every vocabulary, and it
    runs the whole graph."""
    if not settings.warmup:
        return {}
    tensors = {
        t["name"]: {"data_type": t["data_type"], "dims": t["dims"], "zero_data": True}
        for t in inputs
    }
    return {"model_warmup": [{"name": "warmup", "batch_size": 1, "inputs": tensors}]}


def _onnx_parameters(settings: ServingSettings) -> Config:
    return _parameters(
        {
            "intra_op_thread_count": settings.intra_op_thread_count,
            "inter_op_thread_count": settings.inter_op_thread_count,
            "spinning": settings.spinning,
        }
    )


def _ragged(inputs: list[Config]) -> Config:
    """An encoder's ragged form (contract.flat, export.ragged): Triton concatenates the token
    ids of every request of a batch, whatever their lengths, and tells the graph each
    sequence's length; without it only requests of one length share a batch."""
    (tokens,) = inputs
    tokens["allow_ragged_batch"] = True
    lengths = {
        "kind": "BATCH_ITEM_SHAPE",
        "target_name": [RAGGED_LENGTHS],
        "data_type": "TYPE_INT32",
        "source_input": [tokens["name"]],
    }
    return {"default_model_filename": RAGGED_FILE, "batch_input": [lengths]}


def onnx_config(
    name: str,
    facts: Facts,
    settings: ServingSettings,
    instance_group: list[Config],
    ragged: bool = False,
) -> Config:
    """A network's config; `ragged` where the repository holds the encoder's ragged form."""
    if name == PAIR_MODEL:
        names, output = PAIR_INPUTS, _tensor(PAIR_OUTPUT, "TYPE_FP32", [facts.output_dim])
    else:
        names, output = (ENCODER_INPUT,), _tensor(ENCODER_OUTPUT, "TYPE_FP32", [facts.enc_dim])
    inputs = [_tensor(n, "TYPE_INT64", [-1]) for n in names]
    return {
        "name": name,
        "backend": "onnxruntime",
        "max_batch_size": settings.network_max_batch_size,
        **(_ragged(inputs) if ragged else {}),
        "input": inputs,
        "output": [output],
        "dynamic_batching": {"max_queue_delay_microseconds": settings.network_queue_delay_us},
        "instance_group": instance_group,
        **_tensorrt(settings),
        **_warmup(settings, [t | {"dims": [16]} for t in inputs]),
        "parameters": _onnx_parameters(settings),
    }


def neighbours_config(
    catalogue: Catalogue, settings: ServingSettings, instance_group: list[Config]
) -> Config:
    """The catalogue's exact search (contract.neighbours): queries batched across requests, at
    most MAX_SCORES_PER_CALL scores a call. No TensorRT: its TopK stops at k 3840."""
    query = _tensor(QUERY_INPUT, "TYPE_FP32", [catalogue.enc_dim])
    return {
        "name": NEIGHBOURS_MODEL,
        "backend": "onnxruntime",
        "max_batch_size": catalogue.queries_per_call(settings.network_max_batch_size),
        "input": [query],
        "output": [
            _tensor(SCORES_OUTPUT, "TYPE_FP32", [catalogue.max_k]),
            _tensor(ITEMS_OUTPUT, "TYPE_INT64", [catalogue.max_k]),
            *(
                [
                    _tensor(DEEP_SCORES_OUTPUT, "TYPE_FP32", [catalogue.depth]),
                    _tensor(DEEP_ITEMS_OUTPUT, "TYPE_INT64", [catalogue.depth]),
                ]
                if catalogue.max_exclude
                else []
            ),
        ],
        "dynamic_batching": {"max_queue_delay_microseconds": settings.network_queue_delay_us},
        "instance_group": instance_group,
        **_warmup(settings, [query]),
        "parameters": _onnx_parameters(settings),
    }


def front_door_config(settings: ServingSettings) -> Config:
    """The front door's config for resolved settings (server.launcher.host.resolve)."""
    if settings.networks == "auto" or not settings.front_door_copies:
        raise ValueError("front_door_config needs resolved settings: server.launcher.host.resolve")
    return {
        "name": FRONT_DOOR,
        "backend": "python",
        "max_batch_size": settings.front_door_max_batch_size,
        # Raw bytes, not BYTES: no length prefix a client could lie about (contract/body.py);
        # ragged, so bodies of different lengths still share one execute.
        "input": [_tensor(BODY_INPUT, "TYPE_UINT8", [-1]) | {"allow_ragged_batch": True}],
        "output": [_tensor(RESPONSE_OUTPUT, "TYPE_STRING", [1])],
        "dynamic_batching": {"max_queue_delay_microseconds": settings.front_door_queue_delay_us},
        "instance_group": _instance_group(settings.front_door_copies, "KIND_CPU"),
        **({"response_cache": {"enable": True}} if settings.response_cache else {}),
        "parameters": _parameters(
            {
                "max_body_bytes": settings.max_body_bytes,
                "max_instances": settings.max_instances,
                "max_neighbours": settings.max_neighbours,
                "max_neighbour_scores": settings.max_neighbour_scores,
                "network_max_batch_size": settings.network_max_batch_size,
                "network_max_batch_tokens": settings.network_max_batch_tokens,
                "call_cutting": settings.call_cutting,
                "metrics_interval_s": settings.metrics_interval_s,
                "networks": settings.networks,
                # in_process: the front door's own ONNX Runtime sessions
                "intra_op_thread_count": settings.intra_op_thread_count,
                "inter_op_thread_count": settings.inter_op_thread_count,
                "spinning": settings.spinning,
            }
        ),
    }


def to_text(config: Config) -> str:
    """The config as Triton reads it, checked against Triton's ModelConfig on the way."""
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)


def read(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


RECORD_FILE = "configs.json"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _record(repository: Path) -> dict:
    try:
        return json.loads((repository / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {}


def recorded_settings(repository: Path) -> ServingSettings | None:
    """The settings the repository's configs were last written with, if recorded."""
    values = _record(Path(repository)).get("settings")
    if not isinstance(values, dict):
        return None
    known = {f.name for f in dataclasses.fields(ServingSettings)}
    return ServingSettings(**{k: v for k, v in values.items() if k in known})


def config_texts(
    repository: Path, settings: ServingSettings | None = None, host: Host | None = None
) -> dict[Path, str]:
    """Every config of the repository, generated from its facts.json and checked.

    The configs the launcher serves (`configs/<mode>.pbtxt`, chosen by --model-config-name)
    follow `host` (default: this machine); the front door's `config.pbtxt`, which a plain
    tritonserver reads, is the one for PLAIN_TRITON and the same on every machine."""
    settings = settings or ServingSettings()
    plain = resolve(settings, PLAIN_TRITON)
    settings = resolve(settings, host or Host.detect())
    repository = Path(repository)
    facts = Facts.load(repository)
    catalogue = Catalogue.load(repository)
    configs = {
        name: functools.partial(
            onnx_config, name, facts, ragged=(repository / name / "1" / RAGGED_FILE).exists()
        )
        for name in (*ENCODER_MODELS, PAIR_MODEL)
    }
    if catalogue is not None:
        configs[NEIGHBOURS_MODEL] = functools.partial(neighbours_config, catalogue)
    texts: dict[Path, str] = {}
    cpu = _instance_group(settings.cpu_copies, "KIND_CPU")
    for name, config in configs.items():
        texts[repository / name / "config.pbtxt"] = to_text(config(settings, cpu))
        for mode, preferred in MODES.items():
            group = _instance_group(settings.gpu_copies, "KIND_AUTO") if name in preferred else cpu
            texts[repository / name / "configs" / f"{mode}.pbtxt"] = to_text(
                config(settings, group)
            )
    texts[repository / FRONT_DOOR / "config.pbtxt"] = to_text(front_door_config(plain))
    for mode in MODES:
        path = repository / FRONT_DOOR / "configs" / f"{mode}.pbtxt"
        texts[path] = to_text(front_door_config(settings))
    return texts


def refresh_configs(
    repository: Path,
    settings: ServingSettings | None = None,
    host: Host | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Brings every config up to date with facts.json and the settings (given, else recorded,
    else the defaults); returns the hand-edited files left as they are (none if `overwrite`).
    Nothing is written unless something changed, so a read-only repository that is up to
    date serves as it is (OSError otherwise)."""
    repository = Path(repository)
    record = _record(repository)
    chosen = settings or recorded_settings(repository) or ServingSettings()
    texts = config_texts(repository, chosen, host)  # all checked before anything is written
    written = record.get("files", {}) if isinstance(record.get("files"), dict) else {}
    files, kept = {}, []
    for path, text in texts.items():
        name = str(path.relative_to(repository))
        current = path.read_text() if path.exists() else None
        if current is not None and current != text:
            if not overwrite and written.get(name) != _digest(current):
                kept.append(path)  # edited by hand: the user's
                continue
        if current != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        files[name] = _digest(text)
    new_record = {"settings": dataclasses.asdict(chosen), "files": files}
    if new_record != record:
        (repository / RECORD_FILE).write_text(json.dumps(new_record, indent=1, sort_keys=True))
    return kept


def write_configs(
    repository: Path, settings: ServingSettings | None = None, host: Host | None = None
) -> list[Path]:
    """Writes every config of the repository from its facts.json and these settings, hand
    edits included; returns the paths."""
    refresh_configs(repository, settings or ServingSettings(), host, overwrite=True)
    return list(config_texts(repository, settings, host))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument(
        "--backend-directory",
        type=Path,
        default=NGC_BACKENDS,
        help="the server's backends (decides `networks: auto`); default the NGC image's",
    )
    add_arguments(parser, ServingSettings)
    args = vars(parser.parse_args(argv))
    repository = args.pop("repository")
    host = Host.detect(args.pop("backend_directory"))
    for path in write_configs(repository, ServingSettings(**args), host):
        print(path)


if __name__ == "__main__":
    main()
