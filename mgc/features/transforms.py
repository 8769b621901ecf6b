"""Log-mel and SpecAugment modules, the chunker and per-chunk normalisation (pure, no I/O)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T
from torch import nn

from mgc.core.config import ChunkConfig, FeatureConfig, SpecAugmentConfig


class LogMel(nn.Module):
    """Waveform (..., samples) → log-mel (..., n_mels, frames), in dB or musicnn's log10 scale.

    Matches librosa.power_to_db(librosa.feature.melspectrogram(y, sr)) with librosa's defaults:
    centred frames with zero padding, periodic Hann window, power 2, Slaney mel scale with Slaney
    area normalisation, 10·log10 with amin 1e-10 and a top_db floor taken per example.

    `scale="log10_10000"` compresses the same mel power as log10(10000·power + 1) instead, as
    musicnn does (its `extractor.batch_data`), with no floor (`top_db` is unused). musicnn casts
    the power to float16 first, so 10000·power overflows to inf wherever the power exceeds 6.55
    (loud low bands: 1% of all bins, in 88% of the 3 s patches of 807 GTZAN clips), and its
    network then returns NaN for the whole patch (TensorFlow's Eigen kernels) or finite but
    wrong tags (its oneDNN kernels: up to 0.68 off on the sample clips). Here the power stays
    float32: finite everywhere, and elsewhere within float16's rounding (≤ ~2e-3) of musicnn's
    values (tests/test_musicnn.py).

    On the CPU the spectrogram is taken `block_frames` frames at a time, each block carried from
    STFT to mel bands before the next, so its buffers stay in a core's cache; the frames are the
    same for any block size (bench/README.md has the timings).
    """

    def __init__(
        self,
        sample_rate: int = 22050,
        n_fft: int = 2048,
        hop_length: int = 512,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: float | None = None,
        top_db: float | None = 80.0,
        block_frames: int = 128,
        scale: Literal["db", "log10_10000"] = "db",
        lowpass_hz: float | None = None,
    ):
        super().__init__()
        if scale not in ("db", "log10_10000"):
            raise ValueError(f"LogMel: unknown scale {scale!r}")
        self.n_mels = n_mels
        self.top_db = top_db
        self.scale = scale
        self.block_frames = block_frames
        # Centring is done once on the whole waveform (forward), so each block is a plain
        # uncentred STFT of its own stretch of samples. power=None returns the complex STFT;
        # squaring its parts in place skips the sqrt-then-square that power=2.0 does via abs().
        self.spectrogram = T.Spectrogram(
            n_fft=n_fft, hop_length=hop_length, power=None, center=False
        )
        fb = AF.melscale_fbanks(
            n_freqs=n_fft // 2 + 1,
            f_min=f_min,
            f_max=f_max if f_max is not None else sample_rate / 2,
            n_mels=n_mels,
            sample_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        if lowpass_hz is not None:  # STFT bins above it feed no band
            fb[torch.linspace(0, sample_rate / 2, fb.shape[0]) > lowpass_hz] = 0.0
        self.register_buffer("mel_fb", fb.T.contiguous(), persistent=False)  # (n_mels, n_freqs)
        # Each FFT bin feeds at most two triangular filters, so the filterbank is ~98% zeros: on
        # a CPU, as a sparse matrix, the projection costs a fraction of the dense matmul that
        # torchaudio's MelScale does. CSR rather than COO, which torch turns into CSR on every
        # product. GPUs and MPS use the dense buffer, which moves with the module.
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we use only mm
            warnings.simplefilter("ignore", UserWarning)
            self._mel_fb_csr = self.mel_fb.to_sparse_csr()

    @classmethod
    def from_config(cls, cfg: FeatureConfig) -> LogMel:
        return cls(
            cfg.sample_rate,
            cfg.n_fft,
            cfg.hop_length,
            cfg.n_mels,
            cfg.f_min,
            cfg.f_max,
            cfg.top_db,
            scale=cfg.scale,
            lowpass_hz=cfg.lowpass_hz,
        )

    def _mel_power(self, segment: torch.Tensor) -> torch.Tensor:
        """(N, samples) already padded → mel power (n_mels, N, frames) of its uncentred STFT."""
        stft = self.spectrogram(segment)  # (N, n_freqs, frames), frames-major in memory
        parts = torch.view_as_real(stft)
        parts.square_()
        power = parts[..., 0] + parts[..., 1]  # keeps the frames-major layout
        n, n_freqs, frames = power.shape
        flat = power.permute(1, 0, 2).reshape(n_freqs, n * frames)  # a view, no copy
        if flat.device.type == "cpu" and flat.dtype == self._mel_fb_csr.dtype:
            mel = torch.mm(self._mel_fb_csr, flat)
        else:
            mel = torch.matmul(self.mel_fb.to(flat.dtype), flat)
        return mel.reshape(self.n_mels, n, frames)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        lead, n_samples = wave.shape[:-1], wave.shape[-1]
        n_fft, hop = self.spectrogram.n_fft, self.spectrogram.hop_length
        pad = n_fft // 2
        padded = torch.nn.functional.pad(wave.reshape(-1, n_samples), (pad, pad))
        n_frames = 1 + n_samples // hop
        mel = padded.new_empty(self.n_mels, padded.shape[0], n_frames)
        step = self.block_frames if padded.device.type == "cpu" else n_frames
        for start in range(0, n_frames, step):
            stop = min(start + step, n_frames)
            segment = padded[:, start * hop : (stop - 1) * hop + n_fft]
            mel[:, :, start:stop] = self._mel_power(segment)
        if self.scale == "log10_10000":
            return (
                torch.log10(mel.mul_(10000.0).add_(1.0))
                .permute(1, 0, 2)
                .reshape(*lead, self.n_mels, n_frames)
            )
        # amplitude_to_DB takes its top_db floor per item of dim 0 when given (N, 1, F, T).
        db = AF.amplitude_to_DB(
            mel.permute(1, 0, 2).unsqueeze(1),
            multiplier=10.0,
            amin=1e-10,
            db_multiplier=0.0,
            top_db=self.top_db,
        )
        return db.reshape(*lead, self.n_mels, n_frames)


def match_loudness(wave: np.ndarray, rms_db: float) -> np.ndarray:
    """`wave` scaled so that its RMS is `rms_db` dBFS (float32; a silent wave stays as it is).
    Samples may then pass ±1: the features take them as they are, nothing is clipped."""
    wave = np.asarray(wave, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    if rms < 1e-9:
        return wave
    return wave * np.float32(10.0 ** (rms_db / 20.0) / rms)


def logmel_numpy(wave: np.ndarray, module: LogMel) -> np.ndarray:
    """One mono waveform → float32 (n_mels, frames)."""
    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))).numpy()


@dataclass(frozen=True)
class Windowing:
    """Where the windows of a log-mel go: the one chunker of training, evaluation and prediction.

    Windows of `window` frames start every `step` frames; a tail shorter than a window is dropped,
    and a track shorter than one window is padded (with its own floor) to give one window.
    """

    window: int
    step: int

    @classmethod
    def from_config(cls, chunks: ChunkConfig, features: FeatureConfig) -> Windowing:
        window = max(1, round(chunks.window_s * features.sample_rate / features.hop_length))
        return cls(window, max(1, round(window * (1.0 - chunks.overlap))))

    def starts(self, n_frames: int) -> list[int]:
        if n_frames <= self.window:
            return [0]
        return list(range(0, n_frames - self.window + 1, self.step))

    def pad(self, logmel: torch.Tensor) -> torch.Tensor:
        """(n_mels, frames) → at least one window long; the padding is the track's minimum,
        the dB floor, so a short clip reads as silence after its end rather than as a jump."""
        short = self.window - logmel.shape[-1]
        if short <= 0:
            return logmel
        floor = float(logmel.min()) if logmel.numel() else 0.0
        return torch.nn.functional.pad(logmel, (0, short), value=floor)

    def cut(self, logmel: torch.Tensor, starts: list[int] | None = None) -> torch.Tensor:
        """(n_mels, frames) → (n_windows, n_mels, window), at `starts` or at every start."""
        padded = self.pad(logmel)
        starts = self.starts(padded.shape[-1]) if starts is None else starts
        return torch.stack([padded[:, s : s + self.window] for s in starts])


def normalize_chunks(chunks: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Standardise each chunk (over its last two dims) to zero mean and unit variance."""
    std, mean = torch.std_mean(chunks, dim=(-2, -1), keepdim=True, correction=0)
    return (chunks - mean) / (std + eps)


class SpecAugment(nn.Module):
    """Frequency and time masking (Park et al. 2019) on (batch, channel, n_mels, frames).

    Masks are drawn independently per example; masked cells take the value 0, which is the
    mean after per-chunk normalisation. Active only in training mode.
    """

    def __init__(
        self, freq_mask: int = 16, time_mask: int = 24, n_freq_masks: int = 2, n_time_masks: int = 2
    ):
        super().__init__()
        self.freq = nn.ModuleList(
            T.FrequencyMasking(freq_mask, iid_masks=True) for _ in range(n_freq_masks)
        )
        self.time = nn.ModuleList(
            T.TimeMasking(time_mask, iid_masks=True) for _ in range(n_time_masks)
        )

    @classmethod
    def from_config(cls, cfg: SpecAugmentConfig) -> SpecAugment:
        return cls(cfg.freq_mask, cfg.time_mask, cfg.n_freq_masks, cfg.n_time_masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        for mask in (*self.freq, *self.time):
            x = mask(x)
        return x
