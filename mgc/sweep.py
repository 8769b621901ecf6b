"""`python -m mgc.sweep ABLATION.yaml [overrides]`: Ray Tune + Optuna + ASHA, final seeds, the table.

The command line over two floors: the row from `mgc.run.sweep`, then the tables over every
stored row from `mgc.report.table` (and to W&B).
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from mgc.core.cli import run_command
from mgc.run.sweep import SweepResult, run_sweep
from mgc.run.tracking import wandb_table


def sweep(
    ablation: str | Path, overrides: list[str] | None = None, resume: bool = False
) -> SweepResult:
    """The row, then every table rebuilt with it; the table also goes to W&B."""
    from mgc.report.table import write_tables  # pandas: after the config and data checks

    result = run_sweep(ablation, overrides, resume)
    wandb_table(result.cfg, write_tables(result.experiment_dir.parent))
    return result


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

    def body() -> int:
        from mgc.report.table import row_line

        result = sweep(args.ablation, overrides, resume=args.resume)
        s = result.summary
        print(f"{row_line(s)}; {s['n_trials']} trials in {s['sweep_seconds'] / 60:.1f} min")
        print(
            f"results: {result.experiment_dir}  table: {result.experiment_dir.parent / 'table.md'}"
        )
        return 0

    again = shlex.join(
        ["python", "-m", "mgc.sweep", args.ablation, *args.overrides, "--resume"]
        + (["--no-wandb"] if args.no_wandb else [])
    )
    return run_command(body, f"continue with  {again}")


if __name__ == "__main__":
    raise SystemExit(main())
