"""One training run → a run folder; `python -m mgc.train` is its command line. Imports nothing
from Ray.

The caller picks the trainer (`trainer_for`; `fit` is that pick and the call, for callers that
train any model). `fit_torch` reads top to bottom: run folder, seed, device, data, model with its
optimiser and schedule, resume, the epochs (`run_epochs`: train, validate, log, checkpoint,
report, early stop), final evaluation and bundle. `fit_sklearn` fits the logistic-regression
baseline as one 'epoch' and ends with the same evaluation. The sweep wraps these same functions;
a bare machine runs them as they are.
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mgc.core.config import Config, TrainConfig, save_config
from mgc.core.device import FastPath, choose_fast_path, machine, select_device
from mgc.core.fsio import atomic_path, storage_join
from mgc.data.datasets import DatasetError, write_label_map
from mgc.data.loader import (
    ChunkSet,
    SplitData,
    build_chunk_set,
    iterate_batches,
    iterate_pairs,
    load_split_data,
    pick_copies,
    pick_versions,
    random_windows,
)
from mgc.features.transforms import SpecAugment
from mgc.models import build_model, is_sklearn, remembers_embeddings
from mgc.models.adapter import Classifier, SklearnClassifier, TorchClassifier
from mgc.models.baseline import fit_logreg, pooled_features
from mgc.models.bundle import save_bundle
from mgc.results.artifacts import plot_train_curves, write_json
from mgc.results.evaluate import evaluate_chunks, write_evaluation

log = logging.getLogger(__name__)

# report(metrics, checkpoint_dir): called once per epoch; a sweep forwards it to Ray Tune.
Report = Callable[[dict[str, Any], Path], None]

LOG_COLUMNS = [
    "epoch",
    "train_loss",
    "val_loss",
    "train_acc",
    "val_acc",
    "val_macro_f1",
    "val_track_acc",
    "val_track_macro_f1",
    "lr",
    "seconds",
]
METRIC = "val_macro_f1"  # what "best" means for checkpoints and early stopping
TRAIN_LOG = "train_log.csv"
CHECKPOINTS = "checkpoints"


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Parallel:
    """This process's place in a data-parallel run (Ray Train); one process by default."""

    rank: int = 0
    world_size: int = 1
    wrap: Callable[[nn.Module], nn.Module] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Progress:
    """What the loop carries from epoch to epoch, and what a checkpoint restores."""

    epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record an epoch's score; True when it is the best so far."""
        self.epoch = epoch
        if score > self.best:
            self.best, self.best_epoch, self.bad_epochs = score, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def out_of_patience(self, patience: int) -> bool:
        """Early stopping's test: `patience` epochs (> 0) in a row without a better score."""
        return bool(patience) and self.bad_epochs >= patience


