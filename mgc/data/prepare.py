"""`python -m mgc.prepare CONFIG [overrides]`: log-mel features for a dataset, sharded by Ray Data.

The driver finds which files the cache already covers (a manifest of size/mtime → content hash,
checked against one listing of the store) and sends only the others to Ray Data, where each
worker reads a file, hashes it, and computes and stores its log-mel unless that content is
already stored. A warm run therefore starts no Ray at all; an interrupted run resumes, because
every array is written atomically as soon as it is computed.

With `augment.copies` > 0, each training track also gets that many augmented log-mels (see
`mgc.features.augment`), made from the same decode and stored under their own key: a track is
sent to the workers when its clean log-mel or any of its copies is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mgc.core.audio import AudioError
from mgc.core.cluster import init_ray
from mgc.core.config import AugmentConfig, ChunkConfig, Config, FeatureConfig
from mgc.data.cache import (
    CacheEntry,
    CopyStore,
    FeatureStore,
    content_hash,
    is_current,
    stat_entry,
)
from mgc.data.datasets import no_tracks_error, printable, survey
from mgc.data.loader import split_tracks
from mgc.features.augment import augmented_copy
from mgc.features.frontend import Frontend

log = logging.getLogger(__name__)


@dataclass
class PrepareResult:
    entries: list[CacheEntry]
    computed: int
    reused: int
    failed: int
    seconds: float
    ray_seconds: float
    manifest: str
    # (path, why) of entries in genre folders that are not tracks: other files, sub-folders,
    # broken links, genre folders without audio. Listed so that every file is accounted for.
    ignored: list[tuple[str, str]] = field(default_factory=list)
    copies: int = 0  # augmented copies computed (augment.copies per training track)

    @property
    def ok(self) -> list[CacheEntry]:
        return [e for e in self.entries if e.error is None]

    @property
    def bad(self) -> list[CacheEntry]:
        return [e for e in self.entries if e.error is not None]


def _skipped(entry: CacheEntry, error: str, content: str | None = None) -> CacheEntry:
    # One line, and printable whatever the file's name: the text travels through Arrow (UTF-8
    # only) from Ray workers, and ends up in the report and the manifest.
    return dataclasses.replace(entry, content=content, error=" ".join(printable(error).split()))


def process_file(
    entry: CacheEntry, store: FeatureStore, frontend: Frontend, copies: CopyStore | None = None
) -> tuple[CacheEntry, bool, int]:
    """Hash one file and make sure its log-mel is stored, and with `copies` (a training track
    under augmentation) its augmented copies too, all from one decode. Returns (entry, clean
    log-mel computed?, copies computed)."""
    try:
        data = Path(entry.path).read_bytes()
    except OSError as exc:
        return _skipped(entry, f"{entry.path}: cannot read ({exc.strerror})"), False, 0
    digest = content_hash(data)
    have_clean = store.has(digest)
    todo = [] if copies is None else [
        i for i in range(copies.augment.copies) if not copies.has(digest, i)
    ]  # fmt: skip
    if have_clean and not todo:
        done = dataclasses.replace(entry, content=digest, n_frames=_frames_of(store, digest))
        return done, False, 0
    try:
        wave = frontend.decode(entry.path, raw=data)
        spec = store.load(digest) if have_clean else frontend.logmel(wave)
        if not have_clean:
            store.save(digest, spec)
        for i in todo:
            rate = frontend.features.sample_rate
            augmented, _ = augmented_copy(wave, rate, copies.augment, digest, i)
            copies.save(digest, i, frontend.logmel(augmented))
    except AudioError as exc:
        return _skipped(entry, str(exc), digest), False, 0
    except Exception as exc:  # never let one file stop the batch
        return _skipped(entry, f"{entry.path}: {type(exc).__name__}: {exc}", digest), False, 0
    done = dataclasses.replace(entry, content=digest, n_frames=int(spec.shape[-1]))
    return done, not have_clean, len(todo)


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def _frames_of(store: FeatureStore, digest: str) -> int:
    return int(store.load(digest).shape[-1])


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed buffers in the process instead of handing them back to the OS.

    By default glibc serves each multi-megabyte array (a decoded clip, an STFT) with a fresh mmap
    and unmaps it when freed, so the next track page-faults the same memory in again (the gain
    per stage is measured in bench/README.md). The price is at most 256 MiB of freed memory held
    per worker. Returns False where the C library has no mallopt.
    """
    m_trim_threshold, m_mmap_threshold = -1, -3
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    # 32 MiB is glibc's largest mmap threshold on 64-bit; a clip's buffers are well below it.
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))


