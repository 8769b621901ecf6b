"""`python -m mgc.tabular FEATURES_CSV [ABLATION.yaml] [overrides]`: a hand-made feature table → a row.

D7, the reference row for hand-made features: a per-clip feature table (Kaggle's GTZAN
`features_30_sec.csv`: filename, length, 57 spectral/MFCC statistics, label) → standardised →
logistic regression. The table is cut to the very train/validation/test tracks the CNN rows use
(the same data.root, data.split and data.split_seed give the same track lists), C is chosen on
validation macro-F1 over a small grid (the row's trials), the chosen model is fitted with every
final seed and scored once on test, and results/<experiment>/ gets the files a sweep's row has,
so `python -m mgc.table` shows it beside the others, with its intervals.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mgc.core.config import Config, load_config, save_config
from mgc.core.device import machine
from mgc.data.datasets import DatasetError, track_id_of, write_label_map
from mgc.data.loader import split_tracks
from mgc.data.splits import PARTS
from mgc.results.artifacts import write_json, write_part_artifacts
from mgc.results.metrics import classification_metrics, evaluate_predictions
from mgc.results.rows import RowFolder, summarise
from mgc.run.budget import Budget

log = logging.getLogger(__name__)

# Columns that describe a clip rather than its sound: `length` is its number of samples.
ID_COLUMN, LABEL_COLUMN = "filename", "label"
META_COLUMNS = (ID_COLUMN, "length", LABEL_COLUMN)
# Inverse regularisation strengths tried on validation; of equal scores the first (the most
# regularised) wins.
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
# How the row describes itself unless the command line says otherwise (these come after the
# ablation's own values, which describe a CNN row).
ROW_DEFAULTS = [
    "experiment.name=D7",
    "experiment.description=hand-made per-clip features → standardised → logistic regression",
    "experiment.augmentation=none",
    "experiment.strategy=hand-made features",
    "sweep.search_space=null",  # C's grid is C_GRID; the ablation's space is the CNNs'
]


@dataclass
class Part:
    """One part of the split as table rows: track ids, features (n, d) and genre indices (n,)."""

    tracks: list[str]
    x: np.ndarray
    y: np.ndarray


@dataclass
class TabularData:
    genres: list[str]
    parts: dict[str, Part]
    split_name: str
    missing: dict[str, int]  # tracks of each part without a row in the table
    # Tracks the split names that the dataset lacks (as for a CNN row).
    split_missing: dict[str, int]


# ---------------------------------------------------------------------------------------------
# The table and the split


def read_feature_table(path: str | Path) -> pd.DataFrame:
    """The CSV as float feature columns indexed by track id (`genre/stem`, as splits name tracks);
    every column but filename, length and label is a feature. DatasetError (one line) when the
    file cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: feature table not found")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from exc
    lacking = [c for c in (ID_COLUMN, LABEL_COLUMN) if c not in frame.columns]
    if lacking:
        raise DatasetError(
            f"{path}: no {' or '.join(lacking)} column (expected {ID_COLUMN}, features…, "
            f"{LABEL_COLUMN}, as in features_30_sec.csv)"
        )
    features = [c for c in frame.columns if c not in META_COLUMNS]
    if not features:
        raise DatasetError(f"{path}: no feature columns besides {', '.join(META_COLUMNS)}")
    if frame.empty:
        raise DatasetError(f"{path}: no rows")
    values = frame[features].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    bad = [c for c in features if not np.isfinite(values[c]).all()]
    if bad:
        raise DatasetError(
            f"{path}: empty, non-numeric or infinite values in column(s) {', '.join(bad[:3])}"
            + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        )
    ids = [
        track_id_of(str(g), str(f))
        for g, f in zip(frame[LABEL_COLUMN], frame[ID_COLUMN], strict=True)
    ]
    values.index = pd.Index(ids, name="track")
    repeated = values.index[values.index.duplicated()]
    if len(repeated):
        raise DatasetError(f"{path}: track {repeated[0]} has more than one row")
    return values


def split_rows(table: pd.DataFrame, cfg: Config, source: str = "feature table") -> TabularData:
    """The table's rows of each part of cfg's split: the tracks the CNN rows train, validate and
    test on (`split_tracks`, the loader's own split), in the same order. Tracks without a row are
    left out with one warning; rows of tracks in no part are not used."""
    genres, parts, split_name, split_missing = split_tracks(cfg)
    label_of = {g: i for i, g in enumerate(genres)}
    out: dict[str, Part] = {}
    missing: dict[str, int] = {}
    for part in PARTS:
        tracks = [t for t in parts.get(part, []) if t.track_id in table.index]
        missing[part] = len(parts.get(part, [])) - len(tracks)
        ids = [t.track_id for t in tracks]
        out[part] = Part(
            ids,
            table.loc[ids].to_numpy(np.float64).reshape(len(ids), table.shape[1]),
            np.array([label_of[t.genre] for t in tracks], dtype=np.int64),
        )
    if any(missing.values()):
        total = sum(len(parts.get(p, [])) for p in PARTS)
        log.warning(
            "%s: %d of the %d tracks of split %s have no row (%s), left out: this row's test set "
            "is %d of the %d test tracks the CNN rows score",
            source,
            sum(missing.values()),
            total,
            split_name,
            ", ".join(f"{missing[p]} {p}" for p in PARTS),
            len(out["test"].tracks),
            len(parts.get("test", [])),
        )
    unused = len(table) - sum(len(p.tracks) for p in out.values())
    if unused:
        log.info(
            "%s: %d rows are tracks in no part of split %s (not used)", source, unused, split_name
        )
    for part in PARTS:
        if not out[part].tracks:
            raise DatasetError(
                f"{source}: no rows for the {part} tracks of split {split_name} in "
                f"{cfg.data.root} (wrong table, or file names not of the form <genre>.<number>.*?)"
            )
    return TabularData(genres, out, split_name, missing, split_missing)


