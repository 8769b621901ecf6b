"""Lay GTZAN (or any folder-per-genre collection) out as `<dest>/<genre>/<file>` from a folder, an
archive, a URL or the known mirrors (the last two fetched by `mgc.data.download`), and fill a
missing dataset folder on first run."""

from __future__ import annotations

import filecmp
import logging
import os
import shlex
import shutil
import tarfile
import tempfile
import urllib.parse
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from mgc.core.fsio import atomic_path
from mgc.data.datasets import (
    DatasetError,
    discover,
    genre_dirs,
    genres_of,
    is_audio_file,
    is_genre_dir,
    write_label_map,
)
from mgc.data.download import checksums, fetch_archive

log = logging.getLogger(__name__)

GTZAN_GENRES = (
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
)

# `source` value that means "download from the known mirrors, in order".
DOWNLOAD = "download"

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tar.xz")
OFFLINE_HINT = "use a local copy: --source /path/to/genres.tar.gz or --source /path/to/genres/"


def get_gtzan(
    source: str,
    dest: Path,
    progress: bool = True,
    md5: str | None = None,
    sha256: str | None = None,
) -> Path:
    """Put the audio of `source` (folder, archive, URL or "download") into `dest/<genre>/<file>`,
    write `dest/label_map.json`, and return `dest`. Source files are never moved or altered.

    A URL or "download" is fetched beside `dest` and kept there; `md5`/`sha256` (all given must
    hold) replace the published GTZAN digest, and a URL other than the known mirrors needs one."""
    dest = Path(dest).expanduser()
    if _is_url(source) or source == DOWNLOAD:
        url = None if source == DOWNLOAD else source
        hashes = checksums(md5, sha256, url=url)
        try:
            archive = fetch_archive(
                dest.parent, None if url is None else [url], hashes, progress=progress
            )
        except DatasetError as exc:
            raise DatasetError(f"{exc}; {OFFLINE_HINT}") from exc
        return _import_archive(archive, dest, progress)
    path = Path(source).expanduser()
    if path.is_dir():
        return _import_folder(path, dest, progress)
    if path.is_file():
        if not _is_archive(path):
            raise DatasetError(
                f"{path}: not a folder or an archive ({', '.join(ARCHIVE_SUFFIXES)})"
            )
        return _import_archive(path, dest, progress)
    raise DatasetError(f"{path}: source not found (give a folder, an archive or an http(s) URL)")


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https")


# ---------------------------------------------------------------------------------------------
# Folders


def _genre_dirs(folder: Path) -> list[Path]:
    """Genre folders (as `discover` sees them) that hold at least one audio file."""
    return [d for d in genre_dirs(folder) if any(is_audio_file(p) for p in d.iterdir())]


def find_genre_root(folder: Path) -> Path:
    """The folder whose subfolders are the genres: `folder` itself, or the GTZAN archive layout
    (`genres/`, `Data/genres_original/`, …) one or two levels down."""
    candidates = [folder]
    for child in sorted(folder.iterdir()):
        # is_genre_dir also drops __MACOSX/, which mirrors a zip's tree with resource forks.
        if is_genre_dir(child):
            candidates.append(child)
            candidates.extend(genre_dirs(child))

    def score(cand: Path) -> tuple[int, int]:
        # GTZAN genre names win over other audio folders; a Kaggle copy also has images_original/
        # with the same genre names but PNGs, which _genre_dirs drops for holding no audio.
        dirs = _genre_dirs(cand)
        return sum(d.name in GTZAN_GENRES for d in dirs), len(dirs)

    best = max(candidates, key=lambda c: (score(c), -len(c.parts)))
    if score(best) == (0, 0):
        raise DatasetError(
            f"{folder}: no <genre>/ folders with audio found here or two levels down "
            f"(expected e.g. genres/blues/blues.00000.au)"
        )
    return best


def _import_folder(source: Path, dest: Path, progress: bool) -> Path:
    root = find_genre_root(source)
    if dest.resolve() == root.resolve():
        raise DatasetError(f"{dest}: destination is the source folder itself")
    dirs = _genre_dirs(root)
    missing = [g for g in GTZAN_GENRES if g not in {d.name for d in dirs}]
    if missing:
        log.warning("%s: GTZAN genre(s) missing: %s", root, ", ".join(missing))
    skip = _quarantined(dest)
    files = [f for d in dirs for f in sorted(d.iterdir()) if is_audio_file(f)]
    copied = same = replaced = quarantined = 0
    for src in tqdm(files, desc="copy", unit="file", disable=not progress):
        rel = f"{src.parent.name}/{src.name}"
        if rel in skip:
            # A scan moved this file out as bad audio; copying it back would undo the quarantine.
            quarantined += 1
            continue
        dst = dest / rel
        if dst.is_file():
            # Shallow compare is size+mtime (copy2 keeps mtime); a mismatch falls back to bytes.
            if filecmp.cmp(src, dst, shallow=True):
                same += 1
                continue
            log.warning("%s: differs from %s, replaced", dst, src)
            replaced += 1
        # Through a temporary, so an interrupted run never leaves a truncated file that the
        # next run would take for audio (copy2 keeps the mtime the comparison above relies on).
        with atomic_path(dst) as tmp:
            shutil.copy2(src, tmp)
        copied += 1
    label_map = write_label_map(genres_of(discover(dest)), dest)
    log.info(
        "%s: %d copied, %d already there, %d replaced%s; label map %s",
        dest,
        copied,
        same,
        replaced,
        f", {quarantined} left in quarantine" if quarantined else "",
        label_map,
    )
    return dest


