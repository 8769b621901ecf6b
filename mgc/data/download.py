"""Fetch an archive into a folder: the known GTZAN mirrors in turn (or one given URL), through
pooch with its checksum check, continuing an interrupted transfer with HTTP Range requests.
What the archive holds and where it is laid out is `mgc.data.gtzan`'s job."""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import pooch
import requests
import urllib3
from tqdm import tqdm

from mgc.core.net import Unreachable, check_reachable
from mgc.data.datasets import DatasetError

log = logging.getLogger(__name__)

ARCHIVE_NAME = "genres.tar.gz"

# Where genres.tar.gz can be had, tried in this order (a host that does not answer is skipped in
# seconds, see CONNECT_TIMEOUT_S). All three serve the one archive that GTZAN_KNOWN_HASH names.
GTZAN_MIRRORS: tuple[str, ...] = (
    # Hugging Face dataset `marsyas/gtzan`, file `data/genres.tar.gz`: the Marsyas archive re-hosted
    # on Hugging Face's CDN (which serves Range requests); many loaders point here now that the
    # original is mostly unreachable.
    "https://huggingface.co/datasets/marsyas/gtzan/resolve/main/data/genres.tar.gz",
    # The original, on Marsyas' host at UVic (the "Download the GTZAN genre collection" link of
    # marsyas.info, and the URL in torchaudio's and mirdata's loaders); offline for long stretches.
    "http://opihi.cs.uvic.ca/sound/genres.tar.gz",
    # Internet Archive snapshot of the original (2022-03-28, the capture other GTZAN loaders cite);
    # `id_` asks for the stored bytes as they were served, without the Wayback Machine's rewriting.
    "https://web.archive.org/web/20220328223413id_/http://opihi.cs.uvic.ca/sound/genres.tar.gz",
)

# The digest genres.tar.gz is checked against, in pooch's "alg:hex" form. pooch checks one digest
# per file, so one is chosen: this md5 is the value with the widest independent use: mirdata
# checks it on every GTZAN download (mir-dataset-loaders/mirdata, datasets/gtzan_genre.py,
# REMOTES["all"].checksum), torchaudio's GTZAN loader used it before moving to a sha256
# (24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6, torchaudio/datasets/gtzan.py,
# _CHECKSUMS), and loaders that fetch the Hugging Face copy check that copy against it. md5 is
# enough here: the threat is a truncated, corrupt or different file, and swapping in other bytes
# with a published md5 needs a second preimage, which md5 still resists. Not checked against the
# bytes from this project's machines, which have no route out. `--md5`/`--sha256` replace it.
GTZAN_KNOWN_HASH = "md5:5b3d6dddb579ab49814ab86dba69e7c7"

ARCHIVE_SIZE_TEXT = "about 1.2 GB"  # for messages only; the progress bar takes the server's length
CONNECT_TIMEOUT_S = 5.0  # per mirror: offline costs seconds, not minutes
READ_TIMEOUT_S = 60.0  # a stalled transfer fails (and is resumed by the next run)
CHUNK_SIZE = 1 << 20

_HEX_DIGITS = {"sha256": 64, "md5": 32}


class DownloadInterrupted(OSError):
    """A transfer that stopped before the end; its bytes stay in the `.part` file for the next run."""


def checksums(
    md5: str | None = None, sha256: str | None = None, url: str | None = None
) -> tuple[str, ...]:
    """The digests a download from `url` (None: the known mirrors) must have, as pooch's
    "alg:hex": the user's `md5`/`sha256` when given (all must hold), else GTZAN_KNOWN_HASH for
    the known mirrors. Raises DatasetError (one line) for a malformed digest, or for another URL
    with none given: an unchecked download is never laid out."""
    given = [(alg, value.strip()) for alg, value in (("sha256", sha256), ("md5", md5)) if value]
    for alg, value in given:
        if not re.fullmatch(f"[0-9a-fA-F]{{{_HEX_DIGITS[alg]}}}", value):
            raise DatasetError(f"--{alg} {value}: not an {alg} ({_HEX_DIGITS[alg]} hex digits)")
    if given:
        # sha256 first: the one pooch checks before the file takes its name (see fetch_archive).
        return tuple(f"{alg}:{value.lower()}" for alg, value in given)
    if url is None or url in GTZAN_MIRRORS:
        return (GTZAN_KNOWN_HASH,)
    raise DatasetError(
        f"{url}: no published checksum known for this URL; pass --md5 or --sha256 to verify it"
    )


