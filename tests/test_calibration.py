"""Calibrated scores: temperature scaling, ECE, the "none of the ten" threshold, the calibrated
bundle (`mgc.calibrate`), and how predict, the web page and the bot answer with it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tone, write_audio

from mgc.calibrate import main as calibrate_main
from mgc.core.config import ConfigError
from mgc.core.device import CPU_FP32
from mgc.models.bundle import load_bundle, write_calibrated
from mgc.models.inference import Predictor, calibrate
from mgc.results.calibration import (
    calibration_report,
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    rejection_cost,
)
from mgc.serve.bot.core import result_text
from mgc.serve.predict import NONE_OF_THE_TEN, Options, UsageError, predict_one, reject_threshold
from mgc.serve.publish import publish
from mgc.serve.web.core import headline, reject_setting

ROOT = Path(__file__).resolve().parents[1]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def overconfident(n: int = 4000, classes: int = 10, true_t: float = 2.0, seed: int = 0):
    """Scores softmax(z) for labels drawn from softmax(z / true_t): right in the ranking, too
    sure of themselves by a temperature of true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3.0, (n, classes))
    truth = softmax(z / true_t)
    labels = np.array([rng.choice(classes, p=p) for p in truth])
    return softmax(z), labels


def test_ece_by_hand():
    # Two bins used: 0.9 (two right of two: gap 0.1) and 0.6 (one right of two: gap 0.1).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.1)
    # Perfect: every track sure and right.
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def test_calibrate_keeps_the_ranking_and_sums_to_one():
    probs, _ = overconfident(50)
    assert calibrate(probs, 1.0) is not None and np.array_equal(calibrate(probs, 1.0), probs)
    soft = calibrate(probs, 2.0)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    assert np.array_equal(soft.argmax(axis=1), probs.argmax(axis=1))
    assert (soft.max(axis=1) <= probs.max(axis=1) + 1e-12).all()


def test_temperature_fit_finds_the_overconfidence_and_lowers_ece():
    probs, labels = overconfident()
    t = fit_temperature(probs, labels)
    assert t == pytest.approx(2.0, abs=0.2)
    before = expected_calibration_error(probs, labels)
    after = expected_calibration_error(calibrate(probs, t), labels)
    assert after < 0.5 * before


def test_reject_threshold_keeps_the_stated_share_of_correct_answers():
    probs, labels = overconfident(seed=1)
    for loss in (0.0, 0.05, 0.2):
        t = choose_threshold(probs, labels, loss)
        cost = rejection_cost(probs, labels, t)
        assert cost["recall_loss"] <= loss + 1e-9
        assert cost["recall_with_rejection"] <= cost["recall"]
        assert cost["accuracy_of_answered"] >= cost["recall"]  # the unsure go first
    assert choose_threshold(probs, labels, 0.0) == pytest.approx(
        probs.max(axis=1)[probs.argmax(axis=1) == labels].min()
    )


