"""The stored rows of the results table, written and read here only.

A row is a folder, results/<experiment>/: `best_config.yaml`, `summary.json` (the row's numbers,
its search and what it cost), `seeds.csv` (one line per final seed), one `seed_<n>/` run folder
per final seed, and the first seed's figures. The sweep and the tabular rows write it through
`RowFolder`; the tables (mgc.report.table) and figures (mgc.report.figures) read it.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mgc.core.config import Config, to_dict
from mgc.core.errors import UserError
from mgc.core.fsio import atomic_write
from mgc.results.artifacts import write_json

SPLIT_ORDER = ("stratified",)  # the default split's rows first, then the others by name
REFERENCE_ROWS = ("M1", "D7")  # reference models: shown under E0, compared with E0

SUMMARY, SEEDS_CSV, BEST_CONFIG = "summary.json", "seeds.csv", "best_config.yaml"
SEARCH = "search.json"
# Settings that say where a row ran, not what it trained: a row resumed on another machine (or
# with another core count) keeps its committed best_config.yaml when only these differ.
MACHINE_KEYS = (
    ("data", "root"),
    ("cache", "dir"),
    ("cache", "ray_address"),
    ("cache", "num_cpus"),
    ("sweep", "storage_path"),
    ("sweep", "ray_address"),
    ("sweep", "num_cpus"),
)
# seeds.csv's columns: what each final seed scored, and how long it trained.
SEED_COLUMNS = [
    "seed",
    "test_track_accuracy",
    "test_track_macro_f1",
    "test_chunk_accuracy",
    "test_chunk_macro_f1",
    "valid_track_macro_f1",
    "best_epoch",
    "epochs_run",
    "max_epochs",
    "stopped_early",
]
# The first seed's figures and report, shown at the row's top level.
SEED_FIGURES = ("confusion_matrix_test.png", "train_curves.png", "test_classification_report.txt")


# ---------------------------------------------------------------------------------------------
# Writing a row


@dataclass(frozen=True)
class RowFolder:
    """results/<experiment>/, the one place a row's files are written."""

    path: Path

    @classmethod
    def of(cls, cfg: Config) -> RowFolder:
        return cls(Path(cfg.sweep.results_dir) / cfg.experiment.name)

    def seed_dir(self, seed: int) -> Path:
        return self.path / f"seed_{seed}"

    def seed_dirs(self, seeds: list[int], keep: bool = False) -> dict[int, Path]:
        """Each final seed's run folder. Unless `keep` (a resumed row continues its seeds), a
        folder left by an earlier run is set aside (`set_aside`)."""
        if not keep:
            for seed in seeds:
                self.set_aside(seed)
        self.path.mkdir(parents=True, exist_ok=True)
        return {seed: self.seed_dir(seed) for seed in seeds}

    def set_aside(self, seed: int) -> Path | None:
        """A seed's folder from an earlier run becomes seed_<n>.old-<mtime>: never overwritten
        in place, never deleted. Returns where it went (None when there was none)."""
        d = self.seed_dir(seed)
        if not d.exists():
            return None
        aside = d.with_name(f"{d.name}.old-{int(d.stat().st_mtime)}")
        d.rename(aside)
        return aside

    def finished_seed(self, seed: int) -> dict[str, Any] | None:
        """A final seed's metrics.json once it has been tested; None before."""
        path = self.seed_dir(seed) / "metrics.json"
        if not path.is_file():
            return None
        metrics = json.loads(path.read_text(encoding="utf-8"))
        return metrics if "test" in metrics else None

    def write_search(self, search: dict[str, Any]) -> Path:
        """The search's outcome (`search.json`): its chosen parameters and every trial, written
        as soon as the search ends, so a row continued elsewhere never searches again."""
        write_json(self.path / SEARCH, search)
        return self.path / SEARCH

    def read_search(self) -> dict[str, Any] | None:
        path = self.path / SEARCH
        if not path.is_file():
            return None
        try:
            search = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); restore it from git or "
                "move it aside to search again"
            ) from None
        if not isinstance(search, dict) or "best_params" not in search:
            raise UserError(f"{path}: not a search outcome (no 'best_params' key)")
        return search

    def write_best_config(self, cfg: Config, comment: str = "") -> Path:
        """The chosen configuration as the final seeds train it (`comment`: a first line). An
        existing file that differs only in where the row ran (`MACHINE_KEYS`) is left as it is,
        so resuming a committed row elsewhere does not churn it."""
        path = self.path / BEST_CONFIG
        chosen = to_dict(cfg)
        if path.is_file() and _recipe(_read_yaml(path)) == _recipe(chosen):
            return path
        text = yaml.safe_dump(chosen, sort_keys=False)
        atomic_write(path, (f"# {comment}\n" if comment else "") + text)
        return path

    def write(self, summary: dict[str, Any], seed_metrics: list[dict[str, Any]]) -> None:
        """summary.json, seeds.csv, and the first seed's figures beside them."""
        first = self.seed_dir(summary["seeds"][0])
        for name in SEED_FIGURES:
            if (first / name).exists():
                shutil.copy2(first / name, self.path / name)
        write_json(self.path / SUMMARY, summary)
        write_seed_csv(self.path / SEEDS_CSV, seed_metrics)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None  # unreadable: rewritten


