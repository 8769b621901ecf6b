"""Tune's storage as a URI (sweep.storage_path=s3://…): where the experiment and each trial's
working folder go, and the trials' checkpoints pruned after the search through the storage's
pyarrow filesystem (a local disk, or an object store: pyarrow's in-memory mock here, moto's S3
in tests/test_cluster_live.py). A folder as storage is checked to behave as it always has."""

from __future__ import annotations

import csv
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
import pytest

from mgc.core.config import load_config
from mgc.run.sweep import (
    experiment_path,
    prune_trials,
    restore_run,
    trial_folder,
)
from mgc.run.tracking import wandb_dir

ENDPOINT = "?endpoint_override=http%3A%2F%2F127.0.0.1%3A9000&region=us-east-1"
TUNE_TRIAL_DIR = "/tmp/ray/session_x/artifacts/t/mgc-E0/working_dirs/_trial_ab12_00000_0"


def config(storage: str):
    return load_config(None, [f"sweep.storage_path={storage}", "experiment.name=E0"])


def test_experiment_path_of_a_folder_is_absolute_and_of_a_uri_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert experiment_path(config("rr")) == str(tmp_path / "rr" / "mgc-E0")
    assert experiment_path(config("~/rr")) == str(Path.home() / "rr" / "mgc-E0")
    uri = experiment_path(config(f"s3://mgc-test/ray_results{ENDPOINT}"))
    assert uri == f"s3://mgc-test/ray_results/mgc-E0{ENDPOINT}"
    # What Ray does with it (Tuner.restore, RunConfig.storage_path): the endpoint reaches the
    # filesystem and the path names the experiment in the bucket. No request is made here.
    fs, path = pafs.FileSystem.from_uri(uri)
    assert isinstance(fs, pafs.S3FileSystem) and path == "mgc-test/ray_results/mgc-E0"
    assert fs.region == "us-east-1"


def test_a_trial_works_in_shared_storage_or_on_its_node(tmp_path):
    # A folder: the trial's folder in it, which every node sees.
    local = trial_folder(config(str(tmp_path / "rr")), TUNE_TRIAL_DIR)
    assert local == tmp_path / "rr" / "mgc-E0" / "_trial_ab12_00000_0"
    # A URI: a folder on the trial's node, never Tune's staging folder (the driver's node syncs
    # that one to the bucket).
    scratch = trial_folder(config("s3://mgc-test/rr"), TUNE_TRIAL_DIR)
    assert scratch.name == "_trial_ab12_00000_0" and scratch.parent.name == "mgc-E0"
    assert scratch.is_relative_to(tempfile.gettempdir()) and "ray" not in scratch.parts


def test_wandb_stays_local_when_the_storage_is_a_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert wandb_dir(config("s3://mgc-test/rr")) == tmp_path
    assert wandb_dir(config("rr")) == tmp_path / "rr" and (tmp_path / "rr").is_dir()
    assert not (tmp_path / "s3:").exists()


class FakeCheckpoint:
    def __init__(self, folder: Path):
        self.folder = folder

    @contextmanager
    def as_directory(self):
        yield str(self.folder)


def test_a_trial_run_folder_comes_back_from_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "train_log.csv").write_text("epoch\n1\n2\n3\n")  # epochs after the checkpoint
    (run / "checkpoints" / "last.pt").write_bytes(b"epoch 3")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "last.pt").write_bytes(b"epoch 2")
    (ckpt / "train_log.csv").write_text("epoch\n1\n2\n")
    restore_run(run, FakeCheckpoint(ckpt))
    assert (run / "train_log.csv").read_text() == "epoch\n1\n2\n"
    assert (run / "checkpoints" / "last.pt").read_bytes() == b"epoch 2"
    restore_run(run, None)  # a start with no checkpoint: from an empty folder
    assert not run.exists()


