"""The final seeds: a row's chosen configuration trained at the full budget, once per seed, and
tested once.

Each seed is a Ray task with a trial's resources, so seeds run in parallel where they fit (and on
any node of a cluster). Each leaves its epochs with a small actor, which the driver shows as one
progress bar per seed. A seed's run folder is `results/<experiment>/seed_<n>/` (`RowFolder`); a
finished one (its metrics.json) is never run again, so a row carried to another machine by its
committed folders goes on with the seeds it lacks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgc.core.cluster import placement
from mgc.core.config import Config, with_params

if TYPE_CHECKING:  # pandas and matplotlib come with it: loaded once a row is written
    from mgc.results.rows import RowFolder

log = logging.getLogger(__name__)

# A refit seed (sweep.final.refit): its first fit, on train and early-stopped on validation,
# runs in this subfolder and says how many epochs the refit on train + validation trains.
SELECT = "select"
# What the seed's metrics.json keeps of that first fit: how it converged, and its held-out
# validation scores (the refit trains on the validation tracks, so its own say little).
SELECT_KEYS = ("best_epoch", "epochs_run", "max_epochs", "early_stopping_patience", "stopped_early")


def chosen_config(cfg: Config, params: dict[str, Any]) -> Config:
    """The configuration the final seeds train (best_config.yaml): the search's chosen
    parameters at the full budget."""
    from mgc.run.budget import final_overrides

    return with_params(cfg, {**params, **final_overrides(cfg)})


def train_seed(
    cfg: Config, seed: int, run_dir: str, sink: Any = None, start: int = 0
) -> dict[str, Any]:
    """One final seed (cfg from `chosen_config` with its seed): `fit`, then the test scores,
    with the node it ran on (`placement`). Each epoch goes to `sink` (a `ProgressSink` actor)
    for the driver's progress bars. resume=True: a seed stopped mid-run (Ctrl-C, a crash, a lost
    node, after which Ray runs the task again) goes on from its last checkpoint; a run that
    finds more epochs done than the driver's `start` is such a retry, and says so in one line."""
    from mgc.run.train import fit, logged_epochs

    where = placement()
    refit = cfg.sweep.final.refit
    done = logged_epochs(Path(run_dir) / SELECT if refit else Path(run_dir))
    if done > start:
        log.warning(
            "seed %d: its run stopped after epoch %d (a lost node or worker); retried on node %s "
            "from that epoch's checkpoint",
            seed,
            done,
            where.get("node_id", "?")[:8],
        )

    if sink is not None:  # the driver's bar starts its clock here, not when it was queued
        sink.add.remote({"seed": seed, "started": True})

    def report(metrics: dict[str, Any], _checkpoint_dir: Path) -> None:
        if sink is not None:
            # Sent, never waited for: a task blocked in ray.get hands its CPU back to Ray, which
            # would then start one more seed than there are CPUs.
            sink.add.remote(
                {
                    "seed": seed,
                    "epoch": metrics["epoch"],
                    "val_macro_f1": metrics["val_macro_f1"],
                    "best": metrics["best_val_macro_f1"],
                }
            )

    if refit:
        return {**refit_seed(cfg, seed, Path(run_dir), report), **where}
    return {**fit(cfg, report=report, run_dir=run_dir, resume=True).metrics, **where}


