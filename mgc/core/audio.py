"""Decode any common audio file to mono float32 at a chosen sample rate, whole or as a stream."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from mgc.core.errors import UserError

AUDIO_EXTENSIONS = (
    ".wav",
    ".au",
    ".flac",
    ".ogg",
    ".mp3",
    ".m4a",
    ".aac",
    ".aiff",
    ".aif",
    ".opus",
    ".webm",
)


class AudioError(UserError):
    """A file that cannot be used as audio; str() is one line: `path: reason`."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def looks_like_audio(path: str | Path) -> bool:
    """Whether the file starts like a container or stream the decoders take (its content, not
    its name): WAV/RF64, FLAC, Ogg, MP3/ADTS, MP4/M4A, AU, AIFF, WebM/Matroska."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    if len(head) < 4:
        return False
    return (
        (head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE")
        or head[:4] in (b"fLaC", b"OggS", b".snd", b"\x1aE\xdf\xa3")
        or head[:3] == b"ID3"
        or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0)  # MPEG audio / ADTS frame sync
        or head[4:8] == b"ftyp"
        or (head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"))
    )


# Frames a decoder hands over at a time: small enough that an hour-long file never sits in
# memory, large enough that per-call overhead does not show (about 3 s at 44.1 kHz).
DECODE_FRAMES = 1 << 17


def _vorbis_blocks(path: Path, raw: bytes | None) -> tuple[int, Iterator[np.ndarray]]:
    # stb_vorbis (through miniaudio) decodes Ogg Vorbis about 1.4x faster than libvorbis in
    # libsndfile, to the same samples within 3e-7. Other codecs in an Ogg container (Opus, FLAC)
    # fail the info call and go on to libsndfile / FFmpeg.
    import miniaudio

    info = (
        miniaudio.vorbis_get_info(raw)
        if raw is not None
        else miniaudio.vorbis_get_file_info(str(path))
    )
    kwargs = dict(
        output_format=miniaudio.SampleFormat.FLOAT32,
        nchannels=info.nchannels,
        sample_rate=info.sample_rate,
        frames_to_read=DECODE_FRAMES,
    )
    chunks = (
        miniaudio.stream_memory(raw, **kwargs)
        if raw is not None
        else miniaudio.stream_file(str(path), **kwargs)
    )
    n = info.nchannels
    return info.sample_rate, (np.frombuffer(c, np.float32).reshape(-1, n).T for c in chunks)


def _native_name(path: Path) -> str | bytes:
    """The name to hand libsndfile: the raw bytes on POSIX, where a name need not be UTF-8
    (soundfile encodes a str name strictly, so fails on such a name before opening it)."""
    return str(path) if os.name == "nt" else os.fsencode(path)


def _soundfile_blocks(path: Path) -> tuple[int, Iterator[np.ndarray]]:
    handle = sf.SoundFile(_native_name(path))

    def blocks() -> Iterator[np.ndarray]:
        # read() until it returns nothing rather than SoundFile.blocks(): blocks() trusts the
        # header's frame count and, on a truncated file (an MP3 cut short), hands over its whole
        # uninitialised buffer where the decoder stopped early.
        with handle:
            while (block := handle.read(DECODE_FRAMES, dtype="float32", always_2d=True)).size:
                yield block.T  # (channels, samples)

    return handle.samplerate, blocks()


def _av_blocks(path: Path) -> tuple[int, Iterator[np.ndarray]]:
    # PyAV carries its own FFmpeg, so m4a/aac/opus decode without a system FFmpeg.
    import av

    container = av.open(str(path))
    streams = [s for s in container.streams if s.type == "audio"]
    if not streams:
        container.close()
        raise AudioError(path, "no audio stream")
    stream = streams[0]
    rate = int(stream.codec_context.sample_rate or stream.rate or 0)

    def blocks() -> Iterator[np.ndarray]:
        with container:
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if arr.ndim == 1:
                    arr = arr[None, :]
                if frame.format.is_packed:
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                if np.issubdtype(arr.dtype, np.integer):  # s16/s32 codecs: scale to [-1, 1]
                    arr = arr / float(np.iinfo(arr.dtype).max)
                yield arr.astype(np.float32, copy=False)

    return rate, blocks()


def to_mono(data: np.ndarray) -> np.ndarray:
    """(channels, samples) → (samples,) by averaging channels."""
    return data.mean(axis=0) if data.shape[0] > 1 else data[0]


def _open(path: Path, raw: bytes | None) -> tuple[int, Iterator[np.ndarray]]:
    """(native rate, blocks of (channels, samples) float32) from the first decoder that takes
    the file: stb_vorbis for Ogg Vorbis, then libsndfile, then FFmpeg."""
    if path.suffix.lower() in (".ogg", ".oga"):
        try:
            return _vorbis_blocks(path, raw)
        except Exception:  # not Vorbis, or damaged: libsndfile and FFmpeg give the reason
            pass
    try:
        return _soundfile_blocks(path)
    except Exception as sf_exc:  # libsndfile does not know the container: try FFmpeg
        try:
            return _av_blocks(path)
        except AudioError:
            raise
        except Exception as av_exc:
            # FFmpeg's message repeats the path; libsndfile's is shorter and says what it saw.
            reason = str(sf_exc).split(": ", 1)[-1].splitlines()[0] if str(sf_exc) else ""
            if "does not exist" in reason:  # libsndfile's words for "no format I know"
                reason = "not a known audio format, or damaged"
            reason = reason or type(av_exc).__name__
            raise AudioError(path, f"cannot decode ({reason.rstrip('.')})") from av_exc


def stream_audio(
    path: str | Path, sample_rate: int, block_s: float = 60.0, raw: bytes | None = None
) -> Iterator[np.ndarray]:
    """Decode `path` as mono float32 at `sample_rate`, in blocks of `block_s` seconds (the last
    one shorter), holding about one block at a time whatever the file's length. Raises
    AudioError naming the file: on opening, or at the block where decoding fails.

    `raw`, the file's bytes when the caller has already read them (prepare hashes them), spares
    decoders that work from memory a second read.
    """
    path = Path(path)
    if not path.is_file():
        if path.is_symlink():  # a link to nothing, or a loop of links: say which
            try:
                os.stat(path)
            except OSError as exc:
                raise AudioError(path, f"broken symbolic link ({exc.strerror})") from None
        raise AudioError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    if raw is None and not os.access(path, os.R_OK):
        raise AudioError(path, "cannot read (permission denied)")
    rate, blocks = _open(path, raw)
    if rate <= 0:
        raise AudioError(path, "no sample rate in the file")
    # soxr resamples a stream exactly as it resamples the whole signal, so block boundaries
    # leave no trace (and a short file gets the same samples either way).
    resampler = (
        None if rate == sample_rate else soxr.ResampleStream(rate, sample_rate, 1, "float32")
    )
    block = max(1, int(block_s * sample_rate)) if math.isfinite(block_s) else None
    pending: list[np.ndarray] = []
    held = total = 0
    try:
        for data in blocks:
            mono = np.ascontiguousarray(to_mono(data), dtype=np.float32)
            if not np.isfinite(mono).all():
                raise AudioError(path, "decoded samples are not finite")
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=False)
            pending.append(mono)
            held += mono.size
            while block is not None and held >= block:
                joined = np.concatenate(pending)
                total += block
                yield joined[:block]
                pending, held = [joined[block:]], joined.size - block
        if resampler is not None:
            pending.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    except AudioError:
        raise
    except Exception as exc:  # a file that opened but breaks part-way (truncated, corrupt)
        raise AudioError(
            path, f"cannot decode ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from exc
    tail = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    if total + tail.size == 0:
        raise AudioError(path, "no audio samples")
    if tail.size:
        yield tail


def load_audio(path: str | Path, sample_rate: int, raw: bytes | None = None) -> np.ndarray:
    """Decode `path` to one mono float32 array at `sample_rate`. Raises AudioError."""
    return np.concatenate(list(stream_audio(path, sample_rate, math.inf, raw)))


def write_m4a(path: str | Path, wave: np.ndarray, sample_rate: int) -> Path:
    """Mono float audio as AAC in an MP4 container, through PyAV's own FFmpeg: the format phones
    and music stores hand out, for tests and benches that need one without a system ffmpeg."""
    import av

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=sample_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            np.asarray(wave, np.float32)[None, :], format="fltp", layout="mono"
        )
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return Path(path)