# ---------------------------------------------------------------------------------------------
# The model


def fit_model(part: Part, C: float, seed: int):
    """StandardScaler → logistic regression (M1's pipeline, `make_logreg`) with this C."""
    from mgc.models.baseline import make_logreg  # torch comes with it: after the input checks

    return make_logreg(seed).set_params(logreg__C=C).fit(part.x, part.y)


def probabilities(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes) class probabilities, zero for genres the training part lacked."""
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def choose_c(
    data: TabularData, seed: int, grid: tuple[float, ...] = C_GRID
) -> tuple[float, list[dict[str, Any]]]:
    """The grid's C with the best validation macro-F1, and one trial record per C."""
    n = len(data.genres)
    valid = data.parts["valid"]
    trials = []
    for C in grid:
        model = fit_model(data.parts["train"], C, seed)
        pred = probabilities(model, valid.x, n).argmax(1)
        f1 = classification_metrics(valid.y, pred, n)["macro_f1"]
        log.info("C = %g: validation macro-F1 %.3f", C, f1)
        trials.append({"trial": f"C={C:g}", "C": C, "val_macro_f1": f1, "epochs": 1})
    best = max(trials, key=lambda t: t["val_macro_f1"])  # max keeps the first of equals
    return best["C"], trials


def part_metrics(model, part: Part, n_classes: int) -> tuple[dict[str, Any], np.ndarray]:
    """The project's chunk/track metrics, each track its own single 'chunk'; and the probabilities."""
    probs = probabilities(model, part.x, n_classes)
    return evaluate_predictions(probs, part.y, np.arange(len(part.y)), n_classes), probs


# ---------------------------------------------------------------------------------------------
# The row


def run_seed(
    cfg: Config, data: TabularData, C: float, seed: int, run_dir: Path, label: str
) -> dict[str, Any]:
    """Fit with `seed`, score validation and test once; the seed's folder as a sweep's has it
    (metrics.json, predictions.csv, hard cases, report, confusion matrix, label map, config)."""
    from mgc.models.baseline import sklearn_param_count

    t0 = time.perf_counter()
    n = len(data.genres)
    model = fit_model(data.parts["train"], C, seed)
    valid, _ = part_metrics(model, data.parts["valid"], n)
    test_part = data.parts["test"]
    test, probs = part_metrics(model, test_part, n)
    run_dir.mkdir(parents=True)
    save_config(cfg, run_dir / "config.yaml")
    write_label_map(data.genres, run_dir)
    title = f"{cfg.experiment.name} {label}: test tracks, {data.split_name} split"
    write_part_artifacts(run_dir, "test", test_part.tracks, test_part.y, probs, data.genres, title)
    metrics = {
        "experiment": cfg.experiment.name,
        "model": label,
        "C": C,
        "params": sklearn_param_count(model),
        "pretrained": "scratch",
        "split": data.split_name,
        "missing_tracks": data.split_missing,
        "missing_feature_rows": data.missing,
        "skipped_files": [],
        "seed": seed,
        "device": "cpu",
        "machine": machine(),
        "best_epoch": 1,
        "epochs_run": 1,
        "max_epochs": 1,
        "stopped_early": False,
        "n_tracks": {p: len(data.parts[p].tracks) for p in PARTS},
        "valid": valid,
        "test": test,
        "seconds": time.perf_counter() - t0,
    }
    write_json(run_dir / "metrics.json", metrics)
    return metrics


@dataclass
class TabularResult:
    experiment_dir: Path
    summary: dict[str, Any]


def run_tabular(
    features_csv: str | Path, config: str | Path | None = None, overrides: list[str] | None = None
) -> TabularResult:
    """The whole row: read and cut the table, choose C, fit every final seed, write
    results/<experiment>/ (`python -m mgc.tabular` then rebuilds the tables)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    features_csv = Path(features_csv)
    cfg = load_config(config, [*ROW_DEFAULTS, *(overrides or [])])
    table = read_feature_table(features_csv)
    data = split_rows(table, cfg, str(features_csv))
    label = f"logreg ({features_csv.stem})"
    log.info(
        "%s: %d features, split %s: %d/%d/%d tracks",
        features_csv,
        table.shape[1],
        data.split_name,
        *(len(data.parts[p].tracks) for p in PARTS),
    )
    C, trials = choose_c(data, cfg.train.seed)
    log.info("chosen C = %g", C)

    row = RowFolder.of(cfg)
    row.seed_dirs(cfg.sweep.final_seeds)  # earlier seed folders set aside
    row.write_best_config(
        cfg, f"{cfg.experiment.name}: {label}, C = {C:g} chosen on validation macro-F1"
    )
    seeds = [
        run_seed(cfg, data, C, seed, row.seed_dir(seed), label) for seed in cfg.sweep.final_seeds
    ]

    seconds = time.perf_counter() - t0
    summary = summarise(cfg, {"C": C}, seeds, len(trials), seconds)
    n_train, n_valid = (len(data.parts[p].tracks) for p in ("train", "valid"))
    summary.update(
        model=label,
        features_csv=str(features_csv.resolve()),
        n_features=int(table.shape[1]),
        budget=Budget.grid(len(trials), len(seeds), n_train, n_valid).to_dict(),
        trial_epochs_run=len(trials),
        failed_trials=0,
        machine=machine(),
        cpu_hours=(time.process_time() - cpu0) / 3600,
        gpu_hours=0.0,
        trials=trials,
    )
    row.write(summary, seeds)
    return TabularResult(row.path, summary)
