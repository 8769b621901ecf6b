"""mgc.core.fsio: atomic writes leave the old file or the whole new one, and no temporaries;
storage paths join the same way for a folder and a URI."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest
import torch

from mgc.core import fsio
from mgc.core.fsio import atomic_path, atomic_write, is_uri, storage_join


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_bytes_and_text_create_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "data.bin"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write(str(target), "héllo\n")  # str paths too; text is UTF-8, newline untouched
    assert target.read_bytes() == "héllo\n".encode()
    assert _names(target.parent) == ["data.bin"]


def test_atomic_write_failure_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.txt"
    target.write_text("old")

    def failing_replace(src: str, dst: str) -> None:
        assert Path(src).read_bytes() == b"new"  # the temporary was complete: fail at the end
        raise OSError("rename refused")

    monkeypatch.setattr(fsio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write(target, b"new")
    assert target.read_text() == "old"
    assert _names(tmp_path) == ["report.txt"]


def test_atomic_path_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "ckpt" / "last.pt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        # The target's suffix stays last, so writers that pick a format by name still do.
        assert tmp.name.startswith(".") and tmp.suffix == ".pt"
        torch.save({"epoch": 3}, tmp)
        assert not target.exists()  # nothing visible until the block completes
    assert torch.load(target)["epoch"] == 3
    assert _names(target.parent) == ["last.pt"]


def test_atomic_path_failing_writer_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    target.write_bytes(b"old checkpoint")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a new chec")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old checkpoint"
    assert _names(tmp_path) == ["last.pt"]


def test_atomic_path_interrupt_is_cleaned_up_too(tmp_path: Path) -> None:
    target = tmp_path / "x.csv"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("a,b\n")
        raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_temporaries_are_unique_per_writer(tmp_path: Path) -> None:
    target = tmp_path / "same.npy"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert target.read_bytes() == b"1"  # the outer block finishes last and wins
    assert _names(tmp_path) == ["same.npy"]


def test_atomic_write_through_fsspec_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    fs = fsspec.filesystem("memory")
    base = f"/fsio-{uuid.uuid4().hex}"
    try:
        path = f"{base}/logmel/ab/abc.npy"
        atomic_write(path, b"first", fs=fs)
        atomic_write(path, "second", fs=fs)
        assert fs.cat_file(path) == b"second"
        assert [p.rsplit("/", 1)[-1] for p in fs.find(base)] == ["abc.npy"]

        def failing_mv(src: str, dst: str) -> None:
            assert fs.cat_file(src) == b"third"
            raise OSError("upload interrupted")

        monkeypatch.setattr(fs, "mv", failing_mv)
        with pytest.raises(OSError, match="upload interrupted"):
            atomic_write(path, b"third", fs=fs)
        assert fs.cat_file(path) == b"second"
        assert [p.rsplit("/", 1)[-1] for p in fs.find(base)] == ["abc.npy"]
    finally:
        fs.rm(base, recursive=True)


def test_storage_join_keeps_a_uris_query_at_the_end():
    endpoint = "?endpoint_override=http%3A%2F%2F127.0.0.1%3A9000&region=us-east-1"
    assert storage_join("/srv/rr", "mgc-E0", "t") == "/srv/rr/mgc-E0/t"
    assert storage_join("s3://bucket", "mgc-E0") == "s3://bucket/mgc-E0"
    assert storage_join("s3://bucket/rr/", "mgc-E0") == "s3://bucket/rr/mgc-E0"
    assert storage_join(f"s3://bucket/rr{endpoint}", "mgc-E0", "t") == (
        f"s3://bucket/rr/mgc-E0/t{endpoint}"
    )
    assert storage_join("file:///srv/rr", "mgc-E0") == "file:///srv/rr/mgc-E0"
    assert is_uri("gs://b/x") and is_uri("file:///srv") and not is_uri("/srv/rr")
    assert not is_uri("ray_results")
