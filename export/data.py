"""The hosted training format: JSON Lines of {"label": ..., "in0": [...], "in1": [...]}."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import torch

from contract.padding import pad


@dataclass
class PairData:
    in0: list[list[int]]
    in1: list[list[int]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def read_jsonlines(path: Path) -> PairData:
    in0, in1, labels = [], [], []
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                in0.append(list(record["in0"]))
                in1.append(list(record["in1"]))
                labels.append(float(record["label"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}:{number}: not a training record ({error})") from None
    return PairData(in0, in1, np.asarray(labels, dtype=np.float32))


def write_jsonlines(path: Path, records: Iterable[dict]) -> int:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "wb") as out:
        for record in records:
            out.write(orjson.dumps(record) + b"\n")
            count += 1
    return count


def batches(
    data: PairData,
    batch_size: int,
    max_lens: tuple[int, int],
    rng: np.random.Generator | None,
    with_rows: bool = False,
) -> Iterator[tuple]:
    """Mini batches of padded tensors (in0, in1, labels, and the rows' indices `with_rows`);
    shuffled when `rng` is given."""
    order = rng.permutation(len(data)) if rng is not None else np.arange(len(data))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = (
            torch.from_numpy(pad([data.in0[i] for i in rows], max_lens[0])),
            torch.from_numpy(pad([data.in1[i] for i in rows], max_lens[1])),
            torch.from_numpy(data.labels[rows]),
        )
        yield (*batch, rows) if with_rows else batch
