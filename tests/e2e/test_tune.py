"""`python -m export.tune` on a tiny study: it runs end to end within its budget, prunes a
hopeless trial, resumes from its folder, never opens the test split, and its best checkpoint
exports and serves."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from export import checkpoint
from export.data import write_jsonlines
from export.onnx_export import export
from export.tune import Study, main
from server.launcher.embedded import PROJECT_ROOT
from tests.helpers import infer, json_body, start_server

pytestmark = pytest.mark.local  # trains, and starts a server of its own

USERS, ITEMS = 40, 60
FIXED = [
    "enc0_network=pooled_embedding",
    "enc1_network=pooled_embedding",
    f"enc0_vocab_size={USERS + 1}",
    f"enc1_vocab_size={ITEMS + 1}",
    "enc0_max_seq_len=1",
    "enc1_max_seq_len=1",
    "output_layer=mean_squared_error",
    "enc_dim=16",
    "mlp_dim=16",
    "mlp_layers=1",
    "mini_batch_size=64",
    "epochs=4",
    "early_stopping_patience=4",
]
OPENED: list[str] = []  # every file any test of this process opened, once the hook is in


def _audit(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], str | Path):
        OPENED.append(str(args[0]))


sys.addaudithook(_audit)  # cannot be removed: it only records


def _ratings(rng: np.random.Generator, count: int) -> list[dict]:
    """Ratings from a small latent model: there is something to learn."""
    users, items = rng.normal(size=(USERS + 1, 3)), rng.normal(size=(ITEMS + 1, 3))
    rows = []
    for _ in range(count):
        u, i = int(rng.integers(1, USERS + 1)), int(rng.integers(1, ITEMS + 1))
        rating = float(np.clip(3 + users[u] @ items[i] + rng.normal(scale=0.3), 1, 5))
        rows.append({"label": rating, "in0": [u], "in1": [i]})
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tune-data")
    rng = np.random.default_rng(0)
    for name, count in (("train", 3000), ("validation", 400), ("test", 400)):
        write_jsonlines(folder / f"{name}.jsonl", _ratings(rng, count))
    return folder


def _tune(data: Path, study: Path, *extra: str) -> None:
    main(
        [
            "--train",
            str(data / "train.jsonl"),
            "--validation",
            str(data / "validation.jsonl"),
            "--study",
            str(study),
            "--jobs",
            "1",
            "--only",
            "learning_rate",
            *extra,
            *FIXED,
            "learning_rate=0.000001..0.05",
        ]
    )


def _states(study: Path) -> list[str]:
    loaded = Study(study, "validation:mean_squared_error").load()
    return [t.state.name for t in sorted(loaded.trials, key=lambda t: t.number)]


@pytest.fixture(scope="module")
def tuned(data, tmp_path_factory) -> Path:
    """Four trials: three that learn, then one that cannot (a learning rate of 1e-6)."""
    study = tmp_path_factory.mktemp("tune") / "study"
    loaded = Study(study, "validation:mean_squared_error").load()
    for rate in (0.02, 0.03, 0.04, 0.000001):
        loaded.enqueue_trial({"learning_rate": rate})
    OPENED.clear()
    _tune(data, study, "--trials", "4", "--minutes", "10")
    return study


def test_a_hopeless_trial_is_pruned_and_the_best_is_kept(tuned):
    assert _states(tuned) == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    table = (tuned / "trials.md").read_text()
    assert "| 3 | pruned |" in table
    best = Study(tuned, "validation:mean_squared_error").load().best_trial
    assert best.params["learning_rate"] in (0.02, 0.03, 0.04)
    assert (tuned / "best.pt").exists()


def test_the_test_split_is_never_opened(tuned, data):
    assert str(data / "train.jsonl") in OPENED  # the hook saw the tuner's reads
    assert not [p for p in OPENED if p.endswith("test.jsonl")]


def test_a_study_resumes_from_its_folder_and_keeps_to_its_budget(tuned, data, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(tuned, study)
    _tune(data, study, "--trials", "5")
    assert len(_states(study)) == 5  # one more, numbered after the four
    # A budget of a fraction of a second: the trial under way finishes, no other starts.
    _tune(data, study, "--trials", "100", "--minutes", "0.001")
    assert len(_states(study)) == 6


def test_the_best_checkpoint_exports_and_serves(tuned, tmp_path):
    repository = tmp_path / "model_repository"
    shutil.copytree(
        PROJECT_ROOT / "model_repository" / "object2vec",
        repository / "object2vec",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    model = checkpoint.load(tuned / "best.pt")
    export(model, repository)
    with start_server(repository) as server:
        answer = orjson.loads(infer(server, "http", json_body([{"in0": [1], "in1": [2]}])))
    (prediction,) = answer["predictions"]
    assert 1 <= prediction["scores"][0] <= 5


def test_the_search_space_is_the_hosted_one_where_nothing_narrows_it():
    from export.tune import TUNABLE, search_space

    space = search_space({"enc0_network": "hcnn", "enc1_network": "pooled_embedding"})
    assert "enc0_cnn_filter_width" in space and "enc1_cnn_filter_width" not in space
    assert "enc1_token_embedding_dim" not in space  # pooled_embedding's is enc_dim
    assert space["learning_rate"] == TUNABLE["learning_rate"]
    narrowed = search_space({"learning_rate": "0.001..0.1", "mlp_activation": "tanh|relu"})
    assert narrowed["learning_rate"].low == 0.001 and narrowed["learning_rate"].log
    assert narrowed["mlp_activation"].choices == ("tanh", "relu")


@pytest.mark.parametrize("objective", ["validation:cross_entropy", "validation:accuracy"])
def test_a_classification_study_tunes_toward_the_retrieval_objectives(data, tmp_path, objective):
    """The retrieval recipe's model (a classifier of "did the user rate it", with negatives
    sampled from the batch) tuned toward a hosted classification metric, in its direction."""
    rated = tmp_path / "rated"
    rated.mkdir()
    for name in ("train", "validation"):
        rows = orjson.loads(b"[" + b",".join((data / f"{name}.jsonl").read_bytes().split()) + b"]")
        write_jsonlines(rated / f"{name}.jsonl", [row | {"label": 1} for row in rows])
    fixed = [f for f in FIXED if not f.startswith("output_layer")]
    study = tmp_path / "study"
    main(
        ["--train", str(rated / "train.jsonl"), "--validation", str(rated / "validation.jsonl"),
         "--study", str(study), "--jobs", "1", "--trials", "2", "--minutes", "5",
         "--objective", objective, "--only", "learning_rate", *fixed,
         "output_layer=softmax", "negative_sampling_rate=1", "learning_rate=0.001..0.05"]
    )  # fmt: skip
    loaded = Study(study, objective).load()
    values = [t.value for t in loaded.trials if t.state.name == "COMPLETE"]
    assert len(values) == 2 and loaded.direction.name == (
        "MAXIMIZE" if objective.endswith("accuracy") else "MINIMIZE"
    )
    assert loaded.best_value == (max(values) if objective.endswith("accuracy") else min(values))
    assert (study / "best.pt").exists()
