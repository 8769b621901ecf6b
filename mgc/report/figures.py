"""Paper figures from the results table's stored files: confusion matrices, curves, searches.

`write_figures(results_dir)` draws, from summary.json, best_config.yaml and the seed folders
alone (nothing is retrained or re-evaluated), so the same files give the same pictures:

- results/confusion_<baseline>_vs_<best>.png: E0 against the best row of the same split;
- results/<row>/val_curves.png: validation macro-F1 and loss of each final seed, mean in bold;
- results/<row>/search.png: Optuna's parameter importance and parallel coordinates of the sweep.
"""

from __future__ import annotations

import io
import logging
import math
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mgc.core.config import ConfigError
from mgc.core.fsio import atomic_path
from mgc.core.schema import DataConfig
from mgc.core.search_space import read_search_space
from mgc.results.artifacts import new_figure, save_figure
from mgc.results.rows import is_reference, read_summaries, seed_predictions

log = logging.getLogger(__name__)

BASELINE = "E0"
DEFAULT_SPLIT = DataConfig.split  # "stratified": the split the ablation rows are compared on
# Reference rows sit in the table for scale, not in the ablation: never "the best model".
MIN_TRIALS = 3  # fewer finished trials say nothing about which parameter matters
IMPORTANCE_SEED = 0  # fANOVA's random forest: fixed, so reruns give the same bars
SEARCH_DPI = 100
PARALLEL_PARAMS = 4  # more axes than this and the parallel-coordinates lines become a mesh
# Keys of a summary.json trial that are not searched parameters.
TRIAL_FIELDS = frozenset({"trial", "val_macro_f1", "epochs", "error"})

# ---------------------------------------------------------------------------------------------
# Reading the rows


def _f1(summary: dict[str, Any]) -> float | None:
    value = summary.get("test_track_macro_f1_mean")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def baseline_and_best(
    summaries: list[dict[str, Any]], split: str = DEFAULT_SPLIT
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the E0 row, the row with the highest seed-mean test track macro-F1) on `split`.

    The best is chosen among the split's other rows, reference rows (M1, D7, logistic regressions) left
    out; a tie goes to the experiment name that sorts first. None when there is no E0 on the
    split or no other row to set against it.
    """
    on_split = [s for s in summaries if s.get("split") == split]
    baseline = next((s for s in on_split if s["experiment"] == BASELINE), None)
    candidates = [
        s for s in on_split if s is not baseline and not is_reference(s) and _f1(s) is not None
    ]
    if baseline is None or not candidates:
        return None
    best = min(candidates, key=lambda s: (-(_f1(s) or 0.0), str(s["experiment"])))
    return baseline, best


def pooled_predictions(
    results_dir: Path, summary: dict[str, Any]
) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """(genres, true indices, predicted indices) of every final seed's test tracks, one after
    another; None when a seed's predictions.csv is missing."""
    pred = seed_predictions(results_dir, summary)
    if pred is None:
        log.info(
            "%s: a seed's predictions.csv is missing; no confusion matrix", summary["experiment"]
        )
        return None
    truth = np.concatenate([pred.truth] * len(pred.preds))
    return pred.genres, truth, np.concatenate(pred.preds)


def seed_logs(results_dir: Path, summary: dict[str, Any]) -> dict[int, pd.DataFrame]:
    """seed → its train_log.csv (numeric, by epoch), for the final seeds that have one."""
    logs = {}
    for seed in summary.get("seeds") or []:
        path = results_dir / str(summary["experiment"]) / f"seed_{seed}" / "train_log.csv"
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        if "epoch" not in frame:
            raise ValueError(f"{path}: no 'epoch' column")
        frame = frame.apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"])
        # A resumed run may log an epoch twice; its last entry is the one that stands.
        frame = frame.drop_duplicates("epoch", keep="last").sort_values("epoch", kind="stable")
        logs[seed] = frame.reset_index(drop=True)
    return logs


