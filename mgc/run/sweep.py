"""A row of the table: Ray Tune + Optuna + ASHA over the row's search space, then its final seeds.

Thin wiring around `mgc.run.train.fit`: preprocessing through Ray Data (cached), a Tuner whose
trials each run `fit` at low fidelity and report every epoch, then the best configuration (by
validation macro-F1) trained at the full budget with several seeds (`mgc.run.seeds`) and tested
once; the row goes to results/<experiment>/ (`mgc.results.rows`).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgc.core.cluster import init_ray, placement
from mgc.core.config import Config, ConfigError, load_config, with_params
from mgc.core.fsio import is_uri, storage_join
from mgc.core.search_space import read_search_space
from mgc.data.datasets import DatasetError, discover
from mgc.data.gtzan import ensure_dataset
from mgc.data.splits import resolve_split
from mgc.run.tracking import wandb_callbacks, wandb_mode

# torch, pandas and matplotlib come in with the modules that need them (inside the functions
# below), so that a bad config or a missing dataset is reported in well under two seconds,
# before any of them loads and before Ray starts.
if TYPE_CHECKING:
    from mgc.results.rows import RowFolder
    from mgc.run.budget import Budget, Clock

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Search spaces


def to_tune_space(space: dict[str, dict[str, list]]) -> dict[str, Any]:
    from ray import tune

    makers = {
        "loguniform": lambda a: tune.loguniform(float(a[0]), float(a[1])),
        "uniform": lambda a: tune.uniform(float(a[0]), float(a[1])),
        "quniform": lambda a: tune.quniform(float(a[0]), float(a[1]), float(a[2])),
        "randint": lambda a: tune.randint(int(a[0]), int(a[1])),
        "choice": lambda a: tune.choice(list(a)),
    }
    out = {}
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        out[key] = makers[kind](args)
    return out


def check_space(cfg: Config, space: dict[str, dict[str, list]]) -> None:
    """Fail before any trial starts: every key must exist and take every distribution's ends."""
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        # Values of the type the distribution draws: uniform gives floats, randint ints.
        if kind == "choice":
            samples = list(args)
        elif kind == "randint":
            samples = [int(args[0]), int(args[1]) - 1]
        else:
            samples = [float(args[0]), float(args[1])]
        for value in samples:
            try:
                with_params(cfg, {key: value})
            except ConfigError as exc:
                raise ConfigError(f"search space {key}: {exc}") from exc


def resolve_relative(path: str, ablation: Path | None) -> Path:
    """Search-space paths are relative to the working folder or to the ablation's repo."""
    p = Path(path)
    if p.is_absolute() or p.exists() or ablation is None:
        return p
    for base in (ablation.parent, ablation.parent.parent):
        if (base / p).exists():
            return base / p
    return p


# ---------------------------------------------------------------------------------------------
# Trials: each is `fit` with the trial's sampled values put into the one sweep config


TRIAL_LOG = "train_log.csv"
# What a trial's reports say about where it ran, kept with the trial in the row.
PLACEMENT_KEYS = ("node_id", "gpu_ids", "worker_nodes")


def storage_root(cfg: Config) -> str:
    """sweep.storage_path as every process of the sweep finds it: a folder made absolute (trials
    run in working folders of their own), a URI as written."""
    path = cfg.sweep.storage_path
    return path if is_uri(path) else str(Path(path).resolve())


def experiment_name(cfg: Config) -> str:
    return f"mgc-{cfg.experiment.name}"


def experiment_path(cfg: Config) -> str:
    """The sweep's Tune experiment folder, in sweep.storage_path (storage every node sees)."""
    return storage_join(storage_root(cfg), experiment_name(cfg))


def trial_folder(cfg: Config, trial_dir: str | None = None) -> Path:
    """The calling trial's own folder, where its `run/` goes (log, working checkpoints), named
    after Tune's trial directory `trial_dir` (`get_trial_dir`, asked when not given).

    Not Tune's trial directory itself: that is a staging folder on the node the trial runs on,
    synced to storage from the driver's node only. With a folder as storage the trial works in
    its folder there, so that whatever node runs it next finds its files. A URI is no folder to
    work in: the trial works in the node's temporary folder, synced nowhere, which is safe
    because every checkpoint carries the trial's log (`_trial`)."""
    if trial_dir is None:
        from ray import tune

        trial_dir = tune.get_context().get_trial_dir()
    name = Path(trial_dir).name
    if is_uri(cfg.sweep.storage_path):
        # Per user: another user's sweep on the node may have made the folder above.
        scratch = Path(tempfile.gettempdir(), f"mgc-trials-{os.getuid()}")
        return scratch / experiment_name(cfg) / name
    return Path(experiment_path(cfg)) / name


