"""`python -m mgc.table`: the ablation table from results/*/summary.json → Markdown, CSV, LaTeX."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mgc.core.fsio import atomic_write
from mgc.results.metrics import classification_metrics
from mgc.results.rows import (
    SeedPredictions,
    is_reference,
    read_summaries,
    read_summary,
    seed_predictions,
)
from mgc.results.stats import Interval, bootstrap_interval, paired_difference

COLUMNS = [
    "Experiment",
    "Model",
    "Augmentation",
    "Optimizer/Strategy",
    "Params",
    "Test Acc",
    "Macro-F1",
    "Acc 95% CI",
    "F1 95% CI",
    "Seed ensemble Acc / F1",
    "ΔF1 [95% CI] vs",
    "Converged",
    "Trial-epochs run / grid",
    "Wall h (CPU h)",
    "Split",
]
# The numbers are right-aligned in Markdown and LaTeX alike.
ALIGN = ["left"] * 4 + ["right"] * 10 + ["left"]
N_BOOT = 2000  # resamples per interval; seeded, so the tables rebuild byte for byte

NOTE = (
    "Test Acc and Macro-F1 in %, mean ± std over the final seeds, "
    "track level (mean of chunk probabilities). 95% CI: bootstrap over the test tracks, "
    "stratified by genre, of the seed mean. Seed ensemble: the final seeds as one model, each "
    "track's genre of highest mean probability over the seeds (– for one seed or one fit). "
    "ΔF1: macro-F1 minus that of the row named (the "
    "ablation row before, or E0 for the reference rows M1 and D7; same split, same test tracks), "
    "with its paired bootstrap interval; an interval that holds 0 is no evidence of a change. "
    "Converged: final seeds that early stopping ended, of all; a seed that ran out of epochs "
    "while still improving is counted as such (the budget cut it short); for a row refit on "
    "train+valid, its seeds' first fits on train, whose best epoch set the refit's length. "
    "Trial-epochs: epochs run by all trials of the search (ASHA stops weak ones) against every "
    "trial run to the end; hours: the whole sweep with its final seeds, across its resumes, "
    "each part's CPU hours at the CPUs it held."
)
CAPTION = (
    r"Ablation on GTZAN: test accuracy and macro-F1 (\%, mean $\pm$ std over seeds, track level)."
)


def _write(path: Path, text: str) -> Path:
    atomic_write(path, text)  # a reader sees the old table or the new one, never half of one
    return path


def mean_std(summary: dict[str, Any], key: str) -> str:
    mean = f"{100 * summary[f'{key}_mean']:.1f}"
    # One seed has no spread; "± 0.0" would claim one. The Split column says "1 seed".
    if len(summary["seeds"]) < 2:
        return mean
    return f"{mean} ± {100 * summary[f'{key}_std']:.1f}"


def row_name(s: dict[str, Any]) -> str:
    """The row's name, marked when its numbers come from a quick look, not the full budget."""
    quick = s.get("budget_name") == "quick"
    return f"{s['experiment']} (quick look, not for the table)" if quick else s["experiment"]


def row_line(s: dict[str, Any]) -> str:
    """One line for a finished row: its split, seeds and test track accuracy and macro-F1."""
    n = len(s["seeds"])
    return (
        f"{row_name(s)} ({s['split']} split, {n} seed{'' if n == 1 else 's'}): test track "
        f"acc {mean_std(s, 'test_track_accuracy')}, macro-F1 {mean_std(s, 'test_track_macro_f1')}"
    )


def _ci(interval: Interval | None) -> str:
    # "–" rather than "n/a", which pandas would read back as a missing value.
    return "–" if interval is None else f"[{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


def _ensemble(pred: SeedPredictions | None) -> str:
    """Test accuracy / macro-F1 of the seeds' ensemble (mean probabilities), in %."""
    joint = pred.ensemble() if pred is not None else None
    if joint is None:
        return "–"
    m = classification_metrics(pred.truth, joint, len(pred.genres))
    return f"{100 * m['accuracy']:.1f} / {100 * m['macro_f1']:.1f}"


def _signed(interval: Interval) -> str:
    return f"{100 * interval.value:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"


def _delta(interval: Interval | None, other: str | None) -> str:
    if interval is None:
        return "–"
    return f"{_signed(interval)} vs {other}"


