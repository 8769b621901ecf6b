"""W&B tracking: the mode, the callbacks, and the logging actor closing W&B before Ray kills it."""

import inspect
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from mgc.core.config import load_config
from mgc.run.tracking import wandb_callbacks, wandb_mode, wandb_table


def config(tmp_path: Path, *overrides: str):
    return load_config(None, [f"sweep.storage_path={tmp_path / 'ray_results'}", *overrides])


def test_online_without_a_key_logs_offline(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "unset")  # restored after the test
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode(config(tmp_path, "sweep.wandb.mode=online")) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(config(tmp_path, "sweep.wandb.mode=online")) == "online"
    assert os.environ["WANDB_MODE"] == "online"


def test_disabled_means_no_callbacks_and_no_table(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "unset")
    cfg = config(tmp_path, "sweep.wandb.enabled=false", "sweep.wandb.mode=offline")
    assert wandb_callbacks(cfg) == []
    assert wandb_mode(cfg) == "disabled"
    wandb_table(cfg, {"csv": tmp_path / "no-such-table.csv"})  # returns before reading it
    assert not (tmp_path / "ray_results").exists()


def test_logging_actor_tears_wandb_down_after_finishing(tmp_path: Path, monkeypatch):
    """Ray kills each trial's logging actor once its run() returns; W&B's service must be closed
    by then, or W&B's exit hook prints a ConnectionResetError traceback. Also guards the private
    Ray API this leans on (`_logger_actor_cls`, `_WandbLoggingActor.run`)."""
    from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem

    monkeypatch.setenv("WANDB_MODE", "unset")
    monkeypatch.chdir(tmp_path)  # the actor chdirs into its trial folder
    (callback,) = wandb_callbacks(config(tmp_path, "sweep.wandb.mode=offline"))
    assert isinstance(callback, WandbLoggerCallback)
    assert callback.kwargs["dir"] == str((tmp_path / "ray_results").resolve())

    calls = []

    class FakeWandb:
        config = SimpleNamespace(update=lambda *a, **k: calls.append("config"))

        def init(self, *args, **kwargs):
            calls.append("init")
            return SimpleNamespace(config=SimpleNamespace())

        def log(self, *args, **kwargs):
            calls.append("log")

        def finish(self):
            calls.append("finish")

        def teardown(self):
            calls.append("teardown")

    items = iter([(_QueueItem.RESULT, {"val_macro_f1": 0.5}), (_QueueItem.END, None)])
    queue = SimpleNamespace(get=lambda: next(items))
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    actor = callback._logger_actor_cls(str(trial_dir), queue, [], [])
    actor._wandb = FakeWandb()
    actor.run()
    assert calls == ["init", "config", "log", "finish", "teardown"]
    # ...and Ray still starts its logging actors from that class attribute.
    assert "self._logger_actor_cls" in inspect.getsource(WandbLoggerCallback._start_logging_actor)


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_callbacks_log_into_the_sweep_storage(tmp_path: Path, monkeypatch, mode):
    monkeypatch.setenv("WANDB_MODE", "unset")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (callback,) = wandb_callbacks(
        config(tmp_path, f"sweep.wandb.mode={mode}", "experiment.name=E9")
    )
    assert callback.kwargs["mode"] == "offline" and callback.group == "E9"
    assert (tmp_path / "ray_results").is_dir()
