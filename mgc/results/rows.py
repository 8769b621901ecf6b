"""The stored rows of the results table: results/<row>/summary.json and each final seed's test
predictions. Read here once, for the tables (mgc.report.table) and the figures (mgc.report.figures)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SPLIT_ORDER = ("stratified",)  # the default split's rows first, then the others by name
REFERENCE_ROWS = ("M1", "D7")  # reference models: shown under E0, compared with E0


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
    )
