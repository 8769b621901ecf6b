import csv
import gc
import json
import signal
from pathlib import Path

import pytest

from mgc.core.config import ConfigError, load_config, with_params
from mgc.data.prepare import prepare
from mgc.report.table import COLUMNS
from mgc.run.sweep import check_space, read_search_space
from mgc.sweep import main, sweep

REPO = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def smoke_overrides(root: Path, tmp_path: Path) -> list[str]:
    return [
        f"data.root={root}",
        f"cache.dir={tmp_path / 'cache'}",
        "chunks.window_s=1.0",
        "model.width=8",
        "train.epochs=1",
        "sweep.final.epochs=1",  # the final seeds' own budget (e0.yaml's is hours)
        "sweep.num_samples=2",
        "sweep.final_seeds=[0, 1]",
        f"sweep.results_dir={tmp_path / 'results'}",
        f"sweep.storage_path={tmp_path / 'ray_results'}",
        "sweep.wandb.mode=offline",
    ]


@pytest.mark.slow
def test_sweep_end_to_end_fills_the_table(
    ray_local, synth_dataset: Path, tmp_path: Path, monkeypatch, caplog
):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    # A machine far busier than its CPUs when the step is timed: the cost line says so.
    monkeypatch.setattr("mgc.run.budget.load_average", lambda: 99.0)
    overrides = smoke_overrides(synth_dataset, tmp_path)
    # Features made beforehand: then neither the sweep's (warm) prepare nor any trial may write
    # to the shared cache or the dataset; trials write only in their own trial folders.
    prepare(load_config(REPO / "ablations" / "e0.yaml", overrides), use_ray=False)
    shared = [tmp_path / "cache", synth_dataset]
    before = [snapshot(folder) for folder in shared]
    ctrl_c = signal.getsignal(signal.SIGINT)
    with caplog.at_level("INFO", logger="mgc.run.sweep"):
        result = sweep(REPO / "ablations" / "e0.yaml", overrides)
    cost_lines = [r.getMessage() for r in caplog.records if r.name == "mgc.run.sweep"]
    assert any(m.startswith("budget: search 2 trials") for m in cost_lines)
    assert any("load average 99.0" in m and "overestimate" in m for m in cost_lines)
    assert [snapshot(folder) for folder in shared] == before
    # Tune's own Ctrl-C handler is gone once the search has ended: one Ctrl-C stops the seeds.
    assert signal.getsignal(signal.SIGINT) is ctrl_c
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "ds",
        "ray_results",
        "results",
    ]
    # Ray's W&B callback was cleaned up while Ray was up, not left to fail at interpreter exit.
    from ray.air.integrations.wandb import WandbLoggerCallback

    # (type(), not isinstance: gc also holds weak proxies, which isinstance would dereference)
    assert not [o for o in gc.get_objects() if issubclass(type(o), WandbLoggerCallback)]
    summary = result.summary
    assert summary["n_trials"] == 2 and len(summary["trials"]) == 2
    # The budget and what it cost add up with the trial records.
    assert summary["trial_epochs_run"] == sum(t["epochs"] for t in summary["trials"]) == 2
    assert summary["budget"]["grid_trial_epochs"] == 2 and summary["failed_trials"] == 0
    assert summary["cpu_hours"] == pytest.approx(summary["sweep_seconds"] * 2 / 3600)
    assert "cpu" in summary["machine"]
    assert set(result.best_params) == {"train.lr", "train.batch_size", "model.dropout"}

    results = tmp_path / "results"
    for name in ("table.md", "table.csv", "table.tex"):
        assert (results / name).is_file()
    with open(results / "table.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == COLUMNS and len(rows) == 1
    row = rows[0]
    assert (
        row["Experiment"] == "E0"
        and row["Model"] == "cnn4"
        and row["Split"].startswith("stratified")
    )

    # The table's numbers are the mean ± std of the final seed runs' own metrics.
    seeds = [
        json.loads((results / "E0" / f"seed_{s}" / "metrics.json").read_text()) for s in (0, 1)
    ]
    accs = [m["test"]["track_accuracy"] for m in seeds]
    mean = sum(accs) / 2
    std = (sum((a - mean) ** 2 for a in accs) / 1) ** 0.5
    assert row["Test Acc"] == f"{100 * mean:.1f} ± {100 * std:.1f}"
    f1 = sum(m["test"]["track_macro_f1"] for m in seeds) / 2
    assert row["Macro-F1"].startswith(f"{100 * f1:.1f} ±")
    assert row["Params"] == f"{seeds[0]['params']:,}"
    assert row["Trial-epochs run / grid"] == "2 / 2" and row["Wall h (CPU h)"] != "–"
    assert row["Acc 95% CI"].startswith("[") and row["ΔF1 [95% CI] vs"] == "–"
    for name in (
        "best_config.yaml",
        "seeds.csv",
        "summary.json",
        "confusion_matrix_test.png",
        "train_curves.png",
    ):
        assert (results / "E0" / name).is_file(), name
    # W&B ran offline, without a key: one run folder per trial plus the table run.
    # They are in the sweep's storage itself, not in Ray's temporary staging folders, so none
    # is lost when a logging actor finishes after its trial's last sync.
    offline_runs = list((tmp_path / "ray_results" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 3
    assert "\\begin{tabular}" in (results / "table.tex").read_text()


def test_bad_config_fails_before_any_trial(tmp_path: Path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("train.lrr: {loguniform: [1.0e-4, 1.0e-3]}\n")
    with pytest.raises(ConfigError, match="did you mean train.lr"):
        check_space(load_config(), read_search_space(space))
    space.write_text("train.batch_size: {uniform: [8, 64]}\n")
    with pytest.raises(ConfigError, match="train.batch_size: expected an integer"):
        check_space(load_config(), read_search_space(space))
    space.write_text("train.lr: {normal: [0, 1]}\n")
    with pytest.raises(ConfigError, match="expected one of"):
        read_search_space(space)
    # From the command line: one line, exit 2, no Ray started.
    assert main([str(REPO / "ablations" / "e0.yaml"), "train.epochz=3"]) == 2
    assert "did you mean train.epochs" in capsys.readouterr().err


def test_every_ablation_and_search_space_is_valid(synth_dataset: Path):
    from mgc.run.sweep import load_sweep

    names = []
    for n in range(6):
        cfg, space = load_sweep(REPO / "ablations" / f"e{n}.yaml", [f"data.root={synth_dataset}"])
        assert space
        names.append(cfg.experiment.name)
        # Same split and evaluation for every row.
        assert cfg.data.split == "stratified" and cfg.chunks.window_s == 3.0
    assert names == ["E0", "E1", "E2", "E3", "E4", "E5"]


@pytest.mark.slow
def test_data_parallel_trial_trains_through_ray_train(
    ray_local, synth_dataset: Path, tmp_path: Path
):
    # workers_per_trial > 1 runs each trial as a TorchTrainer; on CPUs it uses gloo, which
    # exercises the same path a multi-GPU trial takes (the DDP wrap, sharded batches, reports).
    overrides = smoke_overrides(synth_dataset, tmp_path) + [
        "sweep.num_samples=1",
        "sweep.resources.workers_per_trial=2",
        "sweep.resources.cpus_per_trial=0.5",
        "sweep.final_seeds=[0]",
        "sweep.wandb.enabled=off",
    ]
    result = sweep(REPO / "ablations" / "e0.yaml", overrides)
    (trial,) = result.summary["trials"]
    assert trial["epochs"] == 1 and 0.0 <= trial["val_macro_f1"] <= 1.0
    # The trial ran as a Ray Train run (its own storage under the trial) that kept rank 0's
    # checkpoint.
    (trial_dir,) = (tmp_path / "ray_results" / "mgc-E0").glob("_ddp_trial_*")
    assert list((trial_dir / "train").rglob("checkpoint_*/last.pt"))
    assert (tmp_path / "results" / "E0" / "seed_0" / "metrics.json").is_file()
    # Tune killed the trial, and with it Ray Train's controller: the worker group's placement
    # group is released all the same (by the driver), or the next data-parallel trial would wait
    # for its CPUs for ever.
    import time

    deadline = time.monotonic() + 30
    while ray_local.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_local.available_resources().get("CPU", 0) == 2


# A worker-process hook that makes `mgc.run.train.fit` fail on demand, driven by flag files, so the
# tests can break trials inside Ray's own worker processes.
FLAKY_HOOK = r"""
import os
from pathlib import Path


def install():
    import mgc.run.train

    real_fit = mgc.run.train.fit
    flags = Path(os.environ["MGC_TEST_FLAGS"])

    def flaky_fit(cfg, report=None, **kwargs):
        if (flags / "fail-always").exists():
            raise RuntimeError("injected failure")
        if report is None or kwargs.get("final_eval", True):  # a final seed, not a trial
            return real_fit(cfg, report=report, **kwargs)

        def logged_report(metrics, ckpt_dir):
            with open(flags / "reports.log", "a") as fh:  # which trial (by lr) ran which epoch
                fh.write(f"{cfg.train.lr!r} {metrics['epoch']}\n")
            report(metrics, ckpt_dir)  # Tune may end the trial inside its last report
            try:
                (flags / "fail-after-first-epoch").unlink()  # the first trial here fails, once
            except FileNotFoundError:
                return
            (flags / "failed").write_text(str(metrics["epoch"]))
            raise RuntimeError("injected failure after an epoch")

        return real_fit(cfg, report=logged_report, **kwargs)

    mgc.run.train.fit = flaky_fit
"""


@pytest.fixture(scope="module")
def flaky_ray(tmp_path_factory):
    """A Ray of its own whose workers run FLAKY_HOOK; the session's Ray is restarted after."""
    import ray

    compile(FLAKY_HOOK, "mgc_flaky_hook.py", "exec")  # a broken hook would hang Ray's workers
    hook_dir = tmp_path_factory.mktemp("hook")
    (hook_dir / "mgc_flaky_hook.py").write_text(FLAKY_HOOK)
    flags = tmp_path_factory.mktemp("flags")
    had_ray = ray.is_initialized()
    ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": str(hook_dir), "MGC_TEST_FLAGS": str(flags)},
            "worker_process_setup_hook": "mgc_flaky_hook.install",
        },
    )
    yield flags
    ray.shutdown()
    if had_ray:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


@pytest.mark.slow
def test_failed_trial_is_retried_from_its_checkpoint(
    flaky_ray: Path, synth_dataset: Path, tmp_path: Path
):
    (flaky_ray / "fail-after-first-epoch").touch()
    overrides = smoke_overrides(synth_dataset, tmp_path) + [
        "train.epochs=2",
        "sweep.final.epochs=2",
        "sweep.grace_period=2",  # ASHA stops nothing: both trials must reach epoch 2
        "sweep.max_failures=1",
        "sweep.final_seeds=[0]",
        "sweep.wandb.enabled=off",
    ]
    result = sweep(REPO / "ablations" / "e0.yaml", overrides)
    # One trial really failed after its first epoch; its retry finished both epochs.
    assert (flaky_ray / "failed").read_text() == "1"
    assert not (flaky_ray / "fail-after-first-epoch").exists()
    trials = result.summary["trials"]
    assert len(trials) == 2 and all(t["epochs"] == 2 for t in trials)
    # The retry continued from the checkpoint: every trial ran epoch 1 once, then epoch 2.
    runs: dict[str, list[str]] = {}
    for line in (flaky_ray / "reports.log").read_text().splitlines():
        lr, epoch = line.split()
        runs.setdefault(lr, []).append(epoch)
    assert sorted(runs.values()) == [["1", "2"], ["1", "2"]], runs


@pytest.mark.slow
def test_a_trial_that_keeps_failing_is_recorded_and_the_sweep_goes_on(
    flaky_ray: Path, synth_dataset: Path, tmp_path: Path
):
    (flaky_ray / "fail-after-first-epoch").touch()
    overrides = smoke_overrides(synth_dataset, tmp_path) + [
        "train.epochs=2",
        "sweep.final.epochs=2",
        "sweep.max_failures=0",  # no retry: the failure stands
        "sweep.final_seeds=[0]",
        "sweep.wandb.enabled=off",
    ]
    result = sweep(REPO / "ablations" / "e0.yaml", overrides)
    failed = [t for t in result.summary["trials"] if "error" in t]
    assert len(result.summary["trials"]) == 2 and len(failed) == 1
    assert failed[0]["error"].endswith("injected failure after an epoch")
    assert result.summary["failed_trials"] == 1
    # The failed trial's epoch counts in the cost; the table says a trial failed.
    assert result.summary["trial_epochs_run"] == sum(t["epochs"] for t in result.summary["trials"])
    table = (tmp_path / "results" / "table.md").read_text()
    assert "(1 failed)" in table


@pytest.mark.slow
def test_interrupted_sweep_resumes(flaky_ray: Path, synth_dataset: Path, tmp_path: Path):
    overrides = smoke_overrides(synth_dataset, tmp_path) + [
        "sweep.max_failures=0",
        "sweep.final_seeds=[0]",
        "sweep.wandb.enabled=off",
    ]
    (flaky_ray / "fail-always").touch()
    with pytest.raises(RuntimeError, match="every trial failed"):
        sweep(REPO / "ablations" / "e0.yaml", overrides)
    # No row from a failed search: only its clock is kept, for the time of all its parts.
    assert [p.name for p in (tmp_path / "results" / "E0").iterdir()] == ["mgc_sweep_seconds.json"]
    (flaky_ray / "fail-always").unlink()
    # The same command with --resume picks the experiment up and reruns what did not finish.
    assert main([str(REPO / "ablations" / "e0.yaml"), *overrides, "--resume"]) == 0
    summary = json.loads((tmp_path / "results" / "E0" / "summary.json").read_text())
    assert summary["n_trials"] == 2 and all(t["epochs"] == 1 for t in summary["trials"])
    # The time of the failed first part counts too, not only the part after --resume.
    spent = json.loads((tmp_path / "results" / "E0" / "mgc_sweep_seconds.json").read_text())
    assert len(spent["parts"]) == 2
    assert summary["sweep_seconds"] == pytest.approx(spent["seconds"], rel=0.05)
    assert summary["sweep_seconds"] > spent["parts"][0]["seconds"]
    assert (tmp_path / "results" / "table.csv").is_file()


def test_cost_line_warns_when_the_step_was_timed_on_a_busy_machine():
    from mgc.run.budget import busy_note

    assert busy_note(load=1.9, cpus=2) is None
    note = busy_note(load=8.5, cpus=2)
    assert "load average 8.5 on 2 CPUs" in note and "overestimate" in note


def test_asha_trial_epochs_and_the_budget_line():
    from mgc.run.budget import Budget, asha_trial_epochs

    # 9 trials, rungs at 1 and 3 of 9 epochs, rf 3: 9·1 + 3·2 + 1·6 = 21 (all to the end: 81).
    assert asha_trial_epochs(9, 9, 1, 3) == pytest.approx(21.0)
    assert asha_trial_epochs(4, 2, 3, 3) == pytest.approx(8.0)  # grace beyond max_t: no rung
    cfg = load_config(
        None,
        [
            "sweep.num_samples=9",
            "train.epochs=9",
            "sweep.grace_period=1",
            "train.windows_per_track=4",
        ],
    )
    budget = Budget.of(cfg, train_frames=[1293] * 10, valid_frames=[1293] * 2)
    assert budget.train_samples_per_epoch == 40 and budget.valid_samples == 20
    assert budget.grid_trial_epochs == 81 and budget.expected_trial_epochs == pytest.approx(21.0)
    line = budget.describe(samples_per_s=10.0, slots=2)
    assert "~21 trial-epochs expected (all to the end: 81)" in line
    assert "9 trials x up to 9 epochs of 40 windows (4 per track)" in line
    # No sweep.final: the seeds train as the trials did. 21 trial-epochs two at a time, then 3
    # seeds x 9 epochs two at a time; 4.67 s an epoch.
    assert "3 seeds x up to 9 epochs of 40 windows (4 per track)" in line
    assert "~0.0 h with 2 trial(s), then 2 seed(s) at a time" in line
    # The full budget for the seeds: every window (10 tracks x 2 windows of 1 s... 3 s here),
    # at most 40 epochs, early stopping after 5; the estimate counts every epoch.
    full = Budget.of(
        load_config(
            None,
            [
                "sweep.num_samples=0",
                "train.windows_per_track=4",
                "sweep.final.epochs=40",
                "sweep.final.windows_per_track=0",
                "sweep.final.early_stopping_patience=5",
            ],
        ),
        train_frames=[1293] * 10,
        valid_frames=[1293] * 2,
    )
    assert (full.final_max_epochs, full.final_samples_per_epoch, full.final_patience) == (
        40,
        100,
        5,
    )
    # 3 seeds x 40 epochs of (100 + 20/3) / 0.2 = 533 s, two seeds at a time: 8.9 h.
    line = full.describe(samples_per_s=0.2, slots=2)
    assert line.startswith("budget: no search; 3 seeds x up to 40 epochs of 100 windows (all")
    assert "early stop after 5 epochs without a better val macro-F1" in line
    assert "trial" not in line and line.endswith("~8.9 h with 2 seed(s) at a time")
    # A frozen trunk (a probe) computes each window's features in a seed's first epoch and
    # trains its head on them after: 3 seeds x 1 epoch of 533 s, two at a time.
    probe_cfg = load_config(
        None,
        [
            "sweep.num_samples=0",
            "sweep.final.epochs=40",
            "sweep.final.windows_per_track=0",
            "model.name=musicnn",
            "model.freeze=true",
        ],
    )
    probe = Budget.of(probe_cfg, train_frames=[1293] * 10, valid_frames=[1293] * 2)
    line = probe.describe(samples_per_s=0.2, slots=2)
    assert "the first only: the frozen trunk's outputs are kept" in line
    assert line.endswith("~0.2 h with 2 seed(s) at a time")
    augmented = with_params(probe_cfg, {"train.specaugment.enabled": True})
    assert not Budget.of(augmented, [1293] * 10, [1293] * 2).frozen_trunk  # new windows each epoch


def test_time_spent_adds_up_across_interruptions(tmp_path: Path):
    from mgc.run.budget import seconds_spent, time_spent

    with pytest.raises(KeyboardInterrupt), time_spent(tmp_path):
        raise KeyboardInterrupt  # an interrupted first part still counts
    first = seconds_spent(tmp_path)
    with time_spent(tmp_path) as elapsed:
        assert elapsed() >= first
    record = json.loads((tmp_path / "mgc_sweep_seconds.json").read_text())
    assert len(record["parts"]) == 2
    assert record["seconds"] == pytest.approx(sum(p["seconds"] for p in record["parts"]))


def test_each_part_counts_the_cpus_it_held(tmp_path: Path):
    """Seen on E4: a search on 2 CPUs, then seeds resumed with sweep.num_cpus=1, and the table
    counted every hour at the last part's one CPU."""
    from mgc.run.budget import SPENT_FILE, time_spent

    record = {
        "seconds": 7200.0,
        "parts": [
            {"started": 0.0, "seconds": 3600.0, "cpus": 2.0, "gpus": 0.0},
            {"started": 4000.0, "seconds": 3600.0},  # made before parts said what they held
        ],
    }
    (tmp_path / SPENT_FILE).write_text(json.dumps(record))
    with time_spent(tmp_path) as clock:
        clock.held(1.0)
        # 1 h on 2 CPUs, and the unrecorded hour at this part's 1 CPU
        assert clock.hours("cpus") == pytest.approx(3.0, abs=0.01)
        assert clock.hours("gpus") == 0.0 and clock() >= 7200.0
    parts = json.loads((tmp_path / SPENT_FILE).read_text())["parts"]
    assert parts[-1]["cpus"] == 1.0 and "cpus" not in parts[1]


def test_time_spent_is_on_disk_while_the_block_runs(tmp_path: Path):
    """A kill -9 runs no `finally`: the running part must already be written."""
    import time

    from mgc.run.budget import SPENT_FILE, time_spent

    with time_spent(tmp_path, every=0.05):
        record = json.loads((tmp_path / SPENT_FILE).read_text())
        assert len(record["parts"]) == 1  # written as the part starts
        deadline = time.monotonic() + 60
        while json.loads((tmp_path / SPENT_FILE).read_text())["seconds"] == 0.0:
            assert time.monotonic() < deadline, "the running part was never updated"
            time.sleep(0.05)


def test_missing_data_is_said_before_ray_starts(tmp_path: Path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mgc.sweep",
            str(REPO / "ablations" / "e0.yaml"),
            f"data.root={tmp_path / 'nowhere'}",
            "data.download=false",  # a networked machine would fetch 1.2 GB here
            f"sweep.storage_path={tmp_path / 'rr'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"{tmp_path / 'nowhere'}: dataset folder not found" in line
    assert "python -m mgc.data gtzan" in line and "MGC_DATA_ROOT" in line
    assert "Ray" not in proc.stderr + proc.stdout and not (tmp_path / "rr").exists()


@pytest.mark.parametrize(
    "line, message",
    [
        ("train.lr: {loguniform: [1.0e-3, 1.0e-4]}", "low 0.001 is not below high 0.0001"),
        ("train.lr: {loguniform: [0, 1.0e-3]}", "loguniform needs low > 0"),
        ("model.dropout: {uniform: [0.5, 0.5]}", "low 0.5 is not below high 0.5"),
        ("train.batch_size: {randint: [64, 16]}", "low 64 is not below high 16"),
        ("model.dropout: {uniform: [0.1]}", "uniform takes [low, high] numbers"),
        ("model.dropout: {uniform: [low, 0.5]}", "uniform takes [low, high] numbers"),
        ("train.batch_size: {choice: []}", "choice needs a list of arguments"),
        ("train.lr: {gaussian: [0, 1]}", "expected one of"),
    ],
)
def test_bad_search_space_is_one_line_before_ray(
    line: str, message: str, synth_dataset: Path, tmp_path: Path, capsys
):
    space = tmp_path / "space.yaml"
    space.write_text(line + "\n")
    overrides = [f"data.root={synth_dataset}", f"sweep.search_space={space}"]
    overrides.append(f"sweep.storage_path={tmp_path / 'rr'}")
    assert main([str(REPO / "ablations" / "e0.yaml"), *overrides]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith(f"error: {space}: ") and message in err, err
    assert not (tmp_path / "rr").exists()


def test_missing_search_space_and_a_split_of_unknown_tracks_fail_before_ray(
    synth_dataset: Path, tmp_path: Path, capsys
):
    e0 = str(REPO / "ablations" / "e0.yaml")
    rr = f"sweep.storage_path={tmp_path / 'rr'}"
    missing = tmp_path / "nope.yaml"
    args = [e0, f"data.root={synth_dataset}", f"sweep.search_space={missing}", rr]
    assert main(args) == 2
    assert f"{missing}: search space file not found" in capsys.readouterr().err
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"parts": {"train": ["jazz/a"], "valid": ["jazz/b"], "test": []}}))
    assert main([e0, f"data.root={synth_dataset}", f"data.split={split}", rr]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "none of its 1 train tracks are in the dataset" in err
    assert not (tmp_path / "rr").exists()


def test_a_grid_budget_counts_one_fit_per_trial():
    from mgc.run.budget import Budget

    b = Budget.grid(n_trials=7, final_seeds=3, n_train=400, n_valid=90)
    assert (b.grid_trial_epochs, b.expected_trial_epochs, b.max_epochs) == (7, 7.0, 1)
    assert (b.final_seeds, b.train_samples_per_epoch, b.valid_samples) == (3, 400, 90)


def test_the_timed_step_uses_the_runs_own_training_pieces():
    from mgc.run.budget import time_training_step

    small = load_config(None, ["model.width=8", "train.batch_size=4"])
    assert 0 < time_training_step(small, threads=1) < float("inf")
    # A scikit-learn row has no training step to time.
    assert time_training_step(load_config(None, ["model.name=logreg"]), threads=1) == float("inf")


@pytest.mark.slow
def test_a_row_goes_on_from_its_committed_pieces(
    ray_local, synth_dataset: Path, tmp_path: Path, monkeypatch, capfd, caplog
):
    """A row begun on one machine and finished on another: a fresh clone holds what was
    committed (search.json, best_config.yaml, the finished seed's folder without checkpoints,
    a seed stopped half-way without its checkpoint) and no ray_results. --resume runs no
    search, leaves the finished seed alone, starts the stopped seed over and runs the missing
    one, with a progress bar per seed."""
    import logging
    import shutil

    monkeypatch.chdir(tmp_path)
    ablation = REPO / "ablations" / "e0.yaml"
    overrides = smoke_overrides(synth_dataset, tmp_path) + [
        "sweep.final_seeds=[0, 1, 2]",
        "sweep.final.epochs=2",
        "sweep.wandb.enabled=off",
    ]
    first = sweep(ablation, overrides)
    row = tmp_path / "results" / "E0"
    search = json.loads((row / "search.json").read_text())
    assert search["trials"] == first.summary["trials"] and search["n_trials"] == 2
    assert search["best_params"] == first.best_params

    # What a clone of the committed row holds (.gitignore keeps weights out of git).
    shutil.rmtree(tmp_path / "ray_results")
    for seed in (0, 1):
        shutil.rmtree(row / f"seed_{seed}" / "checkpoints")
        shutil.rmtree(row / f"seed_{seed}" / "bundle")
    (row / "seed_1" / "metrics.json").unlink()  # stopped after its first epoch elsewhere
    log_lines = (row / "seed_1" / "train_log.csv").read_text().splitlines()
    (row / "seed_1" / "train_log.csv").write_text("\n".join(log_lines[:2]) + "\n")
    shutil.rmtree(row / "seed_2")  # never begun
    for name in ("summary.json", "seeds.csv"):
        (row / name).unlink()
    finished = snapshot(row / "seed_0")

    def no_search(*args, **kwargs):
        raise AssertionError("the search ran again")

    monkeypatch.setattr("mgc.run.sweep.run_trials", no_search)
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="mgc"):
        again = sweep(ablation, overrides, resume=True)
    assert snapshot(row / "seed_0") == finished  # read, not run
    aside = list(row.glob("seed_1.old-*"))
    assert len(aside) == 1  # the stopped seed's folder, kept aside
    for seed in (1, 2):
        metrics = json.loads((row / f"seed_{seed}" / "metrics.json").read_text())
        assert metrics["seed"] == seed and metrics["epochs_run"] == 2
    assert again.summary["seeds"] == [0, 1, 2]
    assert again.summary["trials"] == first.summary["trials"]
    assert again.best_params == first.best_params
    logs = caplog.text
    assert "search: done earlier" in logs
    assert "seed 0: finished earlier" in logs
    assert "seed 1: stopped after epoch 1 with no checkpoint here: starts over" in logs
    assert f"(the old folder is kept as {aside[0]})" in logs  # the line says where it went
    # The final seeds show their progress: one bar per seed that runs, with its epochs and
    # validation macro-F1.
    err = capfd.readouterr().err
    assert "seed 1" in err and "seed 2" in err and "val macro-F1" in err
    assert "seed 0:" not in err.replace("seed 0: finished", "")

    # A check at twice the budget trains the very same configuration, with no search of its own.
    with caplog.at_level(logging.INFO, logger="mgc"):
        twice = sweep(
            ablation,
            [*overrides, "experiment.name=E0-2x", "sweep.reuse_search=E0", "sweep.final.epochs=4"],
        )
    assert twice.best_params == first.best_params
    assert (
        twice.summary["search_reused_from"] == "E0" and twice.summary["budget"]["num_samples"] == 0
    )
    assert "search: E0's" in caplog.text
    table = (tmp_path / "results" / "table.md").read_text()
    assert "E0's search" in table


def test_a_reused_search_must_exist(synth_dataset: Path, tmp_path: Path):
    from mgc.run.sweep import load_sweep

    overrides = [
        f"data.root={synth_dataset}",
        f"sweep.results_dir={tmp_path / 'results'}",
        "sweep.reuse_search=E9",
    ]
    with pytest.raises(ConfigError, match=r"sweep.reuse_search=E9: .*E9/search.json not found"):
        load_sweep(REPO / "ablations" / "e0.yaml", overrides)


def test_a_quick_look_is_small_and_kept_apart(synth_dataset: Path, tmp_path: Path):
    from mgc.report.table import row_line
    from mgc.run.sweep import load_sweep

    overrides = [
        f"data.root={synth_dataset}",
        f"sweep.results_dir={tmp_path / 'results'}",
        f"sweep.storage_path={tmp_path / 'ray_results'}",
    ]
    full, _ = load_sweep(REPO / "ablations" / "e0.yaml", overrides)
    quick, _ = load_sweep(REPO / "ablations" / "e0.yaml", [*overrides, "sweep.budget=quick"])
    # The row's default is its full budget; the switch makes it minutes.
    assert full.sweep.budget == "full" and full.sweep.final.epochs == 60
    assert (quick.sweep.num_samples, quick.train.epochs, quick.sweep.final.epochs) == (4, 2, 3)
    assert quick.sweep.final.windows_per_track == 2 and quick.sweep.final_seeds == [0, 1, 2]
    # Its row and its search live beside the full ones, never in them.
    assert Path(quick.sweep.results_dir) == tmp_path / "results" / "quick"
    assert Path(quick.sweep.storage_path) == tmp_path / "ray_results" / "quick"
    summary = {
        "experiment": "E0",
        "split": "stratified",
        "seeds": [0],
        "budget_name": "quick",
        "test_track_accuracy_mean": 0.5,
        "test_track_macro_f1_mean": 0.4,
    }
    assert row_line(summary).startswith("E0 (quick look, not for the table) (stratified split")


def test_a_quick_look_of_uri_storage_stays_in_the_bucket():
    """`sweep.budget=quick` with storage in an object store: its search goes under quick/ in the
    bucket, the URI's query (the S3-compatible server's address) still at the end."""
    from mgc.run.budget import quick_look

    uri = "s3://b/x?endpoint_override=http://h:1"
    quick = quick_look(load_config(None, [f"sweep.storage_path={uri}"]))
    assert quick.sweep.storage_path == "s3://b/x/quick?endpoint_override=http://h:1"
    local = quick_look(load_config(None, ["sweep.storage_path=/srv/rr"]))
    assert local.sweep.storage_path == "/srv/rr/quick"


def test_the_sweep_command_checks_its_input_before_heavy_imports():
    """A bad config or a missing dataset is said in well under two seconds: the sweep's command
    and its Tune wiring load neither torch, pandas, matplotlib nor Ray when imported."""
    import subprocess
    import sys

    code = (
        "import sys, mgc.sweep, mgc.run.sweep, mgc.run.seeds\n"
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'ray') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"
