"""Run artifacts on disk: classification report, confusion matrix, predictions, curves, JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import classification_report, confusion_matrix

from mgc.core.fsio import atomic_path, atomic_write
from mgc.results.metrics import CONFIDENTLY_WRONG_COLUMNS, CONFUSED_PAIR_COLUMNS, hard_cases

PathLike = str | os.PathLike

DPI = 120
# Fixed colours so train/validation look the same in every run, even when a series is missing.
TRAIN_COLOUR, VAL_COLOUR = "tab:blue", "tab:orange"
PROB_DECIMALS = 4


def save_figure(fig: Figure, path: PathLike) -> Path:
    """Write `fig` atomically, in the format its suffix names (PNG without one)."""
    path = Path(path)
    # Format named outright: for a target without a suffix the temporary ends in .tmp, which
    # savefig would otherwise take for the format.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format=path.suffix.lstrip(".") or "png")
    return path


def _save_csv(frame: pd.DataFrame, path: PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def new_figure(width: float, height: float) -> Figure:
    """A figure of this size (inches) at the project's DPI, for every plot of runs and rows."""
    # A bare Figure on an Agg canvas rather than pyplot: no global backend switch or figure
    # registry, so plotting is safe inside Ray workers and threads and never leaks figures.
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _report_block(
    y_true: np.ndarray, y_pred: np.ndarray, genres: list[str], split: str, level: str
) -> str:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    header = f"Classification report: split {split}, {level} level ({y_true.size} {level}s)"
    body = classification_report(
        y_true,
        y_pred,
        labels=list(range(len(genres))),
        target_names=list(genres),
        digits=3,
        zero_division=0,
    )
    return f"{header}\n{'=' * len(header)}\n{body}"


def write_classification_report(
    path: PathLike,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    genres: list[str],
    *,
    split: str = "test",
    level: str = "track",
    chunk_true: np.ndarray | None = None,
    chunk_pred: np.ndarray | None = None,
) -> Path:
    """sklearn's classification report; with chunk arrays, a chunk-level report follows."""
    if (chunk_true is None) != (chunk_pred is None):
        raise ValueError("give both chunk_true and chunk_pred, or neither")
    blocks = [_report_block(y_true, y_pred, genres, split, level)]
    if chunk_true is not None and chunk_pred is not None:
        blocks.append(_report_block(chunk_true, chunk_pred, genres, split, "chunk"))
    path = Path(path)
    atomic_write(path, "\n\n".join(blocks))
    return path


def plot_confusion_matrix(
    path: PathLike,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    genres: list[str],
    title: str = "Confusion matrix",
    unit: str = "tracks",
) -> Path:
    """PNG of the confusion matrix with the count in every cell (rows: true, columns: predicted)."""
    n = len(genres)
    cm = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(n)))
    side = max(4.5, 0.55 * n + 2.5)
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    vmax = max(int(cm.max()), 1)
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=unit)
    # Cells shrink as classes grow; keep the digits inside them.
    fontsize = max(6.0, min(11.0, 110.0 / max(n, 1)))
    for i in range(n):
        for j in range(n):
            count = int(cm[i, j])
            # White digits on the dark half of the colour map, black on the light half.
            colour = "white" if count > vmax / 2 else ("black" if count else "0.6")
            ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=fontsize)
    ax.set_xticks(range(n), labels=genres, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=genres)
    ax.set_xlabel("predicted genre")
    ax.set_ylabel("true genre")
    total = int(cm.sum())
    accuracy = np.trace(cm) / total if total else float("nan")
    ax.set_title(f"{title}\naccuracy {accuracy:.3f} on {total} {unit}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_predictions(
    path: PathLike,
    track_ids: list[str],
    y_true: np.ndarray,
    track_probs: np.ndarray,
    genres: list[str],
) -> Path:
    """predictions.csv: track, true/predicted genre, correct, then p_<genre> per genre."""
    probs = np.asarray(track_probs, dtype=np.float64)
    y = np.asarray(y_true)
    if probs.shape != (len(track_ids), len(genres)) or y.shape != (len(track_ids),):
        raise ValueError(
            f"shapes disagree: {len(track_ids)} tracks, y_true {y.shape}, probs {probs.shape}, "
            f"{len(genres)} genres"
        )
    names = np.asarray(genres, dtype=object)
    pred = probs.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "track": list(track_ids),
            "true_genre": names[y],
            "predicted_genre": names[pred],
            "correct": pred == y,
        }
    )
    for k, genre in enumerate(genres):
        frame[f"p_{genre}"] = probs[:, k].round(PROB_DECIMALS)
    return _save_csv(frame, path)


