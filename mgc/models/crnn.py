"""M7: convolutional front-end → bidirectional GRU over time → temporal attention pooling."""

from __future__ import annotations

import torch
from torch import nn

from mgc.models.cnn import conv_bn_relu, init_weights


class AttentionPool(nn.Module):
    """(B, T, D) → (B, D): a learned score per time step, softmax over time, weighted sum."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # Softmax in float32: under bf16 autocast the weights over ~100 steps lose too much.
        weights = torch.softmax(self.score(h).float(), dim=1)  # (B, T, 1)
        return (weights * h.float()).sum(dim=1)


class CRNN(nn.Module):
    """4 conv blocks (pooling 2×2, 2×2, 2×1, 2×1: mostly frequency) → mean over frequency →
    BiGRU over the remaining frames/4 steps → attention pooling → dropout → linear.
    """

    def __init__(self, n_classes: int, width: int = 32, hidden: int = 64, dropout: float = 0.3):
        super().__init__()
        channels = [width, 2 * width, 4 * width, 4 * width]
        pools = [(2, 2), (2, 2), (2, 1), (2, 1)]  # (frequency, time)
        layers: list[nn.Module] = []
        c_in = 1
        for c_out, pool in zip(channels, pools, strict=True):
            layers += [*conv_bn_relu(c_in, c_out), nn.MaxPool2d(pool, ceil_mode=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.gru = nn.GRU(c_in, hidden, batch_first=True, bidirectional=True)
        self.attention = AttentionPool(2 * hidden)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, n_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, C, F', T')
        # Collapse frequency by averaging, so any n_mels works; then time-major for the GRU.
        h = h.mean(dim=2).transpose(1, 2).contiguous()  # (B, T', C)
        h, _ = self.gru(h)  # (B, T', 2*hidden)
        return self.classifier(self.attention(h))