def _recipe(config: Any) -> Any:
    """A config dict without its MACHINE_KEYS (anything else as it is)."""
    if not isinstance(config, dict):
        return config
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for section, key in MACHINE_KEYS:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out


def write_seed_csv(path: Path, seed_metrics: list[dict]) -> Path:
    """seeds.csv: one row per final seed run, its test/valid metrics and epochs."""
    # Nested metrics flatten to test_track_accuracy, valid_track_macro_f1, ….
    frame = pd.json_normalize(seed_metrics, sep="_")
    missing = [c for c in SEED_COLUMNS if c not in frame.columns]
    if seed_metrics and missing:
        raise KeyError(f"seed metrics lack {', '.join(missing)}")
    frame = frame.reindex(columns=SEED_COLUMNS)
    atomic_write(Path(path), frame.to_csv(index=False, lineterminator="\n"))
    return Path(path)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(
    cfg: Config, params: dict, seeds: list[dict[str, Any]], n_trials: int, seconds: float
) -> dict[str, Any]:
    """What every row's summary.json says: the row as the table names it, its chosen
    configuration, and the mean and spread of its final seeds' test scores. The writer adds
    its search, budget and cost."""
    out: dict[str, Any] = {
        "experiment": cfg.experiment.name,
        "description": cfg.experiment.description,
        "model": cfg.model.name,
        "augmentation": cfg.experiment.augmentation,
        "strategy": cfg.experiment.strategy,
        "compare_with": cfg.experiment.compare_with,
        "params": seeds[0]["params"],
        "pretrained": seeds[0].get("pretrained", "scratch"),
        "split": seeds[0]["split"],
        # Tracks per part, and how many of the split's tracks the dataset lacks (the
        # fault-filtered split names 290 test tracks; a dataset may hold fewer).
        "n_tracks": seeds[0].get("n_tracks"),
        "missing_tracks": seeds[0].get("missing_tracks"),
        "seeds": [m["seed"] for m in seeds],
        # The Ray node each seed ran on (null: run earlier, or outside Ray).
        "seed_nodes": [m.get("node_id") for m in seeds],
        "best_params": params,
        "n_trials": n_trials,
        "sweep_seconds": seconds,
        # "quick": a look in minutes (`sweep.budget=quick`), never one of the table's rows.
        "budget_name": cfg.sweep.budget,
    }
    for level in ("track", "chunk"):
        for metric in ("accuracy", "macro_f1"):
            mean, std = _mean_std([m["test"][f"{level}_{metric}"] for m in seeds])
            out[f"test_{level}_{metric}_mean"] = mean
            out[f"test_{level}_{metric}_std"] = std
    out["convergence"] = [seed_convergence(m) for m in seeds]
    return out


def seed_convergence(metrics: dict[str, Any]) -> dict[str, Any]:
    """Whether a final seed converged: early stopping ended it, or it ran out of epochs. One
    that ran out while still improving (a better score within its last `patience` epochs, or
    at its last epoch without early stopping) was cut short by the budget."""
    run, best = metrics.get("epochs_run"), metrics.get("best_epoch")
    patience = metrics.get("early_stopping_patience") or 0
    stopped = bool(metrics.get("stopped_early"))
    return {
        "seed": metrics["seed"],
        "epochs_run": run,
        "best_epoch": best,
        "max_epochs": metrics.get("max_epochs"),
        "stopped_early": stopped,
        "still_improving": not stopped and run is not None and run - best < max(patience, 1),
    }