def test_the_threshold_cost_is_stated_per_genre():
    """Genre by genre, recall without and with rejection: a genre the model is unsure of loses
    more of its answers than one it is sure of, and the per-genre figures add up to the whole."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    sure, unsure = [0.9, 0.1], [0.55, 0.45]
    probs = np.array([sure] * 4 + [unsure[::-1]] * 4)  # genre 1 right, but never sure of it
    cost = rejection_cost(probs, labels, 0.6, ["jazz", "blues"])
    jazz, blues = cost["per_genre"]["jazz"], cost["per_genre"]["blues"]
    assert (jazz["recall"], jazz["recall_with_rejection"]) == (1.0, 1.0)
    assert (blues["recall"], blues["recall_with_rejection"]) == (1.0, 0.0)
    assert jazz["tracks"] == blues["tracks"] == 4
    assert cost["recall_with_rejection"] == pytest.approx(0.5)
    assert "per_genre" not in rejection_cost(probs, labels, 0.6)


def test_calibration_report_fits_on_valid_and_reports_test():
    valid, test = overconfident(seed=2), overconfident(seed=3)
    record = calibration_report(valid, test, 0.05)
    assert record["temperature"] == pytest.approx(fit_temperature(*valid))
    for part in ("valid", "test"):
        assert record[part]["ece_after"] < record[part]["ece_before"]
        assert record[part]["nll_after"] < record[part]["nll_before"]
    assert record["valid"]["rejection"]["recall_loss"] <= 0.05


# ---------------------------------------------------------------------------------------------
# The calibrated bundle and the commands


def test_old_bundles_load_uncalibrated_and_a_calibrated_copy_is_a_new_folder(
    trained_run, tmp_path: Path
):
    run_dir, _ = trained_run
    plain = load_bundle(run_dir)
    assert plain.temperature == 1.0 and plain.reject_below is None and plain.calibration == {}
    out = write_calibrated(run_dir, tmp_path / "cal", {"temperature": 2.0, "reject_below": 0.6}, {})
    calibrated = load_bundle(out)
    assert calibrated.temperature == 2.0 and calibrated.reject_below == 0.6
    assert "calibration" not in json.loads((run_dir / "bundle" / "bundle.json").read_text())
    with pytest.raises(ConfigError, match="exists"):
        write_calibrated(run_dir, out, {"temperature": 1.5}, {})

    clip = write_audio(tmp_path / "a.wav", tone(220, 2.0))
    raw = Predictor(plain, CPU_FP32).predict_file(clip)
    scaled = Predictor(calibrated, CPU_FP32).predict_file(clip)
    np.testing.assert_allclose(scaled.probabilities, calibrate(raw.probabilities, 2.0), atol=1e-6)
    np.testing.assert_allclose(scaled.chunk_probabilities, raw.chunk_probabilities)

    bad = write_calibrated(run_dir, tmp_path / "bad", {"temperature": -1}, {})
    with pytest.raises(ConfigError, match="calibration.temperature must be a positive number"):
        load_bundle(bad)


def test_predict_one_answers_none_of_the_ten_below_the_threshold(trained_run, tmp_path: Path):
    run_dir, _ = trained_run
    bundle = load_bundle(run_dir)
    predictor = Predictor(bundle, CPU_FP32)
    clip = write_audio(tmp_path / "a.wav", tone(220, 2.0))
    sure = predict_one(predictor, clip, "m", Options(reject_below=0.0))
    assert sure["answer"] == sure["top_k"][0]["label"] and sure["reject_below"] == 0.0
    unsure = predict_one(predictor, clip, "m", Options(reject_below=1.0))
    assert unsure["answer"] == NONE_OF_THE_TEN and unsure["top_k"] == sure["top_k"]
    assert "answer" not in predict_one(predictor, clip, "m", Options())
    assert NONE_OF_THE_TEN in headline(unsure) and "closest" in headline(unsure)
    assert headline(sure).startswith("Top genre:")
    assert "none of the ten" in result_text(unsure) and "none" not in result_text(sure)


def test_reject_threshold_option(trained_run, tmp_path: Path):
    run_dir, _ = trained_run
    plain = load_bundle(run_dir)
    assert reject_threshold(None, plain, run_dir) is None
    assert reject_threshold("0.4", plain, run_dir) == 0.4
    with pytest.raises(UsageError, match="no rejection threshold.*mgc.calibrate"):
        reject_threshold("model", plain, run_dir)
    for bad in ("1.5", "x"):
        with pytest.raises(UsageError, match="--reject-below"):
            reject_threshold(bad, plain, run_dir)
    calibrated = load_bundle(write_calibrated(run_dir, tmp_path / "c", {"reject_below": 0.3}, {}))
    assert reject_threshold("model", calibrated, tmp_path / "c") == 0.3
    assert reject_setting(["--model", "x", "--reject-below"]) == "model"
    assert reject_setting(["--reject-below", "0.5"]) == "0.5" and reject_setting([]) is None


def run_predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mgc.predict", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_mgc_calibrate_writes_a_new_calibrated_bundle_with_its_card(
    trained_run, tmp_path: Path, capsys
):
    run_dir, data = trained_run
    published = publish([run_dir], tmp_path / "model", "tiny", force=False, trained_on="a box")
    before = {p.name: p.read_bytes() for p in published.iterdir()}
    cache = run_dir.parent / "cache"
    out = tmp_path / "calibrated"
    args = [str(published), f"root={data}", f"cache.dir={cache}", "--out", str(out)]
    assert calibrate_main(args) == 0
    printed = capsys.readouterr().out
    assert "temperature" in printed and "valid (" in printed and str(out) in printed
    assert {p.name: p.read_bytes() for p in published.iterdir()} == before  # untouched
    bundle = load_bundle(out)
    cal = bundle.calibration
    assert cal["temperature"] > 0 and 0 <= cal["reject_below"] <= 1 and cal["fitted_on"] == "valid"
    assert {"ece_before", "ece_after", "rejection"} <= set(cal["valid"])
    card = (out / "model_card.md").read_text()
    assert "## Calibrated scores" in card and f"{cal['reject_below']:.3f}" in card
    assert json.loads((out / "model_card.json").read_text())["calibration"] == cal
    assert "not calibrated" not in card

    # A second run never overwrites: one line, exit 2.
    assert calibrate_main(args) == 2
    assert "exists" in capsys.readouterr().err

    clip = write_audio(tmp_path / "clip.wav", tone(220, 2.0))
    proc = run_predict(str(clip), "--model", str(out), "--reject-below", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)[0]
    assert row["reject_below"] == pytest.approx(cal["reject_below"], abs=1e-9)
    assert row["answer"] in (NONE_OF_THE_TEN, row["top_k"][0]["label"])
    proc = run_predict(str(clip), "--model", str(out), "--reject-below", "1", "--format", "csv")
    assert proc.returncode == 0 and "answer" in proc.stdout.splitlines()[0]
    assert NONE_OF_THE_TEN in proc.stdout
    proc = run_predict(str(clip), "--model", str(run_dir), "--reject-below")
    assert proc.returncode == 2 and "no rejection threshold" in proc.stderr


def test_the_serving_contract_and_the_web_model_carry_the_calibration(trained_run, tmp_path: Path):
    from mgc.serve.export import serving_contract
    from mgc.serve.web.core import open_model

    run_dir, _ = trained_run
    out = write_calibrated(run_dir, tmp_path / "c", {"temperature": 0.5, "reject_below": 0.7}, {})
    step = serving_contract(load_bundle(out))["preprocessing"]["calibrate"]
    assert step["temperature"] == 0.5 and step["reject_below"] == 0.7
    assert serving_contract(load_bundle(run_dir))["preprocessing"]["calibrate"]["temperature"] == 1
    model = open_model(out)
    assert model.options.reject_below is None
    model.allow_rejection("model")
    assert model.options.reject_below == 0.7


def test_a_model_refit_on_validation_borrows_its_twins_calibration(
    trained_run, tmp_path: Path, capsys
):
    """A refit (train.include_valid) trained on the validation tracks: calibrating it on them is
    refused in one line; --like gives it the temperature and threshold of its train-only twin,
    scored on its own test tracks, and its card says where they come from."""
    import shutil

    import yaml

    run_dir, data = trained_run
    twin = publish([run_dir], tmp_path / "twin", "twin", force=False, trained_on="a box")
    refit = tmp_path / "refit"
    shutil.copytree(twin, refit)
    cfg = yaml.safe_load((refit / "config.yaml").read_text())
    cfg["train"]["include_valid"] = True
    (refit / "config.yaml").write_text(yaml.safe_dump(cfg))
    common = [f"root={data}", f"cache.dir={run_dir.parent / 'cache'}"]
    assert calibrate_main([str(refit), *common, "--out", str(tmp_path / "no")]) == 2
    assert "--like" in capsys.readouterr().err and not (tmp_path / "no").exists()
    assert calibrate_main([str(twin), *common, "--out", str(tmp_path / "twin-cal")]) == 0
    like = load_bundle(tmp_path / "twin-cal").calibration
    out = tmp_path / "refit-cal"
    args = [str(refit), *common, "--out", str(out), "--like", str(tmp_path / "twin-cal")]
    assert calibrate_main(args) == 0
    cal = load_bundle(out).calibration
    assert cal["temperature"] == like["temperature"] and cal["reject_below"] == like["reject_below"]
    assert cal["fitted_on"].startswith("valid, by ") and cal["valid"]["held_out"] is False
    assert "taken with the threshold below from" in (out / "model_card.md").read_text()
    # Only a calibrated bundle lends its calibration.
    bad = [str(refit), *common, "--out", str(tmp_path / "bad"), "--like", str(twin)]
    assert calibrate_main(bad) == 2
    assert "not a calibrated bundle" in capsys.readouterr().err
