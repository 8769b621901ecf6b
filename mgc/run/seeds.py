"""The final seeds: a row's chosen configuration trained once per seed and tested once.

Each seed is a Ray task with a trial's resources, so seeds run in parallel where they fit (and on
any node of a cluster). Its run folder is `results/<experiment>/seed_<n>/` (`RowFolder`).
"""

from __future__ import annotations

from typing import Any

from mgc.core.config import Config, with_params
from mgc.results.rows import RowFolder


def train_seed(cfg: Config, params: dict[str, Any], seed: int, run_dir: str) -> dict[str, Any]:
    """One final seed: `fit` with the chosen parameters and this seed, then the test scores.
    resume=True: a seed stopped mid-run (Ctrl-C, a crash) goes on from its last epoch."""
    from mgc.run.train import fit

    return fit(
        with_params(cfg, {**params, "train.seed": seed}), run_dir=run_dir, resume=True
    ).metrics


def final_seeds(
    cfg: Config, params: dict[str, Any], row: RowFolder, resume: bool = False
) -> list[dict[str, Any]]:
    """Every final seed of `cfg.sweep.final_seeds`, as Ray tasks; their metrics in seed order.
    With `resume`, a seed's folder left by an interrupted sweep continues from its last
    checkpoint; otherwise an old folder is set aside, never overwritten in place."""
    import ray

    res = cfg.sweep.resources
    task = ray.remote(
        num_cpus=res.cpus_per_trial, num_gpus=res.gpus_per_trial, max_retries=cfg.sweep.max_failures
    )(train_seed)
    dirs = row.seed_dirs(cfg.sweep.final_seeds, keep=resume)
    return ray.get([task.remote(cfg, params, seed, str(d.resolve())) for seed, d in dirs.items()])
