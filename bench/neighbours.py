"""Nearest neighbours, measured: quality on MovieLens, speed on a 1,000,000-item catalogue.

    python -m bench.neighbours [--part retrieval,movielens,million] [--seconds 10]
                               [--out runs/bench]

retrieval (needs ../shared/data): docs/neighbours.md's retrieval recipe (its flow, once, into
runs/ml-retrieval), served with the `model` similarity: every user of the held-out ratings of
4-5 asks for `neighbours=10` with its training movies in `exclude`; hit rate@10 and NDCG@10
beside EASE (lambda 200) and popularity on the same split, in the same run.

movielens (needs ../shared/data): docs/serving-your-model.md's model (its flow, once, into
runs/ml), exported with `--catalogue vocabulary` (all 1,682 movies), served by the embedded
server once per similarity. Every user of the held-out ratings asks for the whole catalogue
ranked (`neighbours=1682`) through client.api over HTTP; printed:
  * recall@10 of the served top 10 against a brute force on the same model, in PyTorch, from
    the checkpoint (every movie scored for every user);
  * hit rate@10 and NDCG@10 on the held-out ratings of 4 and 5 (each user's training and
    validation movies left out of the ranking), beside ranking by popularity (ratings in
    training).
million: the demo model with a catalogue of 1,000,000 documents of its topics; one in0 a
request, `neighbours=10`, through Triton's HTTP port (a KServe binary request: the content
type rides as a request parameter) at concurrency 1 and 16, for the `model` and the `dot`
similarities, each indexed without exclusions and with 1,000 (the default), where requests that
exclude 100 ids each are also sent at c16: queries/s, p50 and p99; the served answers checked
against a brute force on a few queries; and the search alone in ONNX Runtime (1 and 16 queries
a call).
Writes runs/bench/neighbours.md.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import torch

from bench.load import load
from bench.local import RUNS, arguments
from bench.suite import _fresh_repository
from bench.timing import repeat
from client.api import Client
from contract.names import JSONLINES
from contract.neighbours import NEIGHBOURS_MODEL, Catalogue
from contract.padding import pad
from export import checkpoint, demo, neighbours
from export.onnx_export import export
from export.recipes import MOVIELENS_RETRIEVAL, assignments, ranking_quality
from server.launcher.embedded import PROJECT_ROOT, EmbeddedServer
from server.launcher.process import free_port

ML = RUNS / "ml"
DATA = PROJECT_ROOT.parent / "shared" / "data" / "ml-100k" / "ua.base"
TRAIN = [  # docs/serving-your-model.md's flow, step 2
    "enc0_network=pooled_embedding",
    "enc1_network=pooled_embedding",
    "enc0_vocab_size=944",
    "enc1_vocab_size=1683",
    "enc0_max_seq_len=1",
    "enc1_max_seq_len=1",
    "enc_dim=1024",
    "mlp_layers=1",
    "mlp_dim=256",
    "mlp_activation=tanh",
    "output_layer=mean_squared_error",
    "learning_rate=0.001",
    "mini_batch_size=64",
    "epochs=20",
]
MOVIES = 1682
RETRIEVAL = RUNS / "ml-retrieval"
EASE_LAMBDA = 200.0


def _server(repository: Path, log: Path) -> EmbeddedServer:
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    return EmbeddedServer(repository, **ports).start(stdout=open(log, "w"), timeout=600)  # noqa: SIM115


# ---- MovieLens --------------------------------------------------------------------------------


def _ratings(path: Path) -> list[tuple[int, int, float]]:
    rows = (orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())
    return [(r["in0"][0], r["in1"][0], float(r["label"])) for r in rows]


def _movielens_model() -> Path:
    model = ML / "model.pt"
    if not model.exists():
        python = sys.executable
        subprocess.run(
            [python, "-m", "export.converters", "movielens", str(DATA), str(ML)], check=True
        )
        subprocess.run(
            [python, "-m", "export.train", "--train", str(ML / "train.jsonl"), "--validation",
             str(ML / "validation.jsonl"), "--out", str(model), *TRAIN],
            check=True,
        )  # fmt: skip
    return model


def _scores(model, queries: torch.Tensor, items: torch.Tensor, similarity: str) -> np.ndarray:
    """[queries, items] scores in PyTorch from the checkpoint, one query at a time."""
    rows = []
    with torch.no_grad():
        for query in queries:
            query = query[None]
            if similarity == "model":
                answer = model.mlp(model.comparator(query.expand_as(items), items))
                if model.hp.output_layer == "softmax":
                    classes = torch.arange(answer.shape[1], dtype=torch.float32)
                    answer = torch.softmax(answer, 1) @ classes[:, None]
                scores = answer[:, 0]
            elif similarity == "dot":
                scores = items @ query[0]
            elif similarity == "cosine":
                scores = torch.nn.functional.cosine_similarity(items, query, dim=1)
            else:
                scores = -torch.linalg.norm(items - query, dim=1)
            rows.append(scores.double().numpy())
    return np.array(rows)


def _brute_force(model, users: list[int], similarity: str) -> np.ndarray:
    """[users, movies + 1] scores (column 0, padding, -inf)."""
    with torch.no_grad():
        movies = model.encode(1, torch.arange(1, MOVIES + 1).reshape(-1, 1))
        queries = model.encode(0, torch.tensor([[u] for u in users]))
    out = np.full((len(users), MOVIES + 1), -np.inf)
    out[:, 1:] = _scores(model, queries, movies, similarity)
    return out


def movielens(out: Path) -> list[str]:
    checkpoint_path = _movielens_model()
    model = checkpoint.load(checkpoint_path).eval()
    train = _ratings(ML / "train.jsonl") + _ratings(ML / "validation.jsonl")
    test = _ratings(ML / "test.jsonl")
    seen, liked = defaultdict(set), defaultdict(set)
    for user, movie, _ in train:
        seen[user].add(movie)
    for user, movie, rating in test:
        if rating >= 4:
            liked[user].add(movie)
    users = sorted(liked)
    counts = np.bincount([m for _, m, _ in train], minlength=MOVIES + 1)
    popular = [int(m) for m in np.argsort(-counts, kind="stable") if m]
    lines = [
        f"MovieLens 100k, serving-your-model.md's model ({checkpoint_path}), "
        "catalogue `vocabulary` "
        f"({MOVIES} movies); {len(users)} users with held-out ratings of 4-5 "
        f"({sum(map(len, liked.values()))} of them); training movies left out of each ranking.",
        "",
        "| ranking | served = brute force (recall@10) | hit rate@10 | NDCG@10 | served "
        "queries/s (1,682 ranked each) | served queries/s, top 10 excluding the user's "
        "training movies (= the ranking less them) |",
        "|---|---|---|---|---|---|",
    ]
    hr, ndcg = ranking_quality({u: popular for u in users}, liked, seen)
    lines.append(f"| popularity (ratings in training) | | {hr:.3f} | {ndcg:.3f} | | |")
    repository = _fresh_repository(out / "neighbours" / "movielens")
    export(model, repository)
    for similarity in neighbours.SIMILARITIES:
        neighbours.build(
            repository, neighbours.VOCABULARY, similarity, max_k=MOVIES, progress=False
        )
        with _server(repository, out / f"neighbours-ml-{similarity}.log") as server:
            ranked, rate = _ask(server, users, MOVIES)
            excluding, excluding_rate = _ask(server, users, 10, seen)
        same = all(excluding[u] == [m for m in ranked[u] if m not in seen[u]][:10] for u in users)
        reference = _brute_force(model, users, similarity)
        recall = np.mean(
            [
                len(
                    set(ranked[u][:10])
                    & set(np.argsort(-reference[i], kind="stable")[:10].tolist())
                )
                / 10
                for i, u in enumerate(users)
            ]
        )
        hr, ndcg = ranking_quality(ranked, liked, seen)
        lines.append(
            f"| `{similarity}` | {recall:.3f} | {hr:.3f} | {ndcg:.3f} | {rate:,.0f} "
            f"| {excluding_rate:,.0f} ({'=' if same else 'differs'}) |"
        )
        print(lines[-1], flush=True)
    return lines


def _ask(server, users: list[int], k: int, seen: dict | None = None) -> tuple[dict, float]:
    """Each user's served neighbours (their `seen` movies excluded, when given), 50 users a
    request, and users/s."""
    ranked, start = {}, time.perf_counter()
    with Client(server.http_url, timeout=600) as client:
        for first in range(0, len(users), 50):
            chunk = users[first : first + 50]
            history = [sorted(seen[u]) for u in chunk] if seen is not None else None
            found = client.neighbours([[u] for u in chunk], k=k, exclude=history)
            ranked |= {u: [n.id for n in row] for u, row in zip(chunk, found, strict=True)}
    return ranked, len(users) / (time.perf_counter() - start)


def _ease(train: list[tuple[int, int, float]], users: list[int], lam: float) -> np.ndarray:
    """EASE (Steck 2019), the closed-form item model: [users, movies + 1] scores."""
    X = np.zeros((max(u for u, _, _ in train) + 1, MOVIES + 1))
    for user, movie, _ in train:
        X[user, movie] = 1.0
    gram = X.T @ X + lam * np.eye(MOVIES + 1)
    P = np.linalg.inv(gram)
    B = P / -np.diag(P)
    np.fill_diagonal(B, 0.0)
    scores = X[users] @ B
    scores[:, 0] = -np.inf
    return scores


def retrieval(out: Path) -> list[str]:
    """The retrieval recipe served, beside EASE and popularity on the same split."""
    python = sys.executable
    if not (RETRIEVAL / "model.pt").exists():
        subprocess.run(
            [python, "-m", "export.converters", "movielens", str(DATA), str(RETRIEVAL),
             "--task", "retrieval"],
            check=True,
        )  # fmt: skip
        subprocess.run(
            [python, "-m", "export.train", "--train", str(RETRIEVAL / "train.jsonl"),
             "--out", str(RETRIEVAL / "model.pt"), *assignments(MOVIELENS_RETRIEVAL)],
            check=True,
        )  # fmt: skip
    train = _ratings(RETRIEVAL / "train.jsonl")
    seen, liked = defaultdict(set), defaultdict(set)
    for user, movie, _ in train:
        seen[user].add(movie)
    for user, movie, _ in _ratings(RETRIEVAL / "test.jsonl"):
        liked[user].add(movie)
    users = sorted(liked)
    repository = _fresh_repository(out / "neighbours" / "retrieval")
    export(checkpoint.load(RETRIEVAL / "model.pt").eval(), repository)
    neighbours.build(repository, neighbours.VOCABULARY, "model", progress=False)
    with _server(repository, out / "neighbours-retrieval.log") as server:
        served, rate = _ask(server, users, 10, seen)
    counts = np.bincount([m for _, m, _ in train], minlength=MOVIES + 1)
    popular = [int(m) for m in np.argsort(-counts, kind="stable") if m]
    ease = _ease(train, users, EASE_LAMBDA)
    rankings = {
        "served neighbours, the retrieval recipe (`model` similarity, `exclude`)": served,
        f"EASE, lambda {EASE_LAMBDA:g}": {
            u: np.argsort(-ease[i], kind="stable").tolist() for i, u in enumerate(users)
        },
        "popularity (ratings in training)": {u: popular for u in users},
    }
    found = {name: ranking_quality(r, liked, seen) for name, r in rankings.items()}
    ease_hr, ease_ndcg = found[f"EASE, lambda {EASE_LAMBDA:g}"]
    lines = [
        f"MovieLens 100k, the retrieval recipe ({RETRIEVAL}); {len(users)} users with held-out "
        f"ratings of 4-5 ({sum(map(len, liked.values()))}); each user's training movies left "
        f"out (served: `exclude`); {rate:,.0f} users/s served.",
        "",
        "| ranking | hit rate@10 | NDCG@10 | of EASE (hit rate / NDCG) |",
        "|---|---|---|---|",
    ]
    for name, (hr, ndcg) in found.items():
        lines.append(
            f"| {name} | {hr:.3f} | {ndcg:.3f} | {hr / ease_hr:.3f}x / {ndcg / ease_ndcg:.3f}x |"
        )
        print(lines[-1], flush=True)
    return lines


# ---- a million items --------------------------------------------------------------------------


def kserve_request(body: bytes, content_type: str, width: int = 512) -> bytes:
    """A KServe binary request for the front door with its JSON header padded to `width`
    bytes, so one Inference-Header-Content-Length serves every body."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "body",
                    "shape": [1, len(body)],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": len(body)},
                }
            ],
            "outputs": [{"name": "response", "parameters": {"binary_data": True}}],
            "parameters": {"content_type": content_type},
        }
    )
    return header.ljust(width) + body