@dataclass
class Training:
    """What a torch run trains with. `build_training` makes it, for a run and for the budget's
    timed step alike, so the two time and train the same thing."""

    model: nn.Module  # plain: checkpoints, validation and the bundle read it unwrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: nn.Module
    augment: nn.Module | None
    generator: torch.Generator  # batch order and windows, so resume restores it too

    def checkpointed(self) -> dict[str, Any]:
        """The parts a checkpoint holds, under the names its file uses."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "generator": self.generator,
        }


@dataclass
class Loop:
    """Everything the epoch loop works with, gathered once by `fit_torch`."""

    cfg: Config
    training: Training
    train_model: nn.Module  # the model as steps call it: wrapped for data-parallel or compiled
    classifier: TorchClassifier  # the plain model as validation and the final test call it
    train_set: ChunkSet
    valid_set: ChunkSet  # cut into windows once, for every epoch and the final scores
    fast: FastPath
    parallel: Parallel
    run_dir: Path


# ---------------------------------------------------------------------------------------------
# Pieces the trainers call by name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(train: TrainConfig) -> None:
    # A sweep gives each trial its share of the CPUs; left alone, torch takes all of them.
    if train.threads:
        torch.set_num_threads(train.threads)


def fast_path(train: TrainConfig) -> FastPath:
    return choose_fast_path(
        select_device(train.device), train.amp, train.channels_last, train.compile
    )


def default_run_dir(cfg: Config) -> Path:
    name = cfg.run.name or f"{cfg.experiment.name}-{cfg.model.name}"
    return Path(cfg.run.out_dir) / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def open_run_dir(cfg: Config, run_dir: str | Path | None, parallel: Parallel) -> Path:
    """The run folder (given, or a new dated one), with its config.yaml; only the main process
    writes, the others share its folder."""
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    if parallel.is_main:
        (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    return run_dir


def load_data(
    cfg: Config, data: SplitData | None, run_dir: Path, parallel: Parallel
) -> tuple[SplitData, ChunkSet, ChunkSet]:
    """(split, training windows, validation windows): the split given or read from the feature
    cache, its genres written to the run folder. The windows are cut once for the whole run."""
    data = data or load_split_data(cfg)
    if not data.parts["train"] or not data.parts["valid"]:
        raise DatasetError(
            f"{cfg.data.root}: split '{data.split_name}' leaves no training or validation tracks"
        )
    if parallel.is_main:
        write_label_map(data.genres, run_dir)
    # A refit trains on the validation tracks too (they are still scored, no longer held out).
    training = data.parts["train"] + (data.parts["valid"] if cfg.train.include_valid else [])
    train_set = build_chunk_set(training, cfg.chunks, cfg.features)
    valid_set = build_chunk_set(data.parts["valid"], cfg.chunks, cfg.features)
    log.info(
        "split %s: %d/%d/%d tracks, %d train chunks of %d frames",
        data.split_name,
        *(len(data.parts[p]) for p in ("train", "valid", "test")),
        len(train_set),
        train_set.window,
    )
    return data, train_set, valid_set


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=train.lr, momentum=0.9, weight_decay=train.weight_decay, nesterov=True
        )
    return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: constant, or linear warm-up then cosine to zero."""
    sched = torch.optim.lr_scheduler
    if train.scheduler == "none":
        return sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    warm = train.warmup_epochs
    cosine = sched.CosineAnnealingLR(optimizer, T_max=max(1, train.epochs - warm))
    if warm == 0:
        return cosine
    # Warm-up starts at 1/(warm+1) of the rate and reaches it when the cosine takes over.
    linear = sched.LinearLR(optimizer, start_factor=1.0 / (warm + 1), total_iters=warm)
    return sched.SequentialLR(optimizer, [linear, cosine], milestones=[warm])


def build_training(cfg: Config, n_classes: int, fast: FastPath) -> Training:
    """cfg's model on `fast`'s device, with its optimiser, schedule, loss and augmentation."""
    model = fast.place(build_model(cfg.model, n_classes, cfg.features.n_mels))
    optimizer = make_optimizer(model, cfg.train)
    aug = cfg.train.specaugment
    return Training(
        model=model,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg.train),
        loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing),
        augment=SpecAugment.from_config(aug) if aug.enabled else None,
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )


def wrap_for_steps(model: nn.Module, fast: FastPath, parallel: Parallel) -> nn.Module:
    """The module the training steps call: data-parallel and compiled where asked. It shares its
    parameters with `model`, which stays plain for checkpoints, validation and the bundle."""
    wrapped = parallel.wrap(model) if parallel.wrap else model
    return torch.compile(wrapped) if fast.compile else wrapped


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    fast: FastPath,
    x_copy: torch.Tensor | None = None,
    consistency: float = 0.0,
) -> tuple[float, int]:
    """One optimiser step on a batch; returns (mean loss, correct predictions). With `x_copy`
    (the same windows, augmented) the batch holds both, each scored against the labels, and the
    loss adds `consistency` times KL(clean || copy) with the clean side held fixed."""
    n = len(y)
    if x_copy is not None:
        x, y = torch.cat([x, x_copy]), torch.cat([y, y])
    x, y = fast.to_input(x), y.to(fast.device)
    with fast.autocast():
        logits = model(x)
        loss = loss_fn(logits.float(), y)
        if x_copy is not None and consistency:
            log_p = torch.log_softmax(logits.float(), dim=1)
            loss = loss + consistency * nn.functional.kl_div(
                log_p[n:], log_p[:n].detach(), log_target=True, reduction="batchmean"
            )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), int((logits.argmax(1) == y).sum())


