"""`python -m mgc.train CONFIG [overrides]`: one training run → a run folder. Imports nothing from Ray.

`fit(cfg, report)` reads top to bottom: seed, device, data, model, optimiser and schedule, resume,
epoch loop (train, validate, log, checkpoint, report, early stop), final evaluation, bundle.
The sweep wraps this same function; a bare machine runs it as it is.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mgc.artifacts import plot_train_curves, write_json
from mgc.bundle import save_bundle
from mgc.config import (
    Config,
    ConfigError,
    TrainConfig,
    config_and_overrides,
    load_config,
    save_config,
)
from mgc.data.datasets import DatasetError, write_label_map
from mgc.data.loader import ChunkSet, SplitData, build_chunk_set, iterate_batches, load_split_data
from mgc.evaluate import evaluate_chunks, fit_logreg, predict_chunks, write_evaluation
from mgc.features import SpecAugment
from mgc.metrics import evaluate_predictions
from mgc.models import build_model, is_sklearn

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


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


@dataclass(frozen=True)
class FastPath:
    """How the model runs on this device: autocast dtype, memory format, compilation."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    compile: bool

    def autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


# ---------------------------------------------------------------------------------------------
# Pieces the loop calls by name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 matrix units (AVX-512 BF16 / AMX); without them bf16 is emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_fast_path(train: TrainConfig, device: torch.device) -> FastPath:
    amp: torch.dtype | None = None
    if train.amp == "bf16" or (
        train.amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    ):
        amp = torch.bfloat16
    elif train.amp == "auto" and device.type == "cpu" and cpu_has_bf16():
        amp = torch.bfloat16
    elif train.amp == "fp16":
        amp = torch.float16
    channels_last = train.channels_last == "on" or (
        train.channels_last == "auto" and device.type in ("cpu", "cuda")
    )
    compile_ = train.compile == "on" or (train.compile == "auto" and device.type == "cuda")
    return FastPath(device, amp, channels_last, compile_)


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
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch factor: linear warm-up, then cosine to zero over the remaining epochs."""

    def factor(epoch: int) -> float:
        if train.scheduler == "none":
            return 1.0
        if epoch < train.warmup_epochs:
            return (epoch + 1) / (train.warmup_epochs + 1)
        span = max(1, train.epochs - train.warmup_epochs)
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - train.warmup_epochs) / span))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epoch(
    model: nn.Module,
    chunks: ChunkSet,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    augment: nn.Module | None,
    fast: FastPath,
    cfg: Config,
    generator: torch.Generator,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[float, float]:
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    batches = iterate_batches(
        chunks,
        cfg.train.batch_size * world_size,
        cfg.chunks.normalize,
        shuffle=True,
        generator=generator,
        jitter=cfg.train.chunk_jitter,
    )
    for x, y, _ in batches:
        x, y = x[rank::world_size], y[rank::world_size]  # data-parallel shard of the global batch
        if len(y) == 0:
            continue
        if augment is not None:
            x = augment(x)
        loss, n_correct = train_step(model, x, y, optimizer, loss_fn, fast)
        total_loss += loss * len(y)
        correct += n_correct
        seen += len(y)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    fast: FastPath,
) -> tuple[float, int]:
    """One optimiser step on a batch; returns (mean loss, correct predictions)."""
    x, y = fast.to_input(x), y.to(fast.device)
    with fast.autocast():
        logits = model(x)
        loss = loss_fn(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), int((logits.argmax(1) == y).sum())


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def default_run_dir(cfg: Config) -> Path:
    name = cfg.run.name or f"{cfg.experiment.name}-{cfg.model.name}"
    return Path(cfg.run.out_dir) / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def _append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in LOG_COLUMNS})


def _truncate_log(path: Path, last_epoch: int) -> None:
    """On resume, drop log rows of epochs after the checkpoint (they will be run again)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= last_epoch]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------
# The run


