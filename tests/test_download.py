"""Fetching GTZAN from a local HTTP server (no internet): mgc.data.download's fetch_archive
(mirrors in turn, checksums, resume, offline), and the first-run fill of a missing dataset folder
built on it (mgc.data.gtzan.ensure_dataset, `python -m mgc.data download`), which leaves existing
folders alone."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mgc.data import download
from mgc.data.__main__ import main
from mgc.data.datasets import DatasetError, discover
from mgc.data.download import ARCHIVE_NAME, checksums, fetch_archive
from mgc.data.gtzan import ensure_dataset, is_missing

SR = 22050
GENRES = ("blues", "jazz", "rock")
N_PER_GENRE = 2
PATH = f"/gtzan/{ARCHIVE_NAME}"


def make_archive(tmp_path: Path) -> bytes:
    """A small genres.tar.gz laid out like the real one: genres/<genre>/<genre>.000NN.wav, plus
    the Marsyas .mf lists that are not audio."""
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for g in GENRES:
        for i in range(N_PER_GENRE):
            path = src / "genres" / g / f"{g}.{i:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), (0.1 * rng.standard_normal(SR // 4)).astype(np.float32), SR)
    (src / "genres" / "input.mf").write_text("blues/blues.00000.wav\tblues\n")
    archive = tmp_path / "made.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "genres", arcname="genres")
    return archive.read_bytes()


def md5_of(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Server:
    """What the test server serves and what it was asked for."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    honour_range: bool = True
    cut: dict[str, int] = field(default_factory=dict)  # path → bytes sent before hanging up, once

    def url(self, path: str = PATH) -> str:
        return self.base + path


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base="")

    class Handler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.0: the connection closes after each answer, so a cut body reads as truncated.
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            start = int(m.group(1)) if m and state.honour_range else 0
            if start >= len(body) and start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            cut = state.cut.pop(self.path, None)
            self.wfile.write(body[start:cut] if cut is not None else body[start:])

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def archive(tmp_path: Path, server: Server) -> bytes:
    data = make_archive(tmp_path)
    server.files[PATH] = data
    return data


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small reads, so that a transfer cut midway has written some bytes to the .part file.
    monkeypatch.setattr(download, "CHUNK_SIZE", 4096)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port nothing listens on: refused at once, like an offline host."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{ARCHIVE_NAME}"


def fetch(root: Path, server: Server, mirrors: list[str] | None = None, **kwargs) -> Path:
    """ensure_dataset against the test server, with the archive's md5 as the known hash."""
    kwargs.setdefault("known_hash", md5_of(server.files[PATH]) if PATH in server.files else None)
    return ensure_dataset(root, mirrors=mirrors or [server.url()], progress=False, **kwargs)


def get(folder: Path, server: Server, urls: list[str] | None = None, **kwargs) -> Path:
    """fetch_archive against the test server, with the archive's md5 as the known hash."""
    kwargs.setdefault("hashes", [md5_of(server.files[PATH])])
    return fetch_archive(folder, urls or [server.url()], progress=False, **kwargs)


def assert_laid_out(root: Path) -> None:
    tracks = discover(root)
    assert len(tracks) == len(GENRES) * N_PER_GENRE
    assert {t.genre for t in tracks} == set(GENRES)
    assert (root / "label_map.json").is_file()


