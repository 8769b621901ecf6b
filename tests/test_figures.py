"""mgc.report.figures: the paper figures drawn from a results folder's stored files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mgc.report.figures import (
    _search_space,
    baseline_and_best,
    build_study,
    pooled_predictions,
    trial_distributions,
    write_figures,
)
from mgc.table import main

optuna = pytest.importorskip("optuna")

GENRES = ["blues", "jazz", "metal", "pop"]
PNG = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 150_000
SPACE = {
    "train.lr": {"loguniform": [1.0e-4, 1.0e-3]},
    "train.batch_size": {"choice": [16, 32, 64]},
    "model.dropout": {"uniform": [0.1, 0.5]},
}


def _summary(name: str, f1: float, **extra) -> dict:
    return {
        "experiment": name,
        "model": "cnn4",
        "augmentation": "none",
        "strategy": "Adam",
        "params": 1000,
        "split": "stratified",
        "seeds": [0, 1],
        "test_track_accuracy_mean": f1,
        "test_track_accuracy_std": 0.01,
        "test_track_macro_f1_mean": f1,
        "test_track_macro_f1_std": 0.01,
        **extra,
    }


def _trials(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "trial": f"_trial_{i}",
            "train.lr": float(10 ** rng.uniform(-4, -3)),
            "train.batch_size": int(rng.choice([16, 32, 64])),
            "model.dropout": float(rng.uniform(0.1, 0.5)),
            "val_macro_f1": float(rng.uniform(0.3, 0.8)),
            "epochs": int(rng.choice([3, 9])),
        }
        for i in range(n)
    ]


def _row(root: Path, summary: dict, epochs: int, accuracy: float) -> None:
    """summary.json, best_config.yaml and per seed a train log and test predictions."""
    out = root / summary["experiment"]
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps(summary))
    config = {"sweep": {"search_space": "spaces/adam.yaml", "metric": "val_macro_f1"}}
    (out / "best_config.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(len(summary["experiment"]))
    tracks = [f"{g}/{g}.{i:05d}" for g in GENRES for i in range(5)]
    truth = [t.split("/")[0] for t in tracks]
    for seed in summary["seeds"]:
        (out / f"seed_{seed}").mkdir()
        epoch = np.arange(1, epochs + 1)
        pd.DataFrame(
            {
                "epoch": epoch,
                "val_loss": 2.0 / epoch + rng.uniform(0, 0.1, epochs),
                "val_macro_f1": 0.5 - 0.3 / epoch,
                "val_track_macro_f1": 0.6 - 0.3 / epoch + rng.uniform(0, 0.05, epochs),
            }
        ).to_csv(out / f"seed_{seed}" / "train_log.csv", index=False)
        right = rng.random(len(tracks)) < accuracy
        pred = [
            t if r else GENRES[(GENRES.index(t) + 1) % 4] for t, r in zip(truth, right, strict=True)
        ]
        frame = pd.DataFrame({"track": tracks, "true_genre": truth, "predicted_genre": pred})
        frame["correct"] = frame["true_genre"] == frame["predicted_genre"]
        for g in GENRES:
            frame[f"p_{g}"] = [float(p == g) for p in pred]
        frame.to_csv(out / f"seed_{seed}" / "predictions.csv", index=False)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """E0 (baseline, 5 trials), E1 (the best CNN, 2 trials), R (logreg, scores highest but is
    a reference, one epoch), F (a higher score on another split), N (no seed folders)."""
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "adam.yaml").write_text(yaml.safe_dump(SPACE))
    root = tmp_path / "results"
    _row(root, _summary("E0", 0.5, trials=_trials(5, 0)), epochs=4, accuracy=0.5)
    _row(root, _summary("E1", 0.7, trials=_trials(2, 1)), epochs=6, accuracy=0.8)
    _row(root, _summary("R", 0.9, model="logreg"), epochs=1, accuracy=0.9)
    _row(root, _summary("F", 0.95, split="fault_filtered"), epochs=3, accuracy=0.9)
    (root / "N").mkdir()
    (root / "N" / "summary.json").write_text(json.dumps(_summary("N", 0.6)))
    return root


def _is_small_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) <= MAX_BYTES


def test_baseline_and_best_picks_the_top_non_reference_row_on_the_split() -> None:
    rows = [
        _summary("E0", 0.5),
        _summary("E2", 0.7),
        _summary("E1", 0.6),
        _summary("R", 0.9, model="logreg"),  # a reference row, however good
        _summary("D7", 0.95, model="logreg (features_30_sec)"),
        _summary("F", 0.99, split="fault_filtered"),  # another split
        _summary("X", float("nan")),  # no score
    ]
    baseline, best = baseline_and_best(rows)
    assert (baseline["experiment"], best["experiment"]) == ("E0", "E2")
    # A tie goes to the name that sorts first; the baseline itself is never "the best".
    tied = [_summary("E0", 0.9), _summary("E3", 0.7), _summary("E10", 0.7)]
    assert baseline_and_best(tied)[1]["experiment"] == "E10"
    # On the other split there is no E0: nothing to compare.
    assert baseline_and_best(rows, split="fault_filtered") is None
    assert baseline_and_best([_summary("E0", 0.5), _summary("R", 0.9, model="logreg")]) is None
    assert baseline_and_best([_summary("E1", 0.5), _summary("E2", 0.9)]) is None


def test_write_figures_draws_what_the_rows_allow(results: Path) -> None:
    paths = write_figures(results)
    assert paths == [
        results / "confusion_E0_vs_E1.png",
        results / "E0" / "val_curves.png",
        results / "E0" / "search.png",
        results / "E1" / "val_curves.png",
        results / "F" / "val_curves.png",
    ]
    assert all(_is_small_png(p) for p in paths)
    # Skipped: E1 (2 trials) and R, F, N (no trials) have no search view; R's single epoch
    # and N's missing logs give no curves; no other confusion pair is drawn.
    assert not (results / "E1" / "search.png").exists()
    assert not (results / "R" / "val_curves.png").exists()
    assert not (results / "N" / "val_curves.png").exists()
    assert sorted(p.name for p in results.glob("*.png")) == ["confusion_E0_vs_E1.png"]
    # Atomic writes leave no temporaries behind.
    assert not [p for p in results.rglob("*") if p.name.startswith(".")]


def test_figures_rebuild_byte_for_byte(results: Path) -> None:
    first = {p: p.read_bytes() for p in write_figures(results)}
    second = {p: p.read_bytes() for p in write_figures(results)}
    assert first == second


def test_no_confusion_figure_without_a_second_row(results: Path) -> None:
    for name in ("E1", "F"):
        (results / name / "summary.json").unlink()
    paths = write_figures(results)
    assert not list(results.glob("confusion_*.png"))
    assert results / "E0" / "val_curves.png" in paths


def test_pooled_predictions_concatenate_the_seeds(results: Path) -> None:
    summary = json.loads((results / "E1" / "summary.json").read_text())
    genres, y_true, y_pred = pooled_predictions(results, summary)
    assert genres == GENRES
    assert y_true.shape == y_pred.shape == (2 * 20,)
    missing = dict(summary, seeds=[0, 7])
    assert pooled_predictions(results, missing) is None


def test_bad_files_are_named(results: Path) -> None:
    (results / "E1" / "seed_1" / "train_log.csv").write_text("step,val_loss\n1,0.5\n")
    with pytest.raises(ValueError, match=r"E1/seed_1/train_log\.csv: no 'epoch' column"):
        write_figures(results)
    (results / "E0" / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"E0/summary\.json: not valid JSON"):
        write_figures(results)


def test_distributions_from_the_space_file_or_the_values() -> None:
    trials = _trials(4, 0)
    dists = trial_distributions(trials, SPACE)
    assert dists["train.lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-3, log=True)
    assert dists["train.batch_size"].choices == (16, 32, 64)
    assert dists["model.dropout"] == optuna.distributions.FloatDistribution(0.1, 0.5)
    # Without the file: fitted to the values (ints stay ints, a narrow float range linear).
    inferred = trial_distributions(trials, None)
    assert isinstance(inferred["train.batch_size"], optuna.distributions.IntDistribution)
    assert not inferred["model.dropout"].log
    # A file edited since the sweep no longer holds the values: fitted to them instead.
    narrowed = dict(SPACE, **{"model.dropout": {"uniform": [0.4, 0.45]}})
    dropout = trial_distributions(trials, narrowed)["model.dropout"]
    assert dropout.low == min(t["model.dropout"] for t in trials)
    # Ends that are not numbers: fitted to the values too.
    broken = dict(SPACE, **{"train.lr": {"loguniform": ["low", "high"]}})
    assert trial_distributions(trials, broken)["train.lr"] == inferred["train.lr"]
    study = build_study("E0", trials, dists)
    assert len(study.trials) == 4 and study.direction.name == "MAXIMIZE"
    assert study.best_value == max(t["val_macro_f1"] for t in trials)
    # Axes go by the key's last part, unless two keys share it.
    assert set(study.trials[0].params) == {"lr", "batch_size", "dropout"}
    clash = [{"a.x": i, "b.x": 2 * i, "val_macro_f1": i / 10} for i in range(3)]
    study = build_study("E9", clash, trial_distributions(clash, None))
    assert set(study.trials[0].params) == {"a.x", "b.x"}


def test_table_cli_draws_figures_unless_told_not_to(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--results", str(results), "--no-figures"]) == 0
    assert not list(results.rglob("*.png"))
    assert main(["--results", str(results)]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    assert out[-1] == "wrote " + ", ".join(str(p) for p in write_figures(results))


def test_search_space_file_is_found_beside_the_results_folder(results: Path) -> None:
    assert _search_space(results, "spaces/adam.yaml") == SPACE
    assert _search_space(results, "spaces/missing.yaml") is None
    assert _search_space(results, None) is None
    # A file the sweep would refuse (the one reader, mgc.core.search_space): every distribution is
    # then inferred from the trials.
    bad = dict(SPACE, **{"train.epochs": {"normal": [1, 2]}, "model.width": [16, 32]})
    (results.parent / "spaces" / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert _search_space(results, "spaces/bad.yaml") is None
    (results.parent / "spaces" / "broken.yaml").write_text("train.lr: {loguniform: [1")
    assert _search_space(results, "spaces/broken.yaml") is None