def restore_run(run_dir: Path, checkpoint: Any) -> None:
    """A trial's run folder as its checkpoint left it: the checkpoint's files in
    run/checkpoints and its train_log.csv in run/, whatever the folder held after it; with no
    checkpoint (a first start, or a retry before any) an empty folder."""
    ckpt_dir = run_dir / "checkpoints"
    if checkpoint is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    with checkpoint.as_directory() as src:
        shutil.copytree(src, ckpt_dir, dirs_exist_ok=True)
    if (ckpt_dir / TRIAL_LOG).exists():
        shutil.copy2(ckpt_dir / TRIAL_LOG, run_dir / TRIAL_LOG)


def log_into(ckpt: Path, run_dir: Path) -> Path:
    """`ckpt` with the run's train_log.csv in it, so the log travels with every checkpoint."""
    if (run_dir / TRIAL_LOG).exists():
        shutil.copy2(run_dir / TRIAL_LOG, ckpt / TRIAL_LOG)
    return ckpt


def _trial(params: dict[str, Any], cfg: Config) -> None:
    """One Tune trial: `fit` with this trial's parameters, one report per epoch.

    Its working folder is `trial_folder`/run. Each checkpoint carries the trial's
    train_log.csv, so a trial restored from one (on another node, after --resume) gets that
    epoch's log back with its weights; a trial that starts with no checkpoint starts from an
    empty folder. Checkpoints are pruned once the search has ended (`prune_trials`)."""
    from ray import tune

    from mgc.run.train import fit

    run_dir = trial_folder(cfg) / "run"
    where = placement()  # each report says where the trial ran (a retry may move it)
    # A retried or resumed trial continues where it stopped, a first start from nothing.
    restore_run(run_dir, tune.get_checkpoint())

    def report(metrics: dict[str, Any], ckpt: Path) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(log_into(ckpt, run_dir)))
        tune.report({**metrics, **where}, checkpoint=checkpoint)

    fit(with_params(cfg, params), report=report, run_dir=run_dir, resume=True, final_eval=False)


def _ddp_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker of a data-parallel trial: the same `fit`, sharded batches."""
    import ray.train
    import ray.train.torch
    import torch.distributed

    from mgc.run.train import Parallel, fit

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    run_dir = Path(loop_config["run_dir"])
    if loop_config["node_local"]:
        # No folder shared by the ranks (URI storage): each rank works in one of its own on its
        # node (two ranks may share a node) and starts from Ray Train's last checkpoint, kept
        # in the storage, so that every rank resumes at the same epoch wherever it landed.
        run_dir = run_dir if rank == 0 else run_dir.with_name(f"run-rank{rank}")
        restore_run(run_dir, ray.train.get_checkpoint())
    where = placement()
    # Every worker's node, in rank order, with each report: where the trial's workers ran.
    nodes: list[str] = [""] * ctx.get_world_size()
    torch.distributed.all_gather_object(nodes, where.get("node_id", ""))
    where = {**where, "worker_nodes": ",".join(nodes)}
    # The worker group's placement group, so that the driver can release it once Tune has ended
    # the trial (release_worker_groups).
    group = ray.util.get_current_placement_group()
    if group is not None:
        where["worker_group"] = group.id.hex()

    def report(metrics: dict[str, Any], ckpt_dir: Path) -> None:
        ckpt = None
        if rank == 0:
            ckpt = ray.train.Checkpoint.from_directory(str(log_into(ckpt_dir, run_dir)))
        ray.train.report({**metrics, **where}, checkpoint=ckpt)

    fit(
        with_params(loop_config["cfg"], loop_config["params"]),
        report=report,
        run_dir=run_dir,
        resume=True,
        parallel=Parallel(rank, ctx.get_world_size(), ray.train.torch.prepare_model),
        final_eval=False,
    )


class _ForwardReports:
    """A Ray Train callback (made a `ray.train.UserCallback` where it is built) that puts rank
    0's metrics of every report, with the checkpoint's path, on a queue the trial reads."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list, checkpoint: Any) -> None:
        item = dict(metrics[0])
        if checkpoint is not None:
            item["checkpoint_path"] = checkpoint.path
        self.queue.put(item)