def leftovers(folder: Path) -> list[str]:
    """What a run left in the download folder (hidden staging folders and temporaries included)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------------------------------------
# mgc.data.download: checksums


def test_checksums_published_user_given_and_refused() -> None:
    assert checksums() == (download.GTZAN_KNOWN_HASH,)
    assert checksums(url=download.GTZAN_MIRRORS[1]) == (download.GTZAN_KNOWN_HASH,)
    # The user's digests replace the published one, all of them must hold, sha256 first (the
    # one pooch checks before the download takes its name); case and spaces do not matter.
    assert checksums(md5=" " + "AB" * 16, sha256="cd" * 32) == (
        "sha256:" + "cd" * 32,
        "md5:" + "ab" * 16,
    )
    with pytest.raises(DatasetError, match=r"--md5 12345: not an md5 \(32 hex digits\)"):
        checksums(md5="12345")
    with pytest.raises(DatasetError, match="--sha256 .*: not an sha256"):
        checksums(sha256="ab" * 16)  # an md5 given as a sha256
    with pytest.raises(DatasetError, match="no published checksum known for this URL; pass --md5"):
        checksums(url="https://example.org/genres.tar.gz")


# ---------------------------------------------------------------------------------------------
# mgc.data.download: fetch_archive


def test_fetch_verifies_keeps_and_reuses(tmp_path: Path, server: Server, archive: bytes) -> None:
    folder = tmp_path / "dl"
    path = get(folder, server)
    assert path == folder / ARCHIVE_NAME and path.read_bytes() == archive
    assert server.requests == [(PATH, None)]
    assert leftovers(folder) == [ARCHIVE_NAME]  # no .part, no pooch temporary
    assert get(folder, server) == path  # verified copy reused: no request
    assert len(server.requests) == 1


def test_first_mirror_404_then_second_used(
    tmp_path: Path, server: Server, archive: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = get(tmp_path, server, urls=[server.url("/gone/genres.tar.gz"), server.url()])
    assert [p for p, _ in server.requests] == ["/gone/genres.tar.gz", PATH]
    assert path.read_bytes() == archive
    assert any("HTTP 404" in r.getMessage() for r in caplog.records)


def test_every_given_digest_must_hold(tmp_path: Path, server: Server, archive: bytes) -> None:
    wrong_md5 = "md5:" + "0" * 32
    # pooch checks the first; the second is checked after it, and a mismatch deletes the file.
    for hashes in ([sha256_of(archive), wrong_md5], [wrong_md5, sha256_of(archive)]):
        with pytest.raises(DatasetError, match=f"checksum mismatch .*want {wrong_md5}"):
            get(tmp_path / "dl", server, hashes=hashes)
        assert leftovers(tmp_path / "dl") == []
    both = [sha256_of(archive), md5_of(archive)]
    assert get(tmp_path / "dl", server, hashes=both).read_bytes() == archive


def test_file_name_comes_from_the_url(tmp_path: Path, server: Server, archive: bytes) -> None:
    server.files["/get/gtzan%20copy.zip"] = b"zip bytes"
    path = get(
        tmp_path, server, urls=[server.url("/get/gtzan%20copy.zip")], hashes=[md5_of(b"zip bytes")]
    )
    assert path == tmp_path / "gtzan copy.zip"  # the suffix tells the layout zip from tar


def test_partial_file_is_resumed_with_a_range_request(
    tmp_path: Path, server: Server, archive: bytes
) -> None:
    part = tmp_path / "dl" / f"{ARCHIVE_NAME}.part"
    part.parent.mkdir()
    have = len(archive) // 3
    part.write_bytes(archive[:have])
    assert get(tmp_path / "dl", server).read_bytes() == archive
    assert server.requests == [(PATH, f"bytes={have}-")]
    assert not part.exists()


def test_interrupted_transfer_is_kept_and_continued_by_the_next_run(
    tmp_path: Path, server: Server, archive: bytes
) -> None:
    server.cut[PATH] = len(archive) // 2
    with pytest.raises(DatasetError) as info:
        get(tmp_path / "dl", server)
    assert "\n" not in str(info.value) and "resumes it" in str(info.value)
    part = tmp_path / "dl" / f"{ARCHIVE_NAME}.part"
    have = part.stat().st_size
    assert 0 < have <= len(archive) // 2
    assert archive.startswith(part.read_bytes())
    assert leftovers(tmp_path / "dl") == [part.name]

    assert get(tmp_path / "dl", server).read_bytes() == archive
    assert server.requests == [(PATH, None), (PATH, f"bytes={have}-")]


def test_server_ignoring_range_starts_over(tmp_path: Path, server: Server, archive: bytes) -> None:
    server.honour_range = False
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / f"{ARCHIVE_NAME}.part").write_bytes(archive[:100])
    assert get(tmp_path / "dl", server).read_bytes() == archive
    assert server.requests == [(PATH, "bytes=100-")]  # asked, got the whole file (200)


def test_complete_part_answered_416_is_used(tmp_path: Path, server: Server, archive: bytes) -> None:
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / f"{ARCHIVE_NAME}.part").write_bytes(archive)  # stopped before the rename
    assert get(tmp_path / "dl", server).read_bytes() == archive
    assert server.requests == [(PATH, f"bytes={len(archive)}-")]


def test_unreachable_hosts_are_named(tmp_path: Path) -> None:
    one, two = closed_port_url(), closed_port_url()
    with pytest.raises(DatasetError) as info:
        fetch_archive(tmp_path / "dl", [one], progress=False)
    assert str(info.value).startswith("cannot reach 127.0.0.1:") and "\n" not in str(info.value)
    with pytest.raises(
        DatasetError, match=r"^no mirror reachable: 127.0.0.1:\d+ \(.+\), 127.0.0.1:"
    ):
        fetch_archive(tmp_path / "dl", [one, two], progress=False)
    assert not (tmp_path / "dl").exists()


def test_foreign_archive_is_neither_used_nor_replaced(
    tmp_path: Path, server: Server, archive: bytes
) -> None:
    theirs = tmp_path / ARCHIVE_NAME
    theirs.write_bytes(b"someone else's archive")
    with pytest.raises(DatasetError, match="exists but is not the expected archive .md5 differs"):
        get(tmp_path, server)
    assert theirs.read_bytes() == b"someone else's archive" and server.requests == []


# ---------------------------------------------------------------------------------------------
# mgc.data.gtzan.ensure_dataset: a missing dataset folder filled on first run


def test_missing_folder_is_fetched_verified_and_laid_out(
    tmp_path: Path, server: Server, archive: bytes
) -> None:
    root = tmp_path / "data" / "gtzan"
    assert is_missing(root)
    assert fetch(root, server) == root
    assert_laid_out(root)
    assert server.requests == [(PATH, None)]
    kept = root.parent / ARCHIVE_NAME  # kept beside the folder for a later layout
    assert kept.read_bytes() == archive
    assert leftovers(root.parent) == [ARCHIVE_NAME, "gtzan"]  # no .part, staging or temporaries

    # A second folder from the same download folder reuses the verified archive, no request.
    other = tmp_path / "data" / "gtzan2"
    fetch(other, server)
    assert_laid_out(other)
    assert len(server.requests) == 1


def test_checksum_mismatch_is_one_line_and_leaves_nothing(
    tmp_path: Path, server: Server, archive: bytes
) -> None:
    root = tmp_path / "data" / "gtzan"
    with pytest.raises(DatasetError) as info:
        fetch(root, server, known_hash="md5:" + "0" * 32)
    message = str(info.value)
    assert "\n" not in message
    assert "checksum mismatch" in message and "md5:" + "0" * 32 in message
    assert f"{root}: dataset folder not found" in message
    assert not root.exists()
    assert leftovers(root.parent) == []  # no archive, no .part, no staging folder

    # The next run starts from byte 0: nothing of the bad download was kept to continue.
    fetch(root, server)
    assert server.requests[-1] == (PATH, None)
    assert_laid_out(root)


def test_interrupted_layout_run_resumes_and_leaves_no_dataset(
    tmp_path: Path, server: Server, archive: bytes
) -> None:
    root = tmp_path / "data" / "gtzan"
    server.cut[PATH] = len(archive) // 2
    with pytest.raises(DatasetError, match="resumes it"):
        fetch(root, server)
    assert not root.exists()
    assert leftovers(root.parent) == [f"{ARCHIVE_NAME}.part"]
    fetch(root, server)
    assert server.requests[-1][1] is not None  # the second run asked for the rest only
    assert_laid_out(root)


def test_offline_says_folder_env_and_command(tmp_path: Path, server: Server) -> None:
    root = tmp_path / "data" / "gtzan"
    with pytest.raises(DatasetError) as info:
        ensure_dataset(root, mirrors=[closed_port_url()], progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{root}: dataset folder not found")
    assert "GTZAN cannot be downloaded (cannot reach 127.0.0.1:" in message
    assert f"`python -m mgc.data gtzan --source ARCHIVE --dest {root}`" in message
    assert "MGC_DATA_ROOT" in message
    assert not root.parent.exists()  # nothing created


def test_downloads_off_gives_the_same_way_out_without_a_request(
    tmp_path: Path, server: Server, archive: bytes
) -> None:
    root = tmp_path / "data" / "gtzan"
    with pytest.raises(DatasetError, match="downloads are off") as info:
        fetch(root, server, allow_download=False)
    assert "python -m mgc.data gtzan --source ARCHIVE" in str(info.value)
    assert server.requests == [] and not root.parent.exists()


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize("content", ["notes", "genre", "hidden"])
def test_existing_folder_is_never_touched(
    tmp_path: Path, server: Server, archive: bytes, content: str
) -> None:
    root = tmp_path / "data" / "gtzan"
    if content == "notes":  # not a dataset at all: discover will say so, not us
        (root / "notes.txt").parent.mkdir(parents=True)
        (root / "notes.txt").write_text("mine\n")
    elif content == "genre":  # a partial dataset someone made
        (root / "blues").mkdir(parents=True)
        (root / "blues" / "blues.00000.wav").write_bytes(b"RIFF....")
    else:  # only a hidden entry: still someone's folder
        (root / ".quarantine").mkdir(parents=True)
    before = snapshot(root)
    entries = sorted(p.name for p in root.iterdir())
    assert not is_missing(root)
    assert fetch(root, server) == root
    assert server.requests == []
    assert snapshot(root) == before and sorted(p.name for p in root.iterdir()) == entries
    assert leftovers(root.parent) == ["gtzan"]


def test_empty_folder_is_filled(tmp_path: Path, server: Server, archive: bytes) -> None:
    root = tmp_path / "data" / "gtzan"
    root.mkdir(parents=True)
    assert is_missing(root)
    fetch(root, server)
    assert_laid_out(root)


def test_a_file_where_the_folder_should_be(tmp_path: Path, server: Server, archive: bytes) -> None:
    root = tmp_path / "gtzan"
    root.write_text("not a folder")
    with pytest.raises(DatasetError, match="not a folder"):
        fetch(root, server)
    assert root.read_text() == "not a folder" and server.requests == []


def test_foreign_archive_beside_the_folder_gives_the_way_out(
    tmp_path: Path, server: Server, archive: bytes
) -> None:
    root = tmp_path / "data" / "gtzan"
    root.parent.mkdir(parents=True)
    theirs = root.parent / ARCHIVE_NAME
    theirs.write_bytes(b"someone else's archive")
    with pytest.raises(DatasetError) as info:
        fetch(root, server)
    message = str(info.value)
    assert f"{theirs} exists but is not the expected archive (md5 differs)" in message
    assert "move it away" in message and "--source ARCHIVE" in message and "\n" not in message
    assert theirs.read_bytes() == b"someone else's archive"
    assert server.requests == [] and not root.exists()


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def mirrors(server: Server, archive: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test server as the known mirrors (after one that is gone), its archive as published."""
    monkeypatch.setattr(download, "GTZAN_MIRRORS", (server.url("/gone.tar.gz"), server.url()))
    monkeypatch.setattr(download, "GTZAN_KNOWN_HASH", md5_of(archive))


