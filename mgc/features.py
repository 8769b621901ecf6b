"""Log-mel and SpecAugment modules, chunking and per-chunk normalisation (pure functions)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T
from torch import nn

from mgc.config import ChunkConfig, FeatureConfig, SpecAugmentConfig


class LogMel(nn.Module):
    """Waveform (..., samples) → log-mel in dB (..., n_mels, frames).

    Matches librosa.power_to_db(librosa.feature.melspectrogram(y, sr)) with librosa's defaults:
    centred frames with zero padding, periodic Hann window, power 2, Slaney mel scale with Slaney
    area normalisation, 10·log10 with amin 1e-10 and a top_db floor taken per example.

    On the CPU the spectrogram is taken `block_frames` frames at a time, each block carried from
    STFT to mel bands before the next: a whole 30 s clip's complex STFT is about 10 MB, which
    falls out of a core's cache between the transform, the power and the projection, while a
    block of 128 frames stays in it. The frames are the same whatever the block size; only the
    float32 summation order of the projection differs (< 1e-5 dB). `bench/preprocess.py`
    times this against torchaudio's whole-clip MelSpectrogram + AmplitudeToDB.
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
    ):
        super().__init__()
        self.n_mels = n_mels
        self.top_db = top_db
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
            cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels, cfg.f_min, cfg.f_max, cfg.top_db
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
        # amplitude_to_DB takes its top_db floor per item of dim 0 when given (N, 1, F, T).
        db = AF.amplitude_to_DB(
            mel.permute(1, 0, 2).unsqueeze(1),
            multiplier=10.0,
            amin=1e-10,
            db_multiplier=0.0,
            top_db=self.top_db,
        )
        return db.reshape(*lead, self.n_mels, n_frames)


def logmel_numpy(wave: np.ndarray, module: LogMel) -> np.ndarray:
    """Convenience wrapper: one mono waveform → float32 (n_mels, frames)."""
    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))).numpy()


def frames_per_second(cfg: FeatureConfig) -> float:
    return cfg.sample_rate / cfg.hop_length


def window_frames(chunks: ChunkConfig, features: FeatureConfig, n_frames: int) -> int:
    """Frames in one window; the whole clip when window_s is 0."""
    if chunks.window_s == 0:
        return n_frames
    return max(1, int(round(chunks.window_s * frames_per_second(features))))


def chunk_starts(n_frames: int, window: int, overlap: float) -> list[int]:
    """Start frames of the windows cut from a track of n_frames.

    Windows advance by window·(1-overlap) frames; the tail shorter than a window is dropped,
    except that a track shorter than one window still gives one (padded) window.
    """
    if window <= 0:
        raise ValueError("window must be positive")
    step = max(1, int(round(window * (1.0 - overlap))))
    if n_frames <= window:
        return [0]
    return list(range(0, n_frames - window + 1, step))


def cut_chunks(logmel: np.ndarray, window: int, overlap: float) -> np.ndarray:
    """(n_mels, frames) → (n_chunks, n_mels, window), padding a short track with its minimum."""
    n_mels, n_frames = logmel.shape
    if n_frames < window:
        pad_value = float(logmel.min()) if logmel.size else 0.0
        logmel = np.pad(logmel, ((0, 0), (0, window - n_frames)), constant_values=pad_value)
    starts = chunk_starts(n_frames, window, overlap)
    return np.stack([logmel[:, s : s + window] for s in starts])


def normalize_chunks(chunks: torch.Tensor | np.ndarray, eps: float = 1e-5):
    """Standardise each chunk (over its last two dims) to zero mean and unit variance."""
    if isinstance(chunks, np.ndarray):
        mean = chunks.mean(axis=(-2, -1), keepdims=True)
        std = chunks.std(axis=(-2, -1), keepdims=True)
        return ((chunks - mean) / (std + eps)).astype(np.float32)
    mean = chunks.mean(dim=(-2, -1), keepdim=True)
    std = chunks.std(dim=(-2, -1), keepdim=True, unbiased=False)
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
