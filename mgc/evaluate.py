"""`python -m mgc.evaluate RUN_DIR [overrides]`: metrics and artifacts of a model on a split part.

Evaluates any run folder's bundle with the run's own data settings (features, chunking,
normalisation); overrides such as `data.split=fault_filtered` pick another split.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from mgc.artifacts import (
    plot_confusion_matrix,
    write_classification_report,
    write_hard_cases,
    write_json,
    write_predictions,
)
from mgc.config import Config, ConfigError, load_config
from mgc.data.datasets import DatasetError
from mgc.data.loader import ChunkSet, build_chunk_set, iterate_batches, load_split_data
from mgc.metrics import evaluate_predictions, track_probabilities
from mgc.models import make_logreg, pooled_features, sklearn_param_count

if TYPE_CHECKING:
    from mgc.train import FastPath

log = logging.getLogger(__name__)

EVAL_BATCH = 64


def predict_chunks(
    model: Any, chunk_set: ChunkSet, fast: FastPath | None, cfg: Config
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Class probabilities of every chunk: (probs (N, C), labels (N,), track index (N,))."""
    probs, labels, tracks = [], [], []
    batches = iterate_batches(chunk_set, EVAL_BATCH, cfg.chunks.normalize)
    if isinstance(model, nn.Module):
        model.eval()
        with torch.inference_mode():
            for x, y, t in batches:
                with fast.autocast():
                    logits = model(fast.to_input(x))
                probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
                labels.append(y)
                tracks.append(t)
    else:  # scikit-learn pipeline on time-pooled chunks
        for x, y, t in batches:
            p = model.predict_proba(pooled_features(x.numpy()))
            probs.append(_full_columns(p, model.classes_, model.n_classes_total))
            labels.append(y)
            tracks.append(t)
    return np.concatenate(probs), torch.cat(labels), torch.cat(tracks)