def _ddp_trial(params: dict[str, Any], cfg: Config) -> None:
    """A trial that trains over several Ray Train workers (several GPUs) and reports to Tune.

    The Ray Train run goes on in a thread of its own; its reports come back through a queue and
    this function passes each on with `tune.report`, the plain function API, so Tune has taken
    every epoch before the function returns. (Ray's own TuneReportCallback hands them to Tune
    from Tune's main thread instead: when the run ends while its last report is still in
    flight, the function's end and that report meet in Tune's one-slot result queue and the
    trial hangs for ever, which happened here on a loaded machine.)"""
    import queue as std_queue
    import threading

    from ray import train, tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    res = cfg.sweep.resources
    trial_dir = trial_folder(cfg)
    loop_config = {
        "cfg": cfg,
        "params": params,
        "run_dir": str(trial_dir / "run"),
        "node_local": is_uri(cfg.sweep.storage_path),
    }
    reports = Queue(actor_options={"num_cpus": 0})
    forward = type("ForwardReports", (_ForwardReports, train.UserCallback), {})(reports)
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=res.workers_per_trial,
            use_gpu=res.gpus_per_trial > 0,
            resources_per_worker={
                "CPU": res.cpus_per_trial,
                **({"GPU": res.gpus_per_trial} if res.gpus_per_trial else {}),
            },
        ),
        run_config=RunConfig(
            name=trial_dir.name,
            # Beside the trial's folder in the storage (the trial's own folder, for a folder).
            storage_path=storage_join(experiment_path(cfg), trial_dir.name, "train"),
            callbacks=[forward],
        ),
    )
    outcome: std_queue.Queue = std_queue.Queue()

    def run() -> None:
        try:
            trainer.fit()
            outcome.put(None)
        except BaseException as err:  # raised below, in the trial's own thread
            outcome.put(err)

    threading.Thread(target=run, name="ray-train-run", daemon=True).start()
    ended = False
    while True:
        try:
            tune.report(reports.get(timeout=1.0))
            continue
        except Empty:
            pass
        if ended and reports.empty():
            break
        # The run's reports all reach the queue before fit() returns: one more look after it.
        ended = ended or not outcome.empty()
    err = outcome.get()
    if err is not None:
        raise err


# ---------------------------------------------------------------------------------------------
# The sweep, step by step


@dataclasses.dataclass
class SweepResult:
    cfg: Config
    experiment_dir: Path
    best_params: dict[str, Any]
    seed_metrics: list[dict[str, Any]]
    summary: dict[str, Any]


def load_sweep(
    ablation: str | Path, overrides: list[str] | None
) -> tuple[Config, dict[str, dict[str, list]]]:
    """The sweep's config and search space, checked before anything starts. Trials run in their
    own working folders, so local paths become absolute; torch in a trial gets as many threads
    as the trial has CPUs, so trials never oversubscribe. No search space (`sweep.search_space:
    null`, e.g. M1's logistic regression) means no search: the configuration as it stands goes
    straight to the final seeds, and the row records no trials."""
    ablation = Path(ablation)
    cfg = load_config(ablation, overrides)
    if cfg.sweep.budget == "quick":
        from mgc.run.budget import quick_look

        cfg = quick_look(cfg)
    space: dict[str, dict[str, list]] = {}
    if cfg.sweep.search_space is not None:
        space = read_search_space(resolve_relative(cfg.sweep.search_space, ablation))
    check_space(cfg, space)
    check_data(cfg)
    reused = Path(cfg.sweep.results_dir) / str(cfg.sweep.reuse_search) / "search.json"
    if cfg.sweep.reuse_search and not reused.is_file():
        raise ConfigError(
            f"sweep.reuse_search={cfg.sweep.reuse_search}: {reused} not found; run that row's "
            "sweep first"
        )
    fixed: dict[str, Any] = {
        "train.threads": max(1, int(cfg.sweep.resources.cpus_per_trial)),
        "data.root": str(Path(cfg.data.root).resolve()),
        "data.extra_train_roots": [str(Path(p).resolve()) for p in cfg.data.extra_train_roots],
    }
    if not space or cfg.sweep.reuse_search:
        fixed["sweep.num_samples"] = 0  # so the budget and the table count no trials
    if not is_uri(cfg.cache.dir):
        fixed["cache.dir"] = str(Path(cfg.cache.dir).resolve())
    return with_params(cfg, fixed), space


