"""Folder-per-genre datasets: discover tracks, genre labels and the label map."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mgc.audio import AUDIO_EXTENSIONS
from mgc.fsio import atomic_write

log = logging.getLogger(__name__)

LABEL_MAP_FILE = "label_map.json"


class DatasetError(Exception):
    """A dataset folder that cannot be used; str() is one line naming the folder."""


@dataclass(frozen=True)
class Track:
    """One audio file of a dataset. `track_id` is `genre/stem`, the key splits use."""

    track_id: str
    genre: str
    path: str


def track_id_of(genre: str, filename: str) -> str:
    """`blues`, `blues.00012.wav` → `blues/blues.00012` (splits match tracks on this, not the extension)."""
    name = Path(filename).name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{genre}/{stem}"


def is_genre_name(name: str) -> bool:
    """Whether a sub-folder called `name` counts as a genre.

    Hidden folders hold the scan's quarantine (`.quarantine`), and `_`-prefixed ones are
    tool debris such as `__MACOSX/` in zips made on a Mac; neither is a genre.
    """
    return not name.startswith((".", "_"))


def is_genre_dir(path: Path) -> bool:
    return is_genre_name(path.name) and path.is_dir()


def genre_dirs(root: Path) -> list[Path]:
    """The genre folders directly under `root`, sorted by name."""
    return sorted(p for p in root.iterdir() if is_genre_dir(p))


def is_visible_file(path: Path) -> bool:
    # Dot-files are editor/OS droppings (._foo.wav from macOS) or our own temporaries.
    return not path.name.startswith(".") and path.is_file()


def is_audio_file(path: Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> bool:
    return path.suffix.lower() in extensions and is_visible_file(path)


def discover(root: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Track]:
    """All audio files `<root>/<genre>/<file>` sorted by track id. Hidden folders are skipped
    (the quarantine lives in `<root>/.quarantine`)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    tracks: dict[str, Track] = {}
    for genre_dir in genre_dirs(root):
        for path in sorted(genre_dir.iterdir()):
            if not is_audio_file(path, extensions):
                continue
            tid = track_id_of(genre_dir.name, path.name)
            if tid in tracks:
                log.warning("%s: same track as %s, ignored", path, tracks[tid].path)
                continue
            tracks[tid] = Track(tid, genre_dir.name, str(path.resolve()))
    if not tracks:
        raise DatasetError(
            f"{root}: no audio files in <genre>/ subfolders ({', '.join(extensions)})"
        )
    return sorted(tracks.values(), key=lambda t: t.track_id)


def genres_of(tracks: list[Track]) -> list[str]:
    return sorted({t.genre for t in tracks})


def write_label_map(genres: list[str], path: str | Path) -> Path:
    """`label_map.json`: {"0": "blues", "1": "classical", …} — index → genre."""
    path = Path(path)
    if path.is_dir():
        path = path / LABEL_MAP_FILE
    atomic_write(path, json.dumps({str(i): g for i, g in enumerate(genres)}, indent=2) + "\n")
    return path


def read_label_map(path: str | Path) -> list[str]:
    path = Path(path)
    if path.is_dir():
        path = path / LABEL_MAP_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read label map ({exc})") from exc
    return [raw[str(i)] for i in range(len(raw))]