def train_epoch(
    model: nn.Module,
    chunks: ChunkSet,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    augment: nn.Module | None,
    fast: FastPath,
    cfg: Config,
    generator: torch.Generator,
    parallel: Parallel = Parallel(),
) -> tuple[float, float]:
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    rank, world = parallel.rank, parallel.world_size
    paired = cfg.train.consistency > 0
    if not paired:
        chunks = pick_versions(chunks, generator)  # clean or an augmented copy, per track
    if cfg.train.windows_per_track:
        chunks = random_windows(chunks, cfg.train.windows_per_track, generator)
    batch_size = cfg.train.batch_size * world
    jitter = cfg.train.chunk_jitter
    if paired:  # clean windows beside the same windows of a copy
        batches = iterate_pairs(
            chunks, pick_copies(chunks, generator), batch_size, generator, jitter
        )
    else:
        batches = (
            (x, None, y) for x, y, _ in iterate_batches(chunks, batch_size, True, generator, jitter)
        )
    for x, x_copy, y in batches:
        x, y = x[rank::world], y[rank::world]  # this worker's shard of the global batch
        if x_copy is not None:
            x_copy = x_copy[rank::world]
        if len(y) == 0:
            continue
        if augment is not None:
            x = augment(x)
            x_copy = augment(x_copy) if x_copy is not None else None
        loss, n_correct = train_step(
            model, x, y, optimizer, loss_fn, fast, x_copy, cfg.train.consistency
        )
        n = len(y) * (2 if x_copy is not None else 1)
        total_loss += loss * n
        correct += n_correct
        seen += n
    return total_loss / max(seen, 1), correct / max(seen, 1)


def epoch_row(epoch: int, val: dict, seconds: float, **train: float) -> dict[str, Any]:
    """One line of train_log.csv: the training figures given, the validation ones from `val`."""
    return {
        "epoch": epoch,
        **train,
        "val_loss": val.get("loss", ""),
        "val_acc": val["chunk_accuracy"],
        "val_macro_f1": val["chunk_macro_f1"],
        "val_track_acc": val["track_accuracy"],
        "val_track_macro_f1": val["track_macro_f1"],
        "seconds": seconds,
    }


def train_and_validate(loop: Loop, epoch: int) -> dict[str, Any]:
    """One epoch of training, then validation; its train_log.csv row."""
    t0 = time.perf_counter()
    training = loop.training
    lr = training.optimizer.param_groups[0]["lr"]  # the rate this epoch trains at
    train_loss, train_acc = train_epoch(
        loop.train_model,
        loop.train_set,
        training.optimizer,
        training.loss_fn,
        training.augment,
        loop.fast,
        loop.cfg,
        training.generator,
        loop.parallel,
    )
    training.scheduler.step()
    val = evaluate_chunks(loop.classifier, loop.valid_set, training.loss_fn)
    return epoch_row(
        epoch, val, time.perf_counter() - t0, train_loss=train_loss, train_acc=train_acc, lr=lr
    )


def append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in LOG_COLUMNS})