def _full_columns(p: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """scikit-learn drops classes absent from training; put them back as zero columns."""
    out = np.zeros((p.shape[0], n_classes), dtype=np.float64)
    out[:, classes] = p
    return out


def fit_logreg(train_set: ChunkSet, cfg: Config, n_classes: int) -> tuple[Any, dict]:
    """M1: scikit-learn logistic regression on time-pooled training chunks."""
    xs, ys = [], []
    for x, y, _ in iterate_batches(train_set, 256, cfg.chunks.normalize):
        xs.append(pooled_features(x.numpy()))
        ys.append(y.numpy())
    pipeline = make_logreg(cfg.train.seed)
    pipeline.fit(np.concatenate(xs), np.concatenate(ys))
    pipeline.n_classes_total = n_classes
    info = {
        "name": cfg.model.name,
        "params": sklearn_param_count(pipeline),
        "pretrained": "scratch",
    }
    return pipeline, info


def evaluate_chunks(
    model: nn.Module, chunk_set: ChunkSet, fast: FastPath, cfg: Config, loss_fn: nn.Module
) -> dict:
    """Loss and chunk/track metrics on one part (the validation step of every epoch)."""
    probs, labels, tracks = predict_chunks(model, chunk_set, fast, cfg)
    n_classes = probs.shape[1]
    out = evaluate_predictions(probs, labels.numpy(), tracks.numpy(), n_classes)
    logp = torch.log(torch.from_numpy(probs).clamp_min(1e-12))
    # log_softmax of log-probabilities is the identity, so this is the training loss exactly.
    out["loss"] = float(loss_fn(logp, labels))
    return out


def write_evaluation(
    model: Any,
    chunk_set: ChunkSet,
    genres: list[str],
    fast: FastPath | None,
    cfg: Config,
    out_dir: Path,
    part: str,
    write_files: bool = True,
) -> dict:
    """Metrics of `model` on one part; with write_files, the report, confusion matrix,
    predictions and hard cases go to out_dir (named after the part)."""
    probs, labels, tracks = predict_chunks(model, chunk_set, fast, cfg)
    labels_np, tracks_np = labels.numpy(), tracks.numpy()
    metrics = evaluate_predictions(probs, labels_np, tracks_np, len(genres))
    if not write_files:
        return metrics
    idx, track_probs = track_probabilities(probs, tracks_np)
    track_ids = [chunk_set.tracks[i].track_id for i in idx]
    y_track = np.array([chunk_set.tracks[i].label for i in idx])
    out_dir.mkdir(parents=True, exist_ok=True)
    write_classification_report(
        out_dir / f"{part}_classification_report.txt",
        y_track,
        track_probs.argmax(1),
        genres,
        split=f"{part} ({cfg.data.split})",
        level="track",
        chunk_true=labels_np,
        chunk_pred=probs.argmax(1),
    )
    plot_confusion_matrix(
        out_dir / f"confusion_matrix_{part}.png",
        y_track,
        track_probs.argmax(1),
        genres,
        title=f"{cfg.experiment.name} {cfg.model.name}: {part} tracks, {cfg.data.split} split",
    )
    write_predictions(out_dir / "predictions.csv", track_ids, y_track, track_probs, genres)
    write_hard_cases(out_dir / "hard_cases.csv", track_ids, y_track, track_probs, genres)
    return metrics


def evaluate_run(
    run_dir: str | Path, overrides: list[str] | None = None, part: str = "test"
) -> tuple[Path, dict]:
    """Evaluate a run folder's bundle on `part` of the (possibly overridden) split."""
    from mgc.bundle import load_bundle
    from mgc.train import choose_fast_path, select_device

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (config.yaml missing)")
    cfg = load_config(run_dir / "config.yaml", overrides)
    bundle = load_bundle(run_dir)
    # The model's data settings always come from the bundle: same features, same chunks.
    cfg.features, cfg.chunks = bundle.features, bundle.chunks
    data = load_split_data(cfg)
    if data.genres != bundle.genres:
        raise DatasetError(
            f"{cfg.data.root}: genres {data.genres} differ from the model's {bundle.genres}"
        )
    if not data.parts.get(part):
        raise DatasetError(f"{cfg.data.root}: split '{data.split_name}' has no {part} tracks here")
    device = select_device(cfg.train.device)
    fast = choose_fast_path(cfg.train, device) if isinstance(bundle.model, nn.Module) else None
    model = bundle.model.to(device) if isinstance(bundle.model, nn.Module) else bundle.model
    if fast and fast.channels_last:
        model = model.to(memory_format=torch.channels_last)
    out_dir = run_dir / f"eval-{data.split_name}-{part}"
    chunk_set = build_chunk_set(data.parts[part], cfg.chunks, cfg.features)
    metrics = write_evaluation(model, chunk_set, data.genres, fast, cfg, out_dir, part)
    metrics.update(split=data.split_name, part=part, missing_tracks=data.missing)
    write_json(out_dir / "metrics.json", metrics)
    return out_dir, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.evaluate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("run_dir", help="a run folder written by mgc.train")
    parser.add_argument(
        "overrides", nargs="*", help="e.g. data.split=fault_filtered data.root=/data/gtzan"
    )
    parser.add_argument("--part", default="test", choices=["train", "valid", "test"])
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # `split=…` and `root=…` are short for the data section's keys.
    overrides = [
        f"data.{o}" if o.split("=", 1)[0] in ("split", "root") else o for o in args.overrides
    ]
    try:
        out_dir, m = evaluate_run(args.run_dir, overrides, args.part)
    except (ConfigError, DatasetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{m['split']} {m['part']}: chunk acc {m['chunk_accuracy']:.3f} macro-F1 {m['chunk_macro_f1']:.3f} | "
        f"track acc {m['track_accuracy']:.3f} macro-F1 {m['track_macro_f1']:.3f} ({m['n_tracks']} tracks)"
    )
    print(f"artifacts: {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
