"""The retrieval recipe (export/recipes.py): what the docs print is what is trained, and on a
slice of MovieLens it ranks held-out liked movies above popularity."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import torch

from export.converters import movielens
from export.data import read_jsonlines
from export.hyperparameters import Hyperparameters
from export.recipes import MOVIELENS_RETRIEVAL, assignments, ranking_quality
from export.train import train
from tests.helpers import PROJECT_ROOT

USERS = 300  # the slice: users 1..300, about a third of the ratings


def test_the_docs_block_is_the_recipe():
    text = (PROJECT_ROOT / "docs" / "neighbours.md").read_text()
    block = text[
        text.index("--task retrieval") : text.index("export.onnx_export runs/ml-retrieval")
    ]
    written = re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " "))
    assert written == list(MOVIELENS_RETRIEVAL.items())


def test_the_recipe_ranks_liked_movies_above_popularity_on_a_slice(shared_data, tmp_path):
    movielens(shared_data / "ml-100k" / "ua.base", tmp_path, task="retrieval")
    data = read_jsonlines(tmp_path / "train.jsonl")
    rows = [i for i, user in enumerate(data.in0) if user[0] <= USERS]
    data.in0, data.in1 = [data.in0[i] for i in rows], [data.in1[i] for i in rows]
    data.labels = data.labels[rows]
    test = read_jsonlines(tmp_path / "test.jsonl")
    seen, liked = defaultdict(set), defaultdict(set)
    for (user,), (movie,) in zip(data.in0, data.in1, strict=True):
        seen[user].add(movie)
    for (user,), (movie,) in zip(test.in0, test.in1, strict=True):
        if user <= USERS:
            liked[user].add(movie)
    hp = Hyperparameters.from_dict(dict(a.split("=") for a in assignments(MOVIELENS_RETRIEVAL)))
    model, _ = train(hp, data, None, progress=False, verbose=False)
    movies = torch.arange(1, hp.enc1_vocab_size).reshape(-1, 1)
    ranked = {}
    with torch.no_grad():
        items = model.encode(1, movies)
        for user in liked:
            query = model.encode(0, torch.tensor([[user]])).expand_as(items)
            p_rated = torch.softmax(model.mlp(model.comparator(query, items)), 1)[:, 1]
            ranked[user] = (np.argsort(-p_rated.numpy(), kind="stable") + 1).tolist()
    counts = np.bincount([m for (m,) in data.in1], minlength=hp.enc1_vocab_size)
    popular = [int(m) for m in np.argsort(-counts, kind="stable") if m]
    recipe = ranking_quality(ranked, liked, seen)
    popularity = ranking_quality({u: popular for u in liked}, liked, seen)
    print(f"slice of {len(liked)} users: recipe {recipe}, popularity {popularity}")
    assert recipe[0] > popularity[0] and recipe[1] > popularity[1]
