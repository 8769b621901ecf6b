"""Tests for mgc.results.metrics: track averaging, accuracy/macro-F1, hard cases, on hand-made arrays."""

import numpy as np
import pytest

from mgc.results.metrics import (
    classification_metrics,
    evaluate_predictions,
    hard_cases,
    track_labels,
    track_probabilities,
)

GENRES = ["blues", "jazz", "metal"]

# Three tracks with 2, 3 and 1 chunks, deliberately interleaved and with non-contiguous ids.
CHUNK_TRACK = np.array([7, 2, 7, 2, 2, 11])
CHUNK_PROBS = np.array(
    [
        [0.6, 0.3, 0.1],  # track 7
        [0.1, 0.8, 0.1],  # track 2
        [0.2, 0.2, 0.6],  # track 7
        [0.3, 0.3, 0.4],  # track 2
        [0.2, 0.7, 0.1],  # track 2
        [0.0, 0.1, 0.9],  # track 11
    ]
)
CHUNK_LABELS = np.array([0, 1, 0, 1, 1, 2])


def test_track_probabilities_are_chunk_means_with_uneven_counts():
    tracks, probs = track_probabilities(CHUNK_PROBS, CHUNK_TRACK)
    assert tracks.tolist() == [2, 7, 11]
    expected = np.array(
        [
            [(0.1 + 0.3 + 0.2) / 3, (0.8 + 0.3 + 0.7) / 3, (0.1 + 0.4 + 0.1) / 3],
            [(0.6 + 0.2) / 2, (0.3 + 0.2) / 2, (0.1 + 0.6) / 2],
            [0.0, 0.1, 0.9],
        ]
    )
    np.testing.assert_allclose(probs, expected)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_track_probabilities_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        track_probabilities(CHUNK_PROBS, CHUNK_TRACK[:-1])


def test_track_labels_take_the_shared_chunk_label_and_reject_disagreement():
    tracks, labels = track_labels(CHUNK_LABELS, CHUNK_TRACK)
    assert tracks.tolist() == [2, 7, 11]
    assert labels.tolist() == [1, 0, 2]
    bad = CHUNK_LABELS.copy()
    bad[2] = 1  # second chunk of track 7 now disagrees with the first
    with pytest.raises(ValueError, match="different labels"):
        track_labels(bad, CHUNK_TRACK)


def manual_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    scores = []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def test_classification_metrics_match_a_manual_computation():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 0, 2, 3])
    m = classification_metrics(y_true, y_pred, 4)
    assert m["accuracy"] == pytest.approx(7 / 10)
    # Per class F1 by hand: 0: tp2 fp1 fn1 → 4/6; 1: tp1 fp1 fn1 → 2/4; 2: tp3 fp1 fn1 → 6/8; 3: 1.
    assert m["macro_f1"] == pytest.approx((4 / 6 + 2 / 4 + 6 / 8 + 1.0) / 4)
    assert m["macro_f1"] == pytest.approx(manual_macro_f1(y_true, y_pred, 4))
    assert isinstance(m["accuracy"], float) and isinstance(m["macro_f1"], float)


def test_a_class_never_predicted_scores_zero_instead_of_raising():
    y_true = np.array([0, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1])  # class 2 is never predicted
    with np.errstate(all="raise"):
        m = classification_metrics(y_true, y_pred, 3)
    # F1: class 0 → 1, class 1 → 2·1/(2+2+0) = 0.5, class 2 → 0.
    assert m["macro_f1"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_evaluate_predictions_scores_chunks_and_tracks():
    m = evaluate_predictions(CHUNK_PROBS, CHUNK_LABELS, CHUNK_TRACK, 3)
    # Chunk argmax: [0, 1, 2, 2, 1, 2] vs labels [0, 1, 0, 1, 1, 2] → 4 of 6 right.
    assert m["chunk_accuracy"] == pytest.approx(4 / 6)
    chunk_pred = CHUNK_PROBS.argmax(axis=1)
    assert m["chunk_macro_f1"] == pytest.approx(manual_macro_f1(CHUNK_LABELS, chunk_pred, 3))
    # Track means: track 2 → jazz (right), track 7 → blues 0.4 vs metal 0.35 (right), 11 → metal.
    assert m["track_accuracy"] == pytest.approx(1.0)
    assert m["track_macro_f1"] == pytest.approx(1.0)
    assert (m["n_chunks"], m["n_tracks"]) == (6, 3)


def test_evaluate_predictions_rejects_wrong_class_count():
    with pytest.raises(ValueError):
        evaluate_predictions(CHUNK_PROBS, CHUNK_LABELS, CHUNK_TRACK, 4)


def hard_case_inputs():
    track_ids = ["t0", "t1", "t2", "t3", "t4", "t5"]
    y_true = np.array([0, 0, 0, 1, 1, 2])
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # right
            [0.2, 0.7, 0.1],  # blues → jazz, 0.7
            [0.1, 0.1, 0.8],  # blues → metal, 0.8
            [0.6, 0.3, 0.1],  # jazz → blues, 0.6
            [0.1, 0.85, 0.05],  # right
            [0.05, 0.5, 0.45],  # metal → jazz, 0.5
        ]
    )
    return track_ids, y_true, probs


def test_hard_cases_orders_confidently_wrong_by_confidence():
    wrong, _ = hard_cases(*hard_case_inputs(), GENRES)
    assert list(wrong.columns) == [
        "track",
        "true_genre",
        "predicted_genre",
        "confidence",
        "true_prob",
    ]
    assert wrong["track"].tolist() == ["t2", "t1", "t3", "t5"]
    assert wrong["confidence"].tolist() == pytest.approx([0.8, 0.7, 0.6, 0.5])
    assert wrong["true_prob"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.45])
    assert wrong.iloc[0][["true_genre", "predicted_genre"]].tolist() == ["blues", "metal"]


def test_hard_cases_counts_confused_pairs():
    track_ids, y_true, probs = hard_case_inputs()
    # Two more blues tracks called jazz make blues → jazz the most confused pair.
    track_ids += ["t6", "t7"]
    y_true = np.append(y_true, [0, 0])
    probs = np.vstack([probs, [[0.3, 0.6, 0.1], [0.4, 0.55, 0.05]]])
    _, pairs = hard_cases(track_ids, y_true, probs, GENRES)
    assert list(pairs.columns) == ["true_genre", "predicted_genre", "count", "share_of_true"]
    rows = list(pairs.itertuples(index=False, name=None))
    # 5 blues tracks: 3 → jazz, 1 → metal; 2 jazz: 1 → blues; 1 metal: 1 → jazz.
    # Ties on count keep (true, predicted) genre order.
    assert [r[:3] for r in rows] == [
        ("blues", "jazz", 3),
        ("blues", "metal", 1),
        ("jazz", "blues", 1),
        ("metal", "jazz", 1),
    ]
    assert [r[3] for r in rows] == pytest.approx([3 / 5, 1 / 5, 1 / 2, 1.0])


def test_hard_cases_top_limits_rows_and_all_right_gives_empty_frames():
    wrong, pairs = hard_cases(*hard_case_inputs(), GENRES, top=2)
    assert wrong["track"].tolist() == ["t2", "t1"]
    assert len(pairs) == 2
    probs = np.eye(3)
    wrong, pairs = hard_cases(["a", "b", "c"], np.arange(3), probs, GENRES)
    assert wrong.empty and pairs.empty
    assert "confidence" in wrong.columns and "count" in pairs.columns
