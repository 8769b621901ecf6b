"""Decode any common audio file to mono float32 at a chosen sample rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

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


class AudioError(Exception):
    """A file that cannot be used as audio; str() is one line: `path: reason`."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _read_vorbis(path: Path, raw: bytes | None = None) -> tuple[np.ndarray, int]:
    # stb_vorbis (through miniaudio) decodes Ogg Vorbis about 1.4x faster than libvorbis in
    # libsndfile, to the same samples within 3e-7. Other codecs in an Ogg container (Opus, FLAC)
    # raise here and go on to libsndfile / FFmpeg.
    import miniaudio

    raw = path.read_bytes() if raw is None else raw
    info = miniaudio.vorbis_get_info(raw)
    decoded = miniaudio.decode(
        raw,
        output_format=miniaudio.SampleFormat.FLOAT32,
        nchannels=info.nchannels,
        sample_rate=info.sample_rate,
    )
    data = np.frombuffer(decoded.samples, dtype=np.float32).reshape(-1, decoded.nchannels)
    return data.T, decoded.sample_rate


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T, rate  # (channels, samples)


def _read_av(path: Path) -> tuple[np.ndarray, int]:
    # PyAV carries its own FFmpeg, so m4a/aac/opus decode without a system FFmpeg.
    import av

    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise AudioError(path, "no audio stream")
        stream = streams[0]
        rate = stream.codec_context.sample_rate or stream.rate
        frames = []
        for frame in container.decode(stream):
            arr = frame.to_ndarray()
            if arr.ndim == 1:
                arr = arr[None, :]
            if frame.format.is_packed:
                arr = arr.reshape(-1, len(frame.layout.channels)).T
            frames.append(arr.astype(np.float32, copy=False))
    if not frames:
        return np.zeros((1, 0), np.float32), int(rate or 0)
    data = np.concatenate(frames, axis=1)
    if np.issubdtype(frames[0].dtype, np.integer):  # pragma: no cover - av gives floats for these
        data = data / float(np.iinfo(frames[0].dtype).max)
    return data, int(rate)


def to_mono(data: np.ndarray) -> np.ndarray:
    """(channels, samples) → (samples,) by averaging channels."""
    return data.mean(axis=0) if data.shape[0] > 1 else data[0]


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr or wave.size == 0:
        return wave
    # Imported here so the data tools (discover, split, scan) start without loading torch.
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), orig_sr, target_sr)
    return out.numpy()


def _decode(path: Path, raw: bytes | None) -> tuple[np.ndarray, int]:
    """(channels, samples), rate with the fastest decoder that takes the file, else libsndfile."""
    if path.suffix.lower() in (".ogg", ".oga"):
        try:
            return _read_vorbis(path, raw)
        except Exception:  # not Vorbis, or damaged: libsndfile and FFmpeg give the reason
            pass
    return _read_soundfile(path)


def load_audio(path: str | Path, sample_rate: int, raw: bytes | None = None) -> np.ndarray:
    """Decode `path` to a mono float32 array at `sample_rate`. Raises AudioError.

    `raw`, the file's bytes when the caller has already read them (prepare hashes them), saves
    decoders that work from memory a second read.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        data, rate = _decode(path, raw)
    except Exception as sf_exc:  # libsndfile does not know the container: try FFmpeg
        try:
            data, rate = _read_av(path)
        except AudioError:
            raise
        except Exception as av_exc:
            # FFmpeg's message repeats the path; libsndfile's is shorter and says what it saw.
            reason = (
                str(sf_exc).split(": ", 1)[-1].splitlines()[0]
                if str(sf_exc)
                else type(av_exc).__name__
            )
            raise AudioError(path, f"cannot decode ({reason.rstrip('.')})") from av_exc
    if data.size == 0 or rate <= 0:
        raise AudioError(path, "no audio samples")
    wave = to_mono(np.asarray(data, dtype=np.float32))
    if not np.isfinite(wave).all():
        raise AudioError(path, "decoded samples are not finite")
    return np.ascontiguousarray(resample(wave, rate, sample_rate), dtype=np.float32)
