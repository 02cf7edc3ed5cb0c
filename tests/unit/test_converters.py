"""The converters: MovieLens splits and STS word vectors, on small files of their formats."""

import json

import numpy as np

from export.converters import movielens, sts
from export.data import read_jsonlines


def test_per_user_split_holds_out_ten_ratings_of_every_user_who_keeps_ten(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        (user, movie, int(rng.integers(1, 6)), 0)
        for user in range(1, 31)
        for movie in rng.choice(np.arange(1, 200), size=10 + user, replace=False)
    ]
    ua_base = tmp_path / "ua.base"
    ua_base.write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in rows))
    sizes = movielens(ua_base, tmp_path / "out")
    parts = {
        n: read_jsonlines(tmp_path / "out" / f"{n}.jsonl") for n in ("train", "validation", "test")
    }
    assert sizes["enc0_vocab_size"] == 31
    test_users = np.array([u[0] for u in parts["test"].in0])
    held = np.bincount(test_users, minlength=31)[1:]
    # User u has 10 + u ratings: 10 held out, but never leaving fewer than 10 to train on.
    assert held.tolist() == [min(10, u) for u in range(1, 31)]
    pairs = {n: {(a[0], b[0]) for a, b in zip(p.in0, p.in1, strict=True)} for n, p in parts.items()}
    assert sum(len(p) for p in pairs.values()) == len(rows)
    assert not pairs["test"] & (pairs["train"] | pairs["validation"])
    assert 0 < len(parts["validation"]) < 0.1 * len(rows)


def test_the_retrieval_split_trains_on_every_rating_and_tests_on_the_liked_ones(tmp_path):
    rng = np.random.default_rng(1)
    rows = [
        (user, movie, int(rng.integers(1, 6)), 0)
        for user in range(1, 21)
        for movie in rng.choice(np.arange(1, 100), size=25, replace=False)
    ]
    ua_base = tmp_path / "ua.base"
    ua_base.write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in rows))
    movielens(ua_base, tmp_path / "retrieval", task="retrieval")
    movielens(ua_base, tmp_path / "rating")
    assert not (tmp_path / "retrieval" / "validation.jsonl").exists()
    train, test = (read_jsonlines(tmp_path / "retrieval" / f"{n}.jsonl") for n in ("train", "test"))
    stars = {(u, m): r for u, m, r, _ in rows}
    pairs = [{(a[0], b[0]) for a, b in zip(p.in0, p.in1, strict=True)} for p in (train, test)]
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == {1}
    assert all(stars[pair] >= 4 for pair in pairs[1])  # the movies to recommend
    # the same held-out ratings as the rating split, its validation trained on
    rating_test = read_jsonlines(tmp_path / "rating" / "test.jsonl")
    held = {(a[0], b[0]) for a, b in zip(rating_test.in0, rating_test.in1, strict=True)}
    assert pairs[1] == {pair for pair in held if stars[pair] >= 4}
    assert pairs[0] == set(stars) - held


def test_sts_writes_word_vectors_of_the_training_sentences(tmp_path):
    rng = np.random.default_rng(0)
    words = ["cat", "dog", "runs", "sleeps", "a", "the", "bird", "sings"]

    def lines(count: int) -> str:
        sentences = (" ".join(rng.choice(words, size=5)) for _ in range(2 * count))
        return "".join(
            f"main-captions\tMSRvid\t2012test\t{i:04d}\t{i % 6}.0\t{a}\t{b}\n"
            for i, (a, b) in enumerate(zip(sentences, sentences, strict=False))
        )

    (tmp_path / "sts-train.csv").write_text(lines(50))
    (tmp_path / "sts-dev.csv").write_text(lines(5))
    size = sts(tmp_path, tmp_path / "out", vectors=4)["vocab_size"]
    vocabulary = json.loads((tmp_path / "out" / "vocab.json").read_text())
    rows = (tmp_path / "out" / "vectors.txt").read_text().splitlines()
    assert size == len(vocabulary) == 2 + len(words)
    assert sorted(r.split(" ")[0] for r in rows) == sorted(words)  # no <pad>, no <unk>
    assert all(len(r.split(" ")) == 5 for r in rows)