class _PrepareBatch:
    """Ray Data UDF: a batch of file records in, the same records with hash/frames/error out."""

    def __init__(self, cache_uri: str, features: dict[str, Any], augment: dict[str, Any]):
        import torch

        # One thread per worker: Ray gives each worker one CPU; more threads only fight.
        torch.set_num_threads(1)
        keep_freed_memory()
        self.store = FeatureStore(cache_uri, FeatureConfig(**features))
        self.frontend = features_frontend(self.store.features)
        self.copies = copy_store(self.store, AugmentConfig(**augment))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list] = {f.name: [] for f in dataclasses.fields(CacheEntry)}
        out["computed"], out["copies"] = [], []
        for i in range(len(batch["path"])):
            entry = CacheEntry(
                track_id=str(batch["track_id"][i]),
                genre=str(batch["genre"][i]),
                path=str(batch["path"][i]),
                size=int(batch["size"][i]),
                mtime_ns=int(batch["mtime_ns"][i]),
            )
            copies = self.copies if bool(batch["augment"][i]) else None
            done, computed, n_copies = process_file(entry, self.store, self.frontend, copies)
            for f in dataclasses.fields(CacheEntry):
                value = getattr(done, f.name)
                out[f.name].append(
                    "" if value is None and f.name in ("content", "error") else value
                )
            out["computed"].append(computed)
            out["copies"].append(n_copies)
        return {k: np.asarray(v) for k, v in out.items()}


def _prepare_fn(
    batch: dict[str, np.ndarray],
    cache_uri: str,
    features: dict[str, Any],
    augment: dict[str, Any],
) -> dict:
    # Ray Data tasks reuse worker processes, so the LogMel built here is cheap per batch
    # (about a millisecond) and no actor pool is needed.
    return _PrepareBatch(cache_uri, features, augment)(batch)


def copy_store(store: FeatureStore, augment: AugmentConfig) -> CopyStore | None:
    """Where `store`'s augmented copies go; None when augmentation is off (no copies)."""
    return CopyStore(store, augment) if augment.copies > 0 else None


def training_paths(cfg: Config) -> set[str]:
    """The files of cfg's training part (the split, fractions and extra roots applied): the
    only tracks that get augmented copies."""
    return {t.path for t in split_tracks(cfg)[1]["train"]}


def features_frontend(features: FeatureConfig) -> Frontend:
    """The front end's log-mel half; chunk settings play no part in what is cached."""
    return Frontend(features, ChunkConfig())