def test_cli_download_then_rerun_leaves_it(
    tmp_path: Path, server: Server, mirrors: None, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data" / "gtzan"
    assert main(["download", "--out", str(root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{root}: {len(GENRES) * N_PER_GENRE} tracks, {len(GENRES)} genres" in out
    n = len(server.requests)

    assert main(["download", "--out", str(root), "--quiet"]) == 0
    assert "already there, left as it is" in capsys.readouterr().out
    assert len(server.requests) == n


def test_cli_download_and_gtzan_download_share_the_archive(
    tmp_path: Path, server: Server, mirrors: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # `gtzan --source download` fetches beside --dest, where `download` keeps its archive: the
    # second command finds the first one's verified archive and asks the server for nothing.
    first, second = tmp_path / "data" / "gtzan", tmp_path / "data" / "copy"
    assert main(["gtzan", "--source", "download", "--dest", str(first), "--quiet"]) == 0
    n = len(server.requests)
    assert [p for p, _ in server.requests] == ["/gone.tar.gz", PATH]
    assert main(["download", "--out", str(second), "--quiet"]) == 0
    assert len(server.requests) == n
    assert_laid_out(first)
    assert_laid_out(second)
    assert f"{second}: {len(GENRES) * N_PER_GENRE} tracks" in capsys.readouterr().out


def test_cli_download_offline_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(download, "GTZAN_MIRRORS", (closed_port_url(),))
    root = tmp_path / "data" / "gtzan"
    assert main(["download", "--out", str(root), "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {root}: dataset folder not found")
    assert f"--dest {root}" in line and "MGC_DATA_ROOT" in line
    assert not root.exists()
