"""`python -m mgc.sweep ABLATION.yaml [overrides]`: Ray Tune + Optuna + ASHA, final seeds, the table.

Thin wiring around `mgc.train.fit`: preprocessing through Ray Data (cached), a Tuner whose trials
each run `fit` and report every epoch, then the best configuration (by validation macro-F1)
trained again with several seeds and evaluated once on test; the row goes to results/.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from mgc.config import (
    Config,
    ConfigError,
    apply_overrides,
    from_dict,
    read_yaml,
    save_config,
)
from mgc.data.datasets import DatasetError

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "quniform", "choice")


# ---------------------------------------------------------------------------------------------
# Search spaces


def read_search_space(path: str | Path) -> dict[str, dict[str, list]]:
    """YAML `config.key: {distribution: args}` → the same mapping, checked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: search space file not found")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must map config keys to distributions")
    for key, spec in raw.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise ConfigError(
                f"{path}: {key}: expected one of {{{', '.join(DISTRIBUTIONS)}: [...]}}"
            )
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{path}: {key}: {kind} needs a list of arguments")
    return raw


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


def apply_params(raw: dict[str, Any], params: dict[str, Any]) -> Config:
    """The base config with sampled values put at their dotted keys (typed and validated)."""
    nested: dict[str, Any] = {}
    for key, value in params.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value.item() if hasattr(value, "item") else value
    return from_dict(_merge(copy.deepcopy(raw), nested))


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_space(raw: dict[str, Any], space: dict[str, dict[str, list]]) -> None:
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
                apply_params(raw, {key: value})
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
# Trials


def _trial(params: dict[str, Any], raw: dict[str, Any]) -> None:
    """One Tune trial: `fit` with this trial's parameters, one report per epoch."""
    from ray import tune

    from mgc.train import fit

    cfg = apply_params(raw, params)
    run_dir = Path(tune.get_context().get_trial_dir()) / "run"
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retried or resumed trial continues where it stopped
        with checkpoint.as_directory() as src:
            shutil.copytree(src, run_dir / "checkpoints", dirs_exist_ok=True)

    def report(metrics: dict[str, Any], ckpt_dir: Path) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))

    fit(cfg, report=report, run_dir=run_dir, resume=True, final_eval=False)


