"""mgc.data.gtzan: import from folders, archives, URLs and the known mirrors (fetched through
mgc.data.download); idempotent, source untouched, safe."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mgc.data import download
from mgc.data.__main__ import main
from mgc.data.datasets import DatasetError, discover
from mgc.data.gtzan import DOWNLOAD, GTZAN_GENRES, extract_archive, find_genre_root, get_gtzan

SR = 22050
N_PER_GENRE = 2


def _write_tone(path: Path, freq: float, seconds: float = 0.2, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, format=fmt)


def make_genres(folder: Path, genres: tuple[str, ...] = GTZAN_GENRES, ext: str = ".au") -> Path:
    """GTZAN-named clips `folder/<genre>/<genre>.000NN<ext>` (tiny: 0.2 s each)."""
    for gi, genre in enumerate(genres):
        for i in range(N_PER_GENRE):
            fmt = "AU" if ext == ".au" else None
            _write_tone(folder / genre / f"{genre}.{i:05d}{ext}", 110.0 * (gi + 1) + i, fmt=fmt)
    return folder


def make_layout(tmp: Path, layout: str) -> Path:
    """A source folder in one of the layouts GTZAN is found in."""
    src = tmp / f"src-{layout}"
    if layout == "flat":  # already <genre>/<file>
        make_genres(src)
    elif layout == "genres":  # the original genres.tar.gz: genres/<genre>/*.au + .mf lists
        make_genres(src / "genres")
        (src / "genres" / "bextract_single.mf").write_text("blues/blues.00000.au\tblues\n")
    elif layout == "kaggle":  # Data/genres_original/<genre>/*.wav beside images_original/ PNGs
        make_genres(src / "Data" / "genres_original", ext=".wav")
        for genre in GTZAN_GENRES:
            png = src / "Data" / "images_original" / genre / f"{genre}00000.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            png.write_bytes(b"\x89PNG fake")
        (src / "Data" / "features_30_sec.csv").write_text("filename,label\n")
    else:
        raise ValueError(layout)
    return src


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: relative path → (md5, mtime_ns)."""
    return {
        p.relative_to(folder).as_posix(): (
            hashlib.md5(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def make_archive(src: Path, archive: Path) -> Path:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as zf:
            for p in sorted(src.rglob("*")):
                zf.write(p, p.relative_to(src).as_posix())
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for p in sorted(src.iterdir()):
                tf.add(p, arcname=p.name)
    return archive


def assert_imported(dest: Path, ext_set: set[str]) -> None:
    tracks = discover(dest)
    assert len(tracks) == len(GTZAN_GENRES) * N_PER_GENRE
    assert {Path(t.path).suffix for t in tracks} == ext_set
    assert sorted({t.genre for t in tracks}) == list(GTZAN_GENRES)
    label_map = json.loads((dest / "label_map.json").read_text())
    assert label_map == {str(i): g for i, g in enumerate(GTZAN_GENRES)}
    # Only audio comes across: no .mf lists, PNGs or CSVs.
    assert not [p for p in dest.rglob("*") if p.suffix in (".mf", ".png", ".csv")]


@pytest.mark.parametrize("layout", ["flat", "genres", "kaggle"])
def test_import_from_folder_any_layout_leaves_source_untouched(tmp_path: Path, layout: str) -> None:
    src = make_layout(tmp_path, layout)
    before = snapshot(src)
    dest = tmp_path / "data" / "gtzan"
    assert get_gtzan(str(src), dest, progress=False) == dest
    assert_imported(dest, {".wav"} if layout == "kaggle" else {".au"})
    assert snapshot(src) == before
    # copy2 keeps the source's bytes and mtime.
    some = next(iter((dest / "blues").iterdir()))
    assert (
        some.stat().st_mtime_ns
        == next(p for p in src.rglob(some.name) if p.is_file()).stat().st_mtime_ns
    )


@pytest.mark.parametrize("layout", ["genres", "kaggle"])
@pytest.mark.parametrize("archive_name", ["genres.tar.gz", "gtzan.zip"])
def test_import_from_archive(tmp_path: Path, layout: str, archive_name: str) -> None:
    archive = make_archive(make_layout(tmp_path, layout), tmp_path / archive_name)
    archive_md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "gtzan"
    get_gtzan(str(archive), dest, progress=False)
    assert_imported(dest, {".wav"} if layout == "kaggle" else {".au"})
    assert hashlib.md5(archive.read_bytes()).hexdigest() == archive_md5
    # The temporary extraction folder next to dest is gone.
    assert sorted(p.name for p in dest.parent.iterdir()) == ["gtzan"]


def test_rerun_is_idempotent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = make_layout(tmp_path, "genres")
    dest = tmp_path / "gtzan"
    get_gtzan(str(src), dest, progress=False)
    inodes = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.rglob("*.au")}
    caplog.set_level(logging.INFO, logger="mgc.data.gtzan")
    get_gtzan(str(src), dest, progress=False)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dest.rglob("*.au")} == inodes
    assert "0 copied, 20 already there, 0 replaced" in caplog.text


def test_changed_source_file_replaces_the_copy(tmp_path: Path) -> None:
    src = make_layout(tmp_path, "flat")
    dest = tmp_path / "gtzan"
    get_gtzan(str(src), dest, progress=False)
    time.sleep(0.01)
    _write_tone(src / "blues" / "blues.00000.au", 999.0, fmt="AU")
    get_gtzan(str(src), dest, progress=False)
    assert (dest / "blues" / "blues.00000.au").read_bytes() == (
        src / "blues" / "blues.00000.au"
    ).read_bytes()


def test_other_genres_copied_and_missing_gtzan_genres_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = make_genres(tmp_path / "mine", genres=("blues", "jazz", "polka"), ext=".wav")
    dest = tmp_path / "ds"
    with caplog.at_level(logging.WARNING, logger="mgc.data.gtzan"):
        get_gtzan(str(src), dest, progress=False)
    assert sorted({t.genre for t in discover(dest)}) == ["blues", "jazz", "polka"]
    assert (
        "GTZAN genre(s) missing: classical, country, disco, hiphop, metal, pop, reggae, rock"
        in (caplog.text)
    )


def test_quarantined_files_are_not_copied_back(tmp_path: Path) -> None:
    from mgc.data.scan import scan

    src = make_layout(tmp_path, "flat")
    bad = src / "rock" / "rock.00099.wav"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    dest = tmp_path / "gtzan"
    get_gtzan(str(src), dest, progress=False)
    report = scan(dest, min_seconds=0.1, progress=False)
    assert report.bad == [("rock/rock.00099.wav", "undecodable")]
    get_gtzan(str(src), dest, progress=False)
    assert not (dest / "rock" / "rock.00099.wav").exists()
    assert (dest / ".quarantine" / "rock" / "rock.00099.wav").is_file()


def test_find_genre_root_prefers_gtzan_genres(tmp_path: Path) -> None:
    src = make_layout(tmp_path, "kaggle")
    assert find_genre_root(src) == src / "Data" / "genres_original"
    with pytest.raises(DatasetError, match="no <genre>/ folders with audio"):
        find_genre_root(src / "Data" / "images_original")


def test_missing_source_and_non_archive_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="source not found"):
        get_gtzan(str(tmp_path / "nope"), tmp_path / "d", progress=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(DatasetError, match="not a folder or an archive"):
        get_gtzan(str(notes), tmp_path / "d", progress=False)


# ---------------------------------------------------------------------------------------------
# Unsafe archives


def _tar_with(tmp: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    archive = tmp / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        ok = tarfile.TarInfo("genres/blues/blues.00000.au")
        ok.size = 1
        tf.addfile(ok, io.BytesIO(b"x"))
        member.size = len(data) if member.isfile() else 0
        tf.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return archive


@pytest.mark.parametrize(
    "name", ["../evil.au", "genres/../../evil.au", "/tmp/mgc-evil-absolute.au"]
)
def test_tar_path_traversal_rejected(tmp_path: Path, name: str) -> None:
    archive = _tar_with(tmp_path, tarfile.TarInfo(name))
    dest = tmp_path / "out" / "gtzan"
    with pytest.raises(DatasetError, match="outside the extraction folder"):
        get_gtzan(str(archive), dest, progress=False)
    assert not list(tmp_path.rglob("evil.au"))
    assert not Path("/tmp/mgc-evil-absolute.au").exists()
    assert not dest.exists()
    assert list((tmp_path / "out").iterdir()) == []  # temporary folder cleaned up


def test_tar_links_rejected(tmp_path: Path) -> None:
    link = tarfile.TarInfo("genres/blues/blues.00001.au")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(DatasetError, match="is a link"):
        extract_archive(_tar_with(tmp_path, link), tmp_path / "x")


def test_zip_path_traversal_rejected(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("genres/blues/blues.00000.au", b"x")
        zf.writestr("../../evil.au", b"x")
    with pytest.raises(DatasetError, match="outside the extraction folder"):
        get_gtzan(str(archive), tmp_path / "gtzan", progress=False)
    assert not list(tmp_path.parent.rglob("evil.au"))


def test_corrupt_archive_is_one_line_error(tmp_path: Path) -> None:
    archive = tmp_path / "genres.tar.gz"
    archive.write_bytes(b"not a tarball at all")
    with pytest.raises(DatasetError, match="cannot read archive") as info:
        get_gtzan(str(archive), tmp_path / "gtzan", progress=False)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Download


def test_unreachable_url_fails_with_local_source_hint(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        get_gtzan(
            "http://127.0.0.1:9/genres.tar.gz", tmp_path / "gtzan", progress=False, md5="0" * 32
        )
    message = str(info.value)
    assert "\n" not in message
    assert "cannot reach 127.0.0.1:9" in message
    assert "--source /path/to/genres.tar.gz" in message
    assert not (tmp_path / "gtzan").exists()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over `tmp_path/www`: the download path without the internet."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_checksum(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    base, www = http_server
    archive = make_archive(make_layout(tmp_path, "genres"), www / "genres.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    dest = tmp_path / "data" / "gtzan"

    with pytest.raises(DatasetError, match="checksum mismatch") as info:
        get_gtzan(f"{base}/genres.tar.gz", dest, progress=False, md5="0" * 32)
    assert "\n" not in str(info.value) and "--source /path/to/genres.tar.gz" in str(info.value)
    assert sorted(p.name for p in dest.parent.iterdir()) == []  # a bad download is not kept
    assert not dest.exists()

    with pytest.raises(DatasetError, match="pass --md5 or --sha256"):
        get_gtzan(f"{base}/genres.tar.gz", dest, progress=False)

    get_gtzan(f"{base}/genres.tar.gz", dest, progress=False, md5=md5)
    assert_imported(dest, {".au"})
    kept = dest.parent / "genres.tar.gz"
    assert hashlib.md5(kept.read_bytes()).hexdigest() == md5
    assert not (dest.parent / "genres.tar.gz.part").exists()


def test_a_kept_archive_that_differs_is_left_alone(
    tmp_path: Path, http_server: tuple[str, Path]
) -> None:
    base, www = http_server
    archive = make_archive(make_layout(tmp_path, "genres"), www / "genres.tar.gz")
    dest = tmp_path / "data" / "gtzan"
    dest.parent.mkdir(parents=True)
    theirs = dest.parent / "genres.tar.gz"
    theirs.write_bytes(b"another edition")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="exists but is not the expected archive .md5 differs"):
        get_gtzan(f"{base}/genres.tar.gz", dest, progress=False, md5=md5)
    assert theirs.read_bytes() == b"another edition" and not dest.exists()


def test_zip_url_is_laid_out_as_zip(tmp_path: Path, http_server: tuple[str, Path]) -> None:
    base, www = http_server
    archive = make_archive(make_layout(tmp_path, "kaggle"), www / "gtzan.zip")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = tmp_path / "data" / "gtzan"
    get_gtzan(f"{base}/gtzan.zip", dest, progress=False, sha256=sha.upper())
    assert_imported(dest, {".wav"})
    assert (dest.parent / "gtzan.zip").is_file()


def test_download_source_uses_the_known_mirrors(
    tmp_path: Path, http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, www = http_server
    archive = make_archive(make_layout(tmp_path, "genres"), www / "genres.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    # The first mirror answers 404, the second serves the archive; the published digest applies.
    mirrors = (f"{base}/gone/genres.tar.gz", f"{base}/genres.tar.gz")
    monkeypatch.setattr(download, "GTZAN_MIRRORS", mirrors)
    monkeypatch.setattr(download, "GTZAN_KNOWN_HASH", f"md5:{md5}")
    dest = tmp_path / "data" / "gtzan"
    assert get_gtzan(DOWNLOAD, dest, progress=False) == dest
    assert_imported(dest, {".au"})
    # A mirror given as --source is a known URL: it needs no --md5 either.
    again = tmp_path / "data" / "again"
    get_gtzan(mirrors[1], again, progress=False)
    assert_imported(again, {".au"})

    # The user's digests replace the published one, and every one given must hold.
    monkeypatch.setattr(download, "GTZAN_KNOWN_HASH", "md5:" + "0" * 32)
    (dest.parent / "genres.tar.gz").unlink()
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="checksum mismatch"):
        get_gtzan(DOWNLOAD, dest, progress=False, md5="1" * 32, sha256=sha)
    get_gtzan(DOWNLOAD, dest, progress=False, md5=md5, sha256=sha)


def test_cli_gtzan_url_with_checksum_options(
    tmp_path: Path, http_server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, www = http_server
    archive = make_archive(make_layout(tmp_path, "genres"), www / "genres.tar.gz")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = tmp_path / "data" / "gtzan"
    url = f"{base}/genres.tar.gz"
    assert main(["gtzan", "--source", url, "--dest", str(dest), "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"error: {url}: no published checksum known for this URL; pass --md5 or --sha256 to "
        "verify it"
    )
    assert main(["gtzan", "--source", url, "--dest", str(dest), "--md5", "xyz", "--quiet"]) == 2
    assert "error: --md5 xyz: not an md5 (32 hex digits)" in capsys.readouterr().err
    assert main(["gtzan", "--source", url, "--dest", str(dest), "--sha256", sha, "--quiet"]) == 0
    assert f"{dest}: {len(GTZAN_GENRES) * N_PER_GENRE} tracks" in capsys.readouterr().out


def test_mac_debris_and_hidden_files_are_not_genres_or_tracks(tmp_path: Path) -> None:
    # A zip made on a Mac: __MACOSX/ mirrors the tree, ._x files are AppleDouble resource forks.
    src = make_genres(tmp_path / "src" / "genres")
    (src / "blues" / "._blues.00000.au").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (src / "blues" / ".blues.00001.au.123-abcd.tmp.au").write_bytes(b"partial copy")
    (src / ".hidden").mkdir()
    _write_tone(src / ".hidden" / "x.au", 220.0, fmt="AU")
    # Shallower than genres/, so only the folder rule keeps it from being taken as the root.
    for genre in GTZAN_GENRES:
        _write_tone(tmp_path / "src" / "__MACOSX" / genre / "y.au", 330.0, fmt="AU")
    assert find_genre_root(tmp_path / "src") == src
    dest = tmp_path / "gtzan"
    get_gtzan(str(tmp_path / "src"), dest, progress=False)
    assert_imported(dest, {".au"})
    assert not [p for p in dest.rglob(".*")]
