"""The demo model: trained for real on deterministic synthetic data, no downloads needed.

    python -m export.demo [--repository model_repository] [--if-missing]

The task has learnable structure: token ids 1..TOPIC_TOKENS-1 carry a topic (id % TOPICS), and
a sequence is mostly words of one topic plus noise from the whole vocabulary. A pair is labelled
1 when both sequences share a topic. The vocabulary is larger than 10178, the largest id of the
hosted documentation's example request, so that request runs as written.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from export.data import PairData

VOCAB_SIZE = 12_000
TOPICS = 8
TOPIC_TOKENS = 400
MAX_SEQ_LEN = 100
SEED = 1234

HYPERPARAMETERS = {
    "enc0_network": "hcnn",
    "enc1_network": "enc0",
    "enc0_vocab_size": VOCAB_SIZE,
    "enc1_vocab_size": VOCAB_SIZE,
    "enc0_max_seq_len": MAX_SEQ_LEN,
    "enc1_max_seq_len": MAX_SEQ_LEN,
    "enc_dim": 16,
    "enc0_token_embedding_dim": 16,
    "enc0_layers": 2,
    "mlp_layers": 1,
    "mlp_dim": 32,
    "mlp_activation": "relu",
    "output_layer": "softmax",
    "num_classes": 2,
    "learning_rate": 0.003,
    "mini_batch_size": 64,
    "epochs": 10,
    "early_stopping_patience": 3,
}


def _sequence(rng: np.random.Generator, topic: int) -> list[int]:
    length = int(rng.integers(3, 30))
    topical = rng.integers(0, TOPIC_TOKENS // TOPICS, size=length) * TOPICS + topic
    topical[topical == 0] = TOPICS  # id 0 is padding; TOPICS has topic 0 as well
    noise = rng.integers(1, VOCAB_SIZE, size=length)
    return np.where(rng.random(length) < 0.8, topical, noise).tolist()


def synthetic_pairs(count: int, seed: int) -> PairData:
    rng = np.random.default_rng(seed)
    in0, in1, labels = [], [], []
    for _ in range(count):
        topic = int(rng.integers(TOPICS))
        same = rng.random() < 0.5
        other = topic if same else int((topic + rng.integers(1, TOPICS)) % TOPICS)
        in0.append(_sequence(rng, topic))
        in1.append(_sequence(rng, other))
        labels.append(float(same))
    return PairData(in0, in1, np.asarray(labels, dtype=np.float32))


CATALOGUE_ITEMS = 2_000


def write_catalogue(path: Path, count: int = CATALOGUE_ITEMS, seed: int = SEED + 2) -> Path:
    """Documents of the demo's topics, `{"id": "doc-00042", "topic": 2, "in1": [...]}` a line:
    the demo's catalogue for nearest neighbours (an in0 of topic t should find topic t's)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        for number in range(count):
            topic = int(rng.integers(TOPICS))
            item = {"id": f"doc-{number:05d}", "topic": topic, "in1": _sequence(rng, topic)}
            out.write(json.dumps(item) + "\n")
    return path


def build(
    repository: Path, checkpoint_path: Path, progress: bool = True, **overrides
) -> dict[str, float]:
    """Trains, checkpoints and exports the demo model (HYPERPARAMETERS, with `overrides`) with
    its catalogue index; returns its validation metrics."""
    from export import checkpoint, neighbours
    from export.hyperparameters import Hyperparameters
    from export.onnx_export import export
    from export.train import evaluate, train

    train_data, validation = synthetic_pairs(20000, SEED), synthetic_pairs(1000, SEED + 1)
    hp = Hyperparameters.from_dict(HYPERPARAMETERS | overrides)
    model, _ = train(hp, train_data, validation, seed=SEED, progress=progress)
    checkpoint.save(model, checkpoint_path)
    samples = list(zip(validation.in0[:8], validation.in1[:8], strict=True))
    export(model, repository, samples)
    catalogue = write_catalogue(Path(checkpoint_path).parent / "catalogue.jsonl")
    neighbours.build(repository, catalogue, name="documents", progress=progress)
    return evaluate(model, validation)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/model.pt"))
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when the repository already holds a model",
    )
    args = parser.parse_args(argv)
    if args.if_missing and (args.repository / "facts.json").exists():
        print(f"{args.repository} already holds a model; not rebuilding the demo")
        return
    start = time.perf_counter()
    metrics = build(args.repository, args.checkpoint)
    print(
        f"demo model built in {time.perf_counter() - start:.1f} s: "
        + ", ".join(f"validation:{k}={v:.3f}" for k, v in metrics.items())
    )


if __name__ == "__main__":
    main()