def check_data(cfg: Config) -> None:
    """The dataset folders exist and hold audio, and the split names tracks that are there: said
    at once rather than after Ray starts. A missing or empty data.root is first filled with
    GTZAN from its mirrors (never an existing folder, never extra_train_roots); offline that
    stops here with one line and the way out."""
    ensure_dataset(Path(cfg.data.root), allow_download=cfg.data.download)
    for root in (cfg.data.root, *cfg.data.extra_train_roots):
        try:
            tracks = discover(root)
            if root == cfg.data.root:
                resolve_split(cfg.data.split, tracks, cfg.data.split_seed)
        except DatasetError as exc:
            raise DatasetError(
                f"{exc}; put GTZAN there with `python -m mgc.data gtzan --source "
                f"ARCHIVE_OR_FOLDER --dest {root}` (or --source download when online), or point "
                "MGC_DATA_ROOT / data.root at a folder of <genre>/<audio files>"
            ) from exc


def prepare_features(cfg: Config) -> Budget:
    """Every track's log-mel in the cache, through Ray Data, before any trial reads it; then
    the sweep's budget, said before it starts, with an estimate from a timed training step."""
    import ray

    from mgc.data.loader import split_tracks
    from mgc.data.prepare import prepare
    from mgc.run.budget import Budget, busy_note, load_average, time_training_step

    prepared = prepare(cfg)
    log.info(
        "features: %d computed, %d cached, %d skipped",
        prepared.computed,
        prepared.reused,
        prepared.failed,
    )
    frames = {e.path: e.n_frames for e in prepared.ok}
    _, parts, _, _ = split_tracks(cfg)
    budget = Budget.of(
        cfg,
        [frames[t.path] for t in parts["train"] if t.path in frames],
        [frames[t.path] for t in parts["valid"] if t.path in frames],
    )
    res = cfg.sweep.resources
    concurrent = trial_concurrency(cfg, ray.cluster_resources().get("CPU", 1.0))
    load = load_average()  # before the timing, which adds its own thread
    rate = time_training_step(cfg, threads=max(1, int(res.cpus_per_trial)))
    log.info(budget.describe(rate, concurrent))
    if note := busy_note(load, os.cpu_count() or 1):
        log.warning(note)
    return budget