def truncate_log(path: Path, last_epoch: int) -> None:
    """On resume, drop log rows of epochs after the checkpoint (they will be run again)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= last_epoch]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def log_epoch(row: dict[str, Any]) -> None:
    log.info(
        "epoch %d: train loss %.3f acc %.3f | val loss %.3f acc %.3f macro-F1 %.3f | %.1fs",
        row["epoch"],
        row["train_loss"],
        row["train_acc"],
        row["val_loss"],
        row["val_acc"],
        row["val_macro_f1"],
        row["seconds"],
    )


def report_epoch(
    report: Report | None, row: dict[str, Any], progress: Progress, run_dir: Path
) -> None:
    if report is not None:
        report({**row, "best_val_macro_f1": progress.best}, run_dir / CHECKPOINTS)


def stops_early(train: TrainConfig, progress: Progress) -> bool:
    patience = train.early_stopping_patience
    if progress.out_of_patience(patience):
        log.info(
            "early stop at epoch %d: no better %s for %d epochs", progress.epoch, METRIC, patience
        )
        return True
    return False


def save_checkpoint(path: Path, training: dict[str, Any], progress: Progress) -> None:
    """Everything resume needs, written whole or not at all."""
    state = {name: obj.state_dict() for name, obj in training.items() if name != "generator"}
    state["rng"] = {
        "torch": torch.get_rng_state(),
        "generator": training["generator"].get_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    state["progress"] = vars(progress)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, training: dict[str, Any], device: torch.device) -> Progress:
    state = torch.load(path, map_location=device, weights_only=False)
    for name, obj in training.items():
        if name != "generator":
            obj.load_state_dict(state[name])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    training["generator"].set_state(rng["generator"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    return Progress(**state["progress"])


def checkpoint_epoch(
    run_dir: Path, training: Training, progress: Progress, keep_best: bool
) -> None:
    """The epoch's weights as best.pt (when `keep_best`), then everything resume needs."""
    if keep_best:
        with atomic_path(run_dir / CHECKPOINTS / "best.pt") as tmp:
            torch.save({"model": training.model.state_dict(), "epoch": progress.epoch}, tmp)
    save_checkpoint(last_checkpoint(run_dir), training.checkpointed(), progress)


def last_checkpoint(run_dir: Path) -> Path:
    """Where a run keeps what `--resume` needs (weights, optimiser, schedule, random states)."""
    return run_dir / CHECKPOINTS / "last.pt"


def logged_rows(run_dir: Path) -> list[dict[str, str]]:
    """A run folder's train_log.csv, one dict per epoch (none without the file)."""
    path = run_dir / TRAIN_LOG
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def logged_epochs(run_dir: Path) -> int:
    """The epochs a run folder's train_log.csv records (0: none, or no such folder)."""
    return max((int(r["epoch"]) for r in logged_rows(run_dir)), default=0)


def logged_best_epoch(run_dir: Path) -> int | None:
    """The logged epoch of the best validation macro-F1, the first of equals as `Progress`
    keeps it; None when no epoch logged one (a blank field is skipped: the progress bar that
    asks must never stop a sweep)."""
    rows = [r for r in logged_rows(run_dir) if (r.get(METRIC) or "").strip()]
    if not rows:
        return None
    return int(max(rows, key=lambda r: (float(r[METRIC]), -int(r["epoch"])))["epoch"])


def resume_from(run_dir: Path, training: Training, fast: FastPath, parallel: Parallel) -> Progress:
    """Where an interrupted run stopped: its last checkpoint restored into `training`, and the
    log cut back to it, since the epochs after it run again. A fresh start without one."""
    last = last_checkpoint(run_dir)
    if not last.exists():
        return Progress()
    progress = load_checkpoint(last, training.checkpointed(), fast.device)
    if parallel.is_main:
        truncate_log(run_dir / TRAIN_LOG, progress.epoch)
    log.info("resumed %s at epoch %d", run_dir, progress.epoch + 1)
    return progress


def load_best(model: nn.Module, run_dir: Path, fast: FastPath) -> None:
    best_state = torch.load(
        run_dir / CHECKPOINTS / "best.pt", map_location=fast.device, weights_only=True
    )
    model.load_state_dict(best_state["model"])


def trial_metrics(progress: Progress, info: dict[str, Any]) -> dict[str, Any]:
    return {"best_val_macro_f1": progress.best, "best_epoch": progress.best_epoch, **info}


