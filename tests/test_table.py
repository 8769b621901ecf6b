"""mgc.report.table: row order, cell formatting, the three table files, seeds.csv and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mgc.report.table import COLUMNS, collect, compare_rows, write_tables
from mgc.results.rows import SEED_COLUMNS, write_seed_csv
from mgc.table import main


def _summary(root: Path, name: str, seeds: list[int], acc: tuple, f1: tuple, **extra) -> None:
    summary = {
        "experiment": name,
        "model": "cnn4",
        "augmentation": "none",
        "strategy": "Adam",
        "params": 1234567,
        "split": "stratified",
        "seeds": seeds,
        "test_track_accuracy_mean": acc[0],
        "test_track_accuracy_std": acc[1],
        "test_track_macro_f1_mean": f1[0],
        "test_track_macro_f1_std": f1[1],
        **extra,
    }
    (root / name).mkdir(parents=True)
    (root / name / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    # Created out of order: E10 must follow E2 (numeric), the non-E row comes last.
    _summary(root, "E10", [0, 1, 2], (0.8123, 0.0456), (0.79, 0.051), augmentation="SpecAugment")
    _summary(root, "baseline_lr", [0], (0.5, 0.0), (0.4, 0.0), strategy="SGD & 10% warm-up #1")
    _summary(root, "E2", [0, 1], (0.6, 0.0149), (0.55, 0.02), model="efficientnet_b0")
    return root


def test_rows_are_ordered_and_formatted(results: Path) -> None:
    table = collect(results)
    assert list(table.columns) == COLUMNS
    assert list(table["Experiment"]) == ["E2", "E10", "baseline_lr"]
    e10 = table.iloc[1]
    assert e10["Params"] == "1,234,567"
    assert e10["Test Acc"] == "81.2 ± 4.6"
    assert e10["Macro-F1"] == "79.0 ± 5.1"
    assert e10["Augmentation"] == "SpecAugment"
    assert e10["Split"] == "stratified (track level, 3 seeds)"
    assert table.iloc[0]["Test Acc"] == "60.0 ± 1.5"
    assert table.iloc[0]["Model"] == "efficientnet_b0"


def test_single_seed_shows_the_mean_only(results: Path) -> None:
    row = collect(results).iloc[2]
    assert row["Test Acc"] == "50.0"
    assert row["Macro-F1"] == "40.0"
    assert row["Split"] == "stratified (track level, 1 seed)"


def test_convergence_and_quick_rows_are_said(tmp_path: Path) -> None:
    from mgc.results.rows import seed_convergence

    def seed(n: int, run: int, best: int, stopped: bool, patience: int = 5) -> dict:
        metrics = {"seed": n, "epochs_run": run, "best_epoch": best, "max_epochs": 40}
        return seed_convergence(
            {**metrics, "stopped_early": stopped, "early_stopping_patience": patience}
        )

    # Early stopping ended seeds 0 and 1; seed 2 hit its 40 epochs with its best at 38, within
    # its patience: still improving. A seed that hit its last epoch long after its best is flat.
    converged = [seed(0, 25, 20, True), seed(1, 31, 26, True), seed(2, 40, 38, False)]
    assert [c["still_improving"] for c in converged] == [False, False, True]
    assert not seed(3, 40, 30, False)["still_improving"]
    assert seed(4, 40, 40, False, patience=0)["still_improving"]  # no early stopping at all
    _summary(tmp_path, "E0", [0, 1, 2], (0.8, 0.01), (0.7, 0.01), convergence=converged)
    one_fit = [{**c, "max_epochs": 1, "stopped_early": False} for c in converged]
    _summary(tmp_path, "M1", [0, 1, 2], (0.7, 0.0), (0.6, 0.0), convergence=one_fit)
    _summary(tmp_path, "E1", [0], (0.5, 0.0), (0.4, 0.0), budget_name="quick")
    table = collect(tmp_path).set_index("Experiment")
    assert table.loc["E0", "Converged"] == "2/3, 1 still improving"
    assert table.loc["M1", "Converged"] == "one fit"
    assert table.loc["E1 (quick look, not for the table)", "Converged"] == "–"


def test_write_tables(results: Path) -> None:
    paths = write_tables(results)
    assert paths == {k: results / f"table.{k}" for k in ("md", "csv", "tex")}
    # No temporary files are left beside the tables.
    assert sorted(p.name for p in results.iterdir() if p.is_file()) == [
        "table.csv",
        "table.md",
        "table.tex",
    ]

    back = pd.read_csv(paths["csv"], dtype=str)
    assert list(back.columns) == COLUMNS
    assert back.equals(collect(results))

    md = paths["md"].read_text(encoding="utf-8").splitlines()
    assert [c.strip() for c in md[0].strip("|").split("|")] == COLUMNS
    cells = [c.strip() for c in md[3].strip("|").split("|")]
    assert cells[0] == "E10" and cells[4:7] == ["1,234,567", "81.2 ± 4.6", "79.0 ± 5.1"]
    assert cells[7:11] == ["–"] * 4  # no seed predictions in this fixture: no intervals
    assert cells[11:14] == ["–", "–", "–"]  # nor convergence or a budget: rows made before
    assert md[-1].startswith("Test Acc and Macro-F1 in %, mean ± std over the final seeds")

    tex = paths["tex"].read_text(encoding="utf-8")
    for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", r"\label{tab:ablation}"):
        assert tex.count(needle) == 1, needle
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"\begin{tabular}{llllrrrrrrrrrrl}" in tex
    assert r"$\Delta$F1 [95\% CI] vs" in tex and "Δ" not in tex
    assert r"E10 & cnn4 & SpecAugment & Adam & 1,234,567 & 81.2 $\pm$ 4.6 & 79.0 $\pm$ 5.1 &" in tex
    assert (
        r"baseline\_lr & cnn4 & none & SGD \& 10\% warm-up \#1 & 1,234,567 & 50.0 & 40.0 &" in tex
    )
    assert "±" not in tex


def test_write_tables_replaces_old_files(results: Path) -> None:
    (results / "table.md").write_text("stale")
    write_tables(results)
    assert "stale" not in (results / "table.md").read_text(encoding="utf-8")


def test_write_seed_csv_round_trip(tmp_path: Path) -> None:
    metrics = [
        {
            "seed": seed,
            "test": {
                "track_accuracy": 0.6 + seed / 10,
                "track_macro_f1": 0.55 + seed / 10,
                "chunk_accuracy": 0.5 + seed / 10,
                "chunk_macro_f1": 0.45 + seed / 10,
                "confusion": [[1, 0], [0, 1]],
            },
            "valid": {"track_macro_f1": 0.7 - seed / 10, "track_accuracy": 0.9},
            "best_epoch": 3 + seed,
            "epochs_run": 5 + seed,
            "max_epochs": 6,
            "stopped_early": seed == 0,
            "params": 393450,
        }
        for seed in (0, 1)
    ]
    path = write_seed_csv(tmp_path / "E0" / "seeds.csv", metrics)
    assert path == tmp_path / "E0" / "seeds.csv"
    back = pd.read_csv(path)
    assert list(back.columns) == SEED_COLUMNS
    assert back["seed"].tolist() == [0, 1]
    assert back["test_track_accuracy"].tolist() == [0.6, 0.7]
    assert back["test_chunk_macro_f1"].tolist() == [0.45, 0.55]
    assert back["valid_track_macro_f1"].tolist() == [0.7, 0.6]
    assert back["best_epoch"].tolist() == [3, 4] and back["epochs_run"].tolist() == [5, 6]
    assert back["stopped_early"].tolist() == [True, False]


def test_write_seed_csv_rejects_missing_metrics(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="best_epoch"):
        write_seed_csv(tmp_path / "seeds.csv", [{"seed": 0, "test": {}, "valid": {}}])
    assert not (tmp_path / "seeds.csv").exists()


def test_cli_writes_and_prints(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--results", str(results), "--latex"]) == 0
    out = capsys.readouterr().out
    assert "81.2 ± 4.6" in out and r"\label{tab:ablation}" in out
    assert out.rstrip().splitlines()[-1].startswith("wrote ")


def test_cli_missing_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["--results", str(missing)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {missing}: results folder not found\n"
    assert not missing.exists()


def test_python_m_exit_code_for_missing_folder(tmp_path: Path) -> None:
    # The real entry point: `python -m mgc.table` must exit 2 with one line on stderr.
    proc = subprocess.run(
        [sys.executable, "-m", "mgc.table", "--results", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: {tmp_path / 'nope'}: results folder not found"]


def write_row(
    root: Path, name: str, tracks: list[str], preds: list[list[str]], **summary: object
) -> None:
    """results/<name>/ as a sweep leaves it: summary.json and each seed's predictions.csv."""
    truth = [t.split("/")[0] for t in tracks]
    genres = sorted(set(truth))
    summary = {
        "experiment": name,
        "model": "cnn4",
        "augmentation": "none",
        "strategy": "Adam",
        "params": 10,
        "split": "stratified",
        "seeds": list(range(len(preds))),
        **{f"test_track_{m}_{k}": 0.5 for m in ("accuracy", "macro_f1") for k in ("mean", "std")},
        **summary,
    }
    (root / name).mkdir()
    (root / name / "summary.json").write_text(json.dumps(summary))
    for seed, pred in enumerate(preds):
        frame = pd.DataFrame({"track": tracks, "true_genre": truth, "predicted_genre": pred})
        for g in genres:
            frame[f"p_{g}"] = [float(p == g) for p in pred]
        (root / name / f"seed_{seed}").mkdir()
        frame.to_csv(root / name / f"seed_{seed}" / "predictions.csv", index=False)