def _cost(s: dict[str, Any]) -> dict[str, str]:
    """What the row cost: trial-epochs ASHA let run against every trial run to the end, and the
    sweep's wall and CPU hours (all its parts, across --resume). "–" for rows made before these
    were recorded."""
    budget = s.get("budget")
    spent = (
        f"{s['trial_epochs_run']} / {budget['grid_trial_epochs']}"
        if budget and "trial_epochs_run" in s
        else "–"
    )
    if s.get("failed_trials"):  # trials that ended in an error after their retries
        spent += f" ({s['failed_trials']} failed)"
    if s.get("search_reused_from"):  # another row's search: its cost is counted there
        spent = f"{s['search_reused_from']}'s search"
    hours = f"{s['sweep_seconds'] / 3600:.2f} ({s['cpu_hours']:.2f})" if "cpu_hours" in s else "–"
    return {"Trial-epochs run / grid": spent, "Wall h (CPU h)": hours}


def _converged(s: dict[str, Any]) -> str:
    """How many final seeds early stopping ended, and how many the budget cut short while they
    still improved; "one fit" for a model trained in one go, "–" for rows before this was
    recorded."""
    seeds = s.get("convergence")
    if not seeds:
        return "–"
    if all(c.get("max_epochs") == 1 for c in seeds):
        return "one fit"
    cell = f"{sum(c['stopped_early'] for c in seeds)}/{len(seeds)}"
    improving = sum(c["still_improving"] for c in seeds)
    return cell + (f", {improving} still improving" if improving else "")


def _split(s: dict[str, Any]) -> str:
    """The split's name; with the test tracks held against those it names when some are missing
    (our GTZAN clips cover 238 of the fault-filtered split's 290)."""
    missing = (s.get("missing_tracks") or {}).get("test", 0)
    if not missing or not s.get("n_tracks"):
        return s["split"]
    held = s["n_tracks"]["test"]
    return f"{s['split']}, {held} of {held + missing} test tracks"


def _strategy(s: dict[str, Any]) -> str:
    """The row's strategy, and how its tested models were fitted when not on train alone."""
    refit = (s.get("budget") or {}).get("final_refit")
    return f"{s['strategy']}; refit on train+valid" if refit else s["strategy"]


def _row(
    s: dict[str, Any], evidence: dict[str, Any], pred: SeedPredictions | None
) -> dict[str, str]:
    n = len(s["seeds"])
    return {
        "Experiment": row_name(s),
        "Model": s["model"],
        "Augmentation": s["augmentation"],
        "Optimizer/Strategy": _strategy(s),
        "Params": f"{s['params']:,}",
        "Test Acc": mean_std(s, "test_track_accuracy"),
        "Macro-F1": mean_std(s, "test_track_macro_f1"),
        "Acc 95% CI": _ci(evidence.get("accuracy")),
        "F1 95% CI": _ci(evidence.get("macro_f1")),
        "Seed ensemble Acc / F1": _ensemble(pred),
        "ΔF1 [95% CI] vs": _delta(evidence.get("delta_f1"), evidence.get("delta_vs")),
        "Converged": _converged(s),
        **_cost(s),
        "Split": f"{_split(s)} (track level, {n} seed{'' if n == 1 else 's'})",
    }


def _compared_with(s: dict[str, Any], done: list[tuple[dict[str, Any], Any]]):
    """The row this row's ΔF1 is measured against, on the same split: the row it names in
    `compare_with` when that is there, with as much of this row's own suffix as names a row (E4
    for E4-long; E4-ff for E4-ff and for E4-long-ff); else for an ablation row the ablation row
    before it, for a reference row (M1, D7) that split's E0; None for the first."""
    same_split = [(r, p) for r, p in done if r["split"] == s["split"] and not is_reference(r)]
    named = s.get("compare_with")
    if named:
        parts = str(s["experiment"]).split("-")[1:]
        by_name = {r["experiment"]: (r, p) for r, p in same_split}
        for i in range(len(parts) + 1):
            candidate = "-".join([named, *parts[i:]])
            if candidate in by_name:
                return by_name[candidate]
    if is_reference(s):
        same_split = [(r, p) for r, p in same_split if str(r["experiment"]).startswith("E0")][:1]
    return same_split[-1] if same_split else None