# The demo model with a linear head (no hidden layer, hadamard features): its `model` similarity
# is one matrix product (export.neighbours.linear_head). It learns at a higher rate, for longer
# (the demo's own 0.003 and 10 epochs leave it at chance).
ALIGNED = {
    "comparator_list": "hadamard",
    "mlp_layers": 0,
    "learning_rate": 0.01,
    "epochs": 20,
    "early_stopping_patience": 6,
}


def _million_model(out: Path, name: str, source: Path, **overrides):
    """(a repository to index in, the checkpoint, its catalogue's ids and vectors)."""
    base = out / "models" / name / "model_repository"
    if not (base / "facts.json").exists():
        demo.build(_fresh_repository(base), base.parent / "model.pt", progress=False, **overrides)
    repository = out / "neighbours" / f"million-{name}"
    if repository.exists():
        shutil.rmtree(repository)
    shutil.copytree(base, repository, ignore=shutil.ignore_patterns("neighbours", "__pycache__"))
    shutil.copy2(
        PROJECT_ROOT / "model_repository" / "object2vec" / "1" / "model.py",
        repository / "object2vec" / "1",
    )
    model = checkpoint.load(base.parent / "model.pt").eval()
    return repository, model, _encode_items(model, source)


def million(
    out: Path, seconds: float, items: int = 1_000_000, only: str | None = None
) -> list[str]:
    source = demo.write_catalogue(out / "neighbours" / "million.jsonl", items)
    topics = [orjson.loads(line)["topic"] for line in source.read_bytes().splitlines()]
    builds = {"demo": ("demo", {}), "aligned": ("demo-aligned", ALIGNED)}
    names = [only] if only else list(builds)
    models = {n: _million_model(out, builds[n][0], source, **builds[n][1]) for n in names}
    rng = np.random.default_rng(9)
    asked = [int(rng.integers(demo.TOPICS)) for _ in range(64)]
    queries = [demo._sequence(rng, topic) for topic in asked]
    bodies = [
        kserve_request(orjson.dumps({"in0": q}) + b"\n", f"{JSONLINES}; neighbours=10")
        for q in queries
    ]
    # each query with a history of 100 catalogue ids to leave out
    histories = [[f"doc-{i:05d}" for i in rng.choice(items, 100)] for _ in queries]
    excluding = [
        kserve_request(
            orjson.dumps({"in0": q, "exclude": h}) + b"\n", f"{JSONLINES}; neighbours=10"
        )
        for q, h in zip(queries, histories, strict=True)
    ]
    headers = {"Inference-Header-Content-Length": "512", "Content-Type": "application/octet-stream"}
    lines = [
        f"{items:,} documents of the demo model's topics (enc_dim 16); one in0 a request, "
        f"`neighbours=10`, Triton HTTP; {seconds:g} s per concurrency. `aligned`: the demo "
        f"trained with {ALIGNED} (a linear head).",
        "",
        "| model, similarity | build s | search alone, ms a call (1 / 16 queries) "
        "| queries/s c1 | p50 / p99 ms c1 | queries/s c16 | p50 / p99 ms c16 "
        "| queries/s c16, each excluding 100 ids | p50 / p99 ms c16, excluding "
        "| served = brute force (recall@10, 8 queries) | top 10 of the query's topic |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    variants = [
        ("demo", "dot", 0),
        ("demo", "dot", 1000),
        ("demo", "model", 0),
        ("demo", "model", 1000),
        ("aligned", "model", 1000),
    ]
    for name, similarity, max_exclude in (v for v in variants if v[0] in models):
        repository, model, catalogue = models[name]
        start = time.perf_counter()
        built = neighbours.build(
            repository, source, similarity, progress=False, max_exclude=max_exclude
        )
        seconds_built = time.perf_counter() - start
        alone = _search_alone(repository)
        runs = [(1, bodies), (16, bodies)] + ([(16, excluding)] if max_exclude else [])
        log = out / f"neighbours-1m-{name}-{similarity}.log"
        with _server(repository, log) as server:
            url = f"http://{server.http_url}/v2/models/object2vec/infer"
            asyncio.run(load(url, bodies, headers, 2, 1.0))  # warm-up
            folded = " (one product)" if built.linear else ""
            row = [
                f"{name}, `{similarity}`{folded}, max_exclude {max_exclude}",
                f"{seconds_built:.0f}",
                " / ".join(f"{a:.1f}" for a in alone),
            ]
            for concurrency, sent in runs:
                latencies, took = asyncio.run(load(url, sent, headers, concurrency, seconds))
                lat = np.array(latencies) * 1e3
                row += [
                    f"{len(lat) / took:,.1f}",
                    f"{np.percentile(lat, 50):.1f} / {np.percentile(lat, 99):.1f}",
                ]
            row += [] if max_exclude else ["", ""]
            with Client(server.http_url, timeout=600) as client:  # one a request: the budget
                served = [client.neighbours([q], k=10)[0] for q in queries[:8]]
        row.append(f"{_recall(model, catalogue, queries[:8], served, similarity):.3f}")
        on_topic = [
            topics[int(n.id[4:])] == asked[i] for i, found in enumerate(served) for n in found
        ]
        row.append(f"{np.mean(on_topic):.0%}")
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], flush=True)
    return lines