def _ddp_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker of a data-parallel trial: the same `fit`, sharded batches."""
    import ray.train
    import ray.train.torch

    from mgc.train import fit

    cfg = apply_params(loop_config["raw"], loop_config["params"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run_dir = Path(loop_config["run_dir"])

    def report(metrics: dict[str, Any], ckpt_dir: Path) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(ckpt_dir)) if rank == 0 else None
        ray.train.report(metrics, checkpoint=ckpt)

    fit(
        cfg,
        report=report,
        run_dir=run_dir,
        resume=True,
        wrap_model=ray.train.torch.prepare_model,
        rank=rank,
        world_size=world,
        final_eval=False,
    )


def _ddp_trial(params: dict[str, Any], raw: dict[str, Any]) -> None:
    """A trial that trains over several Ray Train workers (several GPUs) and reports to Tune."""
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = apply_params(raw, params)
    res = cfg.sweep.resources
    trial_dir = Path(tune.get_context().get_trial_dir())
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config={"raw": raw, "params": params, "run_dir": str(trial_dir / "run")},
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
            storage_path=str(trial_dir / "train"),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def _final_run(
    raw: dict[str, Any], params: dict[str, Any], seed: int, run_dir: str
) -> dict[str, Any]:
    from mgc.train import fit

    cfg = apply_params(raw, {**params, "train.seed": seed})
    return fit(cfg, run_dir=run_dir).metrics


# ---------------------------------------------------------------------------------------------
# The sweep


@dataclasses.dataclass
class SweepResult:
    experiment_dir: Path
    best_params: dict[str, Any]
    seed_metrics: list[dict[str, Any]]
    summary: dict[str, Any]


def _wandb_setup(cfg: Config) -> list:
    if not cfg.sweep.wandb.enabled or cfg.sweep.wandb.mode == "disabled":
        os.environ["WANDB_MODE"] = "disabled"
        return []
    mode = cfg.sweep.wandb.mode
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        log.warning("W&B: no WANDB_API_KEY, logging offline (upload later with `wandb sync`)")
        mode = "offline"
    os.environ["WANDB_MODE"] = mode
    # Offline runs land beside the Tune results, not in whatever folder a trial runs in.
    os.environ.setdefault("WANDB_DIR", str(Path(cfg.sweep.storage_path).resolve()))
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    from ray.air.integrations.wandb import WandbLoggerCallback

    return [
        WandbLoggerCallback(
            project=cfg.sweep.wandb.project,
            entity=cfg.sweep.wandb.entity,
            group=cfg.experiment.name,
            mode=mode,
        )
    ]


def _init_ray(cfg: Config) -> None:
    import ray

    if ray.is_initialized():
        return
    if cfg.sweep.ray_address:
        ray.init(address=cfg.sweep.ray_address)
    else:
        # No cluster address: a local Ray with the dashboard on (127.0.0.1:8265).
        ray.init(num_cpus=cfg.sweep.num_cpus, include_dashboard=True, dashboard_host="127.0.0.1")


def run_sweep(
    ablation: str | Path, overrides: list[str] | None = None, resume: bool = False
) -> SweepResult:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from mgc.prepare import prepare
    from mgc.table import write_tables

    # Config and search space are checked before anything starts.
    ablation = Path(ablation)
    raw = apply_overrides(read_yaml(ablation), list(overrides or []))
    cfg = from_dict(raw)
    if cfg.sweep.search_space is None:
        raise ConfigError("sweep.search_space is not set")
    space_path = resolve_relative(cfg.sweep.search_space, ablation)
    space = read_search_space(space_path)
    check_space(raw, space)
    res = cfg.sweep.resources
    # Trials never oversubscribe: torch in a trial uses as many threads as it has CPUs. Trials
    # run in their own working folders, so local paths travel as absolute ones.
    absolute = {
        "train": {"threads": max(1, int(res.cpus_per_trial))},
        "data": {
            "root": str(Path(cfg.data.root).resolve()),
            "extra_train_roots": [str(Path(p).resolve()) for p in cfg.data.extra_train_roots],
        },
    }
    if "://" not in cfg.cache.dir:
        absolute["cache"] = {"dir": str(Path(cfg.cache.dir).resolve())}
    raw = _merge(raw, absolute)
    t0 = time.perf_counter()

    _init_ray(cfg)
    prepared = prepare(cfg)
    log.info(
        "features: %d computed, %d cached, %d skipped",
        prepared.computed,
        prepared.reused,
        prepared.failed,
    )

    callbacks = _wandb_setup(cfg)
    storage = str(Path(cfg.sweep.storage_path).resolve())
    exp_name = f"mgc-{cfg.experiment.name}"
    exp_path = Path(storage) / exp_name
    if res.workers_per_trial > 1:
        trainable = tune.with_resources(tune.with_parameters(_ddp_trial, raw=raw), {"CPU": 0.1})
    else:
        trainable = tune.with_resources(
            tune.with_parameters(_trial, raw=raw),
            {"CPU": res.cpus_per_trial, "GPU": res.gpus_per_trial},
        )
    if resume and tune.Tuner.can_restore(str(exp_path)):
        log.info("resuming %s", exp_path)
        tuner = tune.Tuner.restore(str(exp_path), trainable=trainable, resume_errored=True)
    else:
        if resume:
            log.warning("nothing to resume at %s: starting afresh", exp_path)
        tuner = tune.Tuner(
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
                name=exp_name,
                storage_path=storage,
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    grid = tuner.fit()
    # Ray's W&B callback cleans up in __del__, which fails at interpreter exit once Ray's module
    # is gone; let it run now, while Ray is up.
    del tuner, trainable
    callbacks.clear()
    gc.collect()
    ok = [r for r in grid if r.error is None and r.metrics]
    if not ok:
        first = next((r.error for r in grid if r.error is not None), "no trial reported")
        raise RuntimeError(f"every trial failed; first error: {str(first).splitlines()[-1]}")
    best = grid.get_best_result(metric=cfg.sweep.metric, mode=cfg.sweep.mode, scope="all")
    best_params = {k: best.config[k] for k in space}
    log.info("best trial %s: %s", best.path, best_params)

    # Final evaluation: the chosen configuration, several seeds, test once.
    out = Path(cfg.sweep.results_dir) / cfg.experiment.name
    out.mkdir(parents=True, exist_ok=True)
    final_cfg = apply_params(raw, best_params)
    save_config(final_cfg, out / "best_config.yaml")
    seed_metrics = _final_seeds(raw, best_params, cfg, out, final_cfg)
    summary = summarise(final_cfg, best_params, seed_metrics, len(grid), time.perf_counter() - t0)
    summary["trials"] = [
        {
            "trial": Path(r.path).name,
            **{k: r.config.get(k) for k in space},
            "val_macro_f1": r.metrics.get(cfg.sweep.metric),
            "epochs": r.metrics.get("training_iteration"),
        }
        for r in ok
    ]
    from mgc.artifacts import write_json

    write_json(out / "summary.json", summary)
    _seed_csv(out / "seeds.csv", seed_metrics)
    tables = write_tables(cfg.sweep.results_dir)
    _wandb_table(cfg, tables)
    return SweepResult(out, best_params, seed_metrics, summary)


def _final_seeds(
    raw: dict, params: dict, cfg: Config, out: Path, final_cfg: Config
) -> list[dict[str, Any]]:
    """Seed runs as Ray tasks with the trial's resources, in parallel where they fit."""
    import ray

    res = cfg.sweep.resources
    task = ray.remote(
        num_cpus=res.cpus_per_trial, num_gpus=res.gpus_per_trial, max_retries=cfg.sweep.max_failures
    )(_final_run)
    dirs = {seed: out / f"seed_{seed}" for seed in cfg.sweep.final_seeds}
    for d in dirs.values():
        if d.exists():  # a run folder is never overwritten in place: keep the old one aside
            d.rename(d.with_name(f"{d.name}.old-{int(d.stat().st_mtime)}"))
    refs = [task.remote(raw, params, seed, str(d.resolve())) for seed, d in dirs.items()]
    metrics = ray.get(refs)
    first = dirs[cfg.sweep.final_seeds[0]]
    for name in ("confusion_matrix_test.png", "train_curves.png", "test_classification_report.txt"):
        if (first / name).exists():
            shutil.copy2(first / name, out / name)
    return metrics


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(
    cfg: Config, params: dict, seeds: list[dict[str, Any]], n_trials: int, seconds: float
) -> dict:
    out: dict[str, Any] = {
        "experiment": cfg.experiment.name,
        "description": cfg.experiment.description,
        "model": cfg.model.name,
        "augmentation": cfg.experiment.augmentation,
        "strategy": cfg.experiment.strategy,
        "params": seeds[0]["params"],
        "pretrained": seeds[0].get("pretrained", "scratch"),
        "split": seeds[0]["split"],
        "seeds": [m["seed"] for m in seeds],
        "best_params": params,
        "n_trials": n_trials,
        "sweep_seconds": seconds,
    }
    for level in ("track", "chunk"):
        for metric in ("accuracy", "macro_f1"):
            mean, std = _mean_std([m["test"][f"{level}_{metric}"] for m in seeds])
            out[f"test_{level}_{metric}_mean"] = mean
            out[f"test_{level}_{metric}_std"] = std
    return out


