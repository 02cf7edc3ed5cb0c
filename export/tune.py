"""Hyperparameter tuning as SageMaker's automatic model tuning offers it for Object2Vec.

    python -m export.tune --train train.jsonl --validation validation.jsonl --study runs/tune \
        [--objective validation:mean_squared_error] [--trials 40] [--minutes 30] [--jobs 2] \
        enc0_vocab_size=944 ... learning_rate=0.0001..0.01 mlp_activation=tanh|relu
    python -m export.tune --study runs/tune --score test.jsonl    # once, after tuning

Hyperparameters on the command line, with the hosted names:
  name=value        fixed (the data's sizes, the encoders, output_layer, ...)
  name=low..high    searched in that range (a tunable one's documented range otherwise)
  name=a|b|c        searched among these values
Every hosted tunable hyperparameter that applies to the encoders chosen and is not fixed is
searched in its documented range (TUNABLE); `--only a,b` searches those alone.

The objective is the hosted metric, by its hosted name and direction: validation:accuracy
(maximise), validation:cross_entropy or validation:mean_squared_error (minimise), read after
each epoch on the validation file. The test split is never an argument: score it once, after
tuning, from the best checkpoint.

Optuna runs the study (a well-kept library with a TPE sampler, median pruning fed epoch by
epoch, and a study kept in SQLite): a trial whose epoch metric is worse than the median of
earlier trials at that epoch is stopped (pruned). The study lives in `--study`: run the same
command again and it goes on where it stopped, toward the same total of trials. `--jobs N`
runs N worker processes on the same study, one core's worth of threads each. At the end: a
table of the trials (`trials.md`) and the best trial's checkpoint (`best.pt`), ready for
`python -m export.onnx_export`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import optuna
import torch

from export import checkpoint
from export.data import PairData, read_jsonlines
from export.hyperparameters import ACTIVATIONS, OPTIMIZERS, Hyperparameters
from export.train import EpochReport, evaluate, parse_assignments, train

OBJECTIVES = {  # hosted metric name -> (key in export.train.evaluate's answer, direction)
    "validation:accuracy": ("accuracy", "maximize"),
    "validation:cross_entropy": ("cross_entropy", "minimize"),
    "validation:mean_squared_error": ("mean_squared_error", "minimize"),
}
_COMPLETE = optuna.trial.TrialState.COMPLETE
_COUNTED = (_COMPLETE, optuna.trial.TrialState.PRUNED)  # what the trial budget counts


@dataclass(frozen=True)
class Range:
    """A tunable hyperparameter's search space."""

    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    integer: bool = False
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str):
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)


# The hosted documentation's tunable hyperparameters and their ranges. Log scale where a range
# spans orders of magnitude. weight_decay's documented range starts at 0, which a log scale
# cannot hold: it starts at 1e-6 here, a weight decay too small to matter.
TUNABLE = {
    "dropout": Range(0.0, 1.0),
    "early_stopping_patience": Range(1, 5, integer=True),
    "early_stopping_tolerance": Range(0.001, 0.1, log=True),
    "enc_dim": Range(4, 4096, integer=True, log=True),
    "enc0_cnn_filter_width": Range(1, 5, integer=True),
    "enc1_cnn_filter_width": Range(1, 5, integer=True),
    "enc0_layers": Range(1, 4, integer=True),
    "enc1_layers": Range(1, 4, integer=True),
    "enc0_token_embedding_dim": Range(5, 300, integer=True, log=True),
    "enc1_token_embedding_dim": Range(5, 300, integer=True, log=True),
    "epochs": Range(4, 20, integer=True),
    "learning_rate": Range(1e-6, 1.0, log=True),
    "mini_batch_size": Range(1, 8192, integer=True, log=True),
    "mlp_activation": Range(choices=ACTIVATIONS),
    "mlp_dim": Range(16, 1024, integer=True, log=True),
    "mlp_layers": Range(1, 4, integer=True),
    "optimizer": Range(choices=OPTIMIZERS),
    "weight_decay": Range(1e-6, 10000.0, log=True),
}
# What only some encoders have
_ONLY_FOR = {
    "cnn_filter_width": ("hcnn",),
    "layers": ("hcnn", "bilstm"),
    "token_embedding_dim": ("hcnn", "bilstm"),  # pooled_embedding's is enc_dim
}