def _search_alone(repository: Path) -> list[float]:
    session = ort.InferenceSession(str(repository / NEIGHBOURS_MODEL / "1" / "model.onnx"))
    dim = Catalogue.load(repository).enc_dim
    found = []
    for batch in (1, 16):
        query = np.random.default_rng(0).random((batch, dim), dtype=np.float32)
        session.run(None, {"query": query})
        times = repeat(lambda query=query: session.run(None, {"query": query}), rounds=3)
        found.append(min(times) * 1e3)
    return found


def _encode_items(model, source: Path) -> tuple[list, torch.Tensor]:
    """The catalogue's ids and enc1 vectors in PyTorch, by length so padding stays small."""
    items = [orjson.loads(line) for line in source.read_bytes().splitlines()]
    order = sorted(range(len(items)), key=lambda i: len(items[i]["in1"]))
    vectors = torch.empty(len(items), model.hp.enc_dim)
    with torch.no_grad():
        for first in range(0, len(order), 4096):
            rows = order[first : first + 4096]
            vectors[rows] = model.encode(
                1, torch.from_numpy(pad([items[i]["in1"] for i in rows], 10**9))
            )
    return [item["id"] for item in items], vectors


def _recall(model, catalogue, queries: list[list[int]], served, similarity: str) -> float:
    """Served top 10 against every item scored by the checkpoint in PyTorch: the share of
    served items that score at least the 10th best (items that tie with it count, as an exact
    search may return any of them; a saturated classifier ties many at 1.0)."""
    ids, items = catalogue
    row_of = {item: row for row, item in enumerate(ids)}
    with torch.no_grad():
        vectors = torch.cat([model.encode(0, torch.from_numpy(pad([q], 10**9))) for q in queries])
    scores = _scores(model, vectors, items, similarity)
    recalls = []
    for row in range(len(queries)):
        tenth = np.sort(scores[row])[::-1][9]
        found = scores[row][[row_of[n.id] for n in served[row]]]
        recalls.append(float(np.mean(found >= tenth - 1e-6)))
    return float(np.mean(recalls))


def main() -> None:
    parser = arguments(__doc__, 10.0)
    parser.add_argument("--part", default="retrieval,movielens,million")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--model", choices=("demo", "aligned"), help="million: this model only")
    parser.add_argument("--out", type=Path, default=RUNS / "bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = []
    parts = args.part.split(",")
    for name, part in (("retrieval", retrieval), ("movielens", movielens)):
        if name not in parts:
            continue
        if DATA.exists():
            report += part(args.out) + [""]
        else:
            print(f"{DATA} is absent: {name} skipped", file=sys.stderr)
    if "million" in parts:
        report += million(args.out, args.seconds, args.items, args.model)
    (args.out / "neighbours.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))


if __name__ == "__main__":
    main()
