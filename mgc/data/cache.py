"""Feature store: one log-mel array per track, keyed by audio content and feature parameters.

Layout under the cache URI (a local folder or any fsspec URI such as s3://bucket/prefix):

    logmel-<feature key>/
        params.json                       the FeatureConfig the key stands for
        <h[:2]>/<h>.npy                   float32 (n_mels, frames) for audio content hash h
        manifest-<dataset key>.json       per-file records of the last prepare of a dataset
    logmel-<feature key>-aug-<augment key>/
        params.json                       the AugmentConfig the key stands for (not `copies`)
        <h[:2]>/<h>.<i>.npy               augmented copy i of content h (training tracks only)

A changed feature parameter changes the key, so it recomputes into a new folder; the same audio
under another name or in another dataset reuses the stored array. Augmented copies live in a
folder of their own, keyed by the feature key and the augmentation settings, so turning
augmentation on or off never touches the clean arrays; asking for more copies makes only the new
ones (copy i is the same whatever the number asked for).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np

from mgc.core.config import AugmentConfig, FeatureConfig
from mgc.core.fsio import atomic_write

# Bump when the way features are computed changes without a parameter changing.
FEATURE_VERSION = 2  # 2: resampling by soxr (streams the same as whole files), was torchaudio


# FeatureConfig fields added after caches were made, with the value they had implicitly before:
# left out of the key at that value, so existing caches keep their keys; any other value is in it.
_ADDED_LATER = {"scale": "db", "loudness_db": None, "lowpass_hz": None}


def feature_key(cfg: FeatureConfig) -> str:
    params = {
        k: v for k, v in dataclasses.asdict(cfg).items() if _ADDED_LATER.get(k, object()) != v
    }
    payload = json.dumps({"v": FEATURE_VERSION, **params}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


# Bump when the way augmented copies are made changes without a setting changing.
AUGMENT_VERSION = 1


def augment_key(cfg: AugmentConfig) -> str:
    """What an augmented copy depends on: every augment setting but the number of copies."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "copies"}
    payload = json.dumps({"v": AUGMENT_VERSION, **settings}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def dataset_key(root: str | Path) -> str:
    return hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:10]


def write_array(fs: fsspec.AbstractFileSystem, path: str, logmel: np.ndarray) -> None:
    """A float32 .npy at `path`, via a temporary: an interrupted run must not leave a
    half-written array that a later `has()` trusts."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(logmel, dtype=np.float32))
    atomic_write(path, buf.getvalue(), fs=fs)


def read_array(fs: fsspec.AbstractFileSystem, path: str) -> np.ndarray:
    with fs.open(path, "rb") as fh:
        return np.load(io.BytesIO(fh.read()))


@dataclass
class CacheEntry:
    """What prepare knows about one file of a dataset."""

    track_id: str
    genre: str
    path: str
    size: int
    mtime_ns: int
    content: str | None = None  # content hash; None when the file could not be read
    n_frames: int = 0
    error: str | None = None  # one-line reason when the file was skipped


class FeatureStore:
    """Reads and writes log-mel arrays for one FeatureConfig under a cache URI."""

    def __init__(self, uri: str, features: FeatureConfig):
        self.uri = uri
        self.features = features
        self.key = feature_key(features)
        self.fs, root = fsspec.core.url_to_fs(uri)
        self.base = f"{root.rstrip('/')}/logmel-{self.key}"

    # -- arrays --------------------------------------------------------------------------------
    def array_path(self, content: str) -> str:
        return f"{self.base}/{content[:2]}/{content}.npy"

    def has(self, content: str) -> bool:
        return self.fs.exists(self.array_path(content))

    def stored(self) -> set[str]:
        """Content hashes of every stored array, in one listing (cheap on object stores too)."""
        if not self.fs.exists(self.base):
            return set()
        return {
            p.rsplit("/", 1)[-1][: -len(".npy")]
            for p in self.fs.find(self.base)
            if p.endswith(".npy")
        }

    def save(self, content: str, logmel: np.ndarray) -> None:
        write_array(self.fs, self.array_path(content), logmel)

    def load(self, content: str) -> np.ndarray:
        return read_array(self.fs, self.array_path(content))

    # -- manifests -----------------------------------------------------------------------------
    def manifest_path(self, root: str | Path) -> str:
        return f"{self.base}/manifest-{dataset_key(root)}.json"

    def read_manifest(self, root: str | Path) -> dict[str, CacheEntry]:
        path = self.manifest_path(root)
        if not self.fs.exists(path):
            return {}
        with self.fs.open(path, "rt") as fh:
            raw = json.load(fh)
        return {r["path"]: CacheEntry(**r) for r in raw["entries"]}

    def write_manifest(self, root: str | Path, entries: list[CacheEntry]) -> str:
        payload = {
            "root": str(Path(root).resolve()),
            "feature_key": self.key,
            "features": dataclasses.asdict(self.features),
            "entries": [dataclasses.asdict(e) for e in entries],
        }
        path = self.manifest_path(root)
        atomic_write(path, json.dumps(payload, indent=1), fs=self.fs)
        atomic_write(
            f"{self.base}/params.json", json.dumps(payload["features"], indent=2), fs=self.fs
        )
        return path


class CopyStore:
    """Augmented log-mels (`AugmentConfig`) of one FeatureStore's tracks: copy i of content h."""

    def __init__(self, store: FeatureStore, augment: AugmentConfig):
        self.fs = store.fs
        self.augment = augment
        self.key = augment_key(augment)
        self.base = f"{store.base}-aug-{self.key}"

    def array_path(self, content: str, index: int) -> str:
        return f"{self.base}/{content[:2]}/{content}.{index}.npy"

    def has(self, content: str, index: int) -> bool:
        return self.fs.exists(self.array_path(content, index))

    def stored(self) -> set[tuple[str, int]]:
        """(content hash, copy number) of every stored copy, in one listing."""
        if not self.fs.exists(self.base):
            return set()
        names = (p.rsplit("/", 1)[-1] for p in self.fs.find(self.base) if p.endswith(".npy"))
        return {(h, int(i)) for h, i, _ in (n.split(".") for n in names)}

    def missing(self, content: str, stored: set[tuple[str, int]]) -> int:
        """How many of the first `augment.copies` copies of `content` are not in `stored`."""
        return sum((content, i) not in stored for i in range(self.augment.copies))

    def save(self, content: str, index: int, logmel: np.ndarray) -> None:
        write_array(self.fs, self.array_path(content, index), logmel)
        params = f"{self.base}/params.json"
        if not self.fs.exists(params):
            settings = {k: v for k, v in dataclasses.asdict(self.augment).items() if k != "copies"}
            atomic_write(params, json.dumps(settings, indent=2), fs=self.fs)

    def load(self, content: str, index: int) -> np.ndarray:
        return read_array(self.fs, self.array_path(content, index))


def stat_entry(track_id: str, genre: str, path: str) -> CacheEntry:
    st = os.stat(path)
    return CacheEntry(track_id, genre, path, st.st_size, st.st_mtime_ns)


def is_current(entry: CacheEntry, fresh: CacheEntry, stored: set[str]) -> bool:
    """A manifest entry still describes the file (same size and mtime) and, unless the file was
    found bad (reported again, not retried until it changes), its array is in the store."""
    if entry.size != fresh.size or entry.mtime_ns != fresh.mtime_ns:
        return False
    return entry.error is not None or (entry.content is not None and entry.content in stored)
