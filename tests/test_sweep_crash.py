"""A sweep stopped at every stage comes back with --resume: Ctrl-C and SIGTERM say how to go on,
kill -9 of the driver mid-trial or mid-final-seeds loses at most the epoch it was in, the Optuna
searcher keeps its history, and a sweep killed during its final seeds does not search again.

Each sweep runs as its own process (its own local Ray), stopped by a real signal once the files
show it reached the stage; nothing here is timed beyond generous waits."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import tone, write_audio
from signals import default_sigint

REPO = Path(__file__).resolve().parents[1]
NUM_SAMPLES = 3
EPOCHS = 3

pytestmark = pytest.mark.slow


def sweep_args(root: Path, tmp: Path) -> list[str]:
    return [
        str(REPO / "ablations" / "e0.yaml"),
        f"data.root={root}",
        f"cache.dir={tmp / 'cache'}",
        "chunks.window_s=1.0",
        "model.width=8",
        f"train.epochs={EPOCHS}",
        "train.windows_per_track=0",
        f"sweep.final.epochs={EPOCHS}",
        "sweep.final.windows_per_track=0",
        "sweep.final.early_stopping_patience=0",
        f"sweep.num_samples={NUM_SAMPLES}",
        "sweep.max_concurrent=1",
        f"sweep.grace_period={EPOCHS}",  # ASHA stops nothing: every trial runs every epoch
        "sweep.final_seeds=[0, 1]",
        "sweep.num_cpus=2",
        f"sweep.results_dir={tmp / 'results'}",
        f"sweep.storage_path={tmp / 'ray_results'}",
        "--no-wandb",
    ]


def start(args: list[str], cwd: Path, resume: bool = False) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "WANDB"))}
    return subprocess.Popen(
        [sys.executable, "-m", "mgc.sweep", *args, *(["--resume"] if resume else [])],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: Ray's processes go with it at the end
        preexec_fn=default_sigint,
    )


def wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 600
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"sweep ended (rc {proc.returncode}) before {what}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            stop_group(proc)
            pytest.fail(f"no {what} within 600 s")
        time.sleep(0.1)


def stop_group(proc: subprocess.Popen) -> None:
    """What is left of a killed driver's process group (its local Ray) goes too, as in a crash."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def kill_driver(proc: subprocess.Popen) -> None:
    proc.kill()  # kill -9 of the driver alone
    proc.wait()
    time.sleep(1)
    stop_group(proc)