def files_per_task(n_files: int, max_batch: int, cpus: float, tasks_per_cpu: int = 4) -> int:
    """Files per Ray Data task: as many as max_batch allows, since each task costs tens of ms of
    Ray overhead on the same CPUs (bench/README.md), but few enough that every CPU gets
    tasks_per_cpu tasks, so a large cluster is not left idle and the last tasks even out."""
    per_cpu = -(-n_files // max(1, round(cpus) * tasks_per_cpu))
    return max(1, min(max_batch, per_cpu))


Processed = tuple[CacheEntry, bool, int]  # what process_file returns


def _run_ray(pending: list[CacheEntry], augment: set[str], cfg: Config) -> list[Processed]:
    import ray

    # Ray Data reserves part of the CPUs per operator by default; with a single map operator on
    # a small machine that left one of two CPUs idle (measured: one task at a time on 2 CPUs).
    ray.data.DataContext.get_current().op_resource_reservation_enabled = False
    cpus = ray.cluster_resources().get("CPU", 1.0)
    batch_size = files_per_task(len(pending), cfg.cache.batch_size, cpus)
    n_blocks = max(1, -(-len(pending) // batch_size))
    rows = [{**dataclasses.asdict(e), "augment": e.path in augment} for e in pending]
    for row in rows:  # Arrow wants one type per column
        row["content"] = row["content"] or ""
        row["error"] = row["error"] or ""
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks).map_batches(
        _prepare_fn,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs={
            "cache_uri": cfg.cache.dir,
            "features": dataclasses.asdict(cfg.features),
            "augment": dataclasses.asdict(cfg.augment),
        },
        num_cpus=1,
    )
    results = []
    for row in ds.iter_rows():
        entry = CacheEntry(
            track_id=str(row["track_id"]),
            genre=str(row["genre"]),
            path=str(row["path"]),
            size=int(row["size"]),
            mtime_ns=int(row["mtime_ns"]),
            content=str(row["content"]) or None,
            n_frames=int(row["n_frames"]),
            error=str(row["error"]) or None,
        )
        results.append((entry, bool(row["computed"]), int(row["copies"])))
    return results


def _run_local(pending: list[CacheEntry], augment: set[str], cfg: Config) -> list[Processed]:
    from tqdm import tqdm

    store = FeatureStore(cfg.cache.dir, cfg.features)
    frontend = features_frontend(cfg.features)
    copies = copy_store(store, cfg.augment)
    keep_freed_memory()
    # A closed bar (the `with`) before an interrupt's message, not redrawn after it at exit.
    with tqdm(pending, desc="log-mel", unit="track") as bar:
        return [
            process_file(e, store, frontend, copies if e.path in augment else None) for e in bar
        ]


def prepare(cfg: Config, use_ray: bool = True) -> PrepareResult:
    """Make sure every track of cfg.data has its log-mel in the cache; report bad files."""
    t0 = time.perf_counter()
    roots = [cfg.data.root, *cfg.data.extra_train_roots]
    store = FeatureStore(cfg.cache.dir, cfg.features)
    stored = store.stored()
    copies = copy_store(store, cfg.augment)
    augment = training_paths(cfg) if copies else set()  # the files that get copies
    copies_stored = copies.stored() if copies else set()
    entries: list[CacheEntry] = []
    pending: list[CacheEntry] = []
    reused = 0
    path_to_root: dict[str, str] = {}
    unchanged: list[str] = []  # roots whose manifest already says all there is to say
    ignored: list[tuple[str, str]] = []
    for root in roots:
        known = store.read_manifest(root)
        tracks, passed = survey(root)
        if not tracks:
            raise no_tracks_error(root)
        ignored += [(os.path.join(root, rel), why) for rel, why in passed]
        if {t.path for t in tracks} == set(known):
            unchanged.append(root)
        for track in tracks:
            fresh = stat_entry(track.track_id, track.genre, track.path)
            old = known.get(track.path)
            # A file that could not be read (no content hash) is looked at again on every run:
            # mending its permissions changes neither its size nor its mtime.
            if (
                old is not None
                and is_current(old, fresh, stored)
                and (old.content is not None or not _readable(track.path))
                and not (
                    copies
                    and track.path in augment
                    and old.error is None
                    and copies.missing(old.content, copies_stored)
                )
            ):
                entries.append(old)
                reused += old.error is None
            else:
                pending.append(fresh)
                unchanged = [r for r in unchanged if r != root]
            path_to_root[track.path] = root
    ray_seconds = 0.0
    computed = n_copies = 0
    if pending:
        log.info("%d of %d files need features", len(pending), len(pending) + len(entries))
        if use_ray:
            ray_seconds = init_ray(cfg.cache.ray_address, cfg.cache.num_cpus, quiet=True)
            results = _run_ray(pending, augment, cfg)
        else:
            results = _run_local(pending, augment, cfg)
        for entry, was_computed, made in results:
            entries.append(entry)
            computed += was_computed
            n_copies += made
            reused += (not was_computed) and entry.error is None
    for root in roots:  # a warm run writes nothing, so readers never race a rewrite
        if root in unchanged:
            continue
        mine = sorted(
            (e for e in entries if path_to_root.get(e.path) == root), key=lambda e: e.track_id
        )
        store.write_manifest(root, mine)
    manifest = store.manifest_path(cfg.data.root)
    failed = sum(e.error is not None for e in entries)
    return PrepareResult(
        entries=sorted(entries, key=lambda e: e.track_id),
        computed=computed,
        reused=reused,
        failed=failed,
        seconds=time.perf_counter() - t0 - ray_seconds,
        ray_seconds=ray_seconds,
        manifest=manifest,
        ignored=ignored,
        copies=n_copies,
    )
