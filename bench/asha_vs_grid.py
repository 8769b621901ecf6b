"""What ASHA's early stopping is worth: one row's search run again with every trial to the end.

    python bench/asha_vs_grid.py ablations/e0.yaml [overrides]   # after that row's sweep

The row's sweep (results/<row>/summary.json) ran Optuna + ASHA. This runs the same search — the
same config, the same seeded Optuna sampler, so the same trial configurations in the same order
(with fewer trials than TPE's start-up count every proposal is a seeded random draw; the script
checks that the configurations match) — with ASHA's grace period set to the last epoch, so no
trial is stopped. It compares the best validation macro-F1 each found and the trial-epochs each
spent, and writes results/asha_vs_grid.{md,json}. No final seeds: only the search is compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.budget import time_spent  # noqa: E402
from mgc.cluster import init_ray  # noqa: E402
from mgc.device import machine  # noqa: E402
from mgc.fsio import atomic_write  # noqa: E402
from mgc.sweep import load_sweep, prepare_features, run_trials  # noqa: E402


def trial_key(trial: dict, space: dict) -> tuple:
    return tuple(round(float(trial[k]), 10) for k in sorted(space))


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ablation")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg, space = load_sweep(args.ablation, args.overrides)
    row = cfg.experiment.name
    results = Path(cfg.sweep.results_dir)
    asha = json.loads((results / row / "summary.json").read_text())
    grid_overrides = [
        *args.overrides,
        f"experiment.name={row}-grid",
        f"sweep.grace_period={cfg.train.epochs}",  # ASHA with nothing to stop: the full grid
    ]
    grid_cfg, _ = load_sweep(args.ablation, grid_overrides)
    exp_dir = Path(grid_cfg.sweep.storage_path).resolve() / f"mgc-{row}-grid"
    with time_spent(exp_dir) as elapsed:
        init_ray(grid_cfg.sweep.ray_address, grid_cfg.sweep.num_cpus)
        prepare_features(grid_cfg)
        done = run_trials(grid_cfg, space, resume=exp_dir.exists())
    grid = [
        {
            **{k: r.config[k] for k in space},
            "val_macro_f1": r.metrics[grid_cfg.sweep.metric],
            "epochs": r.metrics["training_iteration"],
        }
        for r in done
        if r.error is None and r.metrics
    ]
    result = compare([t for t in asha["trials"] if "error" not in t], grid, space)
    result.update(row=row, grid_seconds=elapsed(), machine=machine(), grid_trials=grid)
    budget = asha["budget"]
    cfg_line = (
        f"{budget['num_samples']} trials × up to {budget['max_epochs']} epochs "
        f"({budget['windows_per_track']} windows per track per epoch); ASHA grace "
        f"{budget['grace_period']}, reduction factor {budget['reduction_factor']}; grid run on "
        f"{result['machine'].get('cpu', '?')}, {result['grid_seconds'] / 60:.1f} min."
    )
    atomic_write(results / "asha_vs_grid.json", json.dumps(result, indent=1) + "\n")
    atomic_write(results / "asha_vs_grid.md", to_markdown(row, result, cfg_line))
    print(to_markdown(row, result, cfg_line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