def fit(
    cfg: Config,
    report: Report | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    data: SplitData | None = None,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    rank: int = 0,
    world_size: int = 1,
    final_eval: bool = True,
) -> RunResult:
    """Train cfg.model on cfg.data; write the run folder; return its final metrics.

    `resume=True` continues from `run_dir/checkpoints/last.pt` when it exists. `wrap_model`,
    `rank` and `world_size` let a data-parallel launcher (Ray Train) run the same loop.
    `final_eval=False` (sweep trials) stops after the epochs: the test part stays untouched
    until the chosen configuration's final runs.
    """
    t_start = time.perf_counter()
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    ckpt_dir = run_dir / "checkpoints"
    is_main = rank == 0
    if is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    # seed, device
    seed_everything(cfg.train.seed)
    device = select_device(cfg.train.device)
    fast = choose_fast_path(cfg.train, device)

    # data
    data = data or load_split_data(cfg)
    if not data.parts["train"] or not data.parts["valid"]:
        raise DatasetError(
            f"{cfg.data.root}: split '{data.split_name}' leaves no training or validation tracks"
        )
    if is_main:
        write_label_map(data.genres, run_dir)
    n_classes = len(data.genres)
    train_set = build_chunk_set(data.parts["train"], cfg.chunks, cfg.features)
    valid_set = build_chunk_set(data.parts["valid"], cfg.chunks, cfg.features)
    log.info(
        "split %s: %d/%d/%d tracks, %d train chunks of %d frames",
        data.split_name,
        *(len(data.parts[p]) for p in ("train", "valid", "test")),
        len(train_set),
        train_set.window,
    )

    if is_sklearn(cfg.model.name):
        return _fit_sklearn(cfg, data, train_set, run_dir, report, t_start, final_eval)

    # model
    model = build_model(cfg.model, n_classes, cfg.features.n_mels).to(device)
    if fast.channels_last:
        model = model.to(memory_format=torch.channels_last)
    info = dict(model.info)
    train_model = wrap_model(model) if wrap_model else model
    if fast.compile:
        train_model = torch.compile(train_model)

    # optimiser, schedule, loss, augmentation
    optimizer = make_optimizer(model, cfg.train)
    scheduler = make_scheduler(optimizer, cfg.train)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    augment = (
        SpecAugment.from_config(cfg.train.specaugment) if cfg.train.specaugment.enabled else None
    )
    generator = torch.Generator().manual_seed(cfg.train.seed)

    # resume
    start_epoch, best, best_epoch, bad_epochs = 1, -math.inf, 0, 0
    last_path = ckpt_dir / "last.pt"
    if resume and last_path.exists():
        state = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], generator)
        start_epoch = state["epoch"] + 1
        best, best_epoch, bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        if is_main:
            _truncate_log(run_dir / "train_log.csv", state["epoch"])
        log.info("resumed %s at epoch %d", run_dir, start_epoch)

    # epoch loop
    metric_name = "val_macro_f1"
    for epoch in range(start_epoch, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_epoch(
            train_model,
            train_set,
            optimizer,
            loss_fn,
            augment,
            fast,
            cfg,
            generator,
            rank,
            world_size,
        )
        scheduler.step()
        val = evaluate_chunks(model, valid_set, fast, cfg, loss_fn)
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val["loss"],
            "val_acc": val["chunk_accuracy"],
            "val_macro_f1": val["chunk_macro_f1"],
            "val_track_acc": val["track_accuracy"],
            "val_track_macro_f1": val["track_macro_f1"],
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        improved = row[metric_name] > best
        if improved:
            best, best_epoch, bad_epochs = row[metric_name], epoch, 0
        else:
            bad_epochs += 1
        if is_main:
            _append_log(run_dir / "train_log.csv", row)
            if improved:
                torch.save({"model": model.state_dict(), "epoch": epoch}, ckpt_dir / "best.pt")
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(generator),
                "epoch": epoch,
                "best": best,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
            }
            torch.save(state, ckpt_dir / "last.pt.tmp")
            os.replace(ckpt_dir / "last.pt.tmp", last_path)
        log.info(
            "epoch %d: train loss %.3f acc %.3f | val loss %.3f acc %.3f macro-F1 %.3f | %.1fs",
            epoch,
            train_loss,
            train_acc,
            row["val_loss"],
            row["val_acc"],
            row["val_macro_f1"],
            row["seconds"],
        )
        if report is not None:
            report({**row, "best_val_macro_f1": best}, ckpt_dir)
        patience = cfg.train.early_stopping_patience
        if patience and bad_epochs >= patience:
            log.info(
                "early stop at epoch %d: no better %s for %d epochs", epoch, metric_name, patience
            )
            break

    if not is_main or not final_eval:
        return RunResult(
            run_dir, {"best_val_macro_f1": best, "best_epoch": best_epoch, "params": info["params"]}
        )
    # final evaluation with the best weights
    best_state = torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=True)
    model.load_state_dict(best_state["model"])
    info.update(best_epoch=best_epoch, epochs_run=epoch)
    metrics = _finish(cfg, data, model, fast, run_dir, info, t_start)
    return RunResult(run_dir, metrics)


