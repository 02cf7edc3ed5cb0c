"""Converters from public data sets to the hosted training format (JSON Lines).

python -m export.converters movielens ../shared/data/ml-100k/ua.base runs/movielens
python -m export.converters sts ../shared/data/stsbenchmark runs/sts [--vectors 128]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np

from export.data import write_jsonlines
from export.word_vectors import ppmi_svd, write_glove

PAD, UNKNOWN = 0, 1
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks."""
    return _WORD.findall(text.lower())


def build_vocabulary(texts: list[str], min_count: int = 1) -> dict[str, int]:
    """token -> id; 0 is padding and 1 unknown, then tokens by falling frequency."""
    counts: dict[str, int] = {}
    for text in texts:
        for token in tokenize(text):
            counts[token] = counts.get(token, 0) + 1
    ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    return {"<pad>": PAD, "<unk>": UNKNOWN} | {t: i for i, t in enumerate(ranked, 2)}


def encode(text: str, vocabulary: dict[str, int]) -> list[int]:
    return [vocabulary.get(token, UNKNOWN) for token in tokenize(text)] or [UNKNOWN]


def movielens(
    ua_base: Path,
    out: Path,
    task: str = "regression",
    test_fraction: float = 0.1,
    seed: int = 0,
    split: str = "per-user",
    per_user: int = 10,
    validation_fraction: float = 0.05,
    keep: int = 10,
    validation_per_user: int = 0,
) -> dict[str, int]:
    """`in0=[user]`, `in1=[movie]`; label: the rating, or 1 if rating > 3 (classification),
    or 1 for every rating (retrieval: "the user rated it", negatives sampled in training; all
    of the training part is train.jsonl, and test.jsonl the held-out ratings of 4 and 5 only,
    the movies to recommend).

    Writes train.jsonl, validation.jsonl (a random `validation_fraction` of the training part:
    what early stopping watches) and test.jsonl (what the model is scored on, never seen in
    training). `split="per-user"` holds out `per_user` random ratings of every user, as
    MovieLens' own `ua` split does, but never leaves a user fewer than `keep` training ratings:
    in `ua` every user keeps at least 10 (u.data users have 20 or more), while `ua.base` has
    users with only 10, whose few remaining ratings would make a different, colder test.
    `split="random"` holds out a random `test_fraction` of all ratings. `validation_per_user`
    > 0: validation holds that many ratings of every user (with the same `keep`) instead of a
    random fraction, so that it weighs users as a per-user test does: a random slice is mostly
    the heaviest users', and a tuner choosing on it picks settings for them (export.tune).
    Returns the vocabulary sizes to train with (largest id + 1).
    """
    ratings = np.loadtxt(ua_base, dtype=np.int64, usecols=(0, 1, 2))
    users, movies, stars = ratings.T
    labels = {
        "regression": stars.astype(float),
        "classification": (stars > 3).astype(int),
        "retrieval": np.ones(len(stars), dtype=int),
    }[task]
    rng = np.random.default_rng(seed)
    if split == "per-user":
        held = _per_user(users, np.ones(len(ratings), dtype=bool), per_user, keep, rng)
        parts = {"train": rng.permutation(np.flatnonzero(~held)), "test": np.flatnonzero(held)}
    elif split == "random":
        order = rng.permutation(len(ratings))
        cut = int(len(order) * (1 - test_fraction))
        parts = {"train": order[:cut], "test": order[cut:]}
    else:
        raise ValueError(f"split {split!r}: use per-user or random")
    if validation_per_user:
        training = np.zeros(len(ratings), dtype=bool)
        training[parts["train"]] = True
        held = _per_user(users, training, validation_per_user, keep, rng)
        parts["validation"] = np.flatnonzero(held)
        parts["train"] = parts["train"][~held[parts["train"]]]
    else:
        cut = int(len(parts["train"]) * (1 - validation_fraction))
        parts["train"], parts["validation"] = parts["train"][:cut], parts["train"][cut:]
    if task == "retrieval":  # every training rating a positive; no validation to stop on
        parts["train"] = np.concatenate([parts["train"], parts.pop("validation")])
        parts["test"] = parts["test"][stars[parts["test"]] > 3]
    for name, rows in parts.items():
        write_jsonlines(
            out / f"{name}.jsonl",
            (
                {"label": labels[i].item(), "in0": [int(users[i])], "in1": [int(movies[i])]}
                for i in rows
            ),
        )
    return {"enc0_vocab_size": int(users.max()) + 1, "enc1_vocab_size": int(movies.max()) + 1}


