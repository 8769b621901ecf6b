"""Train/valid/test splits by track: stratified and seeded, named (fault-filtered), or a file."""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mgc.core.errors import UserError
from mgc.data.datasets import Track

log = logging.getLogger(__name__)

PARTS = ("train", "valid", "test")
DEFAULT_RATIOS = (0.7, 0.15, 0.15)
STRATIFIED = "stratified"


class SplitError(UserError, ValueError):
    """A split that cannot be used; str() is one line naming the split or the track."""


@dataclass
class Split:
    """Track ids (`genre/stem`) per part. Splits are by track, so no chunk of a track can reach
    two parts."""

    name: str
    seed: int | None
    parts: dict[str, list[str]]
    ratios: tuple[float, float, float] | None = None
    created_by: str = "mgc"
    source: str | None = None
    # Free text, e.g. which tracks were dropped when the split was restricted to a dataset.
    note: str | None = None

    def __post_init__(self) -> None:
        if set(self.parts) != set(PARTS):
            raise SplitError(
                f"split {self.name}: parts must be {', '.join(PARTS)}, got {', '.join(self.parts)}"
            )
        seen: dict[str, str] = {}
        for part in PARTS:
            for tid in self.parts[part]:
                if tid in seen:
                    raise SplitError(
                        f"split {self.name}: track {tid} is in both {seen[tid]} and {part}"
                        if seen[tid] != part
                        else f"split {self.name}: track {tid} is listed twice in {part}"
                    )
                seen[tid] = part

    def counts(self) -> dict[str, int]:
        return {part: len(self.parts[part]) for part in PARTS}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "seed": self.seed,
            "ratios": list(self.ratios) if self.ratios else None,
            "created_by": self.created_by,
        }
        if self.source:
            out["source"] = self.source
        if self.note:
            out["note"] = self.note
        out["parts"] = {part: list(self.parts[part]) for part in PARTS}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, raw: Any, where: str = "split") -> Split:
        if not isinstance(raw, dict) or not isinstance(raw.get("parts"), dict):
            raise SplitError(f"{where}: not a split file (needs a 'parts' mapping)")
        parts = raw["parts"]
        for part in PARTS:
            ids = parts.get(part)
            if not isinstance(ids, list) or not all(isinstance(t, str) for t in ids):
                raise SplitError(f"{where}: parts.{part} must be a list of track ids")
        ratios = raw.get("ratios")
        return cls(
            name=str(raw.get("name") or Path(where).stem),
            seed=raw.get("seed"),
            parts={part: list(parts[part]) for part in PARTS},
            ratios=tuple(ratios) if ratios else None,
            created_by=str(raw.get("created_by", "")),
            source=raw.get("source"),
            note=raw.get("note"),
        )

    @classmethod
    def load(cls, path: str | Path) -> Split:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except OSError as exc:
            raise SplitError(f"{path}: cannot read split file ({exc.strerror or exc})") from exc
        except ValueError as exc:
            raise SplitError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(raw, str(path))


def _check_ratios(ratios: tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0):
        raise SplitError(f"split ratios must be 3 non-negative numbers summing to 1, got {ratios}")
    if ratios[0] <= 0:
        raise SplitError(f"split ratios: train must be > 0, got {ratios}")
    return float(ratios[0]), float(ratios[1]), float(ratios[2])