def fit_pooled(train_set: ChunkSet, n_classes: int, seed: int) -> SklearnClassifier:
    """Logistic regression on every training window, each pooled over time."""
    xs, ys = [], []
    for x, y, _ in iterate_batches(train_set, 256):
        xs.append(pooled_features(x.numpy()))
        ys.append(y.numpy())
    pipeline = fit_logreg(np.concatenate(xs), np.concatenate(ys), seed)
    return SklearnClassifier(pipeline, n_classes)


# ---------------------------------------------------------------------------------------------
# The run

# Every trainer takes fit's arguments: (cfg, report, run_dir, resume, data, parallel, final_eval).
Trainer = Callable[..., RunResult]


def fit(cfg: Config, *args: Any, **kwargs: Any) -> RunResult:
    """Train whatever model cfg names, with the trainer `trainer_for` picks; it only picks, for
    callers that train any row's model (the sweep's trials and seeds). Arguments as `fit_torch`'s.
    """
    return trainer_for(cfg)(cfg, *args, **kwargs)


def trainer_for(cfg: Config) -> Trainer:
    """`fit_sklearn` for a scikit-learn baseline, `fit_torch` for every other model."""
    return fit_sklearn if is_sklearn(cfg.model.name) else fit_torch


def fit_torch(
    cfg: Config,
    report: Report | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    data: SplitData | None = None,
    parallel: Parallel = Parallel(),
    final_eval: bool = True,
) -> RunResult:
    """Train a torch model epoch by epoch; write the run folder; return its final metrics.

    The features are already in the cache (`mgc.prepare`). `resume=True` continues from
    `run_dir/checkpoints/last.pt` when it exists. `parallel` lets a data-parallel launcher (Ray
    Train) run the same loop. `final_eval=False` (sweep trials) stops after the epochs: the test
    part stays untouched until the chosen configuration's final runs.
    """
    t_start = time.perf_counter()
    run_dir = open_run_dir(cfg, run_dir, parallel)
    seed_everything(cfg.train.seed)
    set_threads(cfg.train)
    fast = fast_path(cfg.train)
    data, train_set, valid_set = load_data(cfg, data, run_dir, parallel)
    training = build_training(cfg, len(data.genres), fast)
    if remembers_embeddings(cfg):  # a frozen pretrained trunk (musicnn) on repeating windows
        # kept beside the feature cache too: the row's other trials and seeds reuse them
        training.model.remember_embeddings(True, store=storage_join(cfg.cache.dir, "embeddings"))
    loop = Loop(
        cfg, training, wrap_for_steps(training.model, fast, parallel),
        TorchClassifier(training.model, fast), train_set, valid_set, fast, parallel, run_dir,
    )  # fmt: skip
    progress = resume_from(run_dir, training, fast, parallel) if resume else Progress()
    # A sweep trial never tests, so it keeps no best weights; nor does a refit, whose validation
    # tracks train: its last epoch is the model.
    keep_best = final_eval and not cfg.train.include_valid
    progress = run_epochs(loop, progress, report, keep_best=keep_best)
    info = {
        **training.model.info,
        "best_epoch": progress.best_epoch,
        "epochs_run": progress.epoch,
        # Converged: early stopping ended it, rather than the last epoch it was allowed.
        "stopped_early": progress.out_of_patience(cfg.train.early_stopping_patience),
    }
    if not parallel.is_main or not final_eval:
        return RunResult(run_dir, trial_metrics(progress, info))
    if keep_best:
        load_best(training.model, run_dir, fast)
    return RunResult(run_dir, finish(cfg, data, loop.classifier, valid_set, run_dir, info, t_start))


def run_epochs(loop: Loop, progress: Progress, report: Report | None, keep_best: bool) -> Progress:
    """The epochs after `progress.epoch`, up to cfg.train.epochs (or stop_epoch) or an early
    stop: each trained and validated, then logged and checkpointed (main process) and reported.
    Returns `progress`, brought up to date in place."""
    last = loop.cfg.train.stop_epoch or loop.cfg.train.epochs
    for epoch in range(progress.epoch + 1, last + 1):
        row = train_and_validate(loop, epoch)
        improved = progress.update(epoch, row[METRIC])
        if loop.parallel.is_main:
            append_log(loop.run_dir / TRAIN_LOG, row)
            checkpoint_epoch(
                loop.run_dir, loop.training, progress, keep_best=improved and keep_best
            )
        log_epoch(row)
        report_epoch(report, row, progress, loop.run_dir)
        if stops_early(loop.cfg.train, progress):
            break
    return progress


