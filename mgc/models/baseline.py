"""M1 feature baselines: time-pooled log-mel → logistic regression (sklearn) or a 2-layer MLP."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn


def pooled_features(x: np.ndarray) -> np.ndarray:
    """Log-mel chunks (N, 1, n_mels, frames) or (N, n_mels, frames) → (N, 2*n_mels).

    The first n_mels columns are the per-mel means over time, the next n_mels the per-mel
    (population) standard deviations — the same summary `TimeAverageMLP` computes in torch.
    """
    x = np.asarray(x)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"expected one channel, got input of shape {x.shape}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"expected (N, 1, n_mels, frames) or (N, n_mels, frames), got {x.shape}")
    x = x.astype(np.float64, copy=False)
    feats = np.concatenate([x.mean(axis=2), x.std(axis=2)], axis=1)
    return feats.astype(np.float32)


def make_logreg(seed: int = 0) -> Pipeline:
    """Unfitted StandardScaler → multinomial LogisticRegression pipeline for `pooled_features`."""
    return Pipeline(
        [
            ("scaler", StandardScaler()),
            ("logreg", LogisticRegression(max_iter=2000, C=1.0, random_state=seed)),
        ]
    )


def sklearn_param_count(pipeline: Pipeline | LogisticRegression) -> int:
    """Learned weights of a fitted logistic regression: coefficients plus intercepts.

    The scaler's mean/scale are fitted statistics, not trained parameters, so they do not count
    (as BatchNorm running statistics do not count for the torch models).
    """
    clf = pipeline[-1] if isinstance(pipeline, Pipeline) else pipeline
    if not hasattr(clf, "coef_"):
        raise ValueError("the logistic regression is not fitted yet; call .fit() first")
    return int(clf.coef_.size + clf.intercept_.size)


class TimeAverageMLP(nn.Module):
    """Per-mel mean and std over time → Linear(2*n_mels, hidden) → ReLU → Dropout → Linear."""

    def __init__(self, n_mels: int, n_classes: int, hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        self.n_mels = n_mels
        self.net = nn.Sequential(
            nn.Linear(2 * n_mels, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.n_mels:  # the one model tied to n_mels: say so, not a matmul error
            raise ValueError(f"TimeAverageMLP built for n_mels={self.n_mels}, got {tuple(x.shape)}")
        x = x.flatten(1, 2)  # (B, 1, n_mels, T) → (B, n_mels, T); any memory format
        # Population std (correction=0) matches np.std in `pooled_features`.
        std, mean = torch.std_mean(x, dim=-1, correction=0)
        return self.net(torch.cat([mean, std], dim=1))


def fit_logreg(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> Pipeline:
    """M1: the logistic-regression pipeline fitted on `pooled_features` rows."""
    return make_logreg(seed).fit(features, labels)
