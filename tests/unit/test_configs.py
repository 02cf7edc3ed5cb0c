"""Generated configs: checked against Triton's ModelConfig, and the committed one up to date."""

import pytest
from google.protobuf import json_format

from contract.errors import ServiceError
from contract.facts import Facts
from contract.flat import RAGGED_FILE, RAGGED_LENGTHS
from server.common.settings import ServingSettings, from_texts
from server.launcher.configs import (
    front_door_config,
    read,
    refresh_configs,
    to_text,
    write_configs,
)
from server.launcher.embedded import PROJECT_ROOT
from server.launcher.host import PLAIN_TRITON, Host, resolve

FACTS = Facts(
    vocab_sizes=(100, 50), max_seq_lens=(8, 4), enc_dim=16, output_layer="softmax", output_dim=2
)


def test_the_committed_front_door_config_is_the_generated_one():
    committed = PROJECT_ROOT / "model_repository" / "object2vec" / "config.pbtxt"
    plain = resolve(ServingSettings(), PLAIN_TRITON)
    assert committed.read_text() == to_text(front_door_config(plain)), (
        "regenerate it: python -m server.launcher.configs (defaults), then commit it"
    )


def test_a_field_triton_does_not_know_fails_before_anything_is_written():
    config = front_door_config(resolve(ServingSettings(), PLAIN_TRITON)) | {"max_batch_sizes": 3}
    with pytest.raises(json_format.ParseError):
        to_text(config)


def test_every_model_gets_its_configs_and_each_mode_its_copies(tmp_path):
    FACTS.save(tmp_path)
    written = write_configs(tmp_path, ServingSettings(gpu_copies=3))
    assert len(written) == 3 * 3 + 3
    pair = read(tmp_path / "pair" / "configs" / "classification.pbtxt")
    assert pair.instance_group[0].count == 3 and pair.output[0].dims == [2]
    enc0 = read(tmp_path / "enc0" / "configs" / "classification.pbtxt")
    assert enc0.instance_group[0].count == 1 and enc0.output[0].dims == [16]


def test_one_parser_for_every_setting():
    settings = from_texts(
        ServingSettings, {"gpu_copies": "4", "warmup": "no", "call_cutting": "off"}
    )
    assert (settings.gpu_copies, settings.warmup, settings.call_cutting) == (4, False, "off")
    for texts, message in [
        ({"gpu_copies": "0"}, "gpu_copies='0' must be at least 1"),
        ({"warmup": "maybe"}, "warmup='maybe': use true or false"),
        ({"accelerator": "npu"}, "use cuda or tensorrt"),
        ({"gpu_copy": "1"}, "unknown setting(s) gpu_copy"),
    ]:
        with pytest.raises(ServiceError) as error:
            from_texts(ServingSettings, texts)
        assert message in str(error.value)


def _front_door(path):
    config = read(path)
    return config.instance_group[0].count, config.parameters["networks"].string_value


@pytest.mark.parametrize(
    "host, copies, networks",
    [
        (Host(cores=2, gpus=0, cpp_onnxruntime=False), 1, "in_process"),  # the embedded server
        (Host(cores=16, gpus=0, cpp_onnxruntime=False), 8, "in_process"),
        (Host(cores=64, gpus=8, cpp_onnxruntime=True), 16, "bls"),  # an NGC GPU host: at most 16
        (Host(cores=4, gpus=0, cpp_onnxruntime=True), 2, "bls"),  # the NGC image on a CPU
        (Host(cores=8, gpus=1, cpp_onnxruntime=False), 4, "bls"),  # embedded on a GPU host
        (Host(cores=8, gpus=1, cpp_onnxruntime=True), 4, "bls"),  # a p3.2xlarge
    ],
)
def test_served_configs_follow_the_host_and_the_committed_one_does_not(
    tmp_path, host, copies, networks
):
    FACTS.save(tmp_path)
    write_configs(tmp_path, ServingSettings(), host)
    for mode in ("embedding", "classification"):
        served = tmp_path / "object2vec" / "configs" / f"{mode}.pbtxt"
        assert _front_door(served) == (copies, networks)
    assert _front_door(tmp_path / "object2vec" / "config.pbtxt") == (1, "bls")


