"""mgc.run.seeds: the final seeds' configuration, their progress, and that a seed never waits on Ray."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from mgc.core.config import load_config
from mgc.run.seeds import SELECT, ProgressSink, SeedProgress, chosen_config, refit_seed, train_seed


def test_the_chosen_configuration_is_trained_at_the_full_budget():
    cfg = load_config(
        None,
        [
            "train.epochs=12",
            "train.windows_per_track=2",
            "sweep.final.epochs=60",
            "sweep.final.windows_per_track=0",
            "sweep.final.early_stopping_patience=10",
        ],
    )
    chosen = chosen_config(cfg, {"train.lr": 3e-4})
    assert chosen.train.lr == 3e-4
    assert (chosen.train.epochs, chosen.train.windows_per_track) == (60, 0)
    assert chosen.train.early_stopping_patience == 10
    # Unset parts of the final budget keep what the trials had.
    kept = chosen_config(load_config(None, ["train.epochs=7", "sweep.final.epochs=null"]), {})
    assert kept.train.epochs == 7


def test_a_seed_reports_its_epochs_without_waiting_on_ray(monkeypatch, tmp_path: Path):
    """A Ray task blocked in ray.get gives its CPU back, and Ray then starts one more seed than
    there are CPUs (seen: 3 seeds on 2 CPUs). The seed's reports are sent, never awaited."""
    import ray

    sent = []
    sink = SimpleNamespace(add=SimpleNamespace(remote=sent.append))

    def fake_fit(cfg, report, run_dir, resume):
        for epoch, score in ((1, 0.5), (2, 0.6)):
            report({"epoch": epoch, "val_macro_f1": score, "best_val_macro_f1": score}, tmp_path)
        return SimpleNamespace(metrics={"seed": cfg})

    def no_get(*args, **kwargs):
        raise AssertionError("a seed waited on Ray")

    monkeypatch.setattr("mgc.run.train.fit", fake_fit)
    monkeypatch.setattr(ray, "get", no_get)
    # Where it ran comes from Ray's runtime context (a Ray that an earlier test left running
    # in this process would give its own node): fixed here, and carried into the metrics.
    monkeypatch.setattr("mgc.run.seeds.placement", lambda: {"node_id": "n1", "gpu_ids": ""})
    cfg = load_config(None)
    assert train_seed(cfg, 4, str(tmp_path), sink) == {"seed": cfg, "node_id": "n1", "gpu_ids": ""}
    assert sent == [
        {"seed": 4, "started": True},
        {"seed": 4, "epoch": 1, "val_macro_f1": 0.5, "best": 0.5},
        {"seed": 4, "epoch": 2, "val_macro_f1": 0.6, "best": 0.6},
    ]


def test_the_sink_hands_each_epoch_over_once():
    sink = ProgressSink()
    sink.add({"seed": 0, "epoch": 1})
    sink.add({"seed": 1, "epoch": 1})
    assert [i["seed"] for i in sink.drain()] == [0, 1]
    assert sink.drain() == []


def test_progress_shows_epochs_best_and_how_a_seed_ended(capsys):
    progress = SeedProgress({0: 0, 1: 5, 2: 0}, max_epochs=60)
    for seed in (0, 1):
        progress.update({"seed": seed, "started": True})
    progress.update({"seed": 0, "epoch": 1, "val_macro_f1": 0.61, "best": 0.61})
    progress.update({"seed": 0, "epoch": 2, "val_macro_f1": 0.58, "best": 0.61})
    progress.update({"seed": 1, "epoch": 6, "val_macro_f1": 0.70, "best": 0.70})
    assert progress.bars[0].n == 2 and progress.bars[1].n == 6
    metrics = {
        "stopped_early": True,
        "epochs_run": 31,
        "best_epoch": 21,
        "test": {"track_macro_f1": 0.8123},
    }
    progress.done(0, metrics)
    progress.close()
    err = capsys.readouterr().err
    assert "seed 0" in err and "2/60" in err and "val macro-F1 0.580, best 0.610 (epoch 1)" in err
    assert "seed 1" in err and "6/60" in err  # a resumed seed starts at its epoch
    assert "seed 2" in err and "queued for a free slot" in err  # queued behind the others
    assert "early stop at 31, best epoch 21, test macro-F1 0.812" in err


