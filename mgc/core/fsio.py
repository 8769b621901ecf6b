"""Atomic file writes: readers see the old file or the whole new one, never a partial write. And
storage paths that may be a folder or a URI (`is_uri`, `storage_join`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def _temp_name(name: str) -> str:
    """A hidden, per-writer name for a temporary beside `name`.

    The pid and random part keep concurrent writers of the same target (Ray workers filling one
    feature cache) from sharing a temporary. The leading dot hides it from dataset discovery,
    and the target's own suffix comes last so writers that pick a format or compression from
    the file name (savefig, to_csv) still do so.
    """
    suffix = Path(name).suffix
    return f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}"


def atomic_write(path: str | Path, data: bytes | str, fs: Any = None) -> None:
    """Write `data` (str is UTF-8 encoded) to `path` through a temporary in the same folder.

    Without `fs` the path is local; with an fsspec filesystem, `path` is a path of that
    filesystem (as `fsspec.core.url_to_fs` returns it). Parent folders are created. On any
    error the temporary is removed and the error re-raised.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if fs is None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(payload)
        return
    path = str(path)
    parent, _, name = path.rpartition("/")
    tmp = f"{parent}/{_temp_name(name)}" if parent else _temp_name(name)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    try:
        with fs.open(tmp, "wb") as fh:
            fh.write(payload)
        # A true rename on local disks; object stores copy then delete, which is the closest
        # they offer and still never exposes a partly uploaded object under the final name.
        fs.mv(tmp, path)
    except BaseException:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except Exception:
            pass  # the original error matters more than a failed clean-up
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary local path beside `path`; move it over `path` when the block completes.

    For writers that want a file name (torch.save, Figure.savefig, DataFrame.to_csv). If the
    block raises, or the process is interrupted, the temporary is deleted and `path` is left
    as it was. The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(_temp_name(path.name))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def staged_folder(out: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `out` to fill; when the block completes it becomes `out`
    (replacing an existing one only with `replace`), so a reader never sees half of it. If the
    block raises, the staging folder is removed and `out` is left as it was."""
    import shutil
    import tempfile

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        if replace and out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_uri(path: str) -> bool:
    """A storage path given as a URI (s3://, gs://, file://...), which pyarrow.fs or fsspec
    resolves, rather than a local folder."""
    return "://" in path


def storage_join(base: str, *parts: str) -> str:
    """`base`/`parts` for a folder or a URI. A URI's query (`?endpoint_override=...`, how
    pyarrow is told an S3-compatible server's address) stays at the end, where from_uri reads it."""
    if not is_uri(base):
        return str(Path(base, *parts))
    url = urlsplit(base)
    return urlunsplit(url._replace(path="/".join([url.path.rstrip("/"), *parts])))
