"""Chunked log-mel data for training and evaluation, read from the feature cache (never written).

Tracks are assigned to split parts first and only then cut into windows, so no piece of a track
reaches two parts. Each track's full log-mel is held once; a batch is a stack of window slices
of it (the `Windowing` every caller shares), normalised per chunk on the fly.

Under `augment.copies` a training track also holds its augmented log-mels (made by prepare), and
each epoch trains on one of its versions, clean or augmented, drawn at random (`pick_versions`),
or, under `train.consistency`, on the clean windows beside the same windows of a random copy
(`pick_copies`, `iterate_pairs`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from mgc.core.config import AugmentConfig, ChunkConfig, Config, FeatureConfig
from mgc.data.cache import CacheEntry, CopyStore, FeatureStore, is_current, stat_entry
from mgc.data.datasets import DatasetError, Track, discover, genres_of
from mgc.data.splits import PARTS, assign_parts, resolve_split, subsample
from mgc.features.frontend import Frontend

log = logging.getLogger(__name__)


class FeaturesMissing(DatasetError):
    """Tracks whose log-mel is not in the cache; the message names the command that makes them."""


@dataclass
class TrackArray:
    track_id: str
    label: int
    logmel: torch.Tensor  # (n_mels, frames), float32
    # Augmented log-mels of the same audio, each shaped as `logmel` (training tracks only).
    copies: list[torch.Tensor] = field(default_factory=list)


@dataclass
class SplitData:
    genres: list[str]
    parts: dict[str, list[TrackArray]]
    split_name: str
    missing: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # bad files left out, one line each


@dataclass
class ChunkSet:
    """Windows over a list of tracks: (track index, start frame) pairs, and how to finish them."""

    tracks: list[TrackArray]
    frontend: Frontend
    chunk_track: torch.Tensor  # (N,) int64
    chunk_start: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.chunk_track.numel())

    @property
    def window(self) -> int:
        return self.frontend.windowing.window

    @property
    def labels(self) -> torch.Tensor:
        per_track = torch.tensor([t.label for t in self.tracks], dtype=torch.long)
        return per_track[self.chunk_track]

    def starts(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The first frames of windows `idx`; with a generator, jittered by up to half a step
        either way (random crops, the chunk-level augmentation of E5)."""
        starts = self.chunk_start[idx]
        step = self.frontend.windowing.step
        if generator is not None and step > 1:
            starts = starts + torch.randint(
                -(step // 2), step // 2 + 1, starts.shape, generator=generator
            )
        return starts

    def cut(self, idx: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Windows `idx` from frames `starts` (clamped into their track) as model input."""
        w = self.window
        out = []
        for t, s in zip(self.chunk_track[idx].tolist(), starts.tolist(), strict=True):
            spec = self.tracks[t].logmel
            s = min(max(0, s), spec.shape[1] - w)
            out.append(spec[:, s : s + w])
        return self.frontend.finish(torch.stack(out))

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Chunks `idx` as model input (B, 1, n_mels, window), jittered when given a generator."""
        return self.cut(idx, self.starts(idx, generator))


def pick_versions(chunk_set: ChunkSet, generator: torch.Generator) -> ChunkSet:
    """One epoch's view of the training windows: every track as its clean log-mel or one of its
    augmented copies, each equally likely, at the same window places. Without copies the set
    comes back as it is (and the generator is not drawn from, so runs stay as they were)."""
    tracks = chunk_set.tracks
    if not any(t.copies for t in tracks):
        return chunk_set
    picks = [int(torch.randint(len(t.copies) + 1, (1,), generator=generator)) for t in tracks]
    versions = [
        dataclasses.replace(t, logmel=t.logmel if k == 0 else t.copies[k - 1])
        for t, k in zip(tracks, picks, strict=True)
    ]
    return dataclasses.replace(chunk_set, tracks=versions)


def pick_copies(chunk_set: ChunkSet, generator: torch.Generator) -> ChunkSet:
    """The same windows, each track as one of its augmented copies drawn at random (never the
    clean log-mel): the other half of a consistency pair (`train.consistency`). Every track must
    have copies."""
    tracks = chunk_set.tracks
    if not all(t.copies for t in tracks):
        raise ValueError("consistency pairs need augmented copies of every training track")
    picks = [int(torch.randint(len(t.copies), (1,), generator=generator)) for t in tracks]
    versions = [
        dataclasses.replace(t, logmel=t.copies[k]) for t, k in zip(tracks, picks, strict=True)
    ]
    return dataclasses.replace(chunk_set, tracks=versions)


def random_windows(chunk_set: ChunkSet, per_track: int, generator: torch.Generator) -> ChunkSet:
    """`per_track` windows of every track at uniformly random places: one epoch's sample when
    an epoch is defined as a fixed number of windows per track (`train.windows_per_track`)."""
    n = len(chunk_set.tracks)
    window = chunk_set.window
    room = torch.tensor([t.logmel.shape[1] - window + 1 for t in chunk_set.tracks])
    track = torch.arange(n).repeat_interleave(per_track)
    start = (torch.rand(n * per_track, generator=generator) * room[track]).long()
    return ChunkSet(chunk_set.tracks, chunk_set.frontend, track, start)


def build_chunk_set(
    tracks: list[TrackArray], chunks: ChunkConfig, features: FeatureConfig
) -> ChunkSet:
    if not tracks:
        raise ValueError("no tracks to cut into chunks")
    frontend = Frontend(features, chunks)
    windowing = frontend.windowing
    track_idx, starts = [], []
    for i, t in enumerate(tracks):
        t.logmel = windowing.pad(t.logmel)  # once, so every slice is a whole window
        t.copies = [windowing.pad(c) for c in t.copies]
        for s in windowing.starts(t.logmel.shape[1]):
            track_idx.append(i)
            starts.append(s)
    return ChunkSet(tracks, frontend, torch.tensor(track_idx), torch.tensor(starts))


def batch_order(
    n: int, batch_size: int, shuffle: bool, generator: torch.Generator | None
) -> Iterator[torch.Tensor]:
    """Window indices `0..n-1` in batches of `batch_size` (the last may be smaller), shuffled
    with `generator` when asked."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


def iterate_batches(
    chunk_set: ChunkSet,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    jitter: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yields (x, labels, track index) batches; the last batch may be smaller."""
    labels = chunk_set.labels
    for idx in batch_order(len(chunk_set), batch_size, shuffle, generator):
        x = chunk_set.batch(idx, generator if jitter else None)
        yield x, labels[idx], chunk_set.chunk_track[idx]


def iterate_pairs(
    chunk_set: ChunkSet,
    copy_set: ChunkSet,
    batch_size: int,
    generator: torch.Generator,
    jitter: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled (x, x of the copy, labels) batches: each window of `chunk_set` beside the same
    window (same track, same frames, jitter included) of `copy_set`, the same windows over other
    versions of the tracks (`pick_copies`)."""
    labels = chunk_set.labels
    for idx in batch_order(len(chunk_set), batch_size, True, generator):
        starts = chunk_set.starts(idx, generator if jitter else None)
        yield chunk_set.cut(idx, starts), copy_set.cut(idx, starts), labels[idx]


def split_tracks(cfg: Config) -> tuple[list[str], dict[str, list[Track]], str, dict[str, int]]:
    """(genres, tracks per part, split name, missing per part) for cfg.data, with the fraction,
    train_fraction and extra training roots applied."""
    tracks = discover(cfg.data.root)
    genres = genres_of(tracks)
    split, missing = resolve_split(cfg.data.split, tracks, cfg.data.split_seed)
    parts = assign_parts(split, tracks)
    if cfg.data.fraction < 1.0:
        parts = {p: subsample(t, cfg.data.fraction, cfg.data.split_seed) for p, t in parts.items()}
    if cfg.data.train_fraction < 1.0:
        parts["train"] = subsample(parts["train"], cfg.data.train_fraction, cfg.data.split_seed)
    for root in cfg.data.extra_train_roots:
        extra = [t for t in discover(root) if t.genre in genres]
        log.info("%s: %d extra training tracks", root, len(extra))
        parts["train"] = parts["train"] + extra
    return genres, parts, split.name, missing


def prepare_command(cfg: Config) -> str:
    """The command line that fills the cache for cfg's data and features."""
    args = [f"data.root={cfg.data.root}", f"cache.dir={cfg.cache.dir}"]
    if cfg.data.extra_train_roots:
        args.append(f"data.extra_train_roots=[{','.join(cfg.data.extra_train_roots)}]")
    for section, cls in (("features", FeatureConfig), ("augment", AugmentConfig)):
        defaults = cls()
        for f in dataclasses.fields(cls):
            value = getattr(getattr(cfg, section), f.name)
            if value != getattr(defaults, f.name):
                text = "null" if value is None else value
                if isinstance(value, list):
                    text = "[" + ",".join(map(str, value)) + "]"
                args.append(f"{section}.{f.name}={text}")
    return "python -m mgc.prepare " + " ".join(args)


def _is_current(entry: CacheEntry | None, path: str, stored: set[str]) -> bool:
    if entry is None:
        return False
    try:
        fresh = stat_entry(entry.track_id, entry.genre, path)
    except OSError:  # gone since it was listed
        return False
    return is_current(entry, fresh, stored)


def load_split_data(cfg: Config) -> SplitData:
    """Tracks of cfg.data split into parts, with their cached log-mels. Reads only: raises
    FeaturesMissing, naming the `mgc.prepare` command, when the cache lacks any of them."""
    genres, parts, split_name, missing = split_tracks(cfg)
    label_of = {g: i for i, g in enumerate(genres)}
    store = FeatureStore(cfg.cache.dir, cfg.features)
    manifest: dict[str, CacheEntry] = {}
    for root in [cfg.data.root, *cfg.data.extra_train_roots]:
        manifest.update(store.read_manifest(root))
    stored = store.stored()
    wanted = [t for part in PARTS for t in parts.get(part, [])]
    stale = [t.path for t in wanted if not _is_current(manifest.get(t.path), t.path, stored)]
    if stale:
        raise FeaturesMissing(
            f"{cfg.cache.dir}: no current log-mel for {len(stale)} of {len(wanted)} tracks "
            f"(first: {stale[0]}); make them with: {prepare_command(cfg)}"
        )
    skipped = [manifest[t.path].error for t in wanted if manifest[t.path].error]
    usable = {p: [t for t in parts.get(p, []) if not manifest[t.path].error] for p in PARTS}
    copies = training_copies(cfg, store, [manifest[t.path].content for t in usable["train"]])
    arrays = {
        part: [
            TrackArray(
                t.track_id,
                label_of[t.genre],
                torch.from_numpy(store.load(manifest[t.path].content)),
                copies.get(manifest[t.path].content, []) if part == "train" else [],
            )
            for t in usable[part]
        ]
        for part in PARTS
    }
    return SplitData(genres, arrays, split_name, missing, skipped)


def training_copies(
    cfg: Config, store: FeatureStore, contents: list[str]
) -> dict[str, list[torch.Tensor]]:
    """The augmented copies (`augment.copies` each) of the training tracks with these content
    hashes; {} when augmentation is off. Raises FeaturesMissing, naming the `mgc.prepare`
    command, when any copy is not in the cache."""
    # A Config pickled before the augment section existed (a sweep task retried under newer
    # code) has no such attribute: it asked for no copies.
    augment: AugmentConfig = getattr(cfg, "augment", None) or AugmentConfig()
    if augment.copies == 0:
        return {}
    copies = CopyStore(store, augment)
    stored = copies.stored()
    lacking = [c for c in contents if copies.missing(c, stored)]
    if lacking:
        raise FeaturesMissing(
            f"{cfg.cache.dir}: {len(lacking)} of {len(contents)} training tracks lack their "
            f"{augment.copies} augmented copies; make them with: {prepare_command(cfg)}"
        )
    return {
        c: [torch.from_numpy(copies.load(c, i)) for i in range(augment.copies)] for c in contents
    }