def _quarantined(dest: Path) -> set[str]:
    """Relative paths a previous `scan` of `dest` moved to its default quarantine."""
    from mgc.data.scan import read_report  # scan is heavier (audio decoding); load it lazily

    report = dest / ".quarantine"
    return {row["file"] for row in read_report(report)} if report.is_dir() else set()


# ---------------------------------------------------------------------------------------------
# Archives


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _safe_target(base: Path, name: str, archive: Path) -> Path:
    """Where member `name` would land, refusing absolute paths and `..` escapes."""
    pure = PurePosixPath(name.replace("\\", "/"))
    target = (base / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or not target.is_relative_to(base.resolve()):
        raise DatasetError(
            f"{archive}: member {name!r} would be written outside the extraction folder; "
            "refusing to extract this archive"
        )
    return target


def extract_archive(archive: Path, into: Path) -> None:
    """Extract a .tar(.gz/.bz2/.xz)/.tgz/.zip into `into`, refusing path traversal and links."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                for m in members:
                    _safe_target(into, m.filename, archive)
                zf.extractall(into)
            return
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _safe_target(into, m.name, archive)
                if m.issym() or m.islnk():
                    raise DatasetError(
                        f"{archive}: member {m.name!r} is a link; refusing to extract this archive"
                    )
            # The "data" filter is the stdlib's own guard (no devices, no setuid, no escapes).
            tf.extractall(
                into, members=[m for m in members if m.isfile() or m.isdir()], filter="data"
            )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        # tarfile explains a failed format guess over several lines; keep the error one line.
        reason = str(exc).splitlines()[0].rstrip(":") or type(exc).__name__
        raise DatasetError(f"{archive}: cannot read archive ({reason})") from exc


def _import_archive(archive: Path, dest: Path, progress: bool) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Next to dest so that it is on the same disk (GTZAN is 1.2 GB) and easy to spot if orphaned.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-extract-", dir=dest.parent))
    try:
        log.info("extracting %s", archive)
        extract_archive(archive, tmp)
        return _import_folder(tmp, dest, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# First run: a missing dataset folder filled from the internet


def is_missing(root: Path) -> bool:
    """Whether `root` is a dataset folder to fetch: absent, or an empty folder (nothing to lose)."""
    root = Path(root).expanduser()
    return not root.exists() or (root.is_dir() and not any(root.iterdir()))


def ensure_dataset(
    root: Path,
    *,
    allow_download: bool = True,
    mirrors: Sequence[str] | None = None,
    known_hash: str | None = None,
    download_dir: Path | None = None,
    progress: bool = True,
) -> Path:
    """`root` when it exists; when it is missing (or an empty folder), GTZAN downloaded and laid
    out there as `<genre>/<file>`, then `root`.

    A folder that holds anything is returned untouched, whatever it holds (the caller's
    `discover` says whether it is usable). The archive goes to `download_dir` (default: beside
    `root`, on the same disk, where `get_gtzan(DOWNLOAD, root)` puts it too) and is kept there, so
    a later layout needs no download. `mirrors` and `known_hash` ("alg:hex") default to
    mgc.data.download's GTZAN_MIRRORS and GTZAN_KNOWN_HASH. Raises DatasetError, one line:
    offline or with downloads off it names `root`, MGC_DATA_ROOT and the command that lays out a
    local archive.
    """
    root = Path(root).expanduser()
    if not is_missing(root):
        if not root.is_dir():
            raise DatasetError(f"{root}: not a folder (the dataset folder holds <genre>/<audio>)")
        return root
    if not allow_download:
        raise DatasetError(_by_hand(root, "downloads are off"))
    folder = Path(download_dir).expanduser() if download_dir is not None else root.parent
    try:
        archive = fetch_archive(
            folder, mirrors, (known_hash,) if known_hash else (), progress=progress
        )
    except DatasetError as exc:
        raise DatasetError(_by_hand(root, f"GTZAN cannot be downloaded ({exc})")) from exc
    _lay_out(archive, root, progress)
    log.info("%s: %d tracks laid out from %s", root, len(discover(root)), archive)
    return root


def _by_hand(root: Path, reason: str) -> str:
    """The one-line way out when GTZAN cannot be fetched: a local archive, or another folder."""
    dest = shlex.quote(str(root))
    return (
        f"{root}: dataset folder not found and {reason}; put GTZAN there from a local copy with "
        f"`python -m mgc.data gtzan --source ARCHIVE --dest {dest}` (ARCHIVE: genres.tar.gz or "
        "an unpacked folder), or set MGC_DATA_ROOT to a folder of <genre>/<audio files>"
    )


def _lay_out(archive: Path, root: Path, progress: bool) -> None:
    """The archive's audio into `root`, all at once: it is laid out in a hidden folder beside
    `root` and renamed to it, so an interrupted run never leaves a half-filled dataset folder
    (which a later run would take as the dataset and never fetch again)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.layout-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()  # mkdir, not mkdtemp: the folder keeps the umask's permissions once renamed
    try:
        _import_archive(archive, staging, progress)
        try:
            os.replace(staging, root)  # only ever over a missing or empty folder
        except OSError as exc:
            raise DatasetError(
                f"{root}: filled by another process during the layout; left as it is "
                f"({exc.strerror})"
            ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
