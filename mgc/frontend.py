"""Audio → model input, the one way: decode to mono at the feature rate, log-mel, windows,
per-chunk normalisation. Preprocessing, the loader and prediction all go through it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mgc.audio import load_audio
from mgc.config import ChunkConfig, FeatureConfig
from mgc.features import LogMel, Windowing, logmel_numpy, normalize_chunks


class Frontend:
    """The feature and chunk settings of a model, as the operations they stand for."""

    def __init__(self, features: FeatureConfig, chunks: ChunkConfig):
        self.features = features
        self.chunks = chunks
        self.windowing = Windowing.from_config(chunks, features)
        self._logmel: LogMel | None = None  # built on first use: the loader never needs it

    @property
    def logmel_module(self) -> LogMel:
        if self._logmel is None:
            self._logmel = LogMel.from_config(self.features)
        return self._logmel

    def decode(self, path: str | Path, raw: bytes | None = None) -> np.ndarray:
        """Mono float32 at the feature rate; raises AudioError naming the file."""
        return load_audio(path, self.features.sample_rate, raw=raw)

    def logmel(self, wave: np.ndarray) -> np.ndarray:
        """Mono waveform at the feature rate → float32 (n_mels, frames)."""
        return logmel_numpy(wave, self.logmel_module)

    def file_logmel(self, path: str | Path, raw: bytes | None = None) -> np.ndarray:
        return self.logmel(self.decode(path, raw))

    def finish(self, chunks: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, window) windows → (B, 1, n_mels, window) model input."""
        x = chunks.unsqueeze(1)
        return normalize_chunks(x) if self.chunks.normalize else x

    def windows(self, logmel: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A whole track's log-mel → its model inputs (n_windows, 1, n_mels, window)."""
        return self.finish(self.windowing.cut(torch.as_tensor(logmel)))

    def window_times(self, n_frames: int) -> list[tuple[float, float]]:
        """(start, end) seconds of each window of a track of n_frames (ends clipped to it)."""
        per_s = self.features.sample_rate / self.features.hop_length
        w = self.windowing.window
        end = max(n_frames, 1) / per_s
        return [(s / per_s, min((s + w) / per_s, end)) for s in self.windowing.starts(n_frames)]