def _per_user(users: np.ndarray, among: np.ndarray, count: int, keep: int, rng) -> np.ndarray:
    """`count` random rows of every user among the rows `among`, never leaving a user fewer
    than `keep` of them."""
    held = np.zeros(len(users), dtype=bool)
    for user in np.unique(users[among]):
        rows = np.flatnonzero((users == user) & among)
        held[rng.choice(rows, size=max(0, min(count, len(rows) - keep)), replace=False)] = True
    return held


def _read_sts(path: Path) -> list[tuple[float, str, str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for fields in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            # Some lines carry extra source columns after the two sentences.
            rows.append((float(fields[4]), fields[5], fields[6]))
    return rows


def sts(data_dir: Path, out: Path, vectors: int = 0) -> dict[str, int]:
    """Sentence pairs -> token ids with a vocabulary built from the training split only.

    Writes train.jsonl, dev.jsonl and vocab.json; with `vectors` > 0 also vectors.txt, word
    vectors of that size trained on the training sentences (`export.word_vectors`), for
    `enc0_pretrained_embedding_file` with `enc0_vocab_file=vocab.json`. Returns the vocabulary
    size.
    """
    train = _read_sts(data_dir / "sts-train.csv")
    vocabulary = build_vocabulary([s for _, a, b in train for s in (a, b)])
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocabulary))
    encoded = {
        name: [(score, encode(a, vocabulary), encode(b, vocabulary)) for score, a, b in rows]
        for name, rows in (("train", train), ("dev", _read_sts(data_dir / "sts-dev.csv")))
    }
    for name, rows in encoded.items():
        write_jsonlines(
            out / f"{name}.jsonl", ({"label": s, "in0": a, "in1": b} for s, a, b in rows)
        )
    if vectors:
        sentences = [ids for _, a, b in encoded["train"] for ids in (a, b)]
        table = ppmi_svd(sentences, len(vocabulary), vectors)
        write_glove(out / "vectors.txt", vocabulary, table)
    return {"vocab_size": len(vocabulary)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="dataset", required=True)
    ml = sub.add_parser(
        "movielens", help="MovieLens 100k ua.base -> train/validation/test JSON Lines"
    )
    ml.add_argument("ua_base", type=Path)
    ml.add_argument("out", type=Path)
    ml.add_argument(
        "--task", choices=("regression", "classification", "retrieval"), default="regression"
    )
    ml.add_argument(
        "--split",
        choices=("per-user", "random"),
        default="per-user",
        help="per-user: --per-user ratings of every user held out, as MovieLens' ua split "
        "(default); random: --test-fraction of all ratings",
    )
    ml.add_argument("--per-user", type=int, default=10)
    ml.add_argument(
        "--keep",
        type=int,
        default=10,
        help="per-user: the fewest training ratings a user keeps (10, as in MovieLens' ua split)",
    )
    ml.add_argument("--test-fraction", type=float, default=0.1)
    ml.add_argument(
        "--validation-per-user",
        type=int,
        default=0,
        help="hold out this many ratings of every user for validation (0: a random 5%%); "
        "what a tuner should choose on when the test split is per user",
    )
    st = sub.add_parser("sts", help="STS Benchmark folder -> train/dev JSON Lines + vocab.json")
    st.add_argument("data_dir", type=Path)
    st.add_argument("out", type=Path)
    st.add_argument(
        "--vectors",
        type=int,
        default=0,
        metavar="DIM",
        help="also write vectors.txt: DIM-sized word vectors trained on the training sentences",
    )
    args = parser.parse_args(argv)
    if args.dataset == "movielens":
        print(
            movielens(
                args.ua_base,
                args.out,
                args.task,
                args.test_fraction,
                split=args.split,
                per_user=args.per_user,
                keep=args.keep,
                validation_per_user=args.validation_per_user,
            )
        )
    else:
        print(sts(args.data_dir, args.out, args.vectors))


if __name__ == "__main__":
    main()