def fit_sklearn(
    cfg: Config,
    report: Report | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    data: SplitData | None = None,
    parallel: Parallel = Parallel(),
    final_eval: bool = True,
) -> RunResult:
    """The logistic-regression baseline on time-pooled chunks: one 'epoch', then the same
    evaluation as a torch run (arguments as `fit_torch`'s). A fit takes seconds, so a resumed one
    starts again; it runs in one process."""
    t_start = time.perf_counter()
    run_dir = open_run_dir(cfg, run_dir, parallel)
    seed_everything(cfg.train.seed)
    set_threads(cfg.train)
    data, train_set, valid_set = load_data(cfg, data, run_dir, parallel)
    t0 = time.perf_counter()
    classifier = fit_pooled(train_set, len(data.genres), cfg.train.seed)
    row = epoch_row(1, evaluate_chunks(classifier, valid_set), time.perf_counter() - t0)
    progress = Progress()
    progress.update(1, row[METRIC])
    append_log(run_dir / TRAIN_LOG, row)
    report_epoch(report, row, progress, run_dir)
    info = {
        "name": cfg.model.name,
        "params": classifier.params,
        "pretrained": "scratch",
        "best_epoch": 1,
        "epochs_run": 1,
        "max_epochs": 1,  # one fit is the whole of training, whatever train.epochs says
    }
    if not final_eval:
        return RunResult(run_dir, trial_metrics(progress, info))
    return RunResult(run_dir, finish(cfg, data, classifier, valid_set, run_dir, info, t_start))


def finish(
    cfg: Config,
    data: SplitData,
    classifier: Classifier,
    valid_set: ChunkSet,
    run_dir: Path,
    info: dict[str, Any],
    t_start: float,
) -> dict[str, Any]:
    """Evaluate on valid (the run's own windows) and test, write metrics.json, curves and the
    model bundle."""
    fast = getattr(classifier, "fast", None)
    metrics: dict[str, Any] = {
        "experiment": cfg.experiment.name,
        "model": cfg.model.name,
        "params": info["params"],
        "pretrained": info.get("pretrained", "scratch"),
        "split": data.split_name,
        "missing_tracks": data.missing,
        "skipped_files": data.skipped,
        "seed": cfg.train.seed,
        "device": str(fast.device) if fast else "cpu",
        "machine": machine(),
        "fast_path": fast.describe() if fast else None,
        "best_epoch": info.get("best_epoch"),
        "epochs_run": info.get("epochs_run"),
        "max_epochs": info.get("max_epochs", cfg.train.epochs),
        "early_stopping_patience": cfg.train.early_stopping_patience,
        "stopped_early": info.get("stopped_early", False),
        "n_tracks": {p: len(t) for p, t in data.parts.items()},
        "valid": evaluate_chunks(classifier, valid_set),
    }
    if data.parts.get("test"):
        test_set = build_chunk_set(data.parts["test"], cfg.chunks, cfg.features)
        title = f"{cfg.experiment.name} {cfg.model.name}: test tracks, {data.split_name} split"
        metrics["test"] = write_evaluation(
            classifier, test_set, data.genres, run_dir, "test", title
        )
    metrics["seconds"] = time.perf_counter() - t_start
    write_json(run_dir / "metrics.json", metrics)
    if (run_dir / TRAIN_LOG).exists():
        plot_train_curves(run_dir / TRAIN_LOG, run_dir / "train_curves.png")
    save_bundle(run_dir, classifier, data.genres, cfg.features, cfg.chunks, cfg.model, info)
    return metrics
