"""Calibrated track scores: temperature scaling fitted on validation, the expected calibration
error before and after, and the top score under which a model answers "none of the ten".

The scores calibrated are the track-level ones the model's evaluation and `Predictor` produce
(mean of the window probabilities); scaling acts on their logarithm (`calibrate`), so the top
genre, and with it accuracy and macro-F1, never change. `fit_bundle_calibration` does the whole
job for a bundle on its own split, reading the feature cache as evaluation does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from mgc.core.config import Config, ConfigError
from mgc.data.datasets import DatasetError
from mgc.data.loader import SplitData, build_chunk_set, load_split_data
from mgc.models.bundle import Bundle
from mgc.models.inference import calibrate, track_probabilities
from mgc.results.evaluate import predict_chunks

ECE_BINS = 15
# The share of validation tracks the model gets right that a rejection threshold may turn into
# "none of the ten": the default threshold keeps 95 % of them answered.
MAX_RECALL_LOSS = 0.05
TEMPERATURE_RANGE = (0.05, 20.0)


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE (Guo et al. 2017): the top score's confidence against the share it gets right, in
    `n_bins` equal-width bins over [0, 1], averaged with each bin's share of the tracks."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    # Bins (lo, hi] as in Guo et al.; a confidence of exactly 0 cannot be a top score of >1 class.
    which = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true genre) of the tracks."""
    p = np.asarray(probs, np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.clip(p, 1e-12, None))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of `calibrate(probs, T)` on these tracks (a bounded
    one-dimensional search over log T, within TEMPERATURE_RANGE)."""
    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(calibrate(probs, math.exp(log_t)), labels),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(result.x))


def choose_threshold(
    probs: np.ndarray, labels: np.ndarray, max_recall_loss: float = MAX_RECALL_LOSS
) -> float:
    """The highest top-score threshold that turns at most `max_recall_loss` of the tracks the
    model gets right into "none of the ten" (a track is answered when its top score >= it)."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    right = np.sort(probs.max(axis=1)[probs.argmax(axis=1) == labels])
    if right.size == 0:
        return 0.0
    return float(right[int(math.floor(max_recall_loss * right.size + 1e-9))])


def rejection_cost(
    probs: np.ndarray, labels: np.ndarray, threshold: float, genres: list[str] | None = None
) -> dict[str, Any]:
    """What answering "none of the ten" below `threshold` does on these tracks: the share
    answered, recall (tracks named correctly, of all) without and with the threshold, the share
    of correct answers lost, and the accuracy of the tracks still answered. With `genres` (the
    names of the label indices), recall without and with the threshold for each genre too: the
    threshold costs some genres more than others."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    answered = probs.max(axis=1) >= threshold
    right = probs.argmax(axis=1) == labels
    kept = right & answered
    per_genre = {
        genre: {
            "tracks": int((labels == i).sum()),
            "recall": float(right[labels == i].mean()),
            "recall_with_rejection": float(kept[labels == i].mean()),
        }
        for i, genre in enumerate(genres or [])
        if (labels == i).any()
    }
    return {
        **({"per_genre": per_genre} if genres else {}),
        "tracks": int(labels.size),
        "answered": float(answered.mean()),
        "recall": float(right.mean()),
        "recall_with_rejection": float(kept.mean()),
        "recall_loss": float(1 - kept.sum() / right.sum()) if right.any() else 0.0,
        "accuracy_of_answered": float(kept.sum() / answered.sum()) if answered.any() else 0.0,
    }


def calibration_report(
    valid: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray] | None = None,
    max_recall_loss: float = MAX_RECALL_LOSS,
    genres: list[str] | None = None,
    like: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Temperature and threshold fitted on `valid` (track scores, labels), or taken from `like`
    (another model's calibration record); ECE, NLL and the threshold's cost on validation and,
    when given, test (per genre too, given the genres' names). The record a calibrated bundle
    keeps."""
    if like is None:
        temperature = fit_temperature(*valid)
        threshold = choose_threshold(calibrate(valid[0], temperature), valid[1], max_recall_loss)
    else:
        temperature, threshold = float(like["temperature"]), float(like["reject_below"])
        max_recall_loss = like.get("max_recall_loss", max_recall_loss)
    record: dict[str, Any] = {
        "temperature": temperature,
        "reject_below": threshold,
        "fitted_on": "valid",
        "max_recall_loss": max_recall_loss,
        "ece_bins": ECE_BINS,
    }
    for part, scores in (("valid", valid), ("test", test)):
        if scores is None:
            continue
        probs, labels = scores
        calibrated = calibrate(probs, temperature)
        record[part] = {
            "tracks": int(len(labels)),
            "ece_before": expected_calibration_error(probs, labels),
            "ece_after": expected_calibration_error(calibrated, labels),
            "nll_before": negative_log_likelihood(probs, labels),
            "nll_after": negative_log_likelihood(calibrated, labels),
            "rejection": rejection_cost(calibrated, labels, threshold, genres),
        }
    return record


def track_scores(
    bundle: Bundle, data: SplitData, cfg: Config, part: str
) -> tuple[np.ndarray, np.ndarray]:
    """(uncalibrated track scores (n, C), labels) of `bundle` on `part` of `data`, through the
    evaluation's own path (windows, model, mean of the window probabilities)."""
    chunk_set = build_chunk_set(data.parts[part], cfg.chunks, cfg.features)
    probs, _, tracks = predict_chunks(bundle.classifier, chunk_set)
    idx, scores = track_probabilities(probs, tracks)
    return scores, np.array([chunk_set.tracks[i].label for i in idx])


def fit_bundle_calibration(
    bundle: Bundle,
    cfg: Config,
    max_recall_loss: float = MAX_RECALL_LOSS,
    like: tuple[str, Bundle] | None = None,
) -> dict[str, Any]:
    """`calibration_report` of a bundle on the validation tracks of cfg's split (and its test
    tracks, where it has any), read from the feature cache; with the split it was fitted on.

    A model whose validation tracks trained it (a refit: train.include_valid) cannot be fitted
    on them; `like` = (name, calibrated bundle) gives it the temperature and threshold of that
    bundle, a fit on train alone of the same recipe, and the record says where they come from
    and scores them on this model's test tracks."""
    if cfg.train.include_valid and like is None:
        raise ConfigError(
            f"{cfg.experiment.name}: its validation tracks trained it (train.include_valid), so "
            "they cannot calibrate it; calibrate its twin fitted on train alone and pass that "
            "bundle with --like"
        )
    if like is not None and not like[1].calibration:
        raise ConfigError(f"{like[0]}: not a calibrated bundle (mgc.calibrate makes one)")
    data = load_split_data(cfg)
    if data.genres != bundle.genres:
        raise DatasetError(
            f"{cfg.data.root}: genres {data.genres} differ from the model's {bundle.genres}"
        )
    if not data.parts.get("valid"):
        raise DatasetError(f"{cfg.data.root}: split '{data.split_name}' has no valid tracks here")
    valid = track_scores(bundle, data, cfg, "valid")
    test = track_scores(bundle, data, cfg, "test") if data.parts.get("test") else None
    record = calibration_report(
        valid, test, max_recall_loss, bundle.genres, like[1].calibration if like else None
    )
    record["split"] = data.split_name
    if like is not None:
        record["fitted_on"] = f"valid, by {like[0]}"
        record["valid"]["held_out"] = not cfg.train.include_valid
    return record
