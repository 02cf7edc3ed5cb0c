"""The MovieLens converter's splits, on a small ratings file of the ua.base format."""

import numpy as np

from export.converters import movielens
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
