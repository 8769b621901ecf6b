import json

import numpy as np
import pandas as pd
import pytest

from mgc.core.device import CPU_FP32
from mgc.data.loader import build_chunk_set, load_split_data
from mgc.models.bundle import load_bundle
from mgc.models.inference import Predictor, predict_file, track_probabilities
from mgc.results.evaluate import evaluate_run, predict_chunks, run_config


def test_predict_file_equals_evaluate_on_the_same_clip(trained_run):
    run_dir, root = trained_run
    out_dir, _ = evaluate_run(run_dir, ["train.amp=off"])
    predictions = pd.read_csv(out_dir / "predictions.csv")
    bundle = load_bundle(run_dir)
    genres = bundle.genres
    assert len(predictions) >= 2
    for _, row in predictions.iterrows():
        genre, stem = row["track"].split("/")
        probs = predict_file(bundle, root / genre / f"{stem}.wav", fast=CPU_FP32)
        expected = np.array([row[f"p_{g}"] for g in genres])
        np.testing.assert_allclose(probs, expected, atol=6e-5)  # predictions.csv keeps 4 decimals


def test_predict_file_equals_evaluation_path_exactly(trained_run):
    run_dir, root = trained_run
    cfg, bundle = run_config(run_dir, ["train.amp=off"])
    tracks = load_split_data(cfg).parts["test"]
    chunk_set = build_chunk_set(tracks, cfg.chunks, cfg.features)
    probs, _, chunk_track = predict_chunks(bundle.classifier, chunk_set)
    idx, per_track = track_probabilities(probs, chunk_track)
    for i, p in zip(idx, per_track, strict=True):
        genre, stem = tracks[i].track_id.split("/")
        np.testing.assert_allclose(
            predict_file(bundle, root / genre / f"{stem}.wav", fast=CPU_FP32), p, atol=1e-6
        )


def test_prediction_carries_windows_and_padding(trained_run):
    run_dir, root = trained_run
    predictor = Predictor(load_bundle(run_dir), CPU_FP32)
    sr = predictor.bundle.features.sample_rate
    long = predictor.predict_wave(np.random.default_rng(0).normal(0, 0.1, 3 * sr).astype("f4"))
    assert not long.padded and long.duration_s == pytest.approx(3.0)
    # 130 frames; windows of 43 frames every 22 (1 s, half overlap): starts 0, 22, 44, 66.
    assert len(long.windows) == len(long.chunk_probabilities) == 4
    assert long.windows[0][0] == 0.0 and long.windows[-1][1] <= 3.0 + 1e-6
    assert long.probabilities == pytest.approx(long.chunk_probabilities.mean(0))
    short = predictor.predict_wave(np.zeros(sr // 4, dtype="f4") + 0.01)
    assert short.padded and len(short.windows) == 1
    assert short.probabilities.sum() == pytest.approx(1.0)


def test_track_probabilities_checks_its_input():
    with pytest.raises(ValueError, match="non-empty"):
        track_probabilities(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="integers"):
        track_probabilities(np.ones((2, 3)), np.zeros(2))


def test_bundle_records_its_settings(trained_run):
    run_dir, _ = trained_run
    meta = json.loads((run_dir / "bundle" / "bundle.json").read_text())
    assert meta["chunks"]["window_s"] == 1.0 and meta["chunks"]["overlap"] == 0.5
    assert meta["features"]["n_mels"] == 128
