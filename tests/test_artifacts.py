"""Tests for mgc.results.artifacts: each file is written, readable, and carries the right content."""

import json
import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from mgc.data.gtzan import GTZAN_GENRES
from mgc.results.artifacts import (
    plot_confusion_matrix,
    plot_train_curves,
    write_classification_report,
    write_hard_cases,
    write_json,
    write_predictions,
)

GENRES = list(GTZAN_GENRES)


def random_predictions(n_tracks: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_true = np.arange(n_tracks) % len(GENRES)
    logits = rng.normal(0, 1, (n_tracks, len(GENRES)))
    logits[np.arange(n_tracks), y_true] += 2.0  # mostly right, some mistakes
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    track_ids = [f"{GENRES[y]}.{i:05d}" for i, y in enumerate(y_true)]
    return track_ids, y_true, probs


def assert_valid_png(path: Path, min_side: int = 300) -> np.ndarray:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.shape[0] >= min_side and image.shape[1] >= min_side
    # Not a blank canvas: some pixels are far from white.
    assert (image[..., :3] < 0.5).any()
    return image


def test_classification_report_has_header_every_genre_and_chunk_section(tmp_path):
    _, y_true, probs = random_predictions()
    chunk_true = np.repeat(y_true, 3)
    chunk_pred = np.repeat(probs.argmax(1), 3)
    chunk_pred[::5] = 0
    path = write_classification_report(
        tmp_path / "out" / "test_classification_report.txt",
        y_true,
        probs.argmax(1),
        GENRES,
        split="test",
        level="track",
        chunk_true=chunk_true,
        chunk_pred=chunk_pred,
    )
    text = path.read_text()
    lines = text.splitlines()
    assert "split test" in lines[0] and "track level" in lines[0] and "60 tracks" in lines[0]
    assert "chunk level (180 chunks)" in text
    for genre in GENRES:
        assert text.count(genre) == 2  # one row in each report
    assert text.count("macro avg") == 2 and text.count("accuracy") == 2


def test_classification_report_track_only_and_absent_class(tmp_path):
    # Class "rock" never occurs and is never predicted: still a row, scored 0 without a warning.
    y_true = np.array([0, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 2])
    path = write_classification_report(tmp_path / "r.txt", y_true, y_pred, GENRES, split="valid")
    text = path.read_text()
    assert text.splitlines()[0].startswith("Classification report: split valid, track level")
    assert "chunk level" not in text
    assert all(g in text for g in GENRES)
    with pytest.raises(ValueError):
        write_classification_report(tmp_path / "x.txt", y_true, y_pred, GENRES, chunk_true=y_true)


def test_confusion_matrix_png_is_valid_and_scales_with_classes(tmp_path):
    _, y_true, probs = random_predictions()
    big = assert_valid_png(
        plot_confusion_matrix(tmp_path / "cm10.png", y_true, probs.argmax(1), GENRES)
    )
    small = assert_valid_png(
        plot_confusion_matrix(tmp_path / "cm3.png", y_true % 3, y_true % 3, GENRES[:3])
    )
    assert big.shape[0] > small.shape[0] and big.shape[1] > small.shape[1]


def test_predictions_csv_columns_probabilities_and_argmax(tmp_path):
    track_ids, y_true, probs = random_predictions()
    path = write_predictions(tmp_path / "predictions.csv", track_ids, y_true, probs, GENRES)
    frame = pd.read_csv(path)
    prob_cols = [f"p_{g}" for g in GENRES]
    assert list(frame.columns) == ["track", "true_genre", "predicted_genre", "correct", *prob_cols]
    assert frame["track"].tolist() == track_ids
    assert frame["true_genre"].tolist() == [GENRES[y] for y in y_true]
    np.testing.assert_allclose(frame[prob_cols].sum(axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(frame[prob_cols].to_numpy(), probs, atol=5e-5)
    argmax = frame[prob_cols].to_numpy().argmax(axis=1)
    assert frame["predicted_genre"].tolist() == [GENRES[k] for k in argmax]
    assert frame["correct"].tolist() == (frame["true_genre"] == frame["predicted_genre"]).tolist()
    assert 0 < frame["correct"].sum() < len(frame)  # the fixture has right and wrong tracks
    # Probabilities are written with at most 4 decimals.
    first_row = path.read_text().splitlines()[1].split(",")
    assert all(len(v.split(".")[1]) <= 4 for v in first_row[4:] if "." in v)


def test_hard_cases_csv_is_one_file_with_both_kinds(tmp_path):
    track_ids, y_true, probs = random_predictions()
    path = write_hard_cases(tmp_path / "hard_cases.csv", track_ids, y_true, probs, GENRES, top=5)
    frame = pd.read_csv(path)
    assert list(frame.columns) == [
        "kind",
        "track",
        "true_genre",
        "predicted_genre",
        "confidence",
        "true_prob",
        "count",
        "share_of_true",
    ]
    kinds = frame["kind"].tolist()
    assert kinds == ["confidently_wrong"] * 5 + ["confused_pair"] * 5
    wrong = frame[frame["kind"] == "confidently_wrong"]
    pairs = frame[frame["kind"] == "confused_pair"]
    assert wrong["confidence"].is_monotonic_decreasing
    assert (wrong["true_genre"] != wrong["predicted_genre"]).all()
    assert wrong["count"].isna().all() and wrong["share_of_true"].isna().all()
    assert pairs["track"].isna().all() and pairs["confidence"].isna().all()
    assert pairs["count"].is_monotonic_decreasing and (pairs["count"] >= 1).all()
    # Counts are written as integers, not "3.0".
    pair_line = next(line for line in path.read_text().splitlines() if "confused_pair" in line)
    assert pair_line.split(",")[6].isdigit()


def test_hard_cases_csv_when_every_track_is_right(tmp_path):
    probs = np.eye(3)
    path = write_hard_cases(tmp_path / "h.csv", ["a", "b", "c"], np.arange(3), probs, GENRES[:3])
    frame = pd.read_csv(path)
    assert frame.empty and "kind" in frame.columns and "count" in frame.columns


def write_log(path: Path, n_epochs: int, with_nan: bool = False) -> Path:
    epochs = np.arange(1, n_epochs + 1)
    frame = pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": 2.3 / epochs,
            "val_loss": 2.4 / epochs + 0.1,
            "train_acc": 1 - 0.8 / epochs,
            "val_acc": 1 - 0.9 / epochs,
            "val_macro_f1": 1 - 0.95 / epochs,
            "lr": 1e-3 * 0.5 * (1 + np.cos(np.pi * (epochs - 1) / max(n_epochs, 1))) + 1e-6,
            "seconds": np.full(n_epochs, 12.5),
        }
    )
    if with_nan:
        frame.loc[1, "val_loss"] = np.nan
        frame["train_acc"] = np.nan  # e.g. a model without a training accuracy
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("n_epochs", "with_nan"), [(1, False), (5, False), (5, True)])
def test_train_curves_png(tmp_path, n_epochs, with_nan):
    log = write_log(tmp_path / "train_log.csv", n_epochs, with_nan)
    path = plot_train_curves(log, tmp_path / "curves" / "train_curves.png")
    image = assert_valid_png(path)
    assert image.shape[1] > 2 * image.shape[0]  # three panels side by side


def test_train_curves_with_missing_columns_and_no_rows(tmp_path):
    log = tmp_path / "train_log.csv"
    pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": ["", "0.7"]}).to_csv(
        log, index=False
    )
    assert_valid_png(plot_train_curves(log, tmp_path / "a.png"))
    log.write_text("epoch,train_loss,val_loss,train_acc,val_acc,val_macro_f1,lr,seconds\n")
    assert_valid_png(plot_train_curves(log, tmp_path / "b.png"))


def test_write_json_converts_numpy_paths_and_nan(tmp_path):
    obj = {
        "b": np.float32(0.5),
        "a": {"n": np.int64(3), "arr": np.arange(3), "path": Path("/x/y")},
        "nan": float("nan"),
        "list": (np.bool_(True), np.float64(math.inf)),
    }
    path = write_json(tmp_path / "metrics.json", obj)
    text = path.read_text()
    assert json.loads(text) == {
        "a": {"arr": [0, 1, 2], "n": 3, "path": "/x/y"},
        "b": 0.5,
        "list": [True, None],
        "nan": None,
    }
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert '\n  "a": {' in text  # indent 2