def finish(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "WANDB"))}
    done = subprocess.run(
        [sys.executable, "-m", "mgc.sweep", *args, "--resume"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def interrupt(proc: subprocess.Popen, sig: signal.Signals) -> str:
    """Send `sig` to the driver; it must stop by itself with status 130 and say how to go on."""
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        pytest.fail(f"{sig.name}: the sweep did not stop within 120 s")
    stop_group(proc)
    assert proc.returncode == 130, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "--resume" in last and "Traceback" not in err.split("continue with")[-1], last
    return last


def trial_dirs(tmp: Path) -> list[Path]:
    return sorted((tmp / "ray_results" / "mgc-E0").glob("_trial_*"))


def checkpoints(tmp: Path) -> set[str]:
    return {f"{d.name}/{c.name}" for d in trial_dirs(tmp) for c in d.glob("checkpoint_*")}


def any_checkpoint(tmp: Path) -> bool:
    return any(d.glob("checkpoint_*") for d in trial_dirs(tmp))


def log_epochs(path: Path) -> list[int]:
    with open(path, newline="") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def check_finished_sweep(tmp: Path) -> dict:
    """The same shape as an uninterrupted sweep: every trial to the end, once, with its whole log;
    Optuna's study holds every trial; the final seeds and the tables are there."""
    summary = json.loads((tmp / "results" / "E0" / "summary.json").read_text())
    assert summary["n_trials"] == NUM_SAMPLES
    assert [t["epochs"] for t in summary["trials"]] == [EPOCHS] * NUM_SAMPLES
    assert not any("error" in t for t in summary["trials"])
    configs = {
        (t["train.lr"], t["train.batch_size"], t["model.dropout"]) for t in summary["trials"]
    }
    assert len(configs) == NUM_SAMPLES, "a resumed searcher proposed a configuration again"
    dirs = trial_dirs(tmp)
    assert len(dirs) == NUM_SAMPLES
    for d in dirs:
        assert log_epochs(d / "run" / "train_log.csv") == list(range(1, EPOCHS + 1)), d.name
        assert not (d / "run" / "checkpoints").exists()  # the working copy went with the trial
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch()
    searcher.restore_from_dir(str(tmp / "ray_results" / "mgc-E0"))
    assert len(searcher._ot_study.trials) == NUM_SAMPLES
    assert summary["seeds"] == [0, 1]
    for seed in (0, 1):
        seed_dir = tmp / "results" / "E0" / f"seed_{seed}"
        assert log_epochs(seed_dir / "train_log.csv") == list(range(1, EPOCHS + 1))
        assert (seed_dir / "metrics.json").is_file()
    assert not list((tmp / "results" / "E0").glob("seed_*.old-*"))
    assert (tmp / "results" / "table.md").is_file()
    return summary


def test_sigint_then_kill_9_mid_trial_resume(synth_dataset: Path, tmp_path: Path):
    args = sweep_args(synth_dataset, tmp_path)
    proc = start(args, tmp_path)
    wait_for("a trial's first checkpoint", lambda: any_checkpoint(tmp_path), proc)
    interrupt(proc, signal.SIGINT)
    assert not (tmp_path / "results" / "E0" / "summary.json").exists()  # no half-search table

    before = checkpoints(tmp_path)
    proc = start(args, tmp_path, resume=True)
    wait_for("a checkpoint made after the resume", lambda: checkpoints(tmp_path) - before, proc)
    kill_driver(proc)  # mid-trial: the search has trials to go
    assert not (tmp_path / "results" / "E0" / "summary.json").exists()

    finish(args, tmp_path)
    summary = check_finished_sweep(tmp_path)
    # Wall time counts every part: the interrupted ones and the one that finished.
    spent = json.loads((tmp_path / "results" / "E0" / "mgc_sweep_seconds.json").read_text())
    assert len(spent["parts"]) == 3
    assert summary["sweep_seconds"] == pytest.approx(spent["seconds"], rel=0.05)


def test_sigterm_then_kill_9_mid_final_seeds_does_not_search_again(
    synth_dataset: Path, tmp_path: Path
):
    args = sweep_args(synth_dataset, tmp_path)
    proc = start(args, tmp_path)
    wait_for("a trial's first checkpoint", lambda: any_checkpoint(tmp_path), proc)
    interrupt(proc, signal.SIGTERM)

    proc = start(args, tmp_path, resume=True)
    seed_log = tmp_path / "results" / "E0" / "seed_0" / "train_log.csv"
    wait_for("the first final-seed epoch", seed_log.exists, proc)
    kill_driver(proc)
    searched = {d.name: files(d) for d in trial_dirs(tmp_path)}
    assert len(searched) == NUM_SAMPLES

    finish(args, tmp_path)
    # The search was not run again: no trial was added, rerun or touched.
    assert {d.name: files(d) for d in trial_dirs(tmp_path)} == searched
    check_finished_sweep(tmp_path)


def test_sigint_while_preparing_and_sigterm_in_final_seeds(tmp_path: Path):
    """The two other stages: stopped while the features are computed (Ray Data), and while the
    final seeds train; each time status 130 and the --resume line, then it finishes."""
    root = tmp_path / "ds"
    for g, base in (("blues", 220.0), ("metal", 880.0), ("pop", 3520.0)):
        for i in range(16):
            write_audio(root / g / f"{g}.{i:05d}.wav", tone(base * (1 + 0.01 * i), 20.0, seed=i))
    args = sweep_args(root, tmp_path)
    proc = start(args, tmp_path)
    wait_for("a first cached array", lambda: any((tmp_path / "cache").rglob("*.npy")), proc)
    interrupt(proc, signal.SIGINT)
    assert not trial_dirs(tmp_path)  # stopped before the search began

    proc = start(args, tmp_path, resume=True)
    seed_log = tmp_path / "results" / "E0" / "seed_0" / "train_log.csv"
    wait_for("the first final-seed epoch", seed_log.exists, proc)
    interrupt(proc, signal.SIGTERM)
    assert not (tmp_path / "results" / "E0" / "summary.json").exists()

    finish(args, tmp_path)
    check_finished_sweep(tmp_path)