# ---------------------------------------------------------------------------------------------
# 1. Baseline against best: test confusion matrices


def _row_title(summary: dict[str, Any], n_seeds: int) -> str:
    f1 = _f1(summary)
    score = f"macro-F1 {100 * f1:.1f}" if f1 is not None else "macro-F1 –"
    seeds = f"{n_seeds} seed{'' if n_seeds == 1 else 's'} pooled"
    return f"{summary['experiment']} ({summary.get('model', '?')}): {score}, {seeds}"


def plot_confusion_pair(
    path: Path,
    panels: list[tuple[str, list[str], np.ndarray, np.ndarray]],
    suptitle: str,
) -> Path:
    """Row-normalised confusion matrices side by side, one colour bar; panels are
    (title, genres, true indices, predicted indices)."""
    from sklearn.metrics import confusion_matrix

    n = max(len(p[1]) for p in panels)
    side = max(3.6, 0.42 * n + 1.6)
    fig = new_figure(len(panels) * side + 1.2, side + 0.6)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    fontsize = max(5.0, min(9.0, 80.0 / max(n, 1)))
    image = None
    for ax, (title, genres, y_true, y_pred) in zip(axes, panels, strict=True):
        k = len(genres)
        # normalize="true": each row is the share of that genre's tracks (empty rows stay 0).
        cm = confusion_matrix(y_true, y_pred, labels=list(range(k)), normalize="true")
        image = ax.imshow(cm, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(k):
            for j in range(k):
                share = cm[i, j]
                if share >= 0.005:  # blank cells read faster than a page of zeros
                    colour = "white" if share > 0.5 else "black"
                    ax.text(
                        j, i, f"{100 * share:.0f}", ha="center", va="center", color=colour,
                        fontsize=fontsize,
                    )  # fmt: skip
        ax.set_xticks(range(k), labels=genres, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(k), labels=genres)
        ax.set_xlabel("predicted genre")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("true genre")
    fig.colorbar(image, ax=list(axes), fraction=0.04, pad=0.02, label="share of true genre")
    fig.suptitle(suptitle, fontsize=10)
    return save_figure(fig, path)


def write_confusion_figure(results_dir: Path, summaries: list[dict[str, Any]]) -> Path | None:
    """results_dir/confusion_<E0>_vs_<best>.png, or None when there is no pair to draw."""
    pair = baseline_and_best(summaries)
    if pair is None:
        log.info("no baseline and best row on the %s split: no confusion figure", DEFAULT_SPLIT)
        return None
    panels = []
    for summary in pair:
        pooled = pooled_predictions(results_dir, summary)
        if pooled is None:
            return None
        genres, y_true, y_pred = pooled
        panels.append((_row_title(summary, len(summary["seeds"])), genres, y_true, y_pred))
    baseline, best = (str(s["experiment"]) for s in pair)
    suptitle = (
        f"Test confusion, {DEFAULT_SPLIT} split, track level, row-normalised (%): "
        "the final seeds' predictions pooled"
    )
    return plot_confusion_pair(
        results_dir / f"confusion_{baseline}_vs_{best}.png", panels, suptitle
    )


# ---------------------------------------------------------------------------------------------
# 2. Validation curves of the final seeds


def _f1_column(logs: dict[int, pd.DataFrame]) -> tuple[str, str]:
    """Track-level validation macro-F1 when every log has it; older logs only the chunk one."""
    if all(f.get("val_track_macro_f1", pd.Series()).notna().any() for f in logs.values()):
        return "val_track_macro_f1", "validation macro-F1 (track level)"
    return "val_macro_f1", "validation macro-F1 (chunk level)"


def plot_val_curves(path: Path, logs: dict[int, pd.DataFrame], title: str) -> Path:
    """Validation macro-F1 and loss per epoch: a thin line per seed, their mean in bold."""
    from matplotlib.ticker import MaxNLocator

    f1_column, f1_label = _f1_column(logs)
    fig = new_figure(9.0, 3.4)
    panels = [(f1_column, f1_label), ("val_loss", "validation loss")]
    for ax, (column, label) in zip(fig.subplots(1, 2), panels, strict=True):
        wide = pd.DataFrame(
            {seed: f.set_index("epoch")[column] for seed, f in logs.items() if column in f}
        )
        if wide.empty or wide.isna().all().all():
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        else:
            for i, seed in enumerate(wide.columns):
                series = wide[seed].dropna()
                ax.plot(
                    series.index, series.to_numpy(), color=f"C{i % 10}", linewidth=1.0,
                    alpha=0.7, label=f"seed {seed}",
                )  # fmt: skip
            # The mean over the epochs every seed reached: where early stopping ended some
            # seeds sooner, a mean of the survivors would jump.
            full = wide.dropna()
            ax.plot(
                full.index, full.mean(axis=1).to_numpy(), color="black", linewidth=2.4,
                label="mean",
            )  # fmt: skip
            ax.legend(fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def write_val_curves(results_dir: Path, summary: dict[str, Any]) -> Path | None:
    """results_dir/<row>/val_curves.png; None for rows without logs or with one epoch."""
    row = str(summary["experiment"])
    logs = seed_logs(results_dir, summary)
    if not logs or max(len(f) for f in logs.values()) <= 1:
        log.info("%s: no multi-epoch train logs; no validation curves", row)
        return None
    n = len(logs)
    title = f"{row} ({summary.get('model', '?')}): {n} final seed{'' if n == 1 else 's'}"
    return plot_val_curves(results_dir / row / "val_curves.png", logs, title)


# ---------------------------------------------------------------------------------------------
# 3. The hyperparameter search, as Optuna sees it


def finished_trials(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's trials that reported a finite validation score."""
    out = []
    for trial in summary.get("trials") or []:
        value = trial.get("val_macro_f1")
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out.append(trial)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML ({reason})") from None
    return data if isinstance(data, dict) else {}


def _search_space(results_dir: Path, name: str | None) -> dict[str, dict[str, list]] | None:
    """The sweep's search-space file, looked for as given (from the working folder) and beside
    the results folder (the repository a relative path was written against); None when absent
    or not a valid search space, and the distributions are then inferred from the trials."""
    if not name:
        return None
    given = Path(name)
    path = next((p for p in (given, results_dir.resolve().parent / given) if p.is_file()), None)
    if path is None:
        log.info("%s: search space not found; distributions inferred from the trials", name)
        return None
    try:
        return read_search_space(path)
    except ConfigError as exc:
        log.warning("%s; distributions inferred from the trials", exc)
        return None


def _hashable(value: Any) -> Any:
    # Optuna's categorical choices must be None, bool, int, float or str.
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _from_space(kind: str, args: list) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if kind == "loguniform":
        return FloatDistribution(float(args[0]), float(args[1]), log=True)
    if kind in ("uniform", "quniform"):  # quniform's step is left out: Tune may round past it
        return FloatDistribution(float(args[0]), float(args[1]))
    if kind == "randint":  # Tune's upper bound is exclusive, Optuna's inclusive
        return IntDistribution(int(args[0]), int(args[1]) - 1)
    return CategoricalDistribution([_hashable(a) for a in args])


def _contains(dist: Any, value: Any) -> bool:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return _hashable(value) in dist.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(dist, IntDistribution) and not isinstance(value, int):
        return False
    return dist.low <= value <= dist.high


def _inferred(values: list[Any]) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) < len(values):
        return CategoricalDistribution(list(dict.fromkeys(_hashable(v) for v in values)))
    low, high = min(numbers), max(numbers)
    if all(isinstance(v, int) for v in numbers):
        return IntDistribution(int(low), int(high))
    # A decade or more between the ends, all positive: drawn log-uniform in all likelihood.
    return FloatDistribution(float(low), float(high), log=low > 0 and high >= 10 * low)


def trial_distributions(
    trials: list[dict[str, Any]], space: dict[str, dict[str, list]] | None
) -> dict[str, Any]:
    """Parameter → Optuna distribution: the search-space file's where it holds every trial's
    value (the file may have changed since the sweep), else one fitted to the values."""
    names = list(space or {}) + [
        k for t in trials for k in t if k not in TRIAL_FIELDS and k not in (space or {})
    ]
    out = {}
    for name in dict.fromkeys(names):
        values = [t[name] for t in trials if t.get(name) is not None]
        if not values:
            continue
        dist = None
        if space and name in space:
            kind, args = next(iter(space[name].items()))
            try:
                dist = _from_space(kind, args)
            except (TypeError, ValueError, IndexError):  # ends that are not numbers, or missing
                dist = None
            if dist is not None and not all(_contains(dist, v) for v in values):
                log.info("%s: trial values outside the search space file; inferred", name)
                dist = None
        out[name] = dist if dist is not None else _inferred(values)
    return out


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """No "study created" lines, no experimental-feature warnings; settings restored after."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def build_study(
    row: str, trials: list[dict[str, Any]], distributions: dict[str, Any], mode: str = "max"
) -> Any:
    """An in-memory Optuna study holding the row's finished trials, in their stored order.

    Parameters go by the last part of their config key (`train.lr` → `lr`) when those parts
    are distinct, so the figures' axes stay legible; by the whole key otherwise.
    """
    import optuna

    short = {k: k.rpartition(".")[2] for k in distributions}
    if len(set(short.values())) < len(short):
        short = {k: k for k in distributions}
    direction = "minimize" if mode == "min" else "maximize"
    with _quiet_optuna():
        study = optuna.create_study(study_name=row, direction=direction)
    for t in trials:
        params = {k: _hashable(t[k]) for k in distributions if t.get(k) is not None}
        study.add_trial(
            optuna.trial.create_trial(
                params={short[k]: v for k, v in params.items()},
                distributions={short[k]: distributions[k] for k in params},
                value=float(t["val_macro_f1"]),
                user_attrs={"epochs": t.get("epochs"), "trial": t.get("trial")},
            )
        )
    return study


def _pyplot() -> Any:
    """pyplot for Optuna's plots (they create pyplot figures): on Agg unless the caller's
    program already chose a backend by importing pyplot itself."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _render(ax: Any, size: tuple[float, float]) -> np.ndarray:
    """The axes' whole figure as an RGBA array (floats in [0, 1])."""
    from matplotlib.image import imread

    fig = ax.figure
    fig.set_size_inches(*size)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=SEARCH_DPI, bbox_inches="tight", facecolor="white")
    buffer.seek(0)
    image = imread(buffer, format="png")
    if image.shape[2] == 3:
        image = np.concatenate([image, np.ones(image.shape[:2] + (1,), image.dtype)], axis=2)
    return image


def _side_by_side(images: list[np.ndarray]) -> np.ndarray:
    height = max(i.shape[0] for i in images)
    padded = [np.pad(i, ((0, height - i.shape[0]), (0, 0), (0, 0)), constant_values=1.0)
              for i in images]  # fmt: skip
    return np.concatenate(padded, axis=1)


def _save_rgba(path: Path, image: np.ndarray) -> Path:
    """An RGBA float image as a 256-colour PNG: flat plot colours lose nothing visible and the
    file shrinks to about half. Undithered, so the same pixels give the same bytes."""
    from PIL import Image

    rgb = np.round(255 * image[..., :3]).astype(np.uint8)
    palette = Image.fromarray(rgb).quantize(256, dither=Image.Dither.NONE)
    with atomic_path(path) as tmp:
        palette.save(tmp, format="png", optimize=True)
    return path


def plot_search(path: Path, study: Any, metric: str) -> Path:
    """search.png: fANOVA parameter importance beside the parallel-coordinates plot of the
    PARALLEL_PARAMS most important parameters, both drawn by optuna.visualization.matplotlib
    and placed side by side."""
    import optuna
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization.matplotlib import plot_parallel_coordinate, plot_param_importances

    plt = _pyplot()
    row, n = study.study_name, len(study.trials)
    images, figures = [], []
    with ExitStack() as stack:
        # Optuna's plots set a global style and open pyplot figures: keep both in here.
        stack.enter_context(plt.rc_context())
        stack.enter_context(plt.ioff())
        stack.enter_context(_quiet_optuna())
        stack.callback(lambda: [plt.close(f) for f in figures])
        # A categorical axis with one value gives a flat range that matplotlib widens itself.
        warnings.filterwarnings("ignore", message="Attempting to set identical")
        plt.style.use("default")

        evaluator = FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
        try:
            ranked = list(optuna.importance.get_param_importances(study, evaluator=evaluator))
            ax = plot_param_importances(study, evaluator=evaluator, target_name=metric)
        except (ValueError, RuntimeError) as exc:  # e.g. every trial scored the same
            log.warning("%s: no parameter importance (%s)", row, exc)
            ranked = list(dict.fromkeys(k for t in study.trials for k in t.params))
        else:
            figures.append(ax.figure)
            ax.set_title(f"{row}: parameter importance (fANOVA, {n} trials)", loc="left")
            legend = ax.get_legend()
            if legend is not None:
                legend.remove()  # one objective: the legend repeats the axis label
            images.append(_render(ax, (5.2, 4.0)))

        plt.style.use("default")  # the importance plot switched to ggplot
        shown = ranked[:PARALLEL_PARAMS]
        ax = plot_parallel_coordinate(study, params=shown, target_name=metric)
        figures.append(ax.figure)
        # Blues starts at white, which hides the weakest trials: start it a third of the way in.
        blues = plt.get_cmap("Blues")
        for collection in ax.collections:
            if isinstance(collection, LineCollection):
                collection.set_cmap(ListedColormap(blues(np.linspace(0.3, 1.0, 256))))
        which = f"the {len(shown)} most important" if len(ranked) > len(shown) else "all"
        ax.set_title(f"{row}: {which} parameters; ASHA-stopped trials at their last epoch", y=1.03)
        images.append(_render(ax, (2.6 + 1.3 * len(shown), 4.0)))

    return _save_rgba(path, _side_by_side(images))


def write_search_figure(results_dir: Path, summary: dict[str, Any]) -> Path | None:
    """results_dir/<row>/search.png; None for rows with fewer than MIN_TRIALS finished trials."""
    row = str(summary["experiment"])
    trials = finished_trials(summary)
    if len(trials) < MIN_TRIALS:
        log.info(
            "%s: %d finished trials, fewer than %d: no search figure", row, len(trials), MIN_TRIALS
        )
        return None
    config_path = results_dir / row / "best_config.yaml"
    config = _read_yaml(config_path) if config_path.is_file() else {}
    sweep = config.get("sweep") or {}
    space = _search_space(results_dir, sweep.get("search_space"))
    distributions = trial_distributions(trials, space)
    if not distributions:
        log.info("%s: its trials hold no searched parameters: no search figure", row)
        return None
    study = build_study(row, trials, distributions, str(sweep.get("mode", "max")))
    return plot_search(
        results_dir / row / "search.png", study, str(sweep.get("metric", "val_macro_f1"))
    )


# ---------------------------------------------------------------------------------------------


def write_figures(results_dir: str | Path) -> list[Path]:
    """Every figure the stored rows allow (see the module docstring); returns their paths."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ValueError(f"{results_dir}: results folder not found")
    summaries = read_summaries(results_dir)
    paths = [write_confusion_figure(results_dir, summaries)]
    for summary in summaries:
        paths.append(write_val_curves(results_dir, summary))
        paths.append(write_search_figure(results_dir, summary))
    return [p for p in paths if p is not None]