def search_space(assignments: dict[str, str], only: set[str] | None = None) -> dict[str, Range]:
    """What to search: the ranges given on the command line, then every tunable hyperparameter
    that applies to the encoders and is neither fixed nor left out by `only`."""
    space: dict[str, Range] = {}
    known = {f.name: f for f in fields(Hyperparameters)}
    for name, value in assignments.items():
        base = TUNABLE.get(name, Range(integer=name in known and known[name].type == "int"))
        if "|" in value:
            space[name] = Range(choices=tuple(value.split("|")))
        elif ".." in value:
            low, high = (float(v) for v in value.split("..", 1))
            log = high / low >= 100 if low > 0 else False
            space[name] = Range(low, high, integer=base.integer, log=log)
    fixed = {n for n in assignments if n not in space}
    for name, found in TUNABLE.items():
        if name in fixed or name in space or (only is not None and name not in only):
            continue
        side, _, suffix = name.partition("_")
        if side in ("enc0", "enc1") and suffix in _ONLY_FOR:
            network = assignments.get(f"{side}_network", known[f"{side}_network"].default)
            if network not in _ONLY_FOR[suffix]:
                continue
        space[name] = found
    return space


class _Pruned(Exception):
    pass


@dataclass
class Study:
    folder: Path
    objective: str

    @property
    def storage(self) -> str:
        return f"sqlite:///{(self.folder / 'study.db').resolve()}"

    def load(self) -> optuna.Study:
        self.folder.mkdir(parents=True, exist_ok=True)
        return optuna.create_study(
            study_name="object2vec",
            storage=self.storage,
            direction=OBJECTIVES[self.objective][1],
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(n_startup_trials=5),
            # From the second epoch on, once three trials finished: a first epoch says little
            # of where a slow learner ends.
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
        )


def objective_for(
    study: Study,
    fixed: dict[str, str],
    space: dict[str, Range],
    train_data: PairData,
    validation: PairData,
):
    key, direction = OBJECTIVES[study.objective]
    sign = 1 if direction == "minimize" else -1

    def objective(trial: optuna.Trial) -> float:
        values = dict(fixed) | {name: r.suggest(trial, name) for name, r in space.items()}
        hp = Hyperparameters.from_dict(values)
        best = [math.inf]

        def on_epoch(report: EpochReport) -> None:
            value = report.validation[key]
            best[0] = min(best[0], sign * value)
            trial.report(value, report.epoch)
            if trial.should_prune():
                raise _Pruned

        started = time.perf_counter()
        try:
            model, reports = train(
                hp,
                train_data,
                validation,
                seed=trial.number,
                progress=False,
                on_epoch=on_epoch,
                verbose=False,
            )
        except _Pruned:
            raise optuna.TrialPruned from None
        value = sign * best[0]
        trial.set_user_attr("epochs", len(reports))
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        # Kept only while it is the best so far: a study's checkpoints would fill a disk.
        finished = trial.study.get_trials(deepcopy=False, states=(_COMPLETE,))
        if not finished or sign * value < min(sign * t.value for t in finished):
            path = study.folder / "trials" / f"{trial.number}.pt"
            path.parent.mkdir(exist_ok=True)
            checkpoint.save(model, path)
        return value

    return objective


def table(study: optuna.Study) -> str:
    """The trials as a Markdown table, best first."""
    trials = sorted(
        study.get_trials(deepcopy=False),
        key=lambda t: (
            t.value is None,
            (t.value or 0) * (1 if study.direction.name == "MINIMIZE" else -1),
        ),
    )
    names = sorted({n for t in trials for n in t.params})
    lines = [
        "| trial | state | value | epochs | seconds | " + " | ".join(names) + " |",
        "|---" * (5 + len(names)) + "|",
    ]
    for t in trials:
        value = f"{t.value:.4f}" if t.value is not None else ""
        if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            step = max(t.intermediate_values)
            value = f"({t.intermediate_values[step]:.4f} at epoch {step})"
        params = [_short(t.params.get(n, "")) for n in names]
        lines.append(
            f"| {t.number} | {t.state.name.lower()} | {value} | {t.user_attrs.get('epochs', '')} "
            f"| {t.user_attrs.get('seconds', '')} | " + " | ".join(params) + " |"
        )
    return "\n".join(lines) + "\n"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _worker_command(args: argparse.Namespace, remaining: int) -> list[str]:
    command = [sys.executable, "-m", "export.tune", "--worker", "--jobs", "1"]
    command += ["--train", str(args.train), "--validation", str(args.validation)]
    command += ["--study", str(args.study), "--objective", args.objective]
    command += ["--trials", str(remaining), "--minutes", str(args.minutes)]
    if args.only:
        command += ["--only", args.only]
    return command + args.hyperparameters


