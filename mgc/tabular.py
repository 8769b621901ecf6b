"""`python -m mgc.tabular FEATURES_CSV [ABLATION.yaml] [overrides]`: a hand-made feature table → a row.

The command line over two floors: the row from `mgc.run.tabular`, then the tables from
`mgc.report.table`.
"""

from __future__ import annotations

import argparse
import logging

from mgc.core.cli import config_and_overrides, run_command
from mgc.report.table import row_line, write_tables
from mgc.run.tabular import run_tabular


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.tabular", description=__doc__.splitlines()[0]
    )
    parser.add_argument("features_csv", help="per-clip feature table, e.g. features_30_sec.csv")
    parser.add_argument(
        "config", nargs="?", help="ablation whose data, split and seeds to use (ablations/e0.yaml)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="section.key=value, e.g. data.split=fault_filtered"
    )
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config, overrides = config_and_overrides(args.config, args.overrides)

    def tabular() -> int:
        result = run_tabular(args.features_csv, config, overrides)
        write_tables(result.experiment_dir.parent)
        s = result.summary
        print(f"{row_line(s)}; C = {s['best_params']['C']:g} of {s['n_trials']} on validation")
        out = result.experiment_dir
        print(f"results: {out}  table: {out.parent / 'table.md'}")
        return 0

    return run_command(tabular)


if __name__ == "__main__":
    raise SystemExit(main())
