"""What ASHA's early stopping is worth: one row's search run again with every trial to the end.

    python bench/asha_vs_grid.py ablations/e0.yaml [overrides]   # after that row's sweep

The row's sweep (its search, results/<row>/search.json) ran Optuna + ASHA. This runs the same search — the
same config, the same seeded Optuna sampler, so the same trial configurations in the same order
(with fewer trials than TPE's start-up count every proposal is a seeded random draw; the script
checks that the configurations match) — with ASHA's grace period set to the last epoch, so no
trial is stopped. It compares the best validation macro-F1 each found and the trial-epochs each
spent, and writes results/asha_vs_grid.{md,json}. No final seeds: only the search is compared.

With every trial's full validation curve in hand, it then replays Ray's own ASHA scheduler over
those curves for other grace periods and reduction factors (the same number of trials at once,
each epoch taking the time it took), to show which settings would have met the goal on this row.
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.core.cluster import init_ray  # noqa: E402
from mgc.core.device import machine  # noqa: E402
from mgc.core.fsio import atomic_write  # noqa: E402
from mgc.run.budget import time_spent  # noqa: E402
from mgc.run.sweep import (  # noqa: E402
    load_sweep,
    prepare_features,
    run_trials,
    trial_concurrency,
)

REPLAY_GRACE = (1, 2, 3, 4)
REPLAY_REDUCTION = (2, 3, 4)


def trial_key(trial: dict, space: dict) -> tuple:
    """A trial's configuration, comparable across the two searches (numbers rounded; categorical
    choices such as an embedding's name as they are)."""

    def value(v):
        return round(float(v), 10) if isinstance(v, int | float) else str(v)

    return tuple(value(trial[k]) for k in sorted(space))


def compare(asha: list[dict], grid: list[dict], space: dict) -> dict:
    """Best validation macro-F1 and trial-epochs of each search, over the trials they share."""
    by_key = {trial_key(t, space): t for t in grid}
    shared = [t for t in asha if trial_key(t, space) in by_key]

    def side(trials: list[dict]) -> dict:
        best = max(trials, key=lambda t: t["val_macro_f1"])
        return {
            "trials": len(trials),
            "trial_epochs": sum(int(t["epochs"]) for t in trials),
            "best_val_macro_f1": best["val_macro_f1"],
            "best_params": {k: best[k] for k in space},
        }

    out = {"asha": side(asha), "grid": side(grid), "shared_configurations": len(shared)}
    out["gap_points"] = 100 * (out["grid"]["best_val_macro_f1"] - out["asha"]["best_val_macro_f1"])
    out["epoch_ratio"] = out["asha"]["trial_epochs"] / out["grid"]["trial_epochs"]
    out["same_best_configuration"] = out["asha"]["best_params"] == out["grid"]["best_params"]
    return out


def replay_asha(
    curves: list[list[float]],
    seconds: list[list[float]],
    *,
    grace: int,
    reduction_factor: int,
    concurrent: int,
) -> dict:
    """Ray's AsyncHyperBandScheduler driven by recorded full learning curves.

    Trial i starts when one of `concurrent` slots frees up, in proposal order, and reports
    curves[i][e] after seconds[i][e] more seconds; the scheduler sees the results in the order
    they would have arrived and stops trials as it would have. Returns the trial-epochs spent and
    the best last-reported value. Only the event order is simulated here; every stopping
    decision is Ray's.
    """
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    max_t = max(len(c) for c in curves)
    scheduler = AsyncHyperBandScheduler(
        metric="score",
        mode="max",
        max_t=max_t,
        grace_period=min(grace, max_t),
        reduction_factor=reduction_factor,
    )
    trials = [SimpleNamespace(trial_id=str(i)) for i in range(len(curves))]
    waiting = list(range(len(curves)))
    events: list[tuple[float, int, int]] = []  # (time of the result, trial, epoch index)
    epochs_run = [0] * len(curves)

    def start(i: int, now: float) -> None:
        scheduler.on_trial_add(None, trials[i])
        heapq.heappush(events, (now + seconds[i][0], i, 0))

    for _ in range(min(concurrent, len(waiting))):
        start(waiting.pop(0), 0.0)
    while events:
        now, i, e = heapq.heappop(events)
        epochs_run[i] = e + 1
        action = scheduler.on_trial_result(
            None, trials[i], {"training_iteration": e + 1, "score": curves[i][e]}
        )
        if action == TrialScheduler.CONTINUE and e + 1 < len(curves[i]):
            heapq.heappush(events, (now + seconds[i][e + 1], i, e + 1))
            continue
        scheduler.on_trial_remove(None, trials[i])
        if waiting:
            start(waiting.pop(0), now)
    last = [curves[i][n - 1] for i, n in enumerate(epochs_run)]
    best = max(range(len(curves)), key=lambda i: last[i])
    return {
        "grace_period": grace,
        "reduction_factor": reduction_factor,
        "trial_epochs": sum(epochs_run),
        "epochs_per_trial": epochs_run,
        "best_val_macro_f1": last[best],
        "best_trial": best,
    }