def run(args: argparse.Namespace) -> optuna.Study:
    assignments = parse_assignments(args.hyperparameters)
    only = set(args.only.split(",")) if args.only else None
    space = search_space(assignments, only)
    fixed = {n: v for n, v in assignments.items() if n not in space}
    Hyperparameters.from_dict(fixed)  # a wrong fixed value fails now, not in every trial
    study = Study(args.study, args.objective)
    optuna_study = study.load()
    done = len(optuna_study.get_trials(states=_COUNTED, deepcopy=False))
    remaining = max(args.trials - done, 0)
    if not args.worker:
        print(
            f"study {args.study}: {done} trials done, {remaining} to run, at most "
            f"{args.minutes:g} minutes, {args.jobs} at a time; searching "
            + ", ".join(sorted(space)),
            flush=True,
        )
    workers = []
    if args.jobs > 1 and remaining:
        workers = [subprocess.Popen(_worker_command(args, remaining)) for _ in range(args.jobs - 1)]
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(args.jobs, 1)))
    train_data, validation = read_jsonlines(args.train), read_jsonlines(args.validation)
    try:
        optuna_study.optimize(
            objective_for(study, fixed, space, train_data, validation),
            timeout=args.minutes * 60,
            callbacks=[optuna.study.MaxTrialsCallback(args.trials, states=_COUNTED)],
            show_progress_bar=not args.worker,
            gc_after_trial=True,
            # a trial whose settings cannot train (a NaN loss, a table too large) fails alone
            catch=(RuntimeError, ValueError),
        )
    finally:
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(args.minutes * 60 + 600)
    return optuna_study


def finish(study_folder: Path, optuna_study: optuna.Study) -> Path | None:
    """trials.md and best.pt; None where no trial finished."""
    (study_folder / "trials.md").write_text(table(optuna_study))
    completed = optuna_study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        return None
    best = optuna_study.best_trial
    shutil.copyfile(study_folder / "trials" / f"{best.number}.pt", study_folder / "best.pt")
    return study_folder / "best.pt"


def score(study_folder: Path, test: Path, objective: str) -> float:
    """The best checkpoint's metric on the test file, once the tuning is over. Each scoring is
    recorded in test-scores.json: a second look at the test split is a choice made by it."""
    key, _ = OBJECTIVES[objective]
    model = checkpoint.load(study_folder / "best.pt")
    value = evaluate(model, read_jsonlines(test))[key]
    record = study_folder / "test-scores.json"
    earlier = json.loads(record.read_text()) if record.exists() else []
    if earlier:
        print(f"note: the test split was scored {len(earlier)} time(s) before", flush=True)
    entry = {"test": str(test), objective.replace("validation", "test"): value}
    record.write_text(json.dumps([*earlier, entry], indent=2) + "\n")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--train", type=Path, help="training JSON Lines file")
    parser.add_argument("--validation", type=Path, help="decides every trial")
    parser.add_argument("--study", type=Path, required=True, help="folder the study lives in")
    parser.add_argument(
        "--objective", choices=sorted(OBJECTIVES), default="validation:mean_squared_error"
    )
    parser.add_argument("--trials", type=int, default=40, help="trials in all, resumes included")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of this run")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="trials at once (worker processes)"
    )
    parser.add_argument("--only", help="search only these tunable hyperparameters (a,b,c)")
    parser.add_argument(
        "--score", type=Path, help="after tuning: the best checkpoint on this (test) file, once"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("hyperparameters", nargs="*", help="name=value | low..high | a|b")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(
        optuna.logging.WARNING if not args.worker else optuna.logging.ERROR
    )
    if not args.score and not (args.train and args.validation):
        parser.error("tuning needs --train and --validation")
    if args.score:
        value = score(args.study, args.score, args.objective)
        name = args.objective.replace("validation:", "test:")
        root = f", RMSE {math.sqrt(value):.4f}" if "squared" in name else ""
        print(f"{name}={value:.4f}{root} ({args.score}, best.pt of {args.study})")
        return
    started = time.perf_counter()
    optuna_study = run(args)
    if args.worker:
        return
    best = finish(args.study, optuna_study)
    print(table(optuna_study))
    pruned = len(optuna_study.get_trials(states=(optuna.trial.TrialState.PRUNED,)))
    print(
        f"{len(optuna_study.trials)} trials ({pruned} pruned) in "
        f"{(time.perf_counter() - started) / 60:.1f} minutes",
        flush=True,
    )
    if best is None:
        raise SystemExit("no trial finished: give more minutes or trials")
    trial = optuna_study.best_trial
    print(f"best: trial {trial.number}, {args.objective}={trial.value:.4f}, {trial.params}")
    print(f"best checkpoint: {best} (python -m export.onnx_export {best} ...)")


if __name__ == "__main__":
    main()
