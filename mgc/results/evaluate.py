"""`python -m mgc.evaluate RUN_DIR [overrides]`: metrics and artifacts of a model on a split part.

Evaluates any run folder's bundle with the run's own data settings (features, chunking,
normalisation); overrides such as `data.split=fault_filtered` pick another split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mgc.core.config import ConfigError, load_config
from mgc.core.device import choose_fast_path, select_device
from mgc.data.datasets import DatasetError
from mgc.data.loader import ChunkSet, build_chunk_set, iterate_batches, load_split_data
from mgc.models.adapter import Classifier
from mgc.models.bundle import load_bundle
from mgc.models.inference import chunk_probabilities, track_probabilities
from mgc.results.artifacts import write_json, write_part_artifacts
from mgc.results.metrics import evaluate_predictions

log = logging.getLogger(__name__)

EVAL_BATCH = 64


def predict_chunks(
    classifier: Classifier, chunk_set: ChunkSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities of every chunk: (probs (N, C), labels (N,), track index (N,))."""
    probs, (labels, tracks) = chunk_probabilities(
        classifier, iterate_batches(chunk_set, EVAL_BATCH)
    )
    return probs, labels.numpy(), tracks.numpy()


def evaluate_chunks(
    classifier: Classifier, chunk_set: ChunkSet, loss_fn: nn.Module | None = None
) -> dict:
    """Chunk/track metrics on one part, and the loss when given (every epoch's validation)."""
    probs, labels, tracks = predict_chunks(classifier, chunk_set)
    out = evaluate_predictions(probs, labels, tracks, probs.shape[1])
    if loss_fn is not None:
        # log_softmax of log-probabilities is the identity, so this is the training loss exactly.
        logp = torch.log(torch.from_numpy(probs).clamp_min(1e-12))
        out["loss"] = float(loss_fn(logp, torch.from_numpy(labels)))
    return out


def write_evaluation(
    classifier: Classifier,
    chunk_set: ChunkSet,
    genres: list[str],
    out_dir: Path,
    part: str,
    title: str,
) -> dict:
    """Metrics of `classifier` on one part; the report, confusion matrix, predictions and hard
    cases go to out_dir (named after the part)."""
    probs, labels, tracks = predict_chunks(classifier, chunk_set)
    metrics = evaluate_predictions(probs, labels, tracks, len(genres))
    idx, track_probs = track_probabilities(probs, tracks)
    track_ids = [chunk_set.tracks[i].track_id for i in idx]
    y_track = np.array([chunk_set.tracks[i].label for i in idx])
    write_part_artifacts(
        out_dir,
        part,
        track_ids,
        y_track,
        track_probs,
        genres,
        title,
        chunk_true=labels,
        chunk_pred=probs.argmax(1),
    )
    return metrics


def run_config(run_dir: str | Path, overrides: list[str] | None = None):
    """A run folder's config (with overrides) and bundle; the data settings are the bundle's."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (config.yaml missing)")
    cfg = load_config(run_dir / "config.yaml", overrides)
    bundle = load_bundle(run_dir)
    cfg.features, cfg.chunks = bundle.features, bundle.chunks
    return cfg, bundle


def evaluate_run(
    run_dir: str | Path,
    overrides: list[str] | None = None,
    part: str = "test",
    out_dir: str | Path | None = None,
) -> tuple[Path, dict]:
    """Evaluate a run folder's bundle on `part` of the (possibly overridden) split; artifacts go
    to `out_dir` (default: `<run_dir>/eval-<split>-<part>`). The features must be in the cache
    (`mgc.data.prepare`; the command line makes them first)."""
    run_dir = Path(run_dir)
    cfg, bundle = run_config(run_dir, overrides)
    data = load_split_data(cfg)
    if data.genres != bundle.genres:
        raise DatasetError(
            f"{cfg.data.root}: genres {data.genres} differ from the model's {bundle.genres}"
        )
    if not data.parts.get(part):
        raise DatasetError(f"{cfg.data.root}: split '{data.split_name}' has no {part} tracks here")
    t = cfg.train
    fast = choose_fast_path(select_device(t.device), t.amp, t.channels_last, "off")
    classifier = bundle.classifier.on(fast)
    out_dir = Path(out_dir) if out_dir else run_dir / f"eval-{data.split_name}-{part}"
    chunk_set = build_chunk_set(data.parts[part], cfg.chunks, cfg.features)
    title = f"{cfg.experiment.name} {cfg.model.name}: {part} tracks, {data.split_name} split"
    metrics = write_evaluation(classifier, chunk_set, data.genres, out_dir, part, title)
    metrics.update(split=data.split_name, part=part, missing_tracks=data.missing)
    write_json(out_dir / "metrics.json", metrics)
    return out_dir, metrics
