"""Convolutional models on log-mel chunks: small (M2), plain (M3), VGG-style (M4), deeper (M5).

Every model takes (batch, 1, n_mels, frames) and returns logits (batch, n_classes); global
pooling at the end makes them accept any n_mels ≥ 32 and frames ≥ 32. Max-pools use
ceil_mode=True so a dimension already reduced to 1 stays 1 instead of vanishing.
"""

from __future__ import annotations

import torch
from torch import nn


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU) and unit/zero BatchNorm; linears keep torch's default.

    Deterministic given torch.manual_seed, since modules are visited in registration order.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    """3×3 same-padding conv (no bias: BatchNorm follows) → BatchNorm → ReLU."""
    return [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    ]


class GlobalAvgMaxPool(nn.Module):
    """(B, C, H, W) → (B, 2C): global average and global max pooling, concatenated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class SmallCNN(nn.Module):
    """M2: two 3×3 convs (16, 32 filters) each followed by 2×4 max-pooling, dense 64, dropout."""

    def __init__(self, n_classes: int, dropout: float = 0.3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d((2, 4), ceil_mode=True),  # 2 in frequency, 4 in time
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d((2, 4), ceil_mode=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32, 64),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(64, n_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class PlainCNN(nn.Module):
    """M3 (the E0 model): n_blocks × [conv3×3–BN–ReLU–MaxPool(2)], avg+max pool, dropout, linear.

    Channels start at `width` and double each block, capped at 8×width.
    """

    def __init__(self, n_classes: int, n_blocks: int = 4, width: int = 32, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i in range(n_blocks):
            c_out = min(width * 2**i, 8 * width)
            layers += [*conv_bn_relu(c_in, c_out), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = GlobalAvgMaxPool()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * c_in, n_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class VGG5(nn.Module):
    """M4: 5 × [conv–ReLU–conv–ReLU–BatchNorm–MaxPool(2)], adaptive avg pool, 3-layer classifier.

    Channels width, 2w, 4w, 8w, 8w (32…256 at width 32), so the classifier is 256→512→128→n.
    """

    def __init__(self, n_classes: int, width: int = 32, dropout: float = 0.3):
        super().__init__()
        channels = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in channels:
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.BatchNorm2d(c_out),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in, 512),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(512, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, n_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class DeepCNN(nn.Module):
    """M5 (E3): 4 × [2 × (conv3×3–BN–ReLU), MaxPool(2)], avg+max pool, dropout, linear.

    Channels width, 2w, 4w, 4w: deeper than the plain CNN but still small (≈0.58 M at width 32).
    """

    def __init__(self, n_classes: int, width: int = 32, dropout: float = 0.3):
        super().__init__()
        channels = [width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in channels:
            layers += [
                *conv_bn_relu(c_in, c_out),
                *conv_bn_relu(c_out, c_out),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = GlobalAvgMaxPool()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * c_in, n_classes))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))
