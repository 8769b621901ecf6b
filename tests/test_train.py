import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from signals import default_sigint

from mgc.core.config import load_config
from mgc.core.device import CPU_FP32, choose_fast_path, cpu_has_bf16
from mgc.data.prepare import prepare
from mgc.evaluate import main as evaluate_main
from mgc.models.bundle import load_bundle
from mgc.run import train as train_module
from mgc.run.train import build_training, fit, fit_sklearn, fit_torch, trainer_for
from mgc.train import main as train_main

ARTIFACTS = [
    "config.yaml",
    "label_map.json",
    "train_log.csv",
    "train_curves.png",
    "metrics.json",
    "test_classification_report.txt",
    "confusion_matrix_test.png",
    "predictions.csv",
    "hard_cases.csv",
    "checkpoints/best.pt",
    "checkpoints/last.pt",
    "bundle/model.pt",
    "bundle/label_map.json",
    "bundle/bundle.json",
]


def small_cfg(root: Path, tmp_path: Path, *extra: str):
    """A small config whose features are already in the cache (fit only reads them)."""
    cfg = load_config(
        None,
        [
            f"data.root={root}",
            f"cache.dir={tmp_path / 'cache'}",
            "chunks.window_s=1.0",
            "model.name=cnn4",
            "model.width=8",
            "train.epochs=3",
            "train.batch_size=8",
            "train.threads=1",
            *extra,
        ],
    )
    prepare(cfg, use_ray=False)
    return cfg


def log_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "train_log.csv") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_fit_writes_every_artifact_and_bundle_reloads(synth_dataset: Path, tmp_path: Path):
    result = fit(small_cfg(synth_dataset, tmp_path), run_dir=tmp_path / "run")
    for name in ARTIFACTS:
        assert (result.run_dir / name).is_file(), name
    m = result.metrics
    assert m["split"] == "stratified" and m["params"] > 0
    assert set(m["test"]) >= {
        "chunk_accuracy",
        "chunk_macro_f1",
        "track_accuracy",
        "track_macro_f1",
    }
    assert len(log_rows(result.run_dir)) == 3
    bundle = load_bundle(result.run_dir)
    assert bundle.genres == ["blues", "metal", "pop"]
    assert bundle.features.n_mels == 128 and bundle.chunks.window_s == 1.0
    x = torch.randn(2, 1, 128, 43)
    assert bundle.model(x).shape == (2, 3)
    assert bundle.classifier.predict_proba(x).sum(1) == pytest.approx([1.0, 1.0])


def test_same_seed_same_numbers(synth_dataset: Path, tmp_path: Path):
    cfg = small_cfg(synth_dataset, tmp_path, "train.epochs=2", "train.specaugment.enabled=true")
    a = fit(cfg, run_dir=tmp_path / "a")
    b = fit(cfg, run_dir=tmp_path / "b")
    assert log_rows(a.run_dir) == log_rows(b.run_dir)
    assert a.metrics["test"] == b.metrics["test"]
    c = fit(
        small_cfg(synth_dataset, tmp_path, "train.epochs=2", "train.seed=7"), run_dir=tmp_path / "c"
    )
    assert log_rows(c.run_dir) != log_rows(a.run_dir)


def test_interrupted_run_resumes_to_the_same_result(synth_dataset: Path, tmp_path: Path):
    cfg = small_cfg(
        synth_dataset, tmp_path, "train.specaugment.enabled=true", "train.scheduler=cosine"
    )
    whole = fit(cfg, run_dir=tmp_path / "whole")

    def stop_after_two(metrics, _ckpt):
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, report=stop_after_two, run_dir=tmp_path / "cut")
    assert len(log_rows(tmp_path / "cut")) == 2
    resumed = fit(cfg, run_dir=tmp_path / "cut", resume=True)
    assert log_rows(resumed.run_dir) == log_rows(whole.run_dir)
    assert resumed.metrics["test"] == whole.metrics["test"]


def test_early_stopping_and_report_callback(synth_dataset: Path, tmp_path: Path):
    seen = []
    cfg = small_cfg(
        synth_dataset,
        tmp_path,
        "train.epochs=20",
        "train.early_stopping_patience=1",
        "train.lr=1e-6",
    )
    result = fit(
        cfg, report=lambda m, d: seen.append((m["epoch"], d.is_dir())), run_dir=tmp_path / "r"
    )
    assert len(seen) < 20 and all(ok for _, ok in seen)
    assert result.metrics["epochs_run"] == len(seen)