def _finish(
    cfg: Config,
    data: SplitData,
    model: Any,
    fast: FastPath | None,
    run_dir: Path,
    info: dict,
    t_start: float,
) -> dict:
    """Evaluate on valid and test, write metrics.json, curves and the model bundle."""
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
        "fast_path": {k: str(v) for k, v in dataclasses.asdict(fast).items()} if fast else None,
        "best_epoch": info.get("best_epoch"),
        "epochs_run": info.get("epochs_run"),
        "n_tracks": {p: len(t) for p, t in data.parts.items()},
    }
    for part in ("valid", "test"):
        if not data.parts.get(part):
            continue
        chunk_set = build_chunk_set(data.parts[part], cfg.chunks, cfg.features)
        metrics[part] = write_evaluation(
            model, chunk_set, data.genres, fast, cfg, run_dir, part, write_files=part == "test"
        )
    metrics["seconds"] = time.perf_counter() - t_start
    write_json(run_dir / "metrics.json", metrics)
    if (run_dir / "train_log.csv").exists():
        plot_train_curves(run_dir / "train_log.csv", run_dir / "train_curves.png")
    save_bundle(run_dir, model, data.genres, cfg.features, cfg.chunks, cfg.model, info)
    return metrics


def _fit_sklearn(
    cfg: Config,
    data: SplitData,
    train_set: ChunkSet,
    run_dir: Path,
    report: Report | None,
    t_start: float,
    final_eval: bool,
) -> RunResult:
    """M1 logistic regression on time-pooled chunks: one 'epoch', the same evaluation."""
    t0 = time.perf_counter()
    pipeline, info = fit_logreg(train_set, cfg, len(data.genres))
    valid_set = build_chunk_set(data.parts["valid"], cfg.chunks, cfg.features)
    probs, labels, tracks = predict_chunks(pipeline, valid_set, None, cfg)
    val = evaluate_predictions(probs, labels.numpy(), tracks.numpy(), len(data.genres))
    row = {
        "epoch": 1,
        "val_acc": val["chunk_accuracy"],
        "val_macro_f1": val["chunk_macro_f1"],
        "val_track_acc": val["track_accuracy"],
        "val_track_macro_f1": val["track_macro_f1"],
        "seconds": time.perf_counter() - t0,
    }
    _append_log(run_dir / "train_log.csv", row)
    if report is not None:
        report({**row, "best_val_macro_f1": row["val_macro_f1"]}, run_dir / "checkpoints")
    info.update(best_epoch=1, epochs_run=1)
    if not final_eval:
        return RunResult(
            run_dir,
            {"best_val_macro_f1": row["val_macro_f1"], "best_epoch": 1, "params": info["params"]},
        )
    return RunResult(run_dir, _finish(cfg, data, pipeline, None, run_dir, info, t_start))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", nargs="?", help="YAML config (ablations/e0.yaml, …)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--run-dir", help="run folder (default: runs/<experiment>-<model>-<time>)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint"
    )
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config, overrides = config_and_overrides(args.config, args.overrides)
    try:
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / "config.yaml").is_file():
                raise ConfigError(f"{run_dir}: not a run folder (config.yaml missing)")
            cfg = load_config(run_dir / "config.yaml", overrides)
        else:
            cfg = load_config(config, overrides)
            run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(cfg)
        result = fit(cfg, run_dir=run_dir, resume=bool(args.resume))
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: resume with  python -m mgc.train --resume {run_dir}", file=sys.stderr
        )
        return 130
    m = result.metrics
    test = m.get("test", {})
    print(f"run: {result.run_dir}")
    if test:
        print(
            f"test ({m['split']}): chunk acc {test['chunk_accuracy']:.3f} macro-F1 {test['chunk_macro_f1']:.3f} | "
            f"track acc {test['track_accuracy']:.3f} macro-F1 {test['track_macro_f1']:.3f} | params {m['params']:,}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
