"""Train an Object2Vec model on the hosted training format and save a checkpoint.

    python -m export.train --train train.jsonl [--validation val.jsonl] --out model.pt \
        enc0_max_seq_len=20 enc0_vocab_size=1000 ... (hyperparameters as name=value)
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from contract.padding import pad
from export import checkpoint
from export.data import PairData, batches, read_jsonlines
from export.hyperparameters import Hyperparameters
from export.network import Object2Vec


@dataclass
class EpochReport:
    epoch: int
    train_loss: float
    validation: dict[str, float]


class _Optimizers:
    """Several optimizers stepped as one."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = [o for o in optimizers if o.param_groups]

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad()

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


class LazyAdam(torch.optim.Optimizer):
    """Adam on row-sparse gradients that updates only the rows a batch touched, as MXNet's
    Adam with `lazy_update` does, weight decay included (added to those rows' gradients).

    torch's SparseAdam has the same arithmetic without weight decay; this one also skips its
    per-step bookkeeping.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(
            params, {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": eps}
        )

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
                if group["weight_decay"]:
                    values = values + group["weight_decay"] * p[rows]
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                m = state["m"][rows].mul_(beta1).add_(values, alpha=1 - beta1)
                v = state["v"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
                state["m"][rows], state["v"][rows] = m, v
                correction1 = 1 - beta1 ** state["step"]
                correction2 = 1 - beta2 ** state["step"]
                denominator = (v / correction2).sqrt_().add_(group["eps"])
                p[rows] -= group["lr"] * (m / correction1) / denominator


def _optimizer(hp: Hyperparameters, model: Object2Vec) -> _Optimizers:
    """The hosted optimizer; Adam updates token embedding rows lazily, as MXNet does.

    The hosted algorithm runs on MXNet, whose Adam updates only the embedding rows a batch
    touches (row-sparse gradients). PyTorch's dense Adam keeps moving every row with stale
    momentum, which overfits the big tables of id-like inputs (MovieLens) within an epoch. So,
    with adam, the tables get sparse gradients and LazyAdam (weight decay on the rows touched).
    """
    kinds = {
        "adam": torch.optim.Adam,
        "adagrad": torch.optim.Adagrad,
        "sgd": torch.optim.SGD,
        "rmsprop": torch.optim.RMSprop,
        "adadelta": torch.optim.Adadelta,
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    tables: list[nn.Parameter] = []
    if hp.optimizer == "adam":
        for module in model.modules():
            if isinstance(module, nn.Embedding) and module.weight.requires_grad:
                module.sparse = True
                if all(module.weight is not t for t in tables):
                    tables.append(module.weight)
    dense = [p for p in trainable if all(p is not t for t in tables)]
    # Fused: one kernel per step instead of one per tensor and operation (same arithmetic).
    extra = {"fused": True} if hp.optimizer in ("adam", "adagrad", "sgd") else {}
    optimizers = [
        kinds[hp.optimizer](dense, lr=hp.learning_rate, weight_decay=hp.weight_decay, **extra)
    ]
    if tables:
        optimizers.append(LazyAdam(tables, lr=hp.learning_rate, weight_decay=hp.weight_decay))
    return _Optimizers(*optimizers)


def _with_negatives(
    in0, in1, labels, rate: int, generator: torch.Generator, pool: torch.Tensor | None = None
):
    """Adds `rate` random pairs per positive, label 0: in1 taken from another row, or (`pool`,
    negative_sampling=uniform) any of the distinct in1 sequences, equally likely."""
    if rate == 0:
        return in0, in1, labels
    parts0, parts1, parts_y = [in0], [in1], [labels]
    for _ in range(rate):
        parts0.append(in0)
        if pool is None:
            parts1.append(in1[torch.randperm(len(in1), generator=generator)])
        else:
            parts1.append(pool[torch.randint(len(pool), (len(in1),), generator=generator)])
        parts_y.append(torch.zeros_like(labels))
    width = max(part.shape[1] for part in parts1)  # padding with 0 up to the widest
    parts1 = [nn.functional.pad(part, (0, width - part.shape[1])) for part in parts1]
    return torch.cat(parts0), torch.cat(parts1), torch.cat(parts_y)


def _uniform_pool(hp: Hyperparameters, data: PairData) -> torch.Tensor | None:
    """The distinct in1 sequences of the training data, padded: what uniform negatives are
    drawn from (None for the hosted in-batch negatives)."""
    if hp.negative_sampling != "uniform" or not hp.negative_sampling_rate:
        return None
    return _padded(hp, sorted(set(_in1_rows(hp, data))))


def _in1_rows(hp: Hyperparameters, data: PairData) -> list[tuple]:
    """Each row's in1 as the model sees it (truncated to enc1_max_seq_len), hashable."""
    return [tuple(s[: hp.enc1_max_seq_len]) for s in data.in1]