def write(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    fs.create_dir(path.rpartition("/")[0])
    with fs.open_output_stream(path) as out:
        out.write(data)


def read(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as src:
        return src.read()


def files(fs: pafs.FileSystem, root: str) -> set[str]:
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return {f.path[len(root) + 1 :] for f in found if f.type == pafs.FileType.File}


@pytest.mark.parametrize("store", ["local", "mock"])
def test_pruning_leaves_each_trial_its_logs_and_no_checkpoint(tmp_path, store):
    """A local trial folder (its run/ in the storage) and an object-store one (run/ was on the
    trial's node, its log only in the checkpoints), both as Tune's Result hands them over."""
    if store == "local":
        fs, root = pafs.LocalFileSystem(), str(tmp_path / "mgc-E0")
    else:
        fs, root = pafs._MockFileSystem(), "mgc-test/ray_results/mgc-E0"
    shared, remote = f"{root}/_trial_a", f"{root}/_trial_b"
    write(fs, f"{shared}/result.json", b"{}\n")
    write(fs, f"{shared}/run/train_log.csv", b"epoch\n1\n2\n")
    write(fs, f"{shared}/run/checkpoints/last.pt", b"x" * 100)
    write(fs, f"{shared}/checkpoint_000001/last.pt", b"x" * 100)
    write(fs, f"{shared}/checkpoint_000001/train_log.csv", b"epoch\n1\n")
    write(fs, f"{remote}/result.json", b"{}\n")
    write(fs, f"{remote}/checkpoint_000002/last.pt", b"y" * 50)
    write(fs, f"{remote}/checkpoint_000002/train_log.csv", b"epoch\n1\n2\n")
    write(fs, f"{remote}/checkpoint_000010/last.pt", b"y" * 50)
    write(fs, f"{remote}/checkpoint_000010/train_log.csv", b"epoch\n1\n2\n3\n")
    grid = [
        SimpleNamespace(path=shared, filesystem=fs),
        SimpleNamespace(path=remote, filesystem=fs),
    ]
    # Every byte of the checkpoints: weights and the copies of the log in them.
    assert prune_trials(grid) == 100 + 100 + len(b"epoch\n1\n") + 2 * 50 + 10 + 12
    assert files(fs, shared) == {"result.json", "run/train_log.csv"}
    assert read(fs, f"{shared}/run/train_log.csv") == b"epoch\n1\n2\n"  # its own, untouched
    assert files(fs, remote) == {"result.json", "run/train_log.csv"}
    assert read(fs, f"{remote}/run/train_log.csv") == b"epoch\n1\n2\n3\n"  # the newest's
    assert prune_trials(grid) == 0  # nothing left to prune; the logs stay
    assert files(fs, remote) == {"result.json", "run/train_log.csv"}


@pytest.mark.slow
def test_a_data_parallel_trial_with_a_uri_as_storage(
    ray_local, synth_dataset: Path, tmp_path: Path, monkeypatch
):
    """workers_per_trial=2 with storage at a file:// URI (pyarrow's local filesystem, the
    code path of s3://): the two ranks work in node-local folders of their own, rank 0's
    checkpoints, each with the log so far, go to Ray Train's storage beside the trial in the
    URI, and nothing lands in a folder named after the URI."""
    from mgc.sweep import sweep

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "rr"
    overrides = [
        f"data.root={synth_dataset}",
        f"cache.dir={tmp_path / 'cache'}",
        "chunks.window_s=1.0",
        "model.width=8",
        "train.epochs=2",
        "sweep.grace_period=2",
        "sweep.num_samples=1",
        "sweep.final.epochs=1",
        "sweep.final_seeds=[0]",
        "sweep.resources.workers_per_trial=2",
        "sweep.resources.cpus_per_trial=0.5",
        f"sweep.results_dir={tmp_path / 'results'}",
        f"sweep.storage_path=file://{store}",
        "sweep.wandb.enabled=off",
    ]
    result = sweep(Path(__file__).resolve().parents[1] / "ablations" / "e0.yaml", overrides)
    (trial,) = result.summary["trials"]
    assert trial["epochs"] == 2 and "error" not in trial
    (trial_dir,) = (store / "mgc-E0").glob("_ddp_trial_*")
    assert (trial_dir / "result.json").is_file() and not (trial_dir / "run").exists()
    logs = sorted((trial_dir / "train").rglob("checkpoint_*/train_log.csv"))
    assert logs and all((log.parent / "last.pt").is_file() for log in logs)
    with open(logs[-1], newline="") as fh:
        assert [row["epoch"] for row in csv.DictReader(fh)] == ["1", "2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ds", "results", "rr"]
