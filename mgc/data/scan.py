"""Bad-audio scan: decode every track once and move unusable files to a quarantine folder."""

from __future__ import annotations

import csv
import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mgc.core.audio import AudioError, stream_audio
from mgc.core.fsio import atomic_path
from mgc.data.datasets import DatasetError, Track, is_genre_name, no_tracks_error, survey

log = logging.getLogger(__name__)

QUARANTINE_DIR = ".quarantine"
REPORT_NAME = "bad_audio_report.csv"
REPORT_FIELDS = ("file", "reason", "detail", "moved_to", "scanned_at")

# Reasons, in the order they are tested.
UNREADABLE = "unreadable"  # reported and left in place: a permission to fix, not bad audio
EMPTY = "empty"
UNDECODABLE = "undecodable"
TOO_SHORT = "too_short"
SILENT = "silent"


@dataclass
class ScanReport:
    """What a scan found. Paths in `bad`, `unreadable` and `ignored` are relative to the dataset
    root; `unreadable` (path, detail) and `ignored` files stay where they are."""

    root: str
    quarantine: str
    n_checked: int = 0
    n_ok: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def report_path(self) -> Path:
        return Path(self.quarantine) / REPORT_NAME

    def reasons(self) -> Counter[str]:
        return Counter(reason for _, reason in self.bad)


def check_track(
    path: str | Path, sample_rate: int, min_seconds: float, silence_db: float
) -> tuple[str, str] | None:
    """None for a usable file, else (reason, detail). Decodes the file once, a block at a time,
    so an hour-long file needs no more memory than a short one."""
    path = Path(path)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return UNREADABLE, f"cannot read ({exc.strerror})"
    if path.stat().st_size == 0:
        return EMPTY, "0 bytes"
    n_samples, peak = 0, 0.0
    try:
        for block in stream_audio(path, sample_rate, block_s=10.0):
            n_samples += block.size
            peak = max(peak, float(np.max(np.abs(block))))
    except AudioError as exc:
        if exc.reason == "no audio samples":
            return EMPTY, f"no audio samples decoded from {path.stat().st_size} bytes"
        return UNDECODABLE, exc.reason
    seconds = n_samples / sample_rate
    if seconds < min_seconds:
        return TOO_SHORT, f"{seconds:.2f} s < {min_seconds:g} s"
    # Peak below the threshold means every sample is below it: the whole file is silent.
    if peak < 10 ** (silence_db / 20):
        peak_db = 20 * np.log10(peak) if peak > 0 else float("-inf")
        return SILENT, f"peak {peak_db:.1f} dBFS < {silence_db:g} dBFS"
    return None


def read_report(quarantine: str | Path) -> list[dict[str, str]]:
    """Rows of `<quarantine>/bad_audio_report.csv` (empty when there is none yet)."""
    path = Path(quarantine) / REPORT_NAME
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return [dict(row) for row in csv.DictReader(fh)]


def _write_report(quarantine: Path, rows: list[dict[str, str]]) -> Path:
    path = quarantine / REPORT_NAME
    # Replace in one step: an interrupted scan keeps the old history rather than half of it.
    # A file name that is not UTF-8 is written as its own bytes, and read back the same.
    with (
        atomic_path(path) as tmp,
        tmp.open("w", newline="", encoding="utf-8", errors="surrogateescape") as fh,
    ):
        writer = csv.DictWriter(fh, fieldnames=REPORT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _free_name(target: Path) -> Path:
    """`target`, or `stem-1.ext`, `stem-2.ext`, … : quarantine never overwrites a file."""
    if not target.exists():
        return target
    n = 1
    while (candidate := target.with_name(f"{target.stem}-{n}{target.suffix}")).exists():
        n += 1
    return candidate


def _tracks_and_ignored(root: Path, qdir: Path) -> tuple[list[Track], list[tuple[str, str]]]:
    tracks, passed = survey(root)
    # Every file may already be in quarantine; that is a finished scan, not a wrong folder.
    if not tracks and not (qdir / REPORT_NAME).is_file():
        raise no_tracks_error(root)
    return tracks, passed


def scan(
    root: str | Path,
    sample_rate: int = 22050,
    min_seconds: float = 3.0,
    silence_db: float = -60.0,
    quarantine: str | Path | None = None,
    progress: bool = True,
) -> ScanReport:
    """Decode every track of `root` once; move undecodable, empty, too-short and silent files to
    `quarantine` (default `<root>/.quarantine/<genre>/<file>`) and append them to its report.
    Files it cannot read, and entries that are not tracks, are logged one line each and left."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    qdir = Path(quarantine).expanduser() if quarantine else root / QUARANTINE_DIR
    rel_q = os.path.relpath(qdir.resolve(), root.resolve())
    if rel_q == "." or (not rel_q.startswith("..") and is_genre_name(Path(rel_q).parts[0])):
        # A visible folder inside the dataset would be read as one more genre by discover().
        raise DatasetError(f"{qdir}: a quarantine inside the dataset must be a hidden folder")

    tracks, passed = _tracks_and_ignored(root, qdir)
    report = ScanReport(root=str(root), quarantine=str(qdir), ignored=[rel for rel, _ in passed])
    for rel, why in passed:  # one line each: every entry of a genre folder is accounted for
        log.info("%s: %s, left in place", rel, why)
    found: list[tuple[Track, str, str]] = []
    for track in tqdm(tracks, desc="scan", unit="file", disable=not progress):
        report.n_checked += 1
        problem = check_track(track.path, sample_rate, min_seconds, silence_db)
        if problem is None:
            report.n_ok += 1
        elif problem[0] == UNREADABLE:
            rel = f"{track.genre}/{Path(track.path).name}"
            report.unreadable.append((rel, problem[1]))
            log.warning("%s: %s (%s), left in place", rel, *problem)
        else:
            found.append((track, *problem))
    if not found:
        return report

    qdir.mkdir(parents=True, exist_ok=True)
    rows = read_report(qdir)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        for track, reason, detail in found:
            src = Path(track.path)
            rel = f"{track.genre}/{src.name}"
            dst = _free_name(qdir / track.genre / src.name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(dst))
            report.bad.append((rel, reason))
            report.moved.append((str(src), str(dst)))
            rows.append(
                {
                    "file": rel,
                    "reason": reason,
                    "detail": detail,
                    "moved_to": dst.relative_to(qdir).as_posix(),
                    "scanned_at": stamp,
                }
            )
            log.warning("%s: %s (%s) → %s", rel, reason, detail, dst)
    finally:
        # Written even when a move fails half-way, so every moved file stays accounted for.
        _write_report(qdir, rows)
    return report