def test_intervals_and_row_differences_from_the_seed_predictions(tmp_path: Path) -> None:
    """Two rows on the same 40 test tracks; E1's seeds are right far more often than E0's."""
    rng = np.random.default_rng(0)
    genres = ["blues", "jazz", "metal", "pop"]
    tracks = [f"{g}/{g}.{i:05d}" for g in genres for i in range(10)]
    truth = [t.split("/")[0] for t in tracks]
    for name, accuracy in (("E0", 0.5), ("E1", 0.95)):
        preds = []
        for _ in (0, 1):
            right = rng.random(len(tracks)) < accuracy
            preds.append(
                [
                    t if r else genres[(genres.index(t) + 1) % 4]
                    for t, r in zip(truth, right, strict=True)
                ]
            )
        write_row(
            tmp_path,
            name,
            tracks,
            preds,
            test_track_accuracy_mean=accuracy,
            test_track_accuracy_std=0.01,
            test_track_macro_f1_mean=accuracy,
            test_track_macro_f1_std=0.01,
            budget={"grid_trial_epochs": 240},
            trial_epochs_run=75,
            sweep_seconds=5400.0,
            cpu_hours=3.0,
        )
    table = collect(tmp_path)
    e0, e1 = table.to_dict("records")
    assert e0["ΔF1 [95% CI] vs"] == "–"
    assert e0["Trial-epochs run / grid"] == "75 / 240" and e0["Wall h (CPU h)"] == "1.50 (3.00)"
    low, high = (float(x) for x in e1["Acc 95% CI"].strip("[]").split(","))
    assert low < high <= 100.0
    delta = e1["ΔF1 [95% CI] vs"]
    value, rest = delta.split(" ", 1)
    interval, other = rest.rsplit(" vs ", 1)
    assert other == "E0"
    d_low, d_high = (float(x) for x in interval.strip("[]").split(","))
    assert float(value) > 0 and d_low > 0  # a real improvement: the interval excludes 0
    assert collect(tmp_path).equals(table)  # seeded resamples: the table rebuilds identically


