"""Model input → probabilities, the one way: a classifier's chunk probabilities, averaged per
track. Evaluation (from the feature cache) and prediction (from an audio file) both end here.

A bundle calibrated on validation (`mgc.calibrate`) carries a temperature; `Predictor` applies it
to the track's mean probabilities (`calibrate`), so the scores it reports are calibrated ones."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mgc.core.audio import stream_audio
from mgc.core.device import FastPath, choose_fast_path, select_device
from mgc.features.frontend import Frontend
from mgc.models.adapter import Classifier
from mgc.models.bundle import Bundle

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


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of probabilities along the last axis: softmax(log(p) / T). T > 1
    softens over-confident scores, T < 1 sharpens; T = 1 returns `probs` as they are. The top
    genre never changes."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=-1, keepdims=True)


@dataclass
class Prediction:
    """One track's genre probabilities and the per-window ones they average."""

    probabilities: np.ndarray  # (n_classes,), calibrated by the bundle's temperature
    chunk_probabilities: np.ndarray  # (n_windows, n_classes), the model's own (uncalibrated)
    windows: list[tuple[float, float]]  # (start, end) seconds of each window
    duration_s: float
    padded: bool  # shorter than one window: padded up to it
    genres: list[str] = field(default_factory=list)
    peak: float = 0.0  # largest absolute sample: how loud the loudest moment was
    temperature: float = 1.0  # what `probabilities` were calibrated with (segments use it too)


class Predictor:
    """A bundle ready to predict: its front end, its classifier on a device.

    Files are decoded and classified a segment (`segment_s`, 60 s by default) at a time: memory
    holds one segment's audio and log-mel plus a few bytes per window, whatever the length.
    """

    def __init__(self, bundle: Bundle, fast: FastPath | None = None, segment_s: float = 60.0):
        self.bundle = bundle
        self.frontend = Frontend(bundle.features, bundle.chunks)
        self.fast = fast or choose_fast_path(select_device("auto"))
        self.classifier = bundle.classifier.on(self.fast)
        self.segment_s = segment_s

    def predict_stream(self, blocks: Iterable[np.ndarray]) -> Prediction:
        """Mono float32 blocks at the bundle's sample rate → prediction."""
        n_samples, peak = 0, 0.0

        def counted() -> Iterator[np.ndarray]:
            nonlocal n_samples, peak
            for block in blocks:
                n_samples += len(block)
                peak = max(peak, float(np.abs(block).max(initial=0.0)))
                yield block

        probs, windows, padded = [], [], False
        w = self.frontend.windowing.window
        for seg in self.frontend.segments(counted(), self.segment_s):
            x = seg.inputs
            batches = ((x[i : i + PREDICT_BATCH],) for i in range(0, len(x), PREDICT_BATCH))
            probs.append(chunk_probabilities(self.classifier, batches)[0])
            windows += [(seg.first_frame + st, seg.first_frame + st + w) for st in seg.starts]
            padded = padded or seg.padded
        chunk_probs = np.concatenate(probs)
        _, track = track_probabilities(chunk_probs, np.zeros(len(chunk_probs), dtype=np.int64))
        duration = n_samples / self.bundle.features.sample_rate
        seconds = self.frontend.seconds
        return Prediction(
            probabilities=calibrate(track[0], self.bundle.temperature),
            chunk_probabilities=chunk_probs,
            windows=[(seconds(a), min(seconds(b), duration)) for a, b in windows],
            duration_s=duration,
            padded=padded,
            genres=list(self.bundle.genres),
            peak=peak,
            temperature=self.bundle.temperature,
        )

    def predict_wave(self, wave: np.ndarray) -> Prediction:
        """Mono float32 at the bundle's sample rate → prediction."""
        return self.predict_stream([wave])

    def predict_file(self, path: str | Path) -> Prediction:
        """Any audio file the decoders read → prediction; raises AudioError naming the file."""
        sr = self.bundle.features.sample_rate
        return self.predict_stream(stream_audio(path, sr, block_s=self.segment_s / 4))


def predict_file(bundle: Bundle, path: str | Path, fast: FastPath | None = None) -> np.ndarray:
    """Track probabilities (n_classes,) of one audio file under `bundle`'s settings."""
    return Predictor(bundle, fast).predict_file(path).probabilities
