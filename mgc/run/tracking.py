"""Experiment tracking with W&B: one run per sweep trial (logged by Ray Tune's W&B callback) and
the results table as a run of its own, all in the sweep's storage, `<storage_path>/wandb`; with
an object store as storage (a URI), in `./wandb` of the folder the sweep started in.

The mode comes from `sweep.wandb` (enabled, mode); online without a WANDB_API_KEY logs offline,
to be uploaded later with `wandb sync`. wandb and Ray's integration load only when W&B is on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mgc.core.config import Config
from mgc.core.fsio import is_uri

log = logging.getLogger(__name__)


def wandb_mode(cfg: Config) -> str:
    """This sweep's W&B mode, also set as WANDB_MODE for the processes it starts."""
    mode = cfg.sweep.wandb.mode if cfg.sweep.wandb.enabled else "disabled"
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        log.warning("W&B: no WANDB_API_KEY, logging offline (upload later with `wandb sync`)")
        mode = "offline"
    os.environ["WANDB_MODE"] = mode
    return mode


def wandb_dir(cfg: Config) -> Path:
    """Where this sweep's W&B runs go (offline ones wait there for `wandb sync`): the sweep's
    storage, or with a URI as storage the driver's working folder (W&B's own default). W&B
    writes through local files, and every run, the trials' too, is written on the driver's
    node (Ray's W&B callback starts its logging actors there)."""
    storage = cfg.sweep.storage_path
    path = Path.cwd() if is_uri(storage) else Path(storage).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def wandb_callbacks(cfg: Config) -> list:
    """Tune callbacks that log each trial as a W&B run; none when W&B is disabled."""
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    # Private Ray API, on purpose; checked against Ray 2.60.0 (ray/air/integrations/wandb.py).
    # Each trial's W&B run lives in a Ray actor (`_WandbLoggingActor`) that Ray kills
    # (`ray.kill`) once its `run()` has called `wandb.finish()`. W&B's service process is still
    # up then, and when the kill lets the actor's atexit hooks run (not every time), W&B's own
    # hook finds the service gone and prints a `ConnectionResetError: Connection lost`
    # traceback on the sweep's terminal (seen on the smoke sweep with the plain callback).
    # `wandb.teardown()` (public W&B API) at the end of `run()`, while the actor is alive,
    # closes the service and unregisters that hook. No public hook runs there:
    # - WandbLoggerCallback's own (log_trial_end, on_experiment_end) run in the driver, where
    #   `wandb.teardown()` closes the driver's W&B, not the actor's;
    # - Ray's WANDB_PROCESS_RUN_INFO_HOOK runs in the actor, but right after `wandb.init`, so
    #   it could only add an atexit hook, racing the same kill as W&B's;
    # - a run per trial from inside the trials (`setup_wandb`) meets the same kill when ASHA
    #   stops a trial.
    # Hence a subclass of the actor, plugged in through WandbLoggerCallback's
    # `_logger_actor_cls`. tests/test_tracking.py fails on a Ray that renames or stops using
    # either; check then whether the plain WandbLoggerCallback still leaves the traceback.
    class LoggingActor(_WandbLoggingActor):
        def run(self) -> None:
            super().run()
            self._wandb.teardown()

    class Callback(WandbLoggerCallback):
        _logger_actor_cls = LoggingActor

    return [
        Callback(
            project=cfg.sweep.wandb.project,
            entity=cfg.sweep.wandb.entity,
            group=cfg.experiment.name,
            mode=mode,
            # Straight into the sweep's storage: by default each trial's logging actor writes
            # into Ray's temporary staging folder for the trial, and what it writes after the
            # trial's last sync (it finishes after the trial does) never reaches ray_results.
            dir=str(wandb_dir(cfg)),
        )
    ]


def wandb_table(cfg: Config, tables: dict[str, Path]) -> None:
    """The results table (`tables["csv"]`) as a W&B run of its own, in the sweep's mode."""
    if os.environ.get("WANDB_MODE") == "disabled":
        return
    import pandas as pd
    import wandb

    frame = pd.read_csv(tables["csv"], dtype=str, keep_default_na=False)
    run = wandb.init(
        project=cfg.sweep.wandb.project,
        entity=cfg.sweep.wandb.entity,
        job_type="results",
        name=f"table-{cfg.experiment.name}",
        mode=os.environ["WANDB_MODE"],
        dir=str(wandb_dir(cfg)),
    )
    run.log({"results_table": wandb.Table(dataframe=frame)})
    run.finish()