def test_rows_are_ordered_by_split_and_compared_with_the_right_row(tmp_path: Path) -> None:
    """Reference rows sit under E0 and are compared with it; E1 is compared with E0 (not with the
    reference row above it); another split's rows come after and never compare across splits."""
    tracks = [f"{g}/{g}.{i:05d}" for g in ("blues", "jazz") for i in range(6)]
    truth = [t.split("/")[0] for t in tracks]
    rows = {
        "E1": "stratified",
        "D7": "stratified",
        "E0-ff": "fault_filtered",
        "M1": "stratified",
        "E0": "stratified",
        "E2-ff": "fault_filtered",
    }
    for name, split in rows.items():
        write_row(tmp_path, name, tracks, [truth], split=split)
    table = collect(tmp_path)
    assert table["Experiment"].tolist() == ["E0", "M1", "D7", "E1", "E0-ff", "E2-ff"]
    against = [cell.rsplit(" vs ", 1)[-1] for cell in table["ΔF1 [95% CI] vs"]]
    assert against == ["–", "E0", "E0", "E0", "–", "E0-ff"]
    # A split the dataset covers in part says how many of its test tracks were held.
    summary = json.loads((tmp_path / "E0-ff" / "summary.json").read_text())
    summary["n_tracks"] = {"train": 300, "valid": 140, "test": 238}
    summary["missing_tracks"] = {"train": 143, "valid": 57, "test": 52}
    (tmp_path / "E0-ff" / "summary.json").write_text(json.dumps(summary))
    split = collect(tmp_path).set_index("Experiment").loc["E0-ff", "Split"]
    assert split == "fault_filtered, 238 of 290 test tracks (track level, 1 seed)"