def trial_concurrency(cfg: Config, cpus: float) -> int:
    """How many runs go at once on `cpus` CPUs: sweep.max_concurrent, else as many as fit."""
    fit = max(1, int(cpus // max(cfg.sweep.resources.cpus_per_trial, 1e-9)))
    return cfg.sweep.max_concurrent or fit


def make_tuner(cfg: Config, space: dict[str, dict[str, list]], resume: bool, callbacks: list):
    """Optuna proposes, ASHA stops weak trials early; `resume` picks a stopped sweep back up."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    exp_path = experiment_path(cfg)
    # Absolute, as the trials (in working folders of their own) find their folders from it.
    cfg = with_params(cfg, {"sweep.storage_path": storage_root(cfg)})
    res = cfg.sweep.resources
    if res.workers_per_trial > 1:  # the trial only coordinates; its workers hold the resources
        trainable = tune.with_resources(tune.with_parameters(_ddp_trial, cfg=cfg), {"CPU": 0.1})
    else:
        trainable = tune.with_resources(
            tune.with_parameters(_trial, cfg=cfg),
            {"CPU": res.cpus_per_trial, "GPU": res.gpus_per_trial},
        )
    if resume and tune.Tuner.can_restore(exp_path):
        log.info("resuming %s", exp_path)
        return tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True)
    if resume:
        log.warning("nothing to resume at %s: starting afresh", exp_path)
    return tune.Tuner(
        trainable,
        param_space=to_tune_space(space),
        tune_config=tune.TuneConfig(
            metric=cfg.sweep.metric,
            mode=cfg.sweep.mode,
            search_alg=OptunaSearch(seed=cfg.train.seed),
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=cfg.train.epochs,
                grace_period=min(cfg.sweep.grace_period, cfg.train.epochs),
                reduction_factor=cfg.sweep.reduction_factor,
            ),
            num_samples=cfg.sweep.num_samples,
            max_concurrent_trials=cfg.sweep.max_concurrent or None,
        ),
        run_config=tune.RunConfig(
            name=experiment_name(cfg),
            storage_path=cfg.sweep.storage_path,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures),
            # Two, not one: Tune deletes a trial's older checkpoint as soon as a newer one is
            # in, and saves its experiment state a moment later. A driver killed in between
            # (kill -9, an OOM kill, a lost head node) left a state naming a checkpoint that was
            # gone, and on --resume the trial failed every restore and was lost. With two kept,
            # the state's checkpoint is still on disk. Pruning removes both after the search.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )


def retry_note(max_failures: int):
    """A Tune callback that says in one line why a trial is being retried (a lost node, a
    crash), where it had run and from which epoch its retry continues."""
    from ray import tune

    class RetryNote(tune.Callback):
        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            last = trial.last_result or {}
            epoch = int(last.get("training_iteration", 0))
            log.warning(
                "trial %s failed on node %s after epoch %d (%s): retry %d of %d, %s",
                trial.trial_id,
                str(last.get("node_id", "?"))[:8],
                epoch,
                _last_error(trial.error_file),
                trial.num_failures,
                max_failures,
                f"from its epoch-{epoch} checkpoint" if epoch else "from the start",
            )

    return RetryNote()


def release_worker_groups():
    """A Tune callback that removes a data-parallel trial's worker placement group once Tune has
    ended, stopped or failed the trial.

    Tune ends a trial by killing its actor, and with it the Ray Train controller that owns the
    worker group; the group's placement group belongs to the job, so it would hold its CPUs
    (GPUs) until the sweep ends. Ray Train's own PlacementGroupCleaner finds the controller's
    death through the State API, which fails where the dashboard is off or a second Ray runs on
    the node ("Found multiple active Ray instances"): the next data-parallel trial then waits
    for those resources for ever. The driver knows its own Ray, so it releases the group here."""
    from ray import tune
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    def release(trial: Any) -> None:
        group = (trial.last_result or {}).get("worker_group")
        if not group:
            return
        try:
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(group))))
        except Exception as err:  # already removed by Ray Train, or Ray is going away
            log.debug("worker group %s of trial %s: %s", group, trial.trial_id, err)

    class ReleaseWorkerGroups(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            release(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            release(trial)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            release(trial)

    return ReleaseWorkerGroups()


def run_trials(cfg: Config, space: dict[str, dict[str, list]], resume: bool):
    """The search; returns Tune's ResultGrid once every trial has ended. Ctrl-C or SIGTERM make
    Tune save its state and return early: that becomes a KeyboardInterrupt here (the CLI says how
    to continue), never a table made from half a search."""
    import signal

    callbacks = [*wandb_callbacks(cfg), retry_note(cfg.sweep.max_failures), release_worker_groups()]
    tuner = make_tuner(cfg, space, resume, callbacks)
    # Tune saves the experiment and stops cleanly on SIGINT only; SIGTERM goes the same way.
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    # Tune (2.60) leaves its own SIGINT handler behind after a search that ended by itself, and
    # that handler swallows the next Ctrl-C: the final seeds would then need two.
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        grid = tuner.fit()
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    # Ray's W&B callback cleans up in __del__, which fails at interpreter exit once Ray's module
    # is gone; let it run now, while Ray is up.
    del tuner
    callbacks.clear()
    gc.collect()
    # Trials never created count as unfinished too.
    ended = ended_trials(grid)
    if ended < max(len(grid), cfg.sweep.num_samples):
        raise KeyboardInterrupt(
            f"{max(len(grid), cfg.sweep.num_samples) - ended} trial(s) unfinished"
        )
    if not any(r.error is None and r.metrics for r in grid):
        first = next((r.error for r in grid if r.error is not None), "no trial reported")
        raise RuntimeError(f"every trial failed; first error: {str(first).splitlines()[-1]}")
    prune_trials(grid)
    return grid


def ended_trials(grid) -> int:
    """How many trials of Tune's ResultGrid ended: errored, or finished (`done` in their last
    result: they ran their epochs, or the scheduler stopped them); the rest were pending, running
    or paused when Tune stopped. Not ResultGrid.num_terminated: Tune 2.60, stopping on a signal,
    saves its running trials as running, then marks them terminated in the grid it returns, so a
    search interrupted after its last trial started would pass for a finished one."""
    return sum(r.error is not None or bool((r.metrics or {}).get("done")) for r in grid)


def prune_trials(grid) -> int:
    """Once every trial has ended, their weights are dead weight: the final seeds retrain the
    chosen configuration and the table reads the trials' metrics, so each trial keeps only its
    logs (Tune's result.json/progress.csv, run/train_log.csv, config), a few tens of KB, instead
    of two copies of its last checkpoint (weights and optimiser state). Returns bytes freed."""
    freed = sum(prune_trial(result.filesystem, result.path) for result in grid)
    log.info("search ended: %.1f MB of trial checkpoints removed", freed / 1e6)
    return freed


def prune_trial(fs: Any, trial: str) -> int:
    """One trial folder of the storage without its checkpoints, through the storage's pyarrow
    filesystem (a local disk or an object store, as Tune's Result gives them); its log kept
    (`keep_trial_log`). Returns bytes freed."""
    from pyarrow.fs import FileSelector, FileType

    listed = fs.get_file_info(FileSelector(trial, allow_not_found=True))
    checkpoints = sorted(
        f.path
        for f in listed
        if f.type == FileType.Directory and f.base_name.startswith("checkpoint_")
    )
    keep_trial_log(fs, trial, checkpoints)
    freed = 0
    for folder in [f"{trial}/run/checkpoints", *checkpoints]:
        if fs.get_file_info(folder).type != FileType.Directory:
            continue
        inside = fs.get_file_info(FileSelector(folder, recursive=True))
        freed += sum(f.size for f in inside if f.type == FileType.File)
        fs.delete_dir(folder)
    return freed


def keep_trial_log(fs: Any, trial: str, checkpoints: list[str]) -> None:
    """The trial's train_log.csv as run/train_log.csv in its storage folder. With a folder as
    storage the trial wrote it there; with a URI its run/ was node-local, and only its
    checkpoints (`checkpoints`, oldest first) carry its log: the newest one's is copied out."""
    from pyarrow.fs import FileType

    kept = f"{trial}/run/{TRIAL_LOG}"
    if not checkpoints or fs.get_file_info(kept).type != FileType.NotFound:
        return
    newest = f"{checkpoints[-1]}/{TRIAL_LOG}"
    if fs.get_file_info(newest).type == FileType.File:
        fs.create_dir(f"{trial}/run")
        fs.copy_file(newest, kept)


def search_record(
    cfg: Config, space: dict, grid, best_params: dict[str, Any], seconds: float, budget: Budget
) -> dict[str, Any]:
    """The search's outcome as the row keeps it (`search.json`, then summary.json): the chosen
    parameters, the budget it ran under and every trial, failed ones with their error."""
    from mgc.core.device import machine

    return {
        "best_params": best_params,
        "budget": budget.to_dict(),
        "n_trials": len(grid),
        # Every epoch any trial ran, failed ones included: ASHA's saving against the full grid.
        "trial_epochs_run": sum(int((r.metrics or {}).get("training_iteration", 0)) for r in grid),
        "failed_trials": sum(r.error is not None for r in grid),
        "search_seconds": seconds,
        "machine": machine(),
        "trials": [
            {
                "trial": Path(r.path).name,
                **{k: r.config.get(k) for k in space},
                "val_macro_f1": (r.metrics or {}).get(cfg.sweep.metric),
                "epochs": (r.metrics or {}).get("training_iteration", 0),
                # Where it ran last (node, GPUs; a data-parallel trial's workers' nodes).
                **{k: v for k, v in (r.metrics or {}).items() if k in PLACEMENT_KEYS},
                **({"error": _last_line(r.error)} if r.error is not None else {}),
            }
            for r in grid
        ],
    }


def reused_search(cfg: Config, row: RowFolder) -> dict[str, Any]:
    """`sweep.reuse_search`: the named row's stored search (checked by `load_sweep`), kept as
    this row's own and marked as another's."""
    from mgc.results.rows import SEARCH, RowFolder

    source = RowFolder(Path(cfg.sweep.results_dir) / str(cfg.sweep.reuse_search))
    search = source.read_search() or {}
    wandb_mode(cfg)
    log.info(
        "search: %s's (%s), not run again; best %s",
        cfg.sweep.reuse_search,
        source.path / SEARCH,
        search["best_params"],
    )
    search = {**search, "reused_from": cfg.sweep.reuse_search}
    row.write_search(search)
    return search


def write_row(
    cfg: Config, search: dict[str, Any], seeds: list[dict], clock: Clock, budget: Budget
) -> dict[str, Any]:
    """The row's summary.json (its search with every trial, the budget and what it cost, from
    the sweep's `clock`) and seeds.csv."""
    from mgc.core.device import machine
    from mgc.results.rows import RowFolder, summarise

    now = time.time()  # one instant for the wall and the CPU hours
    summary = summarise(cfg, search["best_params"], seeds, search["n_trials"], clock(now))
    summary["budget"] = budget.to_dict()
    summary["trial_epochs_run"] = search["trial_epochs_run"]
    summary["failed_trials"] = search["failed_trials"]
    summary["machine"] = machine()
    if search.get("machine") != summary["machine"]:
        summary["search_machine"] = search.get("machine")  # a row continued elsewhere
    summary["cpu_hours"] = clock.hours("cpus", now)
    summary["gpu_hours"] = clock.hours("gpus", now)
    summary["trials"] = search["trials"]
    if search.get("reused_from"):
        summary["search_reused_from"] = search["reused_from"]
    RowFolder.of(cfg).write(summary, seeds)
    return summary


def _last_error(error_file: str | None) -> str:
    """The last line of a trial's error.txt (Tune writes it on the driver before it retries)."""
    path = Path(error_file) if error_file else None
    text = path.read_text(errors="replace") if path is not None and path.is_file() else ""
    return _last_line(text)[:200] if text.strip() else "no error recorded"


def _last_line(error: BaseException | str) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def run_sweep(
    ablation: str | Path, overrides: list[str] | None = None, resume: bool = False
) -> SweepResult:
    """Preprocessing, the search, the final seeds and the row in results/<experiment>/.
    The tables over every row are the report's (`python -m mgc.sweep` rebuilds them after)."""
    import ray

    from mgc.results.rows import SEARCH, RowFolder
    from mgc.run.budget import SPENT_FILE, time_spent
    from mgc.run.seeds import chosen_config, final_seeds

    cfg, space = load_sweep(ablation, overrides)
    row = RowFolder.of(cfg)
    # The clock is kept with the row, so a row continued on another machine adds its time.
    if not resume:  # a fresh sweep starts its clock afresh too
        (row.path / SPENT_FILE).unlink(missing_ok=True)
    with time_spent(row.path) as clock:
        init_ray(cfg.sweep.ray_address, cfg.sweep.num_cpus)
        held = ray.cluster_resources()
        clock.held(held.get("CPU", 0.0), held.get("GPU", 0.0))
        budget = prepare_features(cfg)
        search = row.read_search() if resume else None
        if search is None and cfg.sweep.reuse_search:
            search = reused_search(cfg, row)
        elif search is not None:  # e.g. committed by another machine: never searched twice
            wandb_mode(cfg)
            log.info(
                "search: done earlier (%s, %d trials), not run again; best %s",
                row.path / SEARCH,
                search["n_trials"],
                search["best_params"],
            )
        elif space:
            grid = run_trials(cfg, space, resume)
            best = grid.get_best_result(metric=cfg.sweep.metric, mode=cfg.sweep.mode, scope="all")
            best_params = {k: best.config[k] for k in space}
            log.info("best trial %s: %s", best.path, best_params)
            search = search_record(cfg, space, grid, best_params, clock(), budget)
            row.write_search(search)
        else:
            wandb_mode(cfg)  # no trials: the results table alone goes to W&B
            log.info("no search space: the configuration as it is, with the final seeds")
            search = search_record(cfg, {}, [], {}, 0.0, budget)
        best_params = search["best_params"]
        row.write_best_config(chosen_config(cfg, best_params))
        seeds = final_seeds(cfg, best_params, row, resume)
        summary = write_row(cfg, search, seeds, clock, budget)
    return SweepResult(cfg, row.path, best_params, seeds, summary)
