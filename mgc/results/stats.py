"""How sure a test score is: bootstrap confidence intervals over test tracks, stratified by genre,
for one row (its seeds averaged) and for the difference between two rows on the same tracks.

Resampling whole tracks within each genre keeps every genre's count, so macro-F1 is defined in
every resample and the interval reflects which tracks happened to be in the test part, the
uncertainty a reader cares about when two rows differ by a point or two. Seeds are averaged
inside each resample: the interval is for the row's mean over seeds, as the table reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class Interval:
    value: float  # on the test tracks as they are
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def stratified_resamples(labels: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) track indices: each row draws, within every genre, as many of that genre's
    tracks as it has, with replacement."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, labels.size), dtype=np.int64)
    for genre in np.unique(labels):
        members = np.flatnonzero(labels == genre)
        out[:, members] = rng.choice(members, size=(n_boot, members.size), replace=True)
    return out


def _scores(y: np.ndarray, pred: np.ndarray, n_classes: int, metric: str) -> np.ndarray:
    """Metric of each row of (B, n) label/prediction arrays, vectorised over B."""
    if metric == "accuracy":
        return (y == pred).mean(axis=1)
    if metric != "macro_f1":
        raise ValueError(f"unknown metric {metric!r} (valid: {', '.join(METRICS)})")
    b = y.shape[0]
    cells = (y * n_classes + pred) + (np.arange(b)[:, None] * n_classes * n_classes)
    cm = np.bincount(cells.ravel(), minlength=b * n_classes * n_classes)
    cm = cm.reshape(b, n_classes, n_classes)
    tp = np.einsum("bii->bi", cm)
    denom = cm.sum(axis=2) + cm.sum(axis=1)  # 2·TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape, dtype=float), where=denom > 0)
    return f1.mean(axis=1)  # classes absent from truth and predictions score 0, as sklearn does


def _row_scores(
    y: np.ndarray, preds: Sequence[np.ndarray], idx: np.ndarray, n_classes: int, metric: str
) -> np.ndarray:
    """The row's seed-mean score on each resample in `idx` (B, n)."""
    return np.mean([_scores(y[idx], np.asarray(p)[idx], n_classes, metric) for p in preds], axis=0)


def _interval(
    y: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    n_boot: int,
    level: float,
    seed: int,
) -> Interval:
    """`statistic` (scores of (B, n) track-index rows) on the tracks as they are, and its
    percentile interval over `n_boot` stratified resamples."""
    whole = np.arange(y.size)[None, :]
    scores = statistic(np.concatenate([whole, stratified_resamples(y, n_boot, seed)]))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(scores[1:], [tail, 100 - tail])
    return Interval(float(scores[0]), float(low), float(high))


def bootstrap_interval(
    y_true: np.ndarray,
    seed_preds: Sequence[np.ndarray],
    metric: str,
    n_classes: int,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile interval of a row's seed-mean `metric` over stratified track resamples."""
    y = np.asarray(y_true)
    return _interval(
        y, lambda idx: _row_scores(y, seed_preds, idx, n_classes, metric), n_boot, level, seed
    )


def paired_difference(
    y_true: np.ndarray,
    preds_a: Sequence[np.ndarray],
    preds_b: Sequence[np.ndarray],
    metric: str,
    n_classes: int,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Interval of (row b − row a) on the same test tracks: both rows are scored on the same
    resamples, so what the tracks have in common cancels and only the rows' difference stays."""
    y = np.asarray(y_true)

    def difference(idx: np.ndarray) -> np.ndarray:
        return _row_scores(y, preds_b, idx, n_classes, metric) - _row_scores(
            y, preds_a, idx, n_classes, metric
        )

    return _interval(y, difference, n_boot, level, seed)