def _seed_csv(path: Path, seeds: list[dict[str, Any]]) -> None:
    import csv

    cols = [
        "seed",
        "test_track_accuracy",
        "test_track_macro_f1",
        "test_chunk_accuracy",
        "test_chunk_macro_f1",
        "valid_track_macro_f1",
        "best_epoch",
        "epochs_run",
    ]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for m in seeds:
            w.writerow(
                [
                    m["seed"],
                    m["test"]["track_accuracy"],
                    m["test"]["track_macro_f1"],
                    m["test"]["chunk_accuracy"],
                    m["test"]["chunk_macro_f1"],
                    m["valid"]["track_macro_f1"],
                    m["best_epoch"],
                    m["epochs_run"],
                ]
            )


def _wandb_table(cfg: Config, tables: dict[str, Path]) -> None:
    if os.environ.get("WANDB_MODE") == "disabled":
        return
    import csv

    import wandb

    with open(tables["csv"], newline="") as fh:
        rows = list(csv.reader(fh))
    run = wandb.init(
        project=cfg.sweep.wandb.project,
        entity=cfg.sweep.wandb.entity,
        job_type="results",
        name=f"table-{cfg.experiment.name}",
        mode=os.environ["WANDB_MODE"],
        dir=cfg.sweep.storage_path,
    )
    run.log({"results_table": wandb.Table(columns=rows[0], data=rows[1:])})
    run.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.sweep", description=__doc__.splitlines()[0]
    )
    parser.add_argument("ablation", help="ablations/eN.yaml")
    parser.add_argument(
        "overrides", nargs="*", help="section.key=value, e.g. sweep.num_samples=2 train.epochs=1"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep of this experiment"
    )
    parser.add_argument("--no-wandb", action="store_true", help="turn W&B logging off")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = list(args.overrides) + (["sweep.wandb.enabled=false"] if args.no_wandb else [])
    try:
        result = run_sweep(args.ablation, overrides, resume=args.resume)
    except (ConfigError, DatasetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: continue with  python -m mgc.sweep {args.ablation} --resume",
            file=sys.stderr,
        )
        return 130
    s = result.summary
    print(
        f"{s['experiment']} ({s['split']} split, {len(s['seeds'])} seeds): test track acc "
        f"{100 * s['test_track_accuracy_mean']:.1f} ± {100 * s['test_track_accuracy_std']:.1f}, macro-F1 "
        f"{100 * s['test_track_macro_f1_mean']:.1f} ± {100 * s['test_track_macro_f1_std']:.1f}; "
        f"{s['n_trials']} trials in {s['sweep_seconds'] / 60:.1f} min"
    )
    print(
        f"results: {result.experiment_dir}  table: {Path(result.experiment_dir).parent / 'table.md'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
