"""Chunked log-mel data for training and evaluation: cached arrays in memory, batches by slicing.

Tracks are assigned to split parts first and only then cut into windows, so no piece of a track
reaches two parts. Each track's full log-mel is held once; a batch is a stack of slices of it,
normalised per chunk on the fly, which costs microseconds and never makes the model wait.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from mgc.config import ChunkConfig, Config, FeatureConfig
from mgc.data.cache import FeatureStore
from mgc.data.datasets import Track, discover, genres_of
from mgc.data.splits import assign_parts, resolve_split, subsample
from mgc.features import chunk_starts, normalize_chunks, window_frames

log = logging.getLogger(__name__)

PARTS = ("train", "valid", "test")


@dataclass
class TrackArray:
    track_id: str
    label: int
    logmel: torch.Tensor  # (n_mels, frames), float32


@dataclass
class SplitData:
    genres: list[str]
    parts: dict[str, list[TrackArray]]
    split_name: str
    missing: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # bad files left out, one line each


@dataclass
class ChunkSet:
    """Windows over a list of tracks: (track index, start frame) pairs."""

    tracks: list[TrackArray]
    window: int
    step: int
    chunk_track: torch.Tensor  # (N,) int64
    chunk_start: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.chunk_track.numel())

    @property
    def labels(self) -> torch.Tensor:
        per_track = torch.tensor([t.label for t in self.tracks], dtype=torch.long)
        return per_track[self.chunk_track]

    def batch(
        self, idx: torch.Tensor, normalize: bool, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Chunks `idx` as (B, 1, n_mels, window); with a generator, starts are jittered by up
        to half a step either way (random crops, the chunk-level augmentation of E5)."""
        starts = self.chunk_start[idx]
        if generator is not None and self.step > 1:
            shift = torch.randint(
                -(self.step // 2), self.step // 2 + 1, starts.shape, generator=generator
            )
            starts = starts + shift
        out = []
        for t, s in zip(self.chunk_track[idx].tolist(), starts.tolist(), strict=True):
            spec = self.tracks[t].logmel
            s = min(max(0, s), spec.shape[1] - self.window)
            out.append(spec[:, s : s + self.window])
        x = torch.stack(out).unsqueeze(1)
        return normalize_chunks(x) if normalize else x


def build_chunk_set(
    tracks: list[TrackArray], chunks: ChunkConfig, features: FeatureConfig
) -> ChunkSet:
    if not tracks:
        raise ValueError("no tracks to cut into chunks")
    shortest = min(t.logmel.shape[1] for t in tracks)
    window = window_frames(chunks, features, shortest)
    step = max(1, int(round(window * (1.0 - chunks.overlap))))
    track_idx, starts = [], []
    for i, t in enumerate(tracks):
        if t.logmel.shape[1] < window:  # pad short tracks once, with their own floor
            pad = window - t.logmel.shape[1]
            t.logmel = torch.nn.functional.pad(t.logmel, (0, pad), value=float(t.logmel.min()))
        for s in chunk_starts(t.logmel.shape[1], window, chunks.overlap):
            track_idx.append(i)
            starts.append(s)
    return ChunkSet(tracks, window, step, torch.tensor(track_idx), torch.tensor(starts))


def iterate_batches(
    chunk_set: ChunkSet,
    batch_size: int,
    normalize: bool,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    jitter: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yields (x, labels, track index) batches; the last batch may be smaller."""
    n = len(chunk_set)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    labels = chunk_set.labels
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        x = chunk_set.batch(idx, normalize, generator if jitter else None)
        yield x, labels[idx], chunk_set.chunk_track[idx]


def _arrays(
    tracks: list[Track], labels: dict[str, int], contents: dict[str, str], store: FeatureStore
) -> list[TrackArray]:
    return [
        TrackArray(t.track_id, labels[t.genre], torch.from_numpy(store.load(contents[t.path])))
        for t in tracks
    ]


def load_split_data(cfg: Config, prepare_missing: bool = True) -> SplitData:
    """Tracks of cfg.data split into parts, with their cached log-mels loaded.

    Computes missing features in this process when needed (a sweep has Ray Data do it first).
    """
    from mgc.prepare import prepare  # one preprocessing path for every caller

    tracks = discover(cfg.data.root)
    genres = genres_of(tracks)
    label_of = {g: i for i, g in enumerate(genres)}
    split, missing = resolve_split(cfg.data.split, tracks, cfg.data.split_seed)
    parts = assign_parts(split, tracks)
    if cfg.data.fraction < 1.0:
        parts = {p: subsample(t, cfg.data.fraction, cfg.data.split_seed) for p, t in parts.items()}
    if cfg.data.train_fraction < 1.0:
        parts["train"] = subsample(parts["train"], cfg.data.train_fraction, cfg.data.split_seed)
    for root in cfg.data.extra_train_roots:
        extra = [t for t in discover(root) if t.genre in label_of]
        log.info("%s: %d extra training tracks", root, len(extra))
        parts["train"] = parts["train"] + extra

    store = FeatureStore(cfg.cache.dir, cfg.features)
    result = prepare(cfg, use_ray=False) if prepare_missing else None
    entries = result.entries if result else []
    contents = {e.path: e.content for e in entries if e.error is None}
    skipped = [e.error for e in entries if e.error is not None]
    arrays = {}
    for part in PARTS:
        usable = [t for t in parts.get(part, []) if t.path in contents]
        arrays[part] = _arrays(usable, label_of, contents, store)
    return SplitData(genres, arrays, split.name, missing, skipped)


def stack_pooled(tracks: list[TrackArray]) -> tuple[np.ndarray, np.ndarray]:
    """Whole-track features for the time-averaged baselines: (N, n_mels, frames) cropped to the
    shortest track, and labels."""
    shortest = min(t.logmel.shape[1] for t in tracks)
    x = np.stack([t.logmel[:, :shortest].numpy() for t in tracks])
    y = np.array([t.label for t in tracks])
    return x, y
