"""Get GTZAN (or any folder-per-genre collection) into `<dest>/<genre>/<file>` from a folder,
an archive or a checksummed download."""

from __future__ import annotations

import filecmp
import hashlib
import logging
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from mgc.data.datasets import (
    DatasetError,
    discover,
    genre_dirs,
    genres_of,
    is_audio_file,
    is_genre_dir,
    write_label_map,
)
from mgc.fsio import atomic_path
from mgc.net import Unreachable, check_reachable

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

# The archive every GTZAN loader points at (Marsyas' host, often offline) and a Wayback snapshot.
GTZAN_URLS = (
    "http://opihi.cs.uvic.ca/sound/genres.tar.gz",
    "https://web.archive.org/web/20220328223413/http://opihi.cs.uvic.ca/sound/genres.tar.gz",
)

# Published digests of `genres.tar.gz`. Provenance: the sha256 is torchaudio's
# (pytorch/audio torchaudio/datasets/gtzan.py, `_CHECKSUMS`, checked there by
# `download_url_to_file(hash_prefix=...)`); the md5 is the value older torchaudio releases used
# with `hash_type="md5"`, still in many copies of that loader. UNVERIFIED here: this project's
# machines have no route to the archive, so neither value has been checked against the bytes.
# Either one matching accepts the download; `--md5`/`--sha256` replace both.
GTZAN_CHECKSUMS: dict[str, str] = {
    "sha256": "24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6",
    "md5": "5b3d6dddb579ab49814ab86dba69e7c7",
}

# Fail fast when offline: a dead mirror should not cost minutes.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0

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
    write `dest/label_map.json`, and return `dest`. Source files are never moved or altered."""
    dest = Path(dest).expanduser()
    if _is_url(source) or source == DOWNLOAD:
        urls = GTZAN_URLS if source == DOWNLOAD else (source,)
        archive = _download_any(urls, dest.parent, progress, md5=md5, sha256=sha256)
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
# Download


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https")


def _expected(url: str, md5: str | None, sha256: str | None) -> dict[str, str]:
    given = {k: v.lower() for k, v in (("md5", md5), ("sha256", sha256)) if v}
    if given:
        return given
    if url in GTZAN_URLS:
        return dict(GTZAN_CHECKSUMS)
    raise DatasetError(
        f"{url}: no published checksum known for this URL; pass --md5 or --sha256 to verify it"
    )


def _digests(path: Path) -> dict[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def _matches(digests: dict[str, str], expected: dict[str, str], user_given: bool) -> bool:
    hits = [digests[k] == v for k, v in expected.items()]
    # The user's values must all hold; the published ones are alternatives (see GTZAN_CHECKSUMS).
    return all(hits) if user_given else any(hits)


def download(
    url: str, folder: Path, progress: bool = True, md5: str | None = None, sha256: str | None = None
) -> Path:
    """Download `url` into `folder` (via a `.part` file) and verify its checksum."""
    user_given = bool(md5 or sha256)
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    final = folder / name
    if final.is_file() and _matches(_digests(final), _expected(url, md5, sha256), user_given):
        log.info("%s: already downloaded and verified", final)
        return final
    # Reachability first: offline is the likeliest problem and its message names the way out.
    try:
        check_reachable(url, CONNECT_TIMEOUT_S)
    except Unreachable as exc:
        raise DatasetError(f"{exc}; {OFFLINE_HINT}") from exc
    expected = _expected(url, md5, sha256)
    folder.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with (
                part.open("wb") as out,
                tqdm(
                    total=total, unit="B", unit_scale=True, desc=name, disable=not progress
                ) as bar,
            ):
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetError(f"{url}: download failed ({reason}); {OFFLINE_HINT}") from exc
    digests = _digests(part)
    if not _matches(digests, expected, user_given):
        bad = part.with_name(final.name + ".bad")
        part.replace(bad)
        want = ", ".join(f"{k} {v}" for k, v in expected.items())
        raise DatasetError(
            f"{url}: checksum mismatch (got md5 {digests['md5']}, want {want}); kept as {bad}"
        )
    part.replace(final)
    log.info("%s: downloaded, md5 %s", final, digests["md5"])
    return final


def _download_any(
    urls: tuple[str, ...], folder: Path, progress: bool, md5: str | None, sha256: str | None
) -> Path:
    errors = []
    for url in urls:
        try:
            return download(url, folder, progress, md5=md5, sha256=sha256)
        except DatasetError as exc:
            if "checksum" in str(exc) or len(urls) == 1:
                raise
            errors.append(str(exc).split(";")[0])
    raise DatasetError(f"no GTZAN mirror reachable ({'; '.join(errors)}); {OFFLINE_HINT}")