# ---------------------------------------------------------------------------------------------
# Reading rows


def read_summary(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or "experiment" not in data:
        raise ValueError(f"{path}: not a row summary (no 'experiment' key)")
    return data


def row_order(s: dict[str, Any]) -> tuple:
    """Split by split (the default split first); in a split E0, the reference rows, then E1, E2,
    … in numeric order, then any other row by name."""
    split = s.get("split", "")
    name = str(s["experiment"])
    m = re.fullmatch(r"E(\d+)(.*)", name)
    base = name.split("-")[0]
    if m and int(m.group(1)) == 0:
        rank: tuple = (0, 0, m.group(2))
    elif is_reference(s):
        rank = (1, REFERENCE_ROWS.index(base) if base in REFERENCE_ROWS else 9, name)
    elif m:
        rank = (2, int(m.group(1)), m.group(2))
    else:
        rank = (3, 0, name)
    in_order = split in SPLIT_ORDER
    return (0 if in_order else 1, SPLIT_ORDER.index(split) if in_order else split, rank)


def read_summaries(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every results_dir/<row>/summary.json, in table order (`row_order`)."""
    paths = Path(results_dir).glob("*/summary.json")
    return sorted((read_summary(p) for p in paths), key=row_order)


def is_reference(s: dict[str, Any]) -> bool:
    """A reference row (M1, D7, or any logistic regression) rather than a row of the ablation."""
    name, model = str(s["experiment"]), str(s.get("model", ""))
    return name.split("-")[0] in REFERENCE_ROWS or model.split(" ")[0] == "logreg"


@dataclass
class SeedPredictions:
    """One row's test predictions: the same tracks, in one order, for every final seed."""

    genres: list[str]
    tracks: list[str]
    truth: np.ndarray  # (n_tracks,) genre indices
    preds: list[np.ndarray]  # per seed, (n_tracks,) genre indices
    probabilities: list[np.ndarray] = field(default_factory=list)  # per seed, (n_tracks, genres)

    def ensemble(self) -> np.ndarray | None:
        """The seeds as one model: each track's genre of highest mean probability over the
        seeds; None when there is nothing to ensemble (under two seeds, or seeds that all
        gave the same probabilities, as a deterministic fit does)."""
        probs = self.probabilities
        if len(probs) < 2 or all(np.array_equal(probs[0], p) for p in probs[1:]):
            return None
        return np.mean(probs, axis=0).argmax(axis=1)


def seed_predictions(results_dir: str | Path, s: dict[str, Any]) -> SeedPredictions | None:
    """The row's final seeds' predictions.csv, tracks sorted; None when a seed's file is missing.
    A file that is not a predictions table raises ValueError naming it."""
    frames, genres = [], None
    for seed in s.get("seeds") or []:
        path = Path(results_dir) / str(s["experiment"]) / f"seed_{seed}" / "predictions.csv"
        if not path.is_file():
            return None
        frame = pd.read_csv(path)
        names = [c[2:] for c in frame.columns if c.startswith("p_")]
        missing = {"track", "true_genre", "predicted_genre"} - set(frame.columns)
        if missing or not names:
            what = ", ".join(sorted(missing)) or "p_<genre> columns"
            raise ValueError(f"{path}: not a predictions file (no {what})")
        if genres is not None and names != genres:
            raise ValueError(f"{path}: genres {names} differ from the row's other seeds {genres}")
        genres = names
        code = {g: i for i, g in enumerate(genres)}
        frame = frame.sort_values("track", kind="stable")
        for column in ("true_genre", "predicted_genre"):
            unknown = ~frame[column].isin(code)
            if unknown.any():
                bad = frame.loc[unknown, column].iloc[0]
                raise ValueError(f"{path}: {column} '{bad}' is not one of the p_<genre> columns")
        frames.append(frame)
    if not frames or genres is None:
        return None
    code = {g: i for i, g in enumerate(genres)}
    return SeedPredictions(
        genres=genres,
        tracks=frames[0]["track"].tolist(),
        truth=frames[0]["true_genre"].map(code).to_numpy(dtype=np.int64),
        preds=[f["predicted_genre"].map(code).to_numpy(dtype=np.int64) for f in frames],
        probabilities=[f[[f"p_{g}" for g in genres]].to_numpy(dtype=np.float64) for f in frames],
    )
