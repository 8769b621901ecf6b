"""Waveform augmentations for the way music reaches a genre model outside its dataset: phone-band
or low-rate recordings, noise, lossy codecs at low bitrates, loudness. Pure functions on mono
float32 arrays, each returning an array of the input's length (so an augmented copy's log-mel
has the clean one's frames and windows).

`augmented_copy` is what preprocessing calls: copy `index` of a track, its conditions and their
settings drawn from `AugmentConfig` by a generator seeded with the config's seed, the track's
audio content hash and the copy's number, so the same audio always gets the same copies.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr
from scipy.fft import irfft, next_fast_len, rfft
from scipy.signal import correlate

from mgc.core.config import AUGMENT_CONDITIONS, AugmentConfig

# The encoders PyAV's own FFmpeg carries for each codec name, and the stream format it is muxed
# into for the round trip (in memory: nothing touches the disk).
CODEC_ENCODERS = {"mp3": ("libmp3lame", "mp3"), "aac": ("aac", "adts")}
# Encoders prime the stream (AAC: 1024 samples of encoder delay that ADTS does not record); the
# decoded signal is realigned to the input by cross-correlation within this many samples.
MAX_CODEC_DELAY = 4096
# The order conditions drawn together are applied in: the level a file was mastered or recorded
# at, the room's noise, the channel's band (which band-limits the noise too), the codec it was
# sent with.
APPLY_ORDER = ("gain", "noise", "bandlimit", "codec")


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """`wave` cut or zero-padded at its end to exactly `n` samples, as float32."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.size >= n:
        return wave[:n]
    return np.concatenate([wave, np.zeros(n - wave.size, np.float32)])


def band_limit(wave: np.ndarray, sample_rate: int, rate: int) -> np.ndarray:
    """Resampled down to `rate` and back up (soxr, high quality): what a recording made or sent
    at that rate keeps. Nothing above rate/2 survives; the length is unchanged. A `rate` at or
    above `sample_rate` returns the wave as it is."""
    if rate >= sample_rate:
        return np.asarray(wave, dtype=np.float32)
    low = soxr.resample(np.asarray(wave, np.float32), sample_rate, rate)
    return fit_length(soxr.resample(low, rate, sample_rate), len(wave))


def noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of white (flat spectrum) or pink (power falling as 1/f) Gaussian noise."""
    if color == "white":
        return rng.standard_normal(n).astype(np.float32)
    if color != "pink":
        raise ValueError(f"unknown noise colour {color!r} (white or pink)")
    # Shaped in the frequency domain at a length FFTs are fast at (a clip's own length may have
    # a large prime factor: 30 s at 22050 Hz is 2 * 3 * 110299 samples, ten times slower).
    size = next_fast_len(n, real=True)
    spectrum = rfft(rng.standard_normal(size))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0  # the mean stays as it was (about zero) rather than blowing up
    return irfft(spectrum / np.sqrt(f), size)[:n].astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    """`wave` plus noise scaled so that signal power / noise power is `snr_db` decibels (both
    powers as mean squares over the whole clip). A silent wave has no SNR and comes back as is."""
    wave = np.asarray(wave, dtype=np.float32)
    signal_power = float(np.mean(np.square(wave, dtype=np.float64))) if wave.size else 0.0
    if signal_power == 0.0:
        return wave
    n = noise(wave.size, color, rng).astype(np.float64)
    scale = np.sqrt(signal_power / (np.mean(n**2) * 10 ** (snr_db / 10)))
    return (wave + scale * n).astype(np.float32)


def apply_gain(wave: np.ndarray, gain_db: float) -> np.ndarray:
    """`wave` scaled by `gain_db` decibels and clipped to [-1, 1], as a fixed-point file or a
    sound card would clip it. (Without the clip a gain would only shift the log-mel, which
    per-window normalisation removes.)"""
    return np.clip(np.asarray(wave, np.float32) * np.float32(10 ** (gain_db / 20)), -1.0, 1.0)


def encoder_delay(
    reference: np.ndarray, decoded: np.ndarray, max_lag: int = MAX_CODEC_DELAY
) -> int:
    """Samples by which `decoded` lags `reference` (negative: leads), found by cross-correlating
    a stretch from the middle of the clip; 0 when the clip is silent there."""
    n = min(reference.size, decoded.size)
    length = min(1 << 15, n - 2 * max_lag)
    if length <= 0:
        return 0
    start = max(max_lag, (n - length) // 2)
    part = reference[start : start + length].astype(np.float64)
    around = decoded[start - max_lag : start + length + max_lag].astype(np.float64)
    if around.size < part.size + 2 * max_lag or not np.any(part):
        return 0
    score = correlate(around, part, mode="valid", method="fft")  # 2 * max_lag + 1 lags
    return int(np.argmax(score)) - max_lag if score.max() > 0 else 0


def codec_roundtrip(wave: np.ndarray, sample_rate: int, codec: str, kbps: int) -> np.ndarray:
    """`wave` encoded as `codec` (mp3 or aac) at `kbps` kbit/s and decoded again, in memory,
    through PyAV's FFmpeg; realigned for the encoder's delay, at the input's rate and length."""
    import av

    if codec not in CODEC_ENCODERS:
        raise ValueError(f"unknown codec {codec!r} (choose from {', '.join(CODEC_ENCODERS)})")
    encoder, muxer = CODEC_ENCODERS[codec]
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as out:
        stream = out.add_stream(encoder, rate=sample_rate)
        stream.layout = "mono"
        stream.bit_rate = int(kbps) * 1000
        frame = av.AudioFrame.from_ndarray(wave[None, :], format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    blocks = []
    with av.open(io.BytesIO(buf.getvalue()), "r") as inp:
        decoded_rate = int(inp.streams.audio[0].codec_context.sample_rate)
        for frame in inp.decode(audio=0):
            arr = frame.to_ndarray()
            blocks.append(arr.mean(axis=0) if arr.ndim == 2 and arr.shape[0] > 1 else arr.ravel())
    decoded = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros(0, np.float32)
    if decoded_rate != sample_rate:
        decoded = soxr.resample(decoded, decoded_rate, sample_rate)
    lag = encoder_delay(wave, decoded)
    decoded = decoded[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, np.float32), decoded])
    return fit_length(decoded, wave.size)