def test_a_one_seed_row_claims_no_spread() -> None:
    from mgc.report.table import row_line

    s = {"experiment": "E0", "split": "stratified", "seeds": [0]}
    s.update(
        {f"test_track_{m}_{k}": 0.5 for m in ("accuracy", "macro_f1") for k in ("mean", "std")}
    )
    assert row_line(s) == "E0 (stratified split, 1 seed): test track acc 50.0, macro-F1 50.0"
    s["seeds"] = [0, 1, 2]
    assert row_line(s).endswith("acc 50.0 ± 50.0, macro-F1 50.0 ± 50.0")


def test_a_row_naming_its_base_is_compared_with_it(tmp_path: Path) -> None:
    """E5 builds on E3, not on the E4 reference above it; on another split the namesake counts,
    also for a variant row (E4-long against E4; E5-long-ff against E3-ff, not the E5-ff before it)."""
    tracks = [f"{g}/{g}.{i:05d}" for g in ("blues", "jazz") for i in range(6)]
    truth = [t.split("/")[0] for t in tracks]
    for name, split, base in (
        ("E3", "stratified", None),
        ("E4", "stratified", "E3"),
        ("E4-long", "stratified", "E4"),
        ("E5", "stratified", "E3"),
        ("E3-ff", "fault_filtered", None),
        ("E4-ff", "fault_filtered", None),
        ("E5-ff", "fault_filtered", "E3"),
        ("E5-long-ff", "fault_filtered", "E3"),
    ):
        write_row(tmp_path, name, tracks, [truth], split=split, compare_with=base)
    table = collect(tmp_path)
    assert list(table["Experiment"]) == [
        "E3", "E4", "E4-long", "E5", "E3-ff", "E4-ff", "E5-ff", "E5-long-ff"
    ]  # fmt: skip
    against = [cell.rsplit(" vs ", 1)[-1] for cell in table["ΔF1 [95% CI] vs"]]
    assert against == ["–", "E3", "E4", "E3", "–", "E3-ff", "E3-ff", "E3-ff"]


def test_a_broken_search_record_is_one_line_naming_it(tmp_path: Path) -> None:
    from mgc.core.errors import UserError
    from mgc.results.rows import RowFolder

    row = RowFolder(tmp_path / "E0")
    assert row.read_search() is None  # no search yet: the row searches
    (tmp_path / "E0").mkdir()
    (tmp_path / "E0" / "search.json").write_text('{"best_params": ')
    with pytest.raises(UserError, match=r"E0/search.json: not valid JSON .*move it aside"):
        row.read_search()
    (tmp_path / "E0" / "search.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a search outcome"):
        row.read_search()


def test_a_row_resumed_elsewhere_keeps_its_best_config_unless_the_recipe_changed(tmp_path):
    from mgc.core.config import load_config
    from mgc.results.rows import RowFolder

    row = RowFolder(tmp_path / "E0")
    row.path.mkdir()
    path = row.write_best_config(load_config(None, ["sweep.num_cpus=2", "train.lr=0.001"]))
    committed = path.read_text()
    # Another machine: other cores, data and cache paths. The committed file stays as it was.
    elsewhere = ["sweep.num_cpus=1", "data.root=/elsewhere", "cache.dir=/tmp/c", "train.lr=0.001"]
    row.write_best_config(load_config(None, elsewhere))
    assert path.read_text() == committed
    # A different recipe is what the seeds now train: the file says so.
    row.write_best_config(load_config(None, ["sweep.num_cpus=1", "train.lr=0.01"]))
    assert "lr: 0.01" in path.read_text() and "num_cpus: 1" in path.read_text()