def test_a_finished_seeds_bar_keeps_its_own_time(capsys):
    """Seen on E4: seed 1 ended after 40 minutes, its bar was drawn once more when seed 2 ended
    two hours later, reading "17/60 [1:56:36, 411.55s/epoch]"."""
    clock = [1000.0]
    progress = SeedProgress({0: 0, 1: 0}, max_epochs=60)
    for bar in progress.bars.values():
        bar._time = lambda: clock[0]
        bar.start_t = bar.last_print_t = clock[0]
    for seed in (0, 1):
        progress.update({"seed": seed, "started": True})
    clock[0] += 100.0
    progress.update({"seed": 0, "epoch": 2, "val_macro_f1": 0.6, "best": 0.6})
    metrics = {"stopped_early": True, "epochs_run": 2, "best_epoch": 2}
    progress.done(0, {**metrics, "test": {"track_macro_f1": 0.7}})
    clock[0] += 7000.0  # seed 1 trains on for two hours
    progress.update({"seed": 1, "epoch": 60, "val_macro_f1": 0.6, "best": 0.6})
    progress.close()
    lines = re.split(r"[\r\n]", capsys.readouterr().err)
    seed0 = [line for line in lines if line.startswith("seed 0") and "2/60" in line]
    assert seed0 and all("01:40" in line for line in seed0), seed0
    assert all("1:58:20" not in line for line in seed0)


def test_a_resumed_seed_names_the_epoch_of_its_best_from_before_the_resume(tmp_path, capsys):
    """Seen on E3's resume: "best 0.803 (epoch ?)", the best being an epoch of the first run."""
    from mgc.run.train import LOG_COLUMNS, TRAIN_LOG, logged_best_epoch

    run = tmp_path / "seed_0"
    run.mkdir()
    rows = [(1, 0.42), (2, 0.80), (3, 0.75), (4, 0.80)]  # equals: the first is the best
    (run / TRAIN_LOG).write_text(
        ",".join(LOG_COLUMNS)
        + "\n"
        + "".join(
            ",".join(str(e) if c == "epoch" else str(f) for c in LOG_COLUMNS) + "\n"
            for e, f in rows
        )
    )
    assert logged_best_epoch(run) == 2 and logged_best_epoch(tmp_path / "none") is None
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / TRAIN_LOG).write_text("epoch,val_macro_f1\n1,\n2,0.5\n3,\n")
    assert logged_best_epoch(blank) == 2  # an epoch without the metric is skipped, no crash
    progress = SeedProgress({0: 4}, max_epochs=60, best_epochs={0: logged_best_epoch(run)})
    progress.update({"seed": 0, "started": True})
    progress.update({"seed": 0, "epoch": 5, "val_macro_f1": 0.79, "best": 0.80})
    progress.close()
    assert "val macro-F1 0.790, best 0.800 (epoch 2)" in capsys.readouterr().err


def test_a_queued_seeds_time_left_counts_from_its_start(capsys):
    """Seen on a row: the third seed, queued for an hour behind two others, showed 27 hours
    left after its first epochs, its wait counted as its pace."""
    progress = SeedProgress({0: 0, 1: 4}, max_epochs=60)
    for bar in progress.bars.values():  # both bars made an hour before their seeds start
        bar.start_t -= 3600
        bar.last_print_t -= 3600
    for seed in (0, 1):
        progress.update({"seed": seed, "started": True})
    bar0, bar1 = progress.bars[0], progress.bars[1]
    assert bar0.format_dict["elapsed"] < 60 and bar1.format_dict["elapsed"] < 60
    assert (bar0.n, bar1.n) == (0, 4)  # a resumed seed keeps its epochs through the restart
    progress.update({"seed": 1, "epoch": 5, "val_macro_f1": 0.5, "best": 0.5})
    assert bar1.n == 5
    # A seed retried after a lost node starts again: its bar keeps the epochs it shows.
    progress.update({"seed": 1, "started": True})
    assert bar1.n == 5
    progress.close()
    # Seen on E3's resume: the restart drew a resumed bar at 0/60 with a negative rate.
    err = capsys.readouterr().err
    assert not re.search(r"<-|-[\d.]+epoch/s", err), err