def fetch_archive(
    folder: Path,
    urls: Sequence[str] | None = None,
    hashes: Sequence[str] = (),
    *,
    progress: bool = True,
) -> Path:
    """The archive that `urls` (default GTZAN_MIRRORS, tried in order) serve, in `folder` under
    the first URL's file name, verified against every digest in `hashes` ("alg:hex", default
    GTZAN_KNOWN_HASH): the copy already there, or a download. A `.part` left by an interrupted run
    is continued, whichever URL it came from.

    pooch checks `hashes[0]` before the download takes its name and deletes it on a mismatch; any
    further digest is checked after, and a mismatch deletes it too. A file already there with
    other digests is someone's: it is neither used nor replaced. Raises DatasetError, one line,
    naming each URL's failure.
    """
    urls = GTZAN_MIRRORS if urls is None else tuple(urls)
    hashes = tuple(hashes) or (GTZAN_KNOWN_HASH,)
    folder = Path(folder).expanduser()
    name = _file_name(urls[0])
    archive = folder / name
    if archive.is_file():
        differs = _differs(archive, hashes)
        if differs is None:
            log.info("%s: already downloaded, checksum verified", archive)
            return archive
        # Not replaced: it may be another edition someone put there on purpose.
        raise DatasetError(
            f"{archive} exists but is not the expected archive ({_alg(differs[0])} differs), "
            "left as it is: move it away to download afresh"
        )
    failures: list[str] = []
    unreachable: list[str] = []
    for url in urls:
        try:
            check_reachable(url, CONNECT_TIMEOUT_S)
        except (Unreachable, ValueError) as exc:  # ValueError: a URL without a host
            unreachable.append(str(exc))
            continue
        log.info("downloading %s (%s) from %s to %s", name, ARCHIVE_SIZE_TEXT, url, archive)
        downloader = ResumableDownload(folder / f"{name}.part", progress=progress)
        try:
            with _quiet_pooch():
                path = Path(
                    pooch.retrieve(
                        url, known_hash=hashes[0], fname=name, path=folder, downloader=downloader
                    )
                )
        except ValueError as exc:
            # pooch's hash check failed and it has deleted the download.
            failures.append(f"{_host(url)}: {_mismatch(exc)}")
        except (requests.RequestException, OSError) as exc:
            failures.append(f"{_host(url)}: {_reason(exc)}")
        else:
            differs = _differs(path, hashes[1:])
            if differs is None:
                log.info(
                    "%s: checksum verified; kept for re-use (delete it to free the space)", path
                )
                return path
            path.unlink()  # as pooch does with a mismatch: never left where it would be used
            failures.append(f"{_host(url)}: {_mismatch_text(*differs)}")
        log.warning("%s", failures[-1])
    if not failures:
        if len(unreachable) == 1:
            raise DatasetError(unreachable[0])
        hosts = ", ".join(u.removeprefix("cannot reach ") for u in unreachable)
        raise DatasetError(f"no mirror reachable: {hosts}")
    raise DatasetError("; ".join(failures + unreachable))