def _part_sizes(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Per-genre (train, valid, test) sizes, each within 1 of n×ratio for genres of 4+ tracks.
    A genre of 3+ tracks gets at least one track in every part whose ratio is > 0 (so macro-F1
    sees every genre; with exactly 3 tracks that is 1/1/1); one of 1–2 tracks goes to train."""
    if n < 3:
        # Too few to evaluate on: better to learn from them than to test on one clip.
        return n, 0, 0
    n_valid = math.floor(n * ratios[1] + 0.5)
    n_test = math.floor(n * ratios[2] + 0.5)
    n_valid = max(n_valid, 1) if ratios[1] > 0 else 0
    n_test = max(n_test, 1) if ratios[2] > 0 else 0
    while n - n_valid - n_test < 1:
        if n_valid >= n_test:
            n_valid -= 1
        else:
            n_test -= 1
    return n - n_valid - n_test, n_valid, n_test


def stratified_split(
    tracks: list[Track],
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    seed: int | None = 42,
) -> Split:
    """Split tracks into train/valid/test with the same proportions in every genre.

    Each genre is split on its own with sklearn's `train_test_split` (test off, then valid off
    the rest) using integer sizes from `_part_sizes`. One global stratified call would fail on
    small datasets (sklearn needs the test part to hold at least one track per genre) and on
    genres with one track; per genre, counts stay within 1 of their targets and never raise.
    """
    ratios = _check_ratios(ratios)
    by_genre: dict[str, list[str]] = defaultdict(list)
    for t in tracks:
        by_genre[t.genre].append(t.track_id)
    if not by_genre:
        raise SplitError("stratified split: no tracks to split")
    # Imported here: scikit-learn costs most of a second, which commands that fail early on a
    # missing folder should not pay first.
    from sklearn.model_selection import train_test_split

    parts: dict[str, list[str]] = {part: [] for part in PARTS}
    small = []
    for genre in sorted(by_genre):
        ids = sorted(set(by_genre[genre]))
        n_train, n_valid, n_test = _part_sizes(len(ids), ratios)
        if len(ids) < 3:
            small.append(f"{genre} ({len(ids)})")
        rest, test = (
            train_test_split(ids, test_size=n_test, random_state=seed) if n_test else (ids, [])
        )
        train, valid = (
            train_test_split(rest, test_size=n_valid, random_state=seed) if n_valid else (rest, [])
        )
        parts["train"] += train
        parts["valid"] += valid
        parts["test"] += test
    if small:
        log.warning("genres with fewer than 3 tracks put in train only: %s", ", ".join(small))
    return Split(
        name=STRATIFIED,
        seed=seed,
        parts={part: sorted(ids) for part, ids in parts.items()},
        ratios=ratios,
        created_by="mgc.data.splits.stratified_split (per-genre sklearn train_test_split)",
    )


def named_splits() -> list[str]:
    """Names of the splits shipped with the package (`mgc/splits/*.json`)."""
    folder = resources.files("mgc").joinpath("splits")
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def named_split(name: str) -> Split:
    """A split shipped with the package, e.g. "fault_filtered"."""
    resource = resources.files("mgc").joinpath("splits", f"{name}.json")
    if not resource.is_file():
        raise SplitError(f"no named split {name!r} (available: {', '.join(named_splits())})")
    return Split.from_dict(json.loads(resource.read_text()), f"named split {name}")


def restrict(split: Split, tracks: list[Track]) -> tuple[Split, dict[str, int]]:
    """The split with only the track ids present in `tracks`, and how many per part were not."""
    present = {t.track_id for t in tracks}
    kept = {part: [t for t in split.parts[part] if t in present] for part in PARTS}
    missing = {part: len(split.parts[part]) - len(kept[part]) for part in PARTS}
    for part in PARTS:
        if split.parts[part] and not kept[part]:
            raise SplitError(
                f"split {split.name}: none of its {len(split.parts[part])} {part} tracks are in "
                "the dataset (wrong folder, or track ids not of the form genre/stem?)"
            )
    if any(missing.values()):
        counts = split.counts()
        lost = ", ".join(f"{missing[p]}/{counts[p]} {p}" for p in PARTS)
        used = "/".join(str(len(kept[p])) for p in PARTS)
        message = f"split {split.name}: {lost} tracks not in the dataset; using the {used} present"
        log.warning(message)
        note = message
    else:
        note = split.note
    restricted = Split(
        name=split.name,
        seed=split.seed,
        parts=kept,
        ratios=split.ratios,
        created_by=split.created_by,
        source=split.source,
        note=note,
    )
    unused = len(present) - sum(len(v) for v in kept.values())
    if unused:
        log.info("split %s: %d dataset tracks are in no part (not used)", split.name, unused)
    return restricted, missing


def resolve_split(
    spec: str, tracks: list[Track], seed: int | None = 42
) -> tuple[Split, dict[str, int]]:
    """`spec` is "stratified", a named split, or a split JSON path. Returns the split limited to
    the tracks present and the number of missing tracks per part."""
    if spec == STRATIFIED:
        split = stratified_split(tracks, seed=seed)
    elif spec in named_splits():
        split = named_split(spec)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise SplitError(
                f"split {spec!r}: not {STRATIFIED!r}, a named split "
                f"({', '.join(named_splits())}) or an existing split file"
            )
        split = Split.load(path)
    return restrict(split, tracks)


def assign_parts(split: Split, tracks: list[Track]) -> dict[str, list[Track]]:
    """Tracks per part, in track-id order; ids of the split that are not in `tracks` are left out
    (`resolve_split` reports them)."""
    by_id = {t.track_id: t for t in tracks}
    return {
        part: [by_id[tid] for tid in sorted(split.parts[part]) if tid in by_id] for part in PARTS
    }


def subsample(track_list: list[Track], fraction: float, seed: int | None = 0) -> list[Track]:
    """A seeded, genre-stratified `fraction` of the tracks (at least one per genre), for data-scale
    experiments. Smaller fractions with the same seed are subsets of larger ones."""
    if not 0 < fraction <= 1:
        raise SplitError(f"train fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(track_list)
    rng = np.random.default_rng(seed)
    by_genre: dict[str, list[Track]] = defaultdict(list)
    for t in sorted(track_list, key=lambda t: t.track_id):
        by_genre[t.genre].append(t)
    kept: list[Track] = []
    for genre in sorted(by_genre):
        items = by_genre[genre]
        k = max(1, math.floor(len(items) * fraction + 0.5))
        # One permutation per genre, cut at k: the nested-subsets property comes from this.
        order = rng.permutation(len(items))
        kept += [items[i] for i in order[:k]]
    return sorted(kept, key=lambda t: t.track_id)
