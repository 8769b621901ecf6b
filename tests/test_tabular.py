"""The two reference rows: D7 (mgc.run.tabular, a hand-made feature table → logistic regression) and
M1 (ablations/m1.yaml, a sweep row with no search)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mgc.core.config import load_config
from mgc.data.loader import split_tracks
from mgc.data.splits import PARTS
from mgc.report.table import collect
from mgc.results.rows import SEED_COLUMNS
from mgc.run.tabular import ROW_DEFAULTS, read_feature_table, run_tabular, split_rows
from mgc.tabular import main

REPO = Path(__file__).resolve().parents[1]
GENRE_LEVEL = {"blues": 0.0, "metal": 1.0, "pop": 2.0}


def feature_csv(path: Path, rows: list[tuple[str, str]], seed: int = 0) -> Path:
    """A features_30_sec.csv look-alike: filename, length, three features, label; the features
    tell the genres apart (plus noise), so a linear model scores them all right."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "filename": [f for f, _ in rows],
            "length": 661794,
            **{
                f"feat{k}_mean": [GENRE_LEVEL.get(g, 3.0) * (k + 1) for _, g in rows]
                + rng.normal(0, 0.05, len(rows))
                for k in range(3)
            },
            "label": [g for _, g in rows],
        }
    )
    frame.to_csv(path, index=False)
    return path


def dataset_rows(root: Path) -> list[tuple[str, str]]:
    """(file name as the Kaggle table writes it, genre) for every clip under root."""
    return [(p.with_suffix(".wav").name, p.parent.name) for p in sorted(root.glob("*/*.wav"))]


def overrides(root: Path, tmp_path: Path, *more: str) -> list[str]:
    return [
        f"data.root={root}",
        f"sweep.results_dir={tmp_path / 'results'}",
        "sweep.final_seeds=[0, 1]",
        *more,
    ]