def test_logreg_baseline_runs_the_same_evaluation(synth_dataset: Path, tmp_path: Path):
    result = fit(small_cfg(synth_dataset, tmp_path, "model.name=logreg"), run_dir=tmp_path / "lr")
    assert result.metrics["params"] == 3 * 256 + 3
    assert result.metrics["test"]["track_accuracy"] >= 2 / 3  # pitch classes are easy
    assert load_bundle(result.run_dir).model.predict_proba(np.zeros((1, 256))).shape == (1, 3)
    probs = load_bundle(result.run_dir).classifier.predict_proba(torch.zeros(2, 1, 128, 43))
    assert probs.shape == (2, 3)


def test_the_caller_picks_the_trainer():
    assert trainer_for(load_config(None, ["model.name=logreg"])) is fit_sklearn
    assert trainer_for(load_config(None, ["model.name=cnn4"])) is fit_torch


def test_build_training_follows_the_config():
    """The one builder of a run's training pieces (the budget's timed step uses it too)."""
    cfg = load_config(
        None,
        [
            "model.name=cnn4",
            "model.width=8",
            "train.label_smoothing=0.1",
            "train.specaugment.enabled=true",
            "train.optimizer=sgd",
        ],
    )
    training = build_training(cfg, 3, CPU_FP32)
    assert training.model.info["n_classes"] == 3
    assert isinstance(training.optimizer, torch.optim.SGD)
    assert training.loss_fn.label_smoothing == 0.1 and training.augment is not None
    assert set(training.checkpointed()) == {"model", "optimizer", "scheduler", "generator"}
    plain = build_training(load_config(None, ["model.width=8"]), 3, CPU_FP32)
    assert plain.augment is None


@pytest.mark.parametrize("model", ["cnn4", "logreg"])
def test_each_part_is_cut_into_windows_once(
    synth_dataset: Path, tmp_path: Path, monkeypatch, model: str
):
    cfg = small_cfg(synth_dataset, tmp_path, f"model.name={model}", "train.epochs=2")
    cut = []

    def counting(tracks, chunks, features):
        cut.append(len(tracks))
        return build_chunk_set(tracks, chunks, features)

    build_chunk_set = train_module.build_chunk_set
    monkeypatch.setattr(train_module, "build_chunk_set", counting)
    result = fit(cfg, run_dir=tmp_path / "run")
    assert cut == [result.metrics["n_tracks"][p] for p in ("train", "valid", "test")]


def test_fast_path_follows_the_hardware():
    fast = choose_fast_path(torch.device("cpu"))
    assert (fast.amp_dtype is torch.bfloat16) == cpu_has_bf16()
    assert choose_fast_path(torch.device("cpu"), amp="off").amp_dtype is None
    assert not fast.compile


def test_cli_train_then_evaluate_on_another_split(synth_dataset: Path, tmp_path: Path, capsys):
    args = [
        f"data.root={synth_dataset}",
        f"cache.dir={tmp_path / 'cache'}",
        "chunks.window_s=1.0",
        "model.name=small_cnn",
        "train.epochs=1",
        f"run.out_dir={tmp_path / 'runs'}",
    ]
    assert train_main(args + ["--run-dir", str(tmp_path / "run")]) == 0
    assert "test (stratified)" in capsys.readouterr().out
    split = tmp_path / "split.json"
    split.write_text(
        '{"name": "custom", "seed": null, "parts": {"train": ["blues/blues.00000"], "valid": [], '
        '"test": ["blues/blues.00001", "metal/metal.00001", "pop/pop.00001", "pop/pop.00002"]}}'
    )
    assert evaluate_main([str(tmp_path / "run"), f"split={split}"]) == 0
    out = capsys.readouterr().out
    assert "custom test" in out
    assert (tmp_path / "run" / "eval-custom-test" / "predictions.csv").is_file()
    assert evaluate_main([str(tmp_path / "nowhere")]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_cli_stopped_by_a_signal_says_how_to_resume_and_resumes(
    synth_dataset: Path, tmp_path: Path, sig: str
):
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "mgc.train",
        f"data.root={synth_dataset}",
        f"cache.dir={tmp_path / 'cache'}",
        "chunks.window_s=1.0",
        "model.width=8",
        "train.epochs=200",
        "train.threads=1",
        "--run-dir",
        str(run_dir),
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint"
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert f"interrupted: resume with  python -m mgc.train --resume {run_dir}" in err
    # Nothing half-written: the checkpoint loads, the log has whole rows only.
    state = torch.load(last, weights_only=False)
    epochs_done = state["progress"]["epoch"]
    rows = log_rows(run_dir)
    assert epochs_done >= 1 and len(rows) >= epochs_done
    assert not list(run_dir.rglob("*.tmp*"))
    # And it resumes from there (fewer epochs now, so the test ends).
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mgc.train",
            "--resume",
            str(run_dir),
            f"train.epochs={epochs_done + 1}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert [int(r["epoch"]) for r in log_rows(run_dir)] == list(range(1, epochs_done + 2))