class ResumableDownload:
    """A pooch downloader (`downloader(url, output_file, pooch)`) that keeps the bytes it got in
    `part` and, on the next call, asks only for the rest with an HTTP Range request.

    Hand-written because pooch (1.9) has no resume: each try streams from byte 0 into a fresh
    temporary, so a dropped connection 1 GB into GTZAN would cost the whole archive again. The
    finished `part` is moved onto pooch's temporary, which pooch then hash-checks and moves into
    place (or deletes on a mismatch), so the verification stays pooch's. A server that ignores
    Range (200) or whose Content-Range does not continue `part` makes it start over.
    """

    def __init__(self, part: Path, *, progress: bool = True, chunk_size: int | None = None):
        self.part = Path(part)
        self.progress = progress
        self.chunk_size = chunk_size or CHUNK_SIZE

    def __call__(self, url: str, output_file: str, pooch_: object = None) -> None:
        self.part.parent.mkdir(parents=True, exist_ok=True)
        if not self._fetch_rest(url):
            self.part.unlink(missing_ok=True)  # unusable as a start: fetch it whole
            self._fetch_rest(url)
        os.replace(self.part, output_file)
        log.info("%s: complete; checking its checksum", url)

    def _fetch_rest(self, url: str) -> bool:
        """Append the missing bytes to `part`; False when `part` cannot be continued."""
        have = self.part.stat().st_size if self.part.is_file() else 0
        # identity: the bytes on disk must be the archive's, never a transfer-decoded version.
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        with requests.get(
            url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
        ) as resp:
            if have and resp.status_code == 416:
                # Nothing after byte `have`: complete if the server's length says so.
                return _content_range(resp.headers.get("Content-Range"))[1] == have
            resp.raise_for_status()
            if have and resp.status_code == 206:
                start, _ = _content_range(resp.headers.get("Content-Range"))
                if start != have:
                    return False
                log.info("%s: resuming at byte %d", self.part, have)
            elif have:
                log.info("%s: the server ignores Range; starting over", url)
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            got = have
            with (
                self.part.open("ab" if have else "wb") as out,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=self.part.name.removesuffix(".part"),
                    disable=not self.progress,
                ) as bar,
            ):
                try:
                    for chunk in resp.raw.stream(self.chunk_size, decode_content=False):
                        out.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                    raise self._interrupted(got, total, exc) from exc
            if total is not None and got != total:
                raise self._interrupted(got, total, None)
        return True

    def _interrupted(self, got: int, total: int | None, exc: BaseException | None) -> Exception:
        of = f" of {total}" if total else ""
        why = f" ({type(exc).__name__})" if exc is not None else ""
        return DownloadInterrupted(
            f"transfer stopped after {got}{of} bytes{why}; {self.part} is kept and the next run "
            "resumes it"
        )


# ---------------------------------------------------------------------------------------------
# Helpers


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _file_name(url: str) -> str:
    """The last part of the URL's path (it tells zip from tar when laid out), else ARCHIVE_NAME."""
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name if name not in ("", ".", "..") else ARCHIVE_NAME


def _differs(path: Path, hashes: Sequence[str]) -> tuple[str, str] | None:
    """(wanted, got) for the first digest in `hashes` that `path` does not have; None if all do."""
    for known in hashes:
        got = pooch.file_hash(str(path), alg=_alg(known))
        if got.lower() != known.rpartition(":")[2].lower():
            return known, got
    return None


def _alg(known: str) -> str:
    # pooch's reading of "alg:hex": sha256 when the algorithm is left out.
    return known.partition(":")[0].lower() if ":" in known else "sha256"


@contextmanager
def _quiet_pooch() -> Iterator[None]:
    # pooch logs every download to its own stderr handler; our own lines say the same, once.
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """`bytes 100-199/1000` → (100, 1000); `bytes */1000` → (None, 1000); unknown parts None."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _mismatch(exc: ValueError) -> str:
    """pooch's several-sentence hash-mismatch message (any other ValueError: its first line)."""
    text = str(exc)
    m = re.search(r"expected (\S+) but got (\w+)", text)
    if "does not match" not in text or not m:
        return text.splitlines()[0] if text else type(exc).__name__
    return _mismatch_text(*m.groups())


def _mismatch_text(want: str, got: str) -> str:
    return f"checksum mismatch (got {_alg(want)}:{got}, want {want}); the download was deleted"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, DownloadInterrupted):
        return str(exc)
    # requests' own messages run to several lines of pool and retry details.
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
