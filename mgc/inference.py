"""Model input → probabilities, the one way: a classifier's chunk probabilities, averaged per
track. Evaluation (from the feature cache) and prediction (from an audio file) both end here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mgc.bundle import Bundle
from mgc.device import FastPath, choose_fast_path, select_device
from mgc.frontend import Frontend
from mgc.models.adapter import Classifier

PREDICT_BATCH = 64


def chunk_probabilities(
    classifier: Classifier, batches: Iterable[tuple[torch.Tensor, ...]]
) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Probabilities of every chunk of `batches` (x first, then anything the caller wants back,
    such as labels and track indices, concatenated in order)."""
    probs, rest = [], []
    for x, *extra in batches:
        probs.append(classifier.predict_proba(x))
        rest.append(extra)
    carried = [torch.cat(col) for col in zip(*rest, strict=True)] if rest and rest[0] else []
    return np.concatenate(probs), carried


def track_probabilities(
    chunk_probs: np.ndarray, chunk_track: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean chunk probability per track → (sorted unique track indices, (n_tracks, C) means)."""
    probs = np.asarray(chunk_probs, dtype=np.float64)
    track = np.asarray(chunk_track)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probabilities must be a non-empty (n, classes) array, got {probs.shape}")
    if track.shape != (probs.shape[0],) or not np.issubdtype(track.dtype, np.integer):
        raise ValueError(f"chunk_track must hold {probs.shape[0]} integers, got {track.shape}")
    tracks, inverse = np.unique(track, return_inverse=True)
    sums = np.zeros((tracks.size, probs.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=tracks.size)
    return tracks, sums / counts[:, None]


@dataclass
class Prediction:
    """One track's genre probabilities and the per-window ones they average."""

    probabilities: np.ndarray  # (n_classes,)
    chunk_probabilities: np.ndarray  # (n_windows, n_classes)
    windows: list[tuple[float, float]]  # (start, end) seconds of each window
    duration_s: float
    padded: bool  # shorter than one window: padded up to it
    genres: list[str] = field(default_factory=list)


class Predictor:
    """A bundle ready to predict: its front end, its classifier on a device."""

    def __init__(self, bundle: Bundle, fast: FastPath | None = None):
        self.bundle = bundle
        self.frontend = Frontend(bundle.features, bundle.chunks)
        self.fast = fast or choose_fast_path(select_device("auto"))
        self.classifier = bundle.classifier.on(self.fast)

    def predict_logmel(self, logmel: np.ndarray | torch.Tensor, duration_s: float) -> Prediction:
        x = self.frontend.windows(logmel)
        batches = ((x[i : i + PREDICT_BATCH],) for i in range(0, len(x), PREDICT_BATCH))
        chunk_probs, _ = chunk_probabilities(self.classifier, batches)
        _, track = track_probabilities(chunk_probs, np.zeros(len(chunk_probs), dtype=np.int64))
        n_frames = int(np.asarray(logmel).shape[-1])
        return Prediction(
            probabilities=track[0],
            chunk_probabilities=chunk_probs,
            windows=self.frontend.window_times(n_frames),
            duration_s=duration_s,
            padded=n_frames < self.frontend.windowing.window,
            genres=list(self.bundle.genres),
        )

    def predict_wave(self, wave: np.ndarray) -> Prediction:
        """Mono float32 at the bundle's sample rate → prediction."""
        duration = wave.size / self.bundle.features.sample_rate
        return self.predict_logmel(self.frontend.logmel(wave), duration)

    def predict_file(self, path: str | Path) -> Prediction:
        """Any audio file the decoders read → prediction; raises AudioError naming the file."""
        return self.predict_wave(self.frontend.decode(path))


def predict_file(bundle: Bundle, path: str | Path, fast: FastPath | None = None) -> np.ndarray:
    """Track probabilities (n_classes,) of one audio file under `bundle`'s settings."""
    return Predictor(bundle, fast).predict_file(path).probabilities