def replay_table(grid: list[dict], concurrent: int, used: tuple[int, int]) -> list[dict]:
    """replay_asha over a few grace periods and reduction factors, against the full grid."""
    curves = [t["curve"] for t in grid]
    seconds = [t["epoch_seconds"] for t in grid]
    full = sum(len(c) for c in curves)
    grid_best = max(c[-1] for c in curves)
    rows = []
    for grace in REPLAY_GRACE:
        for rf in REPLAY_REDUCTION:
            r = replay_asha(
                curves, seconds, grace=grace, reduction_factor=rf, concurrent=concurrent
            )
            r["epoch_ratio"] = r["trial_epochs"] / full
            r["gap_points"] = 100 * (grid_best - r["best_val_macro_f1"])
            r["meets_goal"] = r["gap_points"] <= 1.0 and r["epoch_ratio"] <= 1 / 3
            r["used_by_the_rows"] = (grace, rf) == used
            rows.append(r)
    return rows


def replay_markdown(rows: list[dict], concurrent: int, asha_epochs: list[int] | None = None) -> str:
    lines = [
        "## Other ASHA settings, replayed on the full grid's curves\n",
        f"Ray's AsyncHyperBandScheduler fed the grid's recorded validation curves, {concurrent} "
        "trials at once in proposal order, each epoch taking the time it took in the grid. "
        f"Chosen on the same {len(rows[0]['epochs_per_trial'])} curves it is scored on, so read "
        "it as what this row allows, not as a tuned setting.\n",
        "| Grace | Reduction factor | Trial-epochs | Share of the grid | Best val macro-F1 "
        "| Gap to the grid (points) | Goal met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " (the rows' setting)" if r["used_by_the_rows"] else ""
        lines.append(
            f"| {r['grace_period']}{mark} | {r['reduction_factor']} | {r['trial_epochs']} "
            f"| {r['epoch_ratio']:.2f} | {r['best_val_macro_f1']:.4f} | {r['gap_points']:+.2f} "
            f"| {'yes' if r['meets_goal'] else 'no'} |"
        )
    used = [r for r in rows if r["used_by_the_rows"]]
    if used and asha_epochs is not None:
        same = used[0]["epochs_per_trial"] == asha_epochs
        lines += [
            "",
            f"Check of the replay: at the rows' setting it stops the trials after "
            f"{used[0]['epochs_per_trial']} epochs ({used[0]['trial_epochs']} in all); the real "
            f"ASHA run stopped them after {asha_epochs} ({sum(asha_epochs)})"
            + (
                " — the same decisions."
                if same
                else ". They differ where results arrived in another order than the replay assumes."
            ),
        ]
    return "\n".join(lines) + "\n"


def to_markdown(row: str, result: dict, cfg_line: str) -> str:
    a, g = result["asha"], result["grid"]
    verdict = (
        "within 1 point" if result["gap_points"] <= 1.0 else "more than 1 point below"
    ) + f" of the full grid at {result['epoch_ratio']:.2f} of its trial-epochs"
    met = result["gap_points"] <= 1.0 and result["epoch_ratio"] <= 1 / 3
    verdict += (
        f"; the goal (≤ 1 point at ≤ 1/3 of the trial-epochs) is {'met' if met else 'not met'}"
    )
    return (
        f"# ASHA against the full grid, row {row}\n\n"
        f"{cfg_line}\n\n"
        "| Search | Trials | Trial-epochs | Best val macro-F1 (chunk level, each trial's last epoch) |\n"
        "|---|---|---|---|\n"
        f"| Optuna + ASHA | {a['trials']} | {a['trial_epochs']} | {a['best_val_macro_f1']:.4f} |\n"
        f"| Optuna, every trial to the end | {g['trials']} | {g['trial_epochs']} "
        f"| {g['best_val_macro_f1']:.4f} |\n\n"
        f"ASHA is {verdict} (gap {result['gap_points']:+.2f} points; "
        f"{result['shared_configurations']}/{g['trials']} configurations identical in both; "
        f"same best configuration: {'yes' if result['same_best_configuration'] else 'no'}).\n"
    )


def curve_of(result, metric: str) -> dict:
    """A Tune result's validation curve and seconds per epoch, in epoch order."""
    df = result.metrics_dataframe.sort_values("training_iteration")
    return {
        "curve": [float(v) for v in df[metric]],
        "epoch_seconds": [float(v) for v in df["time_this_iter_s"]],
    }


def read_json(path: Path, remedy: str) -> dict:
    """A stored JSON file, or a one-line exit naming the file and what to do."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: {path}: not found; {remedy}") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: {path}: not valid JSON ({exc})") from None


def proposal_index(trial_dir: str) -> int:
    """The n of Ray's trial folder `<trainable>_<id>_<n>_<params>_<date>`: trials are created, and
    configurations proposed, in that order (a restored ResultGrid does not keep it)."""
    match = re.match(r".*?_[0-9a-f]{5,}_(\d+)_", trial_dir)
    if match is None:
        raise ValueError(f"{trial_dir}: no trial number in the folder name")
    return int(match.group(1))


def run_grid(ablation: str, space: dict, overrides: list[str], row: str, asha: dict) -> dict:
    """The row's search again with every trial to the end; its trials in proposal order."""
    grid_cfg, _ = load_sweep(ablation, overrides)
    exp_dir = Path(grid_cfg.sweep.storage_path).resolve() / f"mgc-{row}-grid"
    with time_spent(exp_dir) as elapsed:
        init_ray(grid_cfg.sweep.ray_address, grid_cfg.sweep.num_cpus)
        prepare_features(grid_cfg)
        done = run_trials(grid_cfg, space, resume=exp_dir.exists())
    import ray

    done = sorted(
        (r for r in done if r.error is None and r.metrics),
        key=lambda r: proposal_index(Path(r.path).name),
    )
    grid = [
        {
            "trial": Path(r.path).name,
            **{k: r.config[k] for k in space},
            "val_macro_f1": r.metrics[grid_cfg.sweep.metric],
            "epochs": r.metrics["training_iteration"],
            **curve_of(r, grid_cfg.sweep.metric),
        }
        for r in done
    ]
    result = compare([t for t in asha["trials"] if "error" not in t], grid, space)
    result.update(
        row=row,
        grid_seconds=elapsed(),
        machine=machine(),
        replay_concurrency=trial_concurrency(grid_cfg, ray.cluster_resources().get("CPU", 1.0)),
        grid_trials=grid,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ablation")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument(
        "--replay-only",
        action="store_true",
        help="no training: redo the replay and the report from results/asha_vs_grid.json",
    )
    args = parser.parse_args()
    cfg, space = load_sweep(args.ablation, args.overrides)
    row = cfg.experiment.name
    results = Path(cfg.sweep.results_dir)
    # The row's search: search.json as soon as it has ended (summary.json once the row is done,
    # for rows from before search.json); the budget from either.
    stored = results / row / "search.json"
    asha = read_json(
        stored if stored.is_file() else results / row / "summary.json",
        f"run the row's sweep first: {args.ablation}",
    )
    if "budget" not in asha:
        asha["budget"] = read_json(results / row / "summary.json", "let the row finish")["budget"]
    if args.replay_only:
        result = read_json(results / "asha_vs_grid.json", "run this without --replay-only first")
    else:
        grid_overrides = [
            *args.overrides,
            f"experiment.name={row}-grid",
            f"sweep.grace_period={cfg.train.epochs}",  # ASHA with nothing to stop: the full grid
        ]
        result = run_grid(args.ablation, space, grid_overrides, row, asha)
    used = (cfg.sweep.grace_period, cfg.sweep.reduction_factor)
    concurrent = result["replay_concurrency"]
    result["replay"] = replay_table(result["grid_trials"], concurrent, used)
    asha_trials = sorted(
        (t for t in asha["trials"] if "error" not in t), key=lambda t: proposal_index(t["trial"])
    )
    result["asha_epochs_per_trial"] = [int(t["epochs"]) for t in asha_trials]
    budget = asha["budget"]
    cfg_line = (
        f"{budget['num_samples']} trials × up to {budget['max_epochs']} epochs "
        f"({budget['windows_per_track']} windows per track per epoch); ASHA grace "
        f"{budget['grace_period']}, reduction factor {budget['reduction_factor']}; grid run on "
        f"{result['machine'].get('cpu', '?')} "
        f"({'native' if result['machine'].get('native_bf16') else 'no native'} bf16, "
        f"{result['machine'].get('threads', '?')} threads), {result['grid_seconds'] / 60:.1f} min."
    )
    atomic_write(results / "asha_vs_grid.json", json.dumps(result, indent=1) + "\n")
    text = (
        to_markdown(row, result, cfg_line)
        + "\n"
        + replay_markdown(result["replay"], concurrent, result["asha_epochs_per_trial"])
    )
    atomic_write(results / "asha_vs_grid.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
