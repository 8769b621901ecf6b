"""Folder-per-genre datasets: discover tracks, genre labels and the label map."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mgc.core.audio import AUDIO_EXTENSIONS
from mgc.core.errors import UserError
from mgc.core.fsio import atomic_write

log = logging.getLogger(__name__)

LABEL_MAP_FILE = "label_map.json"


class DatasetError(UserError):
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


# Why survey() passes over an entry of a genre folder.
NOT_AUDIO = "not an audio file extension"
SUB_FOLDER = "sub-folder (only files directly in a genre folder are read)"
NO_AUDIO = "no audio files, so not a genre"
SAME_TRACK = "same track as"


def survey(
    root: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS
) -> tuple[list[Track], list[tuple[str, str]]]:
    """(tracks, passed over): the audio files `<root>/<genre>/<file>` sorted by track id, and
    for every other visible entry of a genre folder, and every genre folder without a track,
    (its path relative to `root`, why it is not a track), so a report can account for each.
    Hidden entries are neither (editor and OS droppings, our temporaries, the quarantine)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    tracks: dict[str, Track] = {}
    passed: list[tuple[str, str]] = []
    for genre_dir in genre_dirs(root):
        found = 0
        for path in sorted(genre_dir.iterdir()):
            if path.name.startswith("."):
                continue
            rel = f"{genre_dir.name}/{path.name}"
            if path.is_dir():
                passed.append((rel + "/", SUB_FOLDER))
            elif not path.is_file():  # a link to nothing, or a loop of links
                try:
                    path.stat()
                    passed.append((rel, "not a regular file"))
                except OSError as exc:
                    passed.append((rel, f"broken symbolic link ({exc.strerror})"))
            elif not is_audio_file(path, extensions):
                passed.append((rel, NOT_AUDIO))
            elif (tid := track_id_of(genre_dir.name, path.name)) in tracks:
                other = Path(tracks[tid].path).name
                passed.append((rel, f"{SAME_TRACK} {genre_dir.name}/{other}"))
            else:
                tracks[tid] = Track(tid, genre_dir.name, str(path.resolve()))
                found += 1
        if not found:
            passed.append((genre_dir.name + "/", NO_AUDIO))
    return sorted(tracks.values(), key=lambda t: t.track_id), passed


def no_tracks_error(
    root: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS
) -> DatasetError:
    return DatasetError(f"{root}: no audio files in <genre>/ subfolders ({', '.join(extensions)})")


def discover(root: str | Path, extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[Track]:
    """All audio files `<root>/<genre>/<file>` sorted by track id (see `survey`). Hidden folders
    are skipped (the quarantine lives in `<root>/.quarantine`)."""
    tracks, passed = survey(root, extensions)
    for rel, reason in passed:
        if reason.startswith(SAME_TRACK):
            log.warning("%s: %s, ignored", Path(root) / rel, reason)
    if not tracks:
        raise no_tracks_error(root, extensions)
    return tracks


def printable(text: str) -> str:
    """A path, or a message naming one, that prints and writes as UTF-8 whatever the name: the
    bytes of a file name that is not UTF-8 (held as surrogates in a str) appear as `\\xNN`."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


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