def test_progress_with_bars_turned_off():
    """TQDM_DISABLE=1 (read when tqdm is imported; set for a log file, and by the cluster tests)
    gives bars without tqdm's state: a seed's start and epochs still go through."""
    script = """
from mgc.run.seeds import SeedProgress
progress = SeedProgress({0: 0, 1: 3}, max_epochs=60)
assert all(bar.disable for bar in progress.bars.values())
for seed in (0, 1):
    progress.update({"seed": seed, "started": True})
progress.update({"seed": 1, "epoch": 4, "val_macro_f1": 0.5, "best": 0.5})
progress.done(1, {"epochs_run": 4, "best_epoch": 4, "test": {"track_macro_f1": 0.5}})
progress.close()
print("ok")
"""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@pytest.mark.slow
def test_seeds_never_outnumber_the_cpus(ray_local, tmp_path: Path, monkeypatch):
    """Three seeds on Ray's 2 CPUs, each reporting every epoch as `train_seed` does: never more
    than two run at once, and their epochs reach the driver's progress."""
    from mgc.run import seeds

    marks = tmp_path / "marks"
    marks.mkdir()

    def busy_seed(cfg, seed, run_dir, sink, start):
        import time

        (marks / str(seed)).write_text("running")
        for epoch in range(1, 6):
            time.sleep(0.3)
            running = sum(m.read_text() == "running" for m in marks.iterdir())
            sink.add.remote({"seed": seed, "epoch": epoch, "val_macro_f1": running, "best": 0})
        (marks / str(seed)).write_text("done")
        return {"epochs_run": 5, "best_epoch": 5, "test": {"track_macro_f1": 0.5}}

    cfg = load_config(None, ["sweep.resources.cpus_per_trial=1", "train.epochs=5"])
    dirs = {s: tmp_path / f"seed_{s}" for s in (0, 1, 2)}
    seen = []
    monkeypatch.setattr(SeedProgress, "epoch", lambda self, item: seen.append(item))
    results = seeds.run_seeds({s: cfg for s in dirs}, dirs, {s: 0 for s in dirs}, busy_seed)
    assert sorted(results) == [0, 1, 2]
    assert max(i["val_macro_f1"] for i in seen) <= 2
    # Each seed's epochs in order (the very last may come after its seed has ended).
    for s in (0, 1, 2):
        epochs = [i["epoch"] for i in seen if i["seed"] == s]
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 4


def test_a_refit_seed_trains_again_on_train_and_validation_for_its_best_epoch_count(
    synth_dataset: Path, tmp_path: Path
):
    """sweep.final.refit: the seed's first fit (select/) says when; the refit trains a fresh
    model on train + validation for that many epochs with the same schedule, is tested, and
    its metrics.json keeps the first fit's convergence and held-out validation scores. Run
    again, neither fit trains anything."""
    from mgc.data.prepare import prepare
    from mgc.run.train import Parallel, load_data, logged_epochs

    cfg = load_config(
        None,
        [
            f"data.root={synth_dataset}",
            f"cache.dir={tmp_path / 'cache'}",
            "chunks.window_s=1.0",
            "model.name=cnn4",
            "model.width=8",
            "train.epochs=5",
            "train.early_stopping_patience=2",
            "train.threads=1",
            "train.amp=off",
            "sweep.final.refit=true",
        ],
    )
    prepare(cfg, use_ray=False)
    run = tmp_path / "seed_0"
    metrics = refit_seed(cfg, 0, run)
    first = json.loads((run / SELECT / "metrics.json").read_text())
    epochs = first["best_epoch"]
    assert metrics["refit"]["epochs"] == epochs and logged_epochs(run) == epochs
    assert metrics["best_epoch"] == epochs and metrics["epochs_run"] == first["epochs_run"]
    assert metrics["stopped_early"] == first["stopped_early"]
    assert metrics["valid"] == first["valid"]  # held out, unlike the refit's own
    assert metrics["select"]["test"] == first["test"] and "test" in metrics
    assert json.loads((run / "metrics.json").read_text())["refit"]["fit_on"] == "train+valid"
    assert (run / "bundle").is_dir() and not (run / "checkpoints" / "best.pt").exists()
    refit_cfg = load_config(run / "config.yaml")
    assert refit_cfg.train.include_valid and refit_cfg.train.stop_epoch == epochs
    assert refit_cfg.train.epochs == cfg.train.epochs  # the same schedule, cut at the epoch
    data, train_set, valid_set = load_data(refit_cfg, None, tmp_path / "look", Parallel())
    _, alone, _ = load_data(cfg, data, tmp_path / "look", Parallel())
    assert len(train_set) == len(alone) + len(valid_set)
    logs = {p: p.read_text() for p in (run / "train_log.csv", run / SELECT / "train_log.csv")}
    again = refit_seed(cfg, 0, run)
    assert again["test"] == metrics["test"]
    assert {p: p.read_text() for p in logs} == logs  # nothing trained twice
