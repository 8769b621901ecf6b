"""`python -m mgc.table`: the ablation table from results/*/summary.json → Markdown, CSV, LaTeX."""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

COLUMNS = [
    "Experiment",
    "Model",
    "Augmentation",
    "Optimizer/Strategy",
    "Params",
    "Test Acc",
    "Macro-F1",
    "Split",
]


def _pm(summary: dict[str, Any], key: str) -> str:
    mean, std = summary[f"{key}_mean"], summary[f"{key}_std"]
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _order(name: str) -> tuple:
    # E0, E1, …, E10 in numeric order; other rows after them, alphabetically.
    m = re.fullmatch(r"E(\d+)(.*)", name)
    return (0, int(m.group(1)), m.group(2)) if m else (1, 0, name)


def collect(results_dir: str | Path) -> list[dict[str, Any]]:
    """One row per results/<experiment>/summary.json, in E0…E5 order."""
    summaries = []
    for path in sorted(Path(results_dir).glob("*/summary.json")):
        summaries.append(json.loads(path.read_text()))
    summaries.sort(key=lambda s: _order(s["experiment"]))
    rows = []
    for s in summaries:
        rows.append(
            {
                "Experiment": s["experiment"],
                "Model": s["model"],
                "Augmentation": s["augmentation"],
                "Optimizer/Strategy": s["strategy"],
                "Params": f"{s['params']:,}",
                "Test Acc": _pm(s, "test_track_accuracy"),
                "Macro-F1": _pm(s, "test_track_macro_f1"),
                "Split": f"{s['split']} (track level, {len(s['seeds'])} seeds)",
            }
        )
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    note = "Test Acc and Macro-F1 in %, mean ± std over the final seeds, track level (mean of chunk probabilities)."
    return "\n".join(lines) + f"\n\n{note}\n"


def _tex_escape(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("±", r"$\pm$"),
    ):
        text = text.replace(a, b)
    return text


def to_latex(rows: list[dict[str, Any]]) -> str:
    """A booktabs table ready to paste into a paper."""
    head = " & ".join(_tex_escape(c) for c in COLUMNS) + r" \\"
    body = [" & ".join(_tex_escape(str(r[c])) for c in COLUMNS) + r" \\" for r in rows]
    return "\n".join(
        [
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{Ablation on GTZAN: test accuracy and macro-F1 (\%, mean $\pm$ std over seeds, track level).}",
            r"\label{tab:ablation}",
            r"\begin{tabular}{llllrrrl}",
            r"\toprule",
            head,
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    )


def write_tables(results_dir: str | Path) -> dict[str, Path]:
    results_dir = Path(results_dir)
    rows = collect(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "md": results_dir / "table.md",
        "csv": results_dir / "table.csv",
        "tex": results_dir / "table.tex",
    }
    paths["md"].write_text(to_markdown(rows))
    paths["tex"].write_text(to_latex(rows))
    with open(paths["csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mgc.table", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--results", default="results", help="results folder (default: results)")
    parser.add_argument(
        "--latex", action="store_true", help="also print the LaTeX table to paste into a paper"
    )
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():
        print(f"error: {args.results}: results folder not found", file=sys.stderr)
        return 2
    paths = write_tables(args.results)
    print(paths["md"].read_text())
    if args.latex:
        print(paths["tex"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