def _padded(hp: Hyperparameters, sequences: list[tuple]) -> torch.Tensor:
    return torch.from_numpy(pad(sequences, hp.enc1_max_seq_len))


@dataclass
class _Catalogue:
    """negative_sampling=catalogue: every distinct in1 (`pool`), and where each row's in1 sits
    in it (`targets`, one per training row)."""

    pool: torch.Tensor
    targets: np.ndarray


def _catalogue(hp: Hyperparameters, data: PairData) -> _Catalogue:
    if hp.output_layer != "softmax" or hp.num_classes != 2:
        raise ValueError(
            "negative_sampling=catalogue scores each positive against the catalogue with the "
            "two-class softmax: set output_layer=softmax num_classes=2"
        )
    negatives = int((data.labels != 1).sum())
    if negatives:
        raise ValueError(
            f"negative_sampling=catalogue trains on positives only (label 1): {negatives} of "
            f"{len(data)} rows are not; the catalogue's other items are each row's negatives"
        )
    rows = _in1_rows(hp, data)
    distinct = sorted(set(rows))
    where = {row: i for i, row in enumerate(distinct)}
    targets = np.fromiter((where[row] for row in rows), dtype=np.int64, count=len(rows))
    return _Catalogue(_padded(hp, distinct), targets)


def catalogue_logits(model: Object2Vec, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """[queries, items] logits of class 1 against class 0 for every pair of the two encodings.

    A head with no hidden layer over hadamard and concat is linear in each side, so this is one
    matrix product (what makes a softmax over a catalogue cheap); any other head is run on
    every pair, [queries * items] rows at once."""
    hp = model.hp
    if hp.mlp_layers == 0 and "abs_diff" not in hp.comparator_list:
        linear = model.mlp[0]
        weight = linear.weight[1] - linear.weight[0]
        logits = torch.zeros(len(queries), len(items)) + (linear.bias[1] - linear.bias[0])
        start, dim = 0, hp.enc_dim
        for name in hp.comparator_list:
            if name == "hadamard":
                logits = logits + (queries * weight[start : start + dim]) @ items.T
                start += dim
            else:  # concat
                w_query, w_item = weight[start : start + dim], weight[start + dim : start + 2 * dim]
                logits = logits + (queries @ w_query)[:, None] + (items @ w_item)[None, :]
                start += 2 * dim
        return logits
    count, width = len(queries), len(items)
    pairs = model.comparator(queries.repeat_interleave(width, dim=0), items.repeat(count, 1))
    out = model.mlp(pairs).reshape(count, width, -1)
    return out[..., 1] - out[..., 0]


def _loss(hp: Hyperparameters, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if hp.output_layer == "softmax":
        return nn.functional.cross_entropy(outputs, labels.long())
    return nn.functional.mse_loss(outputs.squeeze(1), labels)


@torch.no_grad()
def evaluate(model: Object2Vec, data: PairData, batch_size: int = 512) -> dict[str, float]:
    """The hosted metric names: mean_squared_error, or accuracy and cross_entropy."""
    model.eval()
    hp = model.hp
    max_lens = (hp.enc0_max_seq_len, hp.enc1_max_seq_len)
    total, loss_sum, correct = 0, 0.0, 0
    for in0, in1, labels in batches(data, batch_size, max_lens, rng=None):
        outputs = model(in0, in1)
        loss_sum += float(_loss(hp, outputs, labels)) * len(labels)
        if hp.output_layer == "softmax":
            correct += int((outputs.argmax(dim=1) == labels.long()).sum())
        total += len(labels)
    if hp.output_layer == "softmax":
        return {"accuracy": correct / total, "cross_entropy": loss_sum / total}
    return {"mean_squared_error": loss_sum / total}


def train(
    hp: Hyperparameters,
    train_data: PairData,
    validation_data: PairData | None = None,
    seed: int = 0,
    progress: bool = True,
    on_epoch: Callable[[EpochReport], None] | None = None,
    verbose: bool = True,
) -> tuple[Object2Vec, list[EpochReport]]:
    """Trains with the hosted optimizer settings and early stopping on the validation loss.

    Early stopping, as the hosted algorithm words it: training stops after
    `early_stopping_patience` consecutive epochs whose validation loss did not fall by more than
    `early_stopping_tolerance` (relative) from the epoch before; the best epoch's weights are
    returned. `on_epoch` sees each epoch's report; what it raises ends training (a tuner's
    pruning: export.tune).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Object2Vec(hp)
    optimizer = _optimizer(hp, model)
    max_lens = (hp.enc0_max_seq_len, hp.enc1_max_seq_len)
    loss_key = "mean_squared_error" if hp.output_layer == "mean_squared_error" else "cross_entropy"
    reports: list[EpochReport] = []
    best_loss, best_state, previous_loss, stale = math.inf, None, math.inf, 0
    steps = math.ceil(len(train_data) / hp.mini_batch_size)
    pool = _uniform_pool(hp, train_data)
    catalogue = _catalogue(hp, train_data) if hp.negative_sampling == "catalogue" else None
    for epoch in range(1, hp.epochs + 1):
        started = time.perf_counter()
        model.train()
        running, seen = 0.0, 0
        bar = tqdm(
            batches(train_data, hp.mini_batch_size, max_lens, rng, with_rows=True),
            total=steps,
            desc=f"epoch {epoch}/{hp.epochs}",
            # Off where stderr is no terminal (a log file): the epoch lines below say it all.
            disable=None if progress else True,
            leave=False,
        )
        for in0, in1, labels, rows in bar:
            optimizer.zero_grad()
            if catalogue is not None:
                # dropout on both encodings, as Object2Vec.forward applies it
                logits = catalogue_logits(
                    model,
                    model.dropout(model.enc0(in0)),
                    model.dropout(model.enc1(catalogue.pool)),
                )
                targets = torch.from_numpy(catalogue.targets[rows])
                loss = nn.functional.cross_entropy(logits, targets)
            else:
                in0, in1, labels = _with_negatives(
                    in0, in1, labels, hp.negative_sampling_rate, generator, pool
                )
                loss = _loss(hp, model(in0, in1), labels)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{running / seen:.4f}", refresh=False)
        validation = evaluate(model, validation_data) if validation_data is not None else {}
        reports.append(EpochReport(epoch, running / seen, validation))
        metrics = "  ".join(f"validation:{k}={v:.4f}" for k, v in validation.items())
        seconds = time.perf_counter() - started
        if verbose:
            print(
                f"#epoch {epoch}: train:loss={running / seen:.4f}  {metrics}  ({seconds:.1f} s)",
                flush=True,
            )
        if on_epoch is not None:
            on_epoch(reports[-1])
        if not validation:
            continue
        loss_now = validation[loss_key]
        # "Between consecutive epochs", as the hosted documentation words it: a noisy epoch
        # followed by a clear recovery counts as progress. The weights kept are the best
        # epoch's, however small its lead.
        improved = loss_now < previous_loss * (1 - hp.early_stopping_tolerance)
        previous_loss = loss_now
        if loss_now < best_loss:
            best_loss, best_state = loss_now, copy.deepcopy(model.state_dict())
        if improved:
            stale = 0
        else:
            stale += 1
            if stale >= hp.early_stopping_patience:
                if verbose:
                    print(
                        f"early stopping after epoch {epoch}: best validation:{loss_key}="
                        f"{best_loss:.4f}",
                        flush=True,
                    )
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            module.sparse = False  # a training detail; export and serving see dense tables
    return model.eval(), reports


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"hyperparameter {pair!r}: write it as name=value")
        values[name.strip()] = value.strip()
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--train", type=Path, required=True, help="training JSON Lines file")
    parser.add_argument(
        "--validation", type=Path, help="validation JSON Lines file (early stopping)"
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("hyperparameters", nargs="*", help="name=value, the hosted names")
    args = parser.parse_args(argv)
    hp = Hyperparameters.from_dict(parse_assignments(args.hyperparameters))
    validation = read_jsonlines(args.validation) if args.validation else None
    model, _ = train(hp, read_jsonlines(args.train), validation, seed=args.seed)
    checkpoint.save(model, args.out)
    print(f"checkpoint written to {args.out}")


if __name__ == "__main__":
    main()