def collect(results_dir: str | Path) -> pd.DataFrame:
    """One row of formatted cells per results/<row>/summary.json, in table order: split by
    split, E0, the reference rows, then E1, E2, …"""
    rows, done = [], []
    for s in read_summaries(results_dir):
        pred = seed_predictions(results_dir, s)
        evidence: dict[str, Any] = {}
        if pred is not None:
            n = len(pred.genres)
            for metric in ("accuracy", "macro_f1"):
                evidence[metric] = bootstrap_interval(pred.truth, pred.preds, metric, n, N_BOOT)
            other = _compared_with(s, done)
            # Compared only on the very same test tracks.
            if other is not None and other[1] is not None and other[1].tracks == pred.tracks:
                evidence["delta_f1"] = paired_difference(
                    pred.truth, other[1].preds, pred.preds, "macro_f1", n, N_BOOT
                )
                evidence["delta_vs"] = other[0]["experiment"]
        done.append((s, pred))
        rows.append(_row(s, evidence, pred))
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(table: pd.DataFrame) -> str:
    # disable_numparse keeps the cells as formatted ("393,450", "59.0") instead of re-reading them.
    body = table.to_markdown(index=False, colalign=ALIGN, disable_numparse=True)
    return f"{body}\n\n{NOTE}\n"


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs table ready to \\input in a paper."""
    # Styler escapes first (_ % & # …), then the formatter turns ± into math mode.
    styler = (
        table.style.hide(axis="index")
        .format(lambda s: s.replace("±", r"$\pm$"), escape="latex")
        .format_index(lambda s: s.replace("Δ", r"$\Delta$"), escape="latex", axis=1)
    )
    return styler.to_latex(
        column_format="".join(a[0] for a in ALIGN),
        position="t",
        position_float="centering",
        hrules=True,
        caption=CAPTION,
        label="tab:ablation",
        environment="table",
    )


def write_tables(results_dir: str | Path) -> dict[str, Path]:
    """Rebuild results_dir/table.{md,csv,tex}; returns their paths under keys md, csv, tex."""
    results_dir = Path(results_dir)
    table = collect(results_dir)
    texts = {
        "md": to_markdown(table),
        "csv": table.to_csv(index=False, lineterminator="\n"),
        "tex": to_latex(table),
    }
    return {k: _write(results_dir / f"table.{k}", t) for k, t in texts.items()}


COMPARE_COLUMNS = [
    "Row",
    "Against",
    "Test Acc",
    "Macro-F1",
    "ΔAcc [95% CI]",
    "ΔF1 [95% CI]",
]
COMPARE_NOTE = (
    "In brackets after a row's name: each seed's best epoch / epochs run. Test Acc and "
    "Macro-F1 in %, mean ± std over the row's seeds (the row's, then the other's), track "
    "level. Δ: the row minus "
    "the row it is held against, on the same test tracks, with its paired bootstrap interval "
    "(resamples of the test tracks, stratified by genre, of the seed means); an interval that "
    "holds 0 is no evidence of a change."
)


def _read_row(folder: Path) -> tuple[dict[str, Any], SeedPredictions]:
    """A finished row's summary and seed predictions, from its folder."""
    path = folder / "summary.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no summary.json (not a finished row)")
    s = read_summary(path)
    if str(s["experiment"]) != folder.name:
        raise ValueError(f"{folder}: holds row {s['experiment']!r}, not {folder.name!r}")
    pred = seed_predictions(folder.parent, s)
    if pred is None:
        raise ValueError(f"{folder}: a seed's predictions.csv is missing")
    return s, pred


def _epochs(s: dict[str, Any]) -> str:
    return (
        ", ".join(f"{c['best_epoch']} / {c['epochs_run']}" for c in s.get("convergence") or [])
        or "–"
    )


def compare_rows(pairs: list[tuple[Path, Path]]) -> pd.DataFrame:
    """For each (row, against) pair of row folders: both rows' scores and the paired difference
    of the row from the one it is held against, on the very same test tracks (a row trained
    again at a larger budget against the original, for instance)."""
    lines = []
    for folder, against in pairs:
        (s, pred), (o, other) = _read_row(Path(folder)), _read_row(Path(against))
        if pred.tracks != other.tracks or pred.genres != other.genres:
            raise ValueError(f"{folder} and {against}: not scored on the same test tracks")
        n = len(pred.genres)
        delta = {
            metric: paired_difference(pred.truth, other.preds, pred.preds, metric, n, N_BOOT)
            for metric in ("accuracy", "macro_f1")
        }
        lines.append(
            {
                "Row": f"{s['experiment']} ({_epochs(s)})",
                "Against": f"{o['experiment']} ({_epochs(o)})",
                "Test Acc": f"{mean_std(s, 'test_track_accuracy')} vs "
                f"{mean_std(o, 'test_track_accuracy')}",
                "Macro-F1": f"{mean_std(s, 'test_track_macro_f1')} vs "
                f"{mean_std(o, 'test_track_macro_f1')}",
                "ΔAcc [95% CI]": _signed(delta["accuracy"]),
                "ΔF1 [95% CI]": _signed(delta["macro_f1"]),
            }
        )
    return pd.DataFrame(lines, columns=COMPARE_COLUMNS)


def comparison_markdown(table: pd.DataFrame) -> str:
    body = table.to_markdown(index=False, disable_numparse=True)
    return f"{body}\n\n{COMPARE_NOTE}\n"