def test_settings_win_over_the_host_and_in_process_copies_share_the_cores(tmp_path):
    host = Host(cores=16, gpus=0, cpp_onnxruntime=False)
    assert resolve(ServingSettings(), host).intra_op_thread_count == 2  # 8 copies, 16 cores
    chosen = resolve(ServingSettings(front_door_copies=3, networks="bls"), host)
    assert (chosen.front_door_copies, chosen.networks) == (3, "bls")
    assert chosen.intra_op_thread_count == 0  # bls: the network models' own threads
    with pytest.raises(ValueError, match="resolved"):
        front_door_config(ServingSettings())


def _dims(repository, model: str, mode: str = "classification") -> list[int]:
    return list(read(repository / model / "configs" / f"{mode}.pbtxt").output[0].dims)


def test_a_model_exported_over_another_is_served_with_its_own_dims(tmp_path):
    """Issue 19: configs written for the demo stayed when a regression model with enc_dim 48
    was exported over it (served enc0 [16], pair [2]); the C++ backend refuses that."""
    FACTS.save(tmp_path)
    refresh_configs(tmp_path)
    assert _dims(tmp_path, "enc0") == [16] and _dims(tmp_path, "pair") == [2]
    regression = Facts((100, 50), (8, 4), 48, "mean_squared_error", 1)
    regression.save(tmp_path)
    assert refresh_configs(tmp_path) == []
    for mode in ("classification", "embedding"):
        assert _dims(tmp_path, "enc0", mode) == [48] and _dims(tmp_path, "enc1", mode) == [48]
        assert _dims(tmp_path, "pair", mode) == [1]
    assert list(read(tmp_path / "pair" / "config.pbtxt").output[0].dims) == [1]


def test_settings_written_by_hand_survive_a_new_export(tmp_path):
    FACTS.save(tmp_path)
    write_configs(tmp_path, ServingSettings(call_cutting="off", gpu_copies=3))
    Facts((100, 50), (8, 4), 48, "softmax", 2).save(tmp_path)
    refresh_configs(tmp_path)
    front_door = read(tmp_path / "object2vec" / "configs" / "classification.pbtxt")
    assert front_door.parameters["call_cutting"].string_value == "off"
    assert read(tmp_path / "pair" / "configs" / "classification.pbtxt").instance_group[0].count == 3
    assert _dims(tmp_path, "enc0") == [48]


def test_a_config_edited_by_hand_is_kept_and_named_until_settings_are_given(tmp_path):
    FACTS.save(tmp_path)
    refresh_configs(tmp_path)
    edited = tmp_path / "enc0" / "configs" / "classification.pbtxt"
    text = edited.read_text().replace("max_batch_size: 4096", "max_batch_size: 8")
    edited.write_text(text)
    Facts((100, 50), (8, 4), 48, "softmax", 2).save(tmp_path)
    assert refresh_configs(tmp_path) == [edited]
    assert edited.read_text() == text  # the user's, as written
    assert _dims(tmp_path, "enc1") == [48]  # the others follow the model
    assert refresh_configs(tmp_path, ServingSettings(), overwrite=True) == []
    assert _dims(tmp_path, "enc0") == [48] and "max_batch_size: 4096" in edited.read_text()


def test_an_up_to_date_repository_is_not_written(tmp_path):
    FACTS.save(tmp_path)
    refresh_configs(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert refresh_configs(tmp_path) == []
    assert before == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}


def test_an_encoder_with_a_ragged_form_is_batched_raggedly(tmp_path):
    """Issue 22: requests of any lengths share one batch where the repository holds the
    encoder's ragged form (Triton's ragged batching); others stay padded [-1, -1]."""
    FACTS.save(tmp_path)
    (tmp_path / "enc0" / "1").mkdir(parents=True)
    (tmp_path / "enc0" / "1" / RAGGED_FILE).write_bytes(b"")
    write_configs(tmp_path)
    for path in (tmp_path / "enc0").rglob("*.pbtxt"):
        enc0 = read(path)
        assert enc0.default_model_filename == RAGGED_FILE and enc0.input[0].allow_ragged_batch
        (lengths,) = enc0.batch_input
        assert list(lengths.target_name) == [RAGGED_LENGTHS]
        assert list(lengths.source_input) == [enc0.input[0].name]
        assert lengths.kind == lengths.BATCH_ITEM_SHAPE
    for name in ("enc1", "pair"):
        plain = read(tmp_path / name / "config.pbtxt")
        assert not plain.default_model_filename and not plain.batch_input
        assert not any(i.allow_ragged_batch for i in plain.input)