def test_table_is_cut_to_the_cnn_rows_tracks(synth_dataset: Path, tmp_path: Path, caplog):
    # Every clip of the dataset, one test clip left out, and rows for tracks it does not hold
    # (another genre, another number) that no part may take in.
    cfg = load_config(None, [*ROW_DEFAULTS, f"data.root={synth_dataset}"])
    _, parts, _, _ = split_tracks(cfg)
    dropped = parts["test"][0].track_id
    rows = [r for r in dataset_rows(synth_dataset) if f"{r[1]}/{r[0][:-4]}" != dropped]
    rows += [("jazz.00000.wav", "jazz"), ("blues.00099.wav", "blues")]
    table = read_feature_table(feature_csv(tmp_path / "features.csv", rows))
    assert table.shape == (len(rows), 3)  # filename, length and label are no features

    with caplog.at_level(logging.INFO, logger="mgc.run.tabular"):
        data = split_rows(table, cfg, "features.csv")
    for part in PARTS:
        expected = [t.track_id for t in parts[part] if t.track_id != dropped]
        assert data.parts[part].tracks == expected, part
        assert len(data.parts[part].x) == len(data.parts[part].y) == len(expected)
    assert data.missing == {"train": 0, "valid": 0, "test": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1 of the 12 tracks" in warnings[0] and "1 test" in warnings[0]
    assert "\n" not in warnings[0]
    assert any("2 rows are tracks in no part" in r.getMessage() for r in caplog.records)

    # Another split seed: the table follows the loader's split, whatever it is.
    other = load_config(None, [f"data.root={synth_dataset}", "data.split_seed=7"])
    _, other_parts, _, _ = split_tracks(other)
    full = read_feature_table(feature_csv(tmp_path / "all.csv", dataset_rows(synth_dataset)))
    moved = split_rows(full, other)
    assert {p: moved.parts[p].tracks for p in PARTS} == {
        p: [t.track_id for t in other_parts[p]] for p in PARTS
    }


def test_row_files_and_the_table(synth_dataset: Path, tmp_path: Path):
    csv = feature_csv(tmp_path / "features_30_sec.csv", dataset_rows(synth_dataset))
    # The command: the row, then the tables.
    assert main([str(csv), *overrides(synth_dataset, tmp_path)]) == 0
    out = tmp_path / "results" / "D7"
    s = json.loads((out / "summary.json").read_text())
    assert s["experiment"] == "D7" and s["model"] == "logreg (features_30_sec)"
    assert s["augmentation"] == "none" and s["strategy"] == "hand-made features"
    assert s["seeds"] == [0, 1] and s["split"] == "stratified" and s["params"] == 3 * 3 + 3
    assert s["n_trials"] == len(s["trials"]) == s["trial_epochs_run"] == 7
    assert s["best_params"]["C"] in [t["C"] for t in s["trials"]]
    assert s["test_track_accuracy_mean"] == 1.0  # the features separate the genres
    for name in ("summary.json", "seeds.csv", "best_config.yaml", "confusion_matrix_test.png"):
        assert (out / name).is_file(), name
    assert pd.read_csv(out / "seeds.csv").columns.tolist() == SEED_COLUMNS
    # best_config.yaml is a config the project loads: the data and split the row used.
    assert load_config(out / "best_config.yaml").data.root == str(synth_dataset)

    _, parts, _, _ = split_tracks(load_config(None, [f"data.root={synth_dataset}"]))
    for seed in (0, 1):
        folder = out / f"seed_{seed}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["seed"] == seed and metrics["test"]["n_tracks"] == len(parts["test"])
        predictions = pd.read_csv(folder / "predictions.csv")
        assert predictions["track"].tolist() == [t.track_id for t in parts["test"]]
        assert [c for c in predictions.columns if c.startswith("p_")] == [
            "p_blues",
            "p_metal",
            "p_pop",
        ]

    (row,) = collect(tmp_path / "results").to_dict("records")
    assert row["Experiment"] == "D7" and row["Model"] == "logreg (features_30_sec)"
    assert row["Test Acc"] == "100.0 ± 0.0" and row["Acc 95% CI"] == "[100.0, 100.0]"
    assert row["Trial-epochs run / grid"] == "7 / 7"
    assert row["Split"] == "stratified (track level, 2 seeds)"
    assert (tmp_path / "results" / "table.md").is_file()

    # Run again: the new seed folders take the names, the old ones are kept aside.
    run_tabular(csv, None, overrides(synth_dataset, tmp_path, "experiment.name=D7b"))
    assert run_tabular(csv, None, overrides(synth_dataset, tmp_path)).experiment_dir == out
    assert len(list(out.glob("seed_0.old-*"))) == 1
    assert {r["Experiment"] for r in collect(tmp_path / "results").to_dict("records")} == {
        "D7",
        "D7b",
    }


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "feature table not found"),
        ("filename,length,a,b\nblues.00000.wav,1,0.5,0.1\n", "no label column"),
        ("filename,length,label\nblues.00000.wav,1,blues\n", "no feature columns"),
        ("filename,a,label\nblues.00000.wav,loud,blues\n", "non-numeric or infinite values"),
        ("filename,a,label\nblues.00000.wav,1,blues\nblues.00000.au,2,blues\n", "more than one"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_tables_are_one_line_errors(
    synth_dataset: Path, tmp_path: Path, capsys, content: str | None, reason: str
):
    path = tmp_path / "features.csv"
    if content is not None:
        path.write_text(content)
    assert main([str(path), f"data.root={synth_dataset}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and reason in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists()


def test_a_table_for_another_dataset_is_an_error(synth_dataset: Path, tmp_path: Path, capsys):
    csv = feature_csv(tmp_path / "f.csv", [(f"jazz.{i:05d}.wav", "jazz") for i in range(5)])
    assert main([str(csv), f"data.root={synth_dataset}"]) == 2
    assert "no rows for the train tracks" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# M1: a sweep row with no search


def test_m1_is_e0_with_logistic_regression_and_no_search(synth_dataset: Path):
    from mgc.run.sweep import load_sweep

    m1, space = load_sweep(REPO / "ablations" / "m1.yaml", [f"data.root={synth_dataset}"])
    e0, _ = load_sweep(REPO / "ablations" / "e0.yaml", [f"data.root={synth_dataset}"])
    assert space == {} and m1.sweep.num_samples == 0
    assert m1.experiment.name == "M1" and m1.model.name == "logreg"
    # The same split, features, chunking and final seeds as the CNN rows.
    assert (m1.data, m1.features, m1.chunks) == (e0.data, e0.features, e0.chunks)
    assert m1.sweep.final_seeds == e0.sweep.final_seeds
    # Its one fit is its whole training: the full budget's epochs and patience are the CNNs'.
    from mgc.run.seeds import chosen_config

    final = chosen_config(m1, {})
    assert final.train.epochs == 1 and final.train.windows_per_track == 0
    assert chosen_config(e0, {}).train.epochs == e0.sweep.final.epochs


@pytest.mark.slow
def test_m1_sweep_writes_a_row(ray_local, synth_dataset: Path, tmp_path: Path, monkeypatch):
    from mgc.sweep import sweep

    monkeypatch.chdir(tmp_path)
    result = sweep(
        REPO / "ablations" / "m1.yaml",
        [
            f"data.root={synth_dataset}",
            f"cache.dir={tmp_path / 'cache'}",
            "chunks.window_s=1.0",
            "sweep.final_seeds=[0, 1]",
            f"sweep.results_dir={tmp_path / 'results'}",
            f"sweep.storage_path={tmp_path / 'ray_results'}",
            "sweep.wandb.enabled=false",
        ],
    )
    s = result.summary
    assert s["n_trials"] == 0 and s["trials"] == [] and s["best_params"] == {}
    assert s["budget"]["grid_trial_epochs"] == 0 and s["model"] == "logreg"
    out = tmp_path / "results" / "M1"
    for seed in (0, 1):
        assert (out / f"seed_{seed}" / "predictions.csv").is_file()
    (row,) = collect(tmp_path / "results").to_dict("records")
    assert row["Experiment"] == "M1" and row["Trial-epochs run / grid"] == "0 / 0"
    assert row["Acc 95% CI"].startswith("[")
