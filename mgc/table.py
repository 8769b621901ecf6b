"""`python -m mgc.table`: the ablation table from results/*/summary.json → Markdown, CSV, LaTeX.

The command line; the work is done by `mgc.report.table`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgc.core.fsio import atomic_write
from mgc.report.table import compare_rows, comparison_markdown, write_tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.table", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--results", default="results", help="results folder (default: results)")
    parser.add_argument(
        "--latex", action="store_true", help="also print the LaTeX table to paste into a paper"
    )
    parser.add_argument(
        "--figures",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also draw the paper figures (confusion, validation curves, searches; default: on)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        action="append",
        metavar=("ROW", "AGAINST"),
        type=Path,
        help="instead of the table: a row folder against another on the same test tracks, "
        "with paired intervals (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="with --compare: also write the Markdown here")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args.compare, args.out)
    if not Path(args.results).is_dir():
        print(f"error: {args.results}: results folder not found", file=sys.stderr)
        return 2
    paths = write_tables(args.results)
    print(paths["md"].read_text(encoding="utf-8"))
    if args.latex:
        print(paths["tex"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.figures:
        from mgc.report.figures import write_figures  # matplotlib and Optuna only when drawing

        try:
            figures = write_figures(args.results)
        except ValueError as exc:  # a row's file that cannot be read: the tables still stand
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if figures:
            print("wrote " + ", ".join(str(p) for p in figures))
    return 0


def compare(pairs: list[list[Path]], out: Path | None) -> int:
    try:
        text = comparison_markdown(compare_rows([(a, b) for a, b in pairs]))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    if out is not None:
        atomic_write(out, text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