def write_hard_cases(
    path: PathLike,
    track_ids: list[str],
    y_true: np.ndarray,
    track_probs: np.ndarray,
    genres: list[str],
    top: int | None = 20,
) -> Path:
    """hard_cases.csv: confidently wrong tracks, then most confused genre pairs, in one file."""
    wrong, pairs = hard_cases(track_ids, y_true, track_probs, genres, top=top)
    wrong.insert(0, "kind", "confidently_wrong")
    pairs.insert(0, "kind", "confused_pair")
    columns = ["kind", *dict.fromkeys(CONFIDENTLY_WRONG_COLUMNS + CONFUSED_PAIR_COLUMNS)]
    # Concatenating an empty frame is deprecated in pandas; keep only the non-empty parts.
    parts = [p for p in (wrong, pairs) if len(p)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    frame = frame.reindex(columns=columns)
    for column in ("confidence", "true_prob", "share_of_true"):
        frame[column] = frame[column].astype(float).round(PROB_DECIMALS)
    # Nullable integers so counts print as "3", not "3.0", beside the empty cells.
    frame["count"] = frame["count"].astype("Int64")
    return _save_csv(frame, path)


def _plot_series(ax: Any, frame: pd.DataFrame, column: str, label: str, **style: Any) -> bool:
    if column not in frame or frame[column].isna().all():
        return False
    # Markers keep a single epoch, or a point isolated between NaNs, visible.
    size = 6 if len(frame) <= 3 else 3
    ax.plot(frame["epoch"], frame[column], marker="o", markersize=size, label=label, **style)
    return True


def plot_train_curves(log_csv_path: PathLike, png_path: PathLike) -> Path:
    """train_curves.png from train_log.csv: loss, accuracy (+ val macro-F1), learning rate."""
    frame = pd.read_csv(log_csv_path)
    if "epoch" not in frame:
        raise ValueError(f"{log_csv_path}: no 'epoch' column")
    frame = frame.apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"])
    frame = frame.sort_values("epoch")

    fig = new_figure(13.0, 3.8)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    _plot_series(ax_loss, frame, "train_loss", "train", color=TRAIN_COLOUR)
    _plot_series(ax_loss, frame, "val_loss", "validation", color=VAL_COLOUR)
    ax_loss.set_title("loss")

    _plot_series(ax_acc, frame, "train_acc", "train accuracy", color=TRAIN_COLOUR)
    _plot_series(ax_acc, frame, "val_acc", "val accuracy", color=VAL_COLOUR)
    _plot_series(ax_acc, frame, "val_macro_f1", "val macro-F1", color="tab:green", linestyle="--")
    _plot_series(
        ax_acc, frame, "val_track_acc", "val track accuracy", color="tab:red", linestyle=":"
    )
    ax_acc.set_title("accuracy / macro-F1")
    scores = frame.reindex(columns=["train_acc", "val_acc", "val_macro_f1", "val_track_acc"])
    if scores.notna().any().any() and float(np.nanmax(scores.to_numpy(dtype=float))) <= 1.0:
        ax_acc.set_ylim(0.0, 1.02)

    if _plot_series(ax_lr, frame, "lr", "learning rate", color="tab:purple"):
        # Linear from zero: cosine and step schedules keep their familiar shape (a log axis
        # turns a cosine's tail into a cliff), and a constant rate reads as a flat line.
        ax_lr.set_ylim(0.0, max(float(frame["lr"].max()), 1e-12) * 1.1)
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_lr.set_title("learning rate")

    epochs = frame["epoch"].to_numpy(dtype=float)
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlabel("epoch")
        if epochs.size and epochs.max() - epochs.min() < 2:
            # The auto locator would tick fractional epochs around one or two points.
            ax.set_xticks(np.unique(epochs))
            ax.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)

    n_epochs = len(frame)
    summary = f"{n_epochs} epoch{'s' if n_epochs != 1 else ''}"
    if "seconds" in frame and frame["seconds"].notna().any():
        summary += f", {frame['seconds'].sum() / 60:.1f} min"
    if "val_macro_f1" in frame and frame["val_macro_f1"].notna().any():
        best = frame.loc[frame["val_macro_f1"].idxmax()]
        summary += f", best val macro-F1 {best['val_macro_f1']:.3f} at epoch {int(best['epoch'])}"
    fig.suptitle(summary, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, png_path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    # NaN and infinity are not JSON; write null so strict readers (jq, browsers) accept the file.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: PathLike, obj: Any) -> Path:
    """Write obj as JSON (indent 2, sorted keys); numpy values, paths and NaN are converted."""
    path = Path(path)
    atomic_write(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def write_part_artifacts(
    out_dir: PathLike,
    part: str,
    track_ids: list[str],
    y_track: np.ndarray,
    track_probs: np.ndarray,
    genres: list[str],
    title: str,
    chunk_true: np.ndarray | None = None,
    chunk_pred: np.ndarray | None = None,
) -> None:
    """What an evaluated part leaves in a run folder: its classification report and confusion
    matrix (named after the part), predictions.csv and hard_cases.csv, all at track level."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y_pred = track_probs.argmax(1)
    write_classification_report(
        out_dir / f"{part}_classification_report.txt",
        y_track,
        y_pred,
        genres,
        split=title,
        level="track",
        chunk_true=chunk_true,
        chunk_pred=chunk_pred,
    )
    plot_confusion_matrix(
        out_dir / f"confusion_matrix_{part}.png", y_track, y_pred, genres, title=title
    )
    write_predictions(out_dir / "predictions.csv", track_ids, y_track, track_probs, genres)
    write_hard_cases(out_dir / "hard_cases.csv", track_ids, y_track, track_probs, genres)