def refit_seed(cfg: Config, seed: int, run_dir: Path, report: Any = None) -> dict[str, Any]:
    """A seed under sweep.final.refit: the usual fit on train, early-stopped on validation, in
    run_dir/select/ (read, not run again, once finished); then a fresh model on train +
    validation for that fit's best epoch count (same schedule, no early stop) in run_dir, which
    is tested. run_dir/metrics.json is the refit's, with the first fit's convergence and
    held-out validation scores, and its test scores under `select`: what the refit gained."""
    from mgc.results.artifacts import write_json
    from mgc.run.train import fit

    done = run_dir / SELECT / "metrics.json"
    if done.is_file():
        first = json.loads(done.read_text())
    else:
        first = fit(cfg, report=report, run_dir=run_dir / SELECT, resume=True).metrics
    epochs = int(first["best_epoch"])
    log.info("seed %d: refit on train + validation for %d epochs", seed, epochs)
    again = {
        "train.include_valid": True,
        "train.stop_epoch": epochs,
        "train.early_stopping_patience": 0,
    }
    metrics = fit(with_params(cfg, again), run_dir=run_dir, resume=True).metrics
    metrics = {
        **metrics,
        **{k: first[k] for k in SELECT_KEYS if k in first},
        "valid": first["valid"],
        "refit": {
            "epochs": epochs,
            "fit_on": "train+valid",
            "valid_not_held_out": metrics["valid"],
        },
        "select": {"test": first.get("test"), "seconds": first.get("seconds")},
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics


class ProgressSink:
    """A Ray actor (no CPU) where the seeds leave their epochs until the driver collects them."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, item: dict[str, Any]) -> None:
        self.items.append(item)

    def drain(self) -> list[dict[str, Any]]:
        items, self.items = self.items, []
        return items


class SeedProgress:
    """One bar per seed: epochs done of the most it may run, the last validation macro-F1, the
    best so far, and time left at the pace so far (early stopping can only make it shorter).
    A seed queued behind the others says so, and its clock starts when it does."""

    def __init__(
        self, starts: dict[int, int], max_epochs: int, best_epochs: dict[int, int] | None = None
    ) -> None:
        from tqdm.auto import tqdm

        self.bars = {
            seed: tqdm(
                total=max_epochs,
                initial=start,
                desc=f"seed {seed}",
                unit="epoch",
                position=i,
                dynamic_ncols=True,
            )
            for i, (seed, start) in enumerate(starts.items())
        }
        for bar in self.bars.values():
            bar.set_postfix_str("queued for a free slot")
        # A resumed seed's best may lie before the resume: its log says which epoch it was.
        self.best_epoch: dict[int, int] = dict(best_epochs or {})

    def update(self, item: dict[str, Any]) -> None:
        """One item from the seeds' `ProgressSink`: a seed that started, or an epoch."""
        if item.get("started"):
            self.start(item["seed"])
        else:
            self.epoch(item)

    def start(self, seed: int) -> None:
        """The seed's bar counts time from now: its wait in the queue is not its pace."""
        bar = self.bars[seed]
        if not bar.disable:  # a bar turned off (TQDM_DISABLE) keeps no clock
            # The pace counts epochs from here: a resumed or retried seed keeps the ones it
            # shows. (tqdm's reset would draw the bar at 0 first, with a negative rate.)
            bar.initial = bar.last_print_n = bar.n
            bar.start_t = bar.last_print_t = bar._time()
        bar.set_postfix_str("training")

    def epoch(self, item: dict[str, Any]) -> None:
        bar = self.bars[item["seed"]]
        if item["val_macro_f1"] >= item["best"]:
            self.best_epoch[item["seed"]] = item["epoch"]
        bar.update(item["epoch"] - bar.n)
        bar.set_postfix_str(
            f"val macro-F1 {item['val_macro_f1']:.3f}, best {item['best']:.3f} "
            f"(epoch {self.best_epoch.get(item['seed'], '?')})"
        )

    def done(self, seed: int, metrics: dict[str, Any]) -> None:
        bar = self.bars[seed]
        how = "early stop" if metrics.get("stopped_early") else "last epoch"
        bar.set_postfix_str(
            f"{how} at {metrics['epochs_run']}, best epoch {metrics['best_epoch']}, "
            f"test macro-F1 {metrics['test']['track_macro_f1']:.3f}"
        )
        # Closed now, so it keeps the seed's own time and pace: a bar left open until the last
        # seed ends counts the others' hours as its own (seen on E4: 17 epochs "in 1:56:36").
        bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def run_seeds(
    cfgs: dict[int, Config],
    dirs: dict[int, Path],
    starts: dict[int, int],
    train: Callable[..., dict[str, Any]] = train_seed,
) -> dict[int, dict[str, Any]]:
    """Train every seed of `cfgs` as a Ray task running `train` (with `train_seed`'s
    arguments), with progress; their metrics by seed. A seed whose node is lost is run again
    (up to sweep.max_failures times), from its checkpoint on the shared results folder."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from mgc.run.train import logged_best_epoch

    here = ray.get_runtime_context().get_node_id()

    res = next(iter(cfgs.values())).sweep.resources
    task = ray.remote(
        num_cpus=res.cpus_per_trial,
        num_gpus=res.gpus_per_trial,
        max_retries=next(iter(cfgs.values())).sweep.max_failures,
    )(train)
    # No CPU for the sink: it starts even while the seeds hold every CPU. On the driver's own
    # node: a lost worker node takes its seeds (which Ray runs again), never the progress.
    sink = (
        ray.remote(num_cpus=0)(ProgressSink)
        .options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
        .remote()
    )
    # Named by seed: the dashboard and Ray's state API show which node trains which seed.
    refs = {
        task.options(name=f"seed_{seed}").remote(
            cfg, seed, str(dirs[seed].resolve()), sink, starts[seed]
        ): seed
        for seed, cfg in cfgs.items()
    }
    bests = {seed: logged_best_epoch(dirs[seed]) for seed in cfgs if starts[seed]}
    progress = SeedProgress(
        starts,
        max(c.train.epochs for c in cfgs.values()),
        {seed: epoch for seed, epoch in bests.items() if epoch is not None},
    )
    results: dict[int, dict[str, Any]] = {}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, timeout=1.0)
            for item in ray.get(sink.drain.remote()):
                progress.update(item)
            for ref in done:
                results[refs[ref]] = ray.get(ref)
                progress.done(refs[ref], results[refs[ref]])
    finally:
        progress.close()
        ray.kill(sink)
    return results


def final_seeds(
    cfg: Config, params: dict[str, Any], row: RowFolder, resume: bool = False
) -> list[dict[str, Any]]:
    """Every final seed of `cfg.sweep.final_seeds` at the full budget; their metrics in seed
    order. With `resume`, a finished seed (its metrics.json, committed or left here) is read,
    not run; an interrupted one continues from its checkpoint, or starts over when its folder
    came without one (from another machine: checkpoints are not committed). Otherwise an old
    folder is set aside, never overwritten in place."""
    from mgc.run.train import last_checkpoint, logged_epochs

    seeds = cfg.sweep.final_seeds
    dirs = row.seed_dirs(seeds, keep=resume)
    finished = {s: m for s in seeds if (m := row.finished_seed(s)) is not None}
    starts = {}
    for seed in seeds:
        if seed in finished:
            log.info("seed %d: finished earlier (%s), not run again", seed, dirs[seed])
            continue
        starts[seed] = logged_epochs(dirs[seed])
        if starts[seed] and not last_checkpoint(dirs[seed]).is_file():
            aside = row.set_aside(seed)
            log.info(
                "seed %d: stopped after epoch %d with no checkpoint here: starts over (the old "
                "folder is kept as %s)",
                seed,
                starts[seed],
                aside,
            )
            starts[seed] = 0
        elif starts[seed]:
            log.info("seed %d: continues after epoch %d", seed, starts[seed])
    chosen = chosen_config(cfg, params)
    cfgs = {seed: with_params(chosen, {"train.seed": seed}) for seed in starts}
    ran = run_seeds(cfgs, dirs, starts) if cfgs else {}
    return [finished.get(seed) or ran[seed] for seed in seeds]
