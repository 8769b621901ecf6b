"""Audio → model input, the one way: decode to mono at the feature rate, log-mel, windows,
per-chunk normalisation. Preprocessing, the loader and prediction all go through it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mgc.core.audio import load_audio
from mgc.core.config import ChunkConfig, FeatureConfig
from mgc.features.transforms import (
    LogMel,
    Windowing,
    logmel_numpy,
    match_loudness,
    normalize_chunks,
)


@dataclass
class Segment:
    """Model inputs of one stretch of a stream, and where its windows start in the whole."""

    first_frame: int  # frame of the whole stream at which this segment's frame 0 lies
    starts: list[int]  # window starts, in the segment's frames
    inputs: torch.Tensor  # (len(starts), 1, n_mels, window)
    padded: bool = False  # the whole stream was shorter than one window


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
        """Mono waveform at the feature rate → float32 (n_mels, frames), at features.loudness_db
        when set (a stream's segments each on their own)."""
        if self.features.loudness_db is not None:
            wave = match_loudness(wave, self.features.loudness_db)
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

    def segments(self, blocks: Iterable[np.ndarray], segment_s: float = 60.0) -> Iterator[Segment]:
        """Model inputs of a mono stream (blocks of any size at the feature rate), a segment of
        about `segment_s` seconds at a time, so memory stays bounded on hour-long files.

        Windows keep the whole-stream grid (a start every `step` frames). Each segment is a
        clip of its own for the log-mel: its top_db floor is its own (as a 30 s training clip's
        is) and its edge frames see zero padding. A stream no longer than one segment is one
        clip, exactly as `windows(logmel(whole))` would cut it.
        """
        w, s = self.windowing.window, self.windowing.step
        hop = self.features.hop_length
        per_segment = max(1, round(segment_s * self.features.sample_rate / (s * hop)))
        advance = per_segment * s * hop  # samples from one segment's start to the next's
        length = advance + (w - s) * hop  # and enough after it for its last window
        buf = np.zeros(0, np.float32)
        first_frame = 0
        for block in blocks:
            buf = np.concatenate([buf, block]) if buf.size else np.asarray(block, np.float32)
            while buf.size >= length:
                logmel = torch.as_tensor(self.logmel(buf[:length]))
                starts = [j * s for j in range(per_segment)]
                yield Segment(first_frame, starts, self.finish(self.windowing.cut(logmel, starts)))
                buf, first_frame = buf[advance:], first_frame + advance // hop
        if first_frame == 0:  # the whole stream fit in one segment: cut it as a whole clip
            logmel = torch.as_tensor(self.logmel(buf))
            n = logmel.shape[-1]
            yield Segment(0, self.windowing.starts(n), self.windows(logmel), n < w)
            return
        logmel = torch.as_tensor(self.logmel(buf))
        starts = [
            st for st in self.windowing.starts(logmel.shape[-1]) if st + w <= logmel.shape[-1]
        ]
        if starts:  # the tail after the last full window is dropped, as in a whole clip
            yield Segment(first_frame, starts, self.finish(self.windowing.cut(logmel, starts)))

    def seconds(self, frames: int) -> float:
        return frames * self.features.hop_length / self.features.sample_rate