# ---------------------------------------------------------------------------------------------
# Conditions drawn from the config


@dataclass(frozen=True)
class Condition:
    """One drawn augmentation: its name and settings, e.g. Condition("codec", codec="mp3",
    kbps=32)."""

    name: str
    settings: tuple[tuple[str, Any], ...]

    def describe(self) -> str:
        return self.name + "(" + ", ".join(f"{k}={v}" for k, v in self.settings) + ")"

    def apply(self, wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        s = dict(self.settings)
        if self.name == "bandlimit":
            return band_limit(wave, sample_rate, s["rate"])
        if self.name == "noise":
            return add_noise(wave, s["snr_db"], s["color"], rng)
        if self.name == "codec":
            return codec_roundtrip(wave, sample_rate, s["codec"], s["kbps"])
        if self.name == "gain":
            return apply_gain(wave, s["gain_db"])
        raise ValueError(f"unknown augmentation {self.name!r}")


def draw_conditions(cfg: AugmentConfig, rng: np.random.Generator) -> list[Condition]:
    """`cfg.per_copy` distinct conditions of `cfg.conditions` with their settings, in the order
    they are applied (`APPLY_ORDER`)."""
    names = sorted(set(cfg.conditions), key=AUGMENT_CONDITIONS.index)
    chosen = set(rng.choice(names, size=cfg.per_copy, replace=False).tolist())
    drawn = []
    for name in APPLY_ORDER:
        if name not in chosen:
            continue
        if name == "gain":
            settings = {"gain_db": round(float(rng.uniform(*cfg.gain_db)), 2)}
        elif name == "noise":
            settings = {
                "snr_db": round(float(rng.uniform(*cfg.noise_snr_db)), 2),
                "color": str(rng.choice(cfg.noise_colors)),
            }
        elif name == "bandlimit":
            settings = {"rate": int(rng.choice(cfg.bandlimit_rates))}
        else:
            settings = {
                "codec": str(rng.choice(cfg.codecs)),
                "kbps": int(rng.choice(cfg.codec_kbps)),
            }
        drawn.append(Condition(name, tuple(settings.items())))
    return drawn


def copy_rng(seed: int, content: str, index: int) -> np.random.Generator:
    """The generator of copy `index` of the audio whose content hash (hex) is `content`."""
    return np.random.default_rng([seed, index, int(content, 16)])


def augmented_copy(
    wave: np.ndarray, sample_rate: int, cfg: AugmentConfig, content: str, index: int
) -> tuple[np.ndarray, list[Condition]]:
    """Copy `index` of a track (mono float32 at `sample_rate`, content hash `content`): the
    augmented wave, of the input's length, and the conditions it went through."""
    rng = copy_rng(cfg.seed, content, index)
    conditions = draw_conditions(cfg, rng)
    out = np.asarray(wave, dtype=np.float32)
    for condition in conditions:
        out = condition.apply(out, sample_rate, rng)
    return out, conditions
