"""Generated configs: checked against Triton's ModelConfig, and the committed one up to date."""

import pytest
from google.protobuf import json_format

from contract.facts import Facts
from server.configs import front_door_config, read, to_text, write_configs
from server.embedded import PROJECT_ROOT
from server.settings import ServingSettings, SettingError, from_texts

FACTS = Facts(
    vocab_sizes=(100, 50), max_seq_lens=(8, 4), enc_dim=16, output_layer="softmax", output_dim=2
)


def test_the_committed_front_door_config_is_the_generated_one():
    committed = PROJECT_ROOT / "model_repository" / "object2vec" / "config.pbtxt"
    assert committed.read_text() == to_text(front_door_config(ServingSettings())), (
        "regenerate it: python -m server.configs (defaults), then commit it"
    )


def test_a_field_triton_does_not_know_fails_before_anything_is_written():
    config = front_door_config(ServingSettings()) | {"max_batch_sizes": 3}
    with pytest.raises(json_format.ParseError):
        to_text(config)


def test_every_model_gets_its_configs_and_each_mode_its_copies(tmp_path):
    FACTS.save(tmp_path)
    written = write_configs(tmp_path, ServingSettings(gpu_copies=3))
    assert len(written) == 3 * 3 + 1
    pair = read(tmp_path / "pair" / "configs" / "classification.pbtxt")
    assert pair.instance_group[0].count == 3 and pair.output[0].dims == [2]
    enc0 = read(tmp_path / "enc0" / "configs" / "classification.pbtxt")
    assert enc0.instance_group[0].count == 1 and enc0.output[0].dims == [16]


def test_one_parser_for_every_setting():
    settings = from_texts(
        ServingSettings, {"gpu_copies": "4", "warmup": "no", "max_padding_ratio": "1.5"}
    )
    assert (settings.gpu_copies, settings.warmup, settings.max_padding_ratio) == (4, False, 1.5)
    for texts, message in [
        ({"gpu_copies": "0"}, "gpu_copies='0' must be at least 1"),
        ({"warmup": "maybe"}, "warmup='maybe': use true or false"),
        ({"accelerator": "npu"}, "use cuda or tensorrt"),
        ({"gpu_copy": "1"}, "unknown setting(s) gpu_copy"),
    ]:
        with pytest.raises(SettingError) as error:
            from_texts(ServingSettings, texts)
        assert message in str(error.value)
