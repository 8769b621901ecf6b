"""Evaluation metrics from predicted probabilities: chunk and track level, and hard cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

# Chunk → track aggregation belongs to the prediction path; evaluation scores what it gives.
from mgc.models.inference import track_probabilities

CONFIDENTLY_WRONG_COLUMNS = ["track", "true_genre", "predicted_genre", "confidence", "true_prob"]
CONFUSED_PAIR_COLUMNS = ["true_genre", "predicted_genre", "count", "share_of_true"]


def _as_probs(probs: np.ndarray) -> np.ndarray:
    # np.asarray also accepts CPU torch tensors, which is what the evaluation loop hands over.
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probabilities must be a non-empty (n, classes) array, got {probs.shape}")
    return probs


def _as_labels(labels: np.ndarray, n: int, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {labels.dtype}")
    return labels.astype(np.int64, copy=False)


def track_labels(
    chunk_labels: np.ndarray, chunk_track: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One label per track from its chunks → (sorted unique track indices, labels).

    Raises ValueError when a track's chunks disagree: that means the chunk table is corrupt, and
    averaging its chunks would silently score the wrong label.
    """
    labels = np.asarray(chunk_labels)
    labels = _as_labels(labels, labels.shape[0] if labels.ndim else -1, "chunk_labels")
    track = _as_labels(chunk_track, labels.shape[0], "chunk_track")
    tracks, first, inverse = np.unique(track, return_index=True, return_inverse=True)
    per_track = labels[first]
    mismatch = per_track[inverse] != labels
    if mismatch.any():
        bad = np.unique(track[mismatch])[:5].tolist()
        raise ValueError(f"chunks of the same track carry different labels (tracks {bad})")
    return tracks, per_track


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Accuracy and macro-F1 over all n_classes (a class never predicted scores F1 0)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(n_classes))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
    }


def evaluate_predictions(
    chunk_probs: np.ndarray, chunk_labels: np.ndarray, chunk_track: np.ndarray, n_classes: int
) -> dict:
    """Chunk- and track-level accuracy and macro-F1; track probabilities are chunk means."""
    probs = _as_probs(chunk_probs)
    if probs.shape[1] != n_classes:
        raise ValueError(f"probabilities have {probs.shape[1]} classes, expected {n_classes}")
    labels = _as_labels(chunk_labels, probs.shape[0], "chunk_labels")
    track_idx, y_track = track_labels(labels, chunk_track)
    prob_idx, track_probs = track_probabilities(probs, chunk_track)
    # Both come from np.unique over the same array, so rows line up; this guards refactors.
    assert np.array_equal(track_idx, prob_idx)
    chunk = classification_metrics(labels, probs.argmax(axis=1), n_classes)
    track = classification_metrics(y_track, track_probs.argmax(axis=1), n_classes)
    return {
        "chunk_accuracy": chunk["accuracy"],
        "chunk_macro_f1": chunk["macro_f1"],
        "track_accuracy": track["accuracy"],
        "track_macro_f1": track["macro_f1"],
        "n_chunks": int(probs.shape[0]),
        "n_tracks": int(track_idx.size),
    }


def hard_cases(
    track_ids: list[str],
    y_true: np.ndarray,
    track_probs: np.ndarray,
    genres: list[str],
    top: int | None = 20,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(confidently wrong tracks, most confused genre pairs), each limited to `top` rows.

    Confidently wrong: tracks whose argmax is not the true genre, most confident first.
    Confused pairs: non-zero off-diagonal confusion counts, largest first; share_of_true is the
    fraction of the true genre's tracks that went to that predicted genre.
    """
    probs = _as_probs(track_probs)
    n, n_classes = probs.shape
    if len(track_ids) != n:
        raise ValueError(f"{len(track_ids)} track ids for {n} probability rows")
    if len(genres) != n_classes:
        raise ValueError(f"{len(genres)} genres for {n_classes} probability columns")
    y = _as_labels(y_true, n, "y_true")
    pred = probs.argmax(axis=1)
    names = np.asarray(genres, dtype=object)
    rows = np.arange(n)

    wrong = np.flatnonzero(pred != y)
    confidence = probs[rows, pred]
    # Stable sort so equal confidences keep the input (track) order: reproducible files.
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:top]
    confidently_wrong = pd.DataFrame(
        {
            "track": np.asarray(track_ids, dtype=object)[wrong],
            "true_genre": names[y[wrong]],
            "predicted_genre": names[pred[wrong]],
            "confidence": confidence[wrong],
            "true_prob": probs[wrong, y[wrong]],
        },
        columns=CONFIDENTLY_WRONG_COLUMNS,
    )

    cm = confusion_matrix(y, pred, labels=list(range(n_classes)))
    true_i, pred_i = np.nonzero(cm * (1 - np.eye(n_classes, dtype=cm.dtype)))
    counts = cm[true_i, pred_i]
    # np.nonzero yields row-major order, so ties fall back to (true, predicted) genre order.
    order = np.argsort(-counts, kind="stable")[:top]
    true_i, pred_i, counts = true_i[order], pred_i[order], counts[order]
    confused_pairs = pd.DataFrame(
        {
            "true_genre": names[true_i],
            "predicted_genre": names[pred_i],
            "count": counts.astype(np.int64),
            "share_of_true": counts / cm.sum(axis=1)[true_i],
        },
        columns=CONFUSED_PAIR_COLUMNS,
    )
    return confidently_wrong.reset_index(drop=True), confused_pairs.reset_index(drop=True)