def test_a_row_refit_on_train_and_validation_says_so():
    from mgc.report.table import _strategy

    assert _strategy({"strategy": "Adam", "budget": {"final_refit": True}}) == (
        "Adam; refit on train+valid"
    )
    assert _strategy({"strategy": "Adam", "budget": {"final_refit": False}}) == "Adam"
    assert _strategy({"strategy": "Adam"}) == "Adam"  # rows made before the option


def test_seed_ensemble_averages_the_seeds_probabilities(tmp_path: Path) -> None:
    """Three seeds that each get one of three tracks wrong, confidently but barely outvoted:
    the mean of their probabilities gets all three right. Identical seeds are no ensemble."""
    tracks = ["blues/blues.00000", "jazz/jazz.00000", "pop/pop.00000"]
    genres = ["blues", "jazz", "pop"]
    root = tmp_path / "results"
    root.mkdir()
    write_row(root, "E0", tracks, [["blues", "jazz", "pop"]] * 3)
    write_row(root, "M1", tracks, [["blues", "jazz", "pop"]] * 3)
    for seed in range(3):  # seed k is wrong on track k: 0.6 on the next genre, 0.4 on the truth
        path = root / "E0" / f"seed_{seed}" / "predictions.csv"
        frame = pd.read_csv(path)
        for i in range(3):
            wrong = i == seed
            probs = np.zeros(3)
            probs[i] = 0.4 if wrong else 1.0
            probs[(i + 1) % 3] = 0.6 if wrong else 0.0
            frame.loc[i, [f"p_{g}" for g in genres]] = probs
            frame.loc[i, "predicted_genre"] = genres[int(probs.argmax())]
        frame.to_csv(path, index=False)
    table = collect(root).set_index("Experiment")
    assert table.loc["E0", "Seed ensemble Acc / F1"] == "100.0 / 100.0"
    assert table.loc["M1", "Seed ensemble Acc / F1"] == "–"


def test_compare_two_row_folders_on_the_same_tracks(tmp_path: Path, capsys) -> None:
    """--compare: a row against another, wherever each folder lies (a budget check kept apart
    from the main table), with the paired difference the table's ΔF1 column would give."""
    genres = ["blues", "jazz", "metal", "pop"]
    tracks = [f"{g}/{g}.{i:05d}" for g in genres for i in range(10)]
    truth = [t.split("/")[0] for t in tracks]
    wrong = {t: genres[(genres.index(t.split("/")[0]) + 1) % 4] for t in tracks}
    half = [g if i % 2 else wrong[t] for i, (t, g) in enumerate(zip(tracks, truth, strict=True))]
    conv = [{"best_epoch": 3, "epochs_run": 8}, {"best_epoch": 5, "epochs_run": 10}]
    (tmp_path / "main").mkdir()
    (tmp_path / "check").mkdir()
    write_row(tmp_path / "main", "E0", tracks, [half, half], convergence=conv)
    write_row(tmp_path / "check", "E0-2x", tracks, [truth, half], convergence=conv)
    table = compare_rows([(tmp_path / "check" / "E0-2x", tmp_path / "main" / "E0")])
    row = table.iloc[0]
    assert row["Row"] == "E0-2x (3 / 8, 5 / 10)" and row["Against"].startswith("E0 (")
    # seed means: accuracy 0.75 against 0.5
    assert row["ΔAcc [95% CI]"].startswith("+25.0 [")
    out = tmp_path / "check" / "check.md"
    code = main(
        [
            "--compare",
            str(tmp_path / "check" / "E0-2x"),
            str(tmp_path / "main" / "E0"),
            "--out",
            str(out),
        ]
    )
    assert code == 0 and out.read_text().startswith("| Row")
    # Other tracks, or a folder that is no finished row: one line, exit 2.
    write_row(tmp_path / "main", "E1", tracks[:20], [truth[:20]])
    assert main(["--compare", str(tmp_path / "main" / "E1"), str(tmp_path / "main" / "E0")]) == 2
    assert "not scored on the same test tracks" in capsys.readouterr().err
    assert main(["--compare", str(tmp_path / "nope"), str(tmp_path / "main" / "E0")]) == 2
    assert "no summary.json" in capsys.readouterr().err
