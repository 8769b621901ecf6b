"""bench/asha_vs_grid.py's comparison and its replay of Ray's ASHA over recorded curves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "asha_vs_grid.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("asha_vs_grid", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flat(value: float, epochs: int = 4) -> list[float]:
    return [value] * epochs


@pytest.mark.parametrize(
    "grace, concurrent, epochs",
    [
        # Grace at the last epoch: nothing is stopped, the full grid.
        (4, 2, [4, 4, 4]),
        # One at a time: trial 0 sets every rung; trial 1 is below it at epoch 1 and stops
        # there; trial 2 beats both and runs to the end.
        (1, 1, [4, 1, 4]),
    ],
)
def test_stops_follow_the_rungs(bench, grace, concurrent, epochs):
    curves = [flat(0.5), flat(0.2), flat(0.7)]
    r = bench.replay_asha(
        curves, [flat(1.0)] * 3, grace=grace, reduction_factor=2, concurrent=concurrent
    )
    assert r["epochs_per_trial"] == epochs
    assert r["trial_epochs"] == sum(epochs)
    assert r["best_val_macro_f1"] == 0.7 and r["best_trial"] == 2


def test_results_reach_the_scheduler_in_time_order(bench):
    # Two at once. Trial 1's epochs are fast, so it reaches the rung first and sets it; trial 0,
    # slower and weaker, arrives second and is stopped, although it was started first.
    curves = [flat(0.3), flat(0.6), flat(0.9)]
    seconds = [flat(10.0), flat(1.0), flat(1.0)]
    r = bench.replay_asha(curves, seconds, grace=1, reduction_factor=2, concurrent=2)
    assert r["epochs_per_trial"][0] == 1
    assert r["epochs_per_trial"][1] == 4
    # Trial 2 starts when trial 1 finishes (t = 4) and beats the rung.
    assert r["epochs_per_trial"][2] == 4


def test_replay_table_marks_the_goal_and_the_rows_setting(bench):
    grid = [
        {"curve": [0.1, 0.2, 0.3, 0.9], "epoch_seconds": flat(1.0)},  # a late bloomer
        {"curve": flat(0.5), "epoch_seconds": flat(1.0)},
        {"curve": flat(0.4), "epoch_seconds": flat(1.0)},
    ]
    rows = bench.replay_table(grid, concurrent=1, used=(2, 3))
    assert {(r["grace_period"], r["reduction_factor"]) for r in rows} == {
        (g, rf) for g in bench.REPLAY_GRACE for rf in bench.REPLAY_REDUCTION
    }
    assert sum(r["used_by_the_rows"] for r in rows) == 1
    for r in rows:
        assert r["epoch_ratio"] == r["trial_epochs"] / 12
        assert r["gap_points"] == pytest.approx(100 * (0.9 - r["best_val_macro_f1"]))
        assert r["meets_goal"] == (r["gap_points"] <= 1.0 and r["epoch_ratio"] <= 1 / 3)
    text = bench.replay_markdown(rows, concurrent=1)
    assert "(the rows' setting)" in text and text.count("\n| ") == len(rows) + 1


def test_compare_counts_epochs_and_the_gap(bench):
    space = {"lr": None}
    asha = [
        {"lr": 0.1, "val_macro_f1": 0.6, "epochs": 2},
        {"lr": 0.2, "val_macro_f1": 0.7, "epochs": 12},
    ]
    grid = [
        {"lr": 0.1, "val_macro_f1": 0.75, "epochs": 12},
        {"lr": 0.2, "val_macro_f1": 0.72, "epochs": 12},
    ]
    out = bench.compare(asha, grid, space)
    assert out["asha"]["trial_epochs"] == 14 and out["grid"]["trial_epochs"] == 24
    assert out["epoch_ratio"] == pytest.approx(14 / 24)
    assert out["gap_points"] == pytest.approx(5.0)
    assert out["shared_configurations"] == 2
    assert out["same_best_configuration"] is False


def test_compare_matches_categorical_choices(bench):
    """A search space with a categorical choice (T1's embedding) matches trials by its name."""
    space = {"lr": None, "embedding": None}
    asha = [{"lr": 0.1, "embedding": "pooled", "val_macro_f1": 0.6, "epochs": 1}]
    grid = [
        {"lr": 0.1, "embedding": "pooled", "val_macro_f1": 0.65, "epochs": 12},
        {"lr": 0.1, "embedding": "penultimate", "val_macro_f1": 0.7, "epochs": 12},
    ]
    out = bench.compare(asha, grid, space)
    assert out["shared_configurations"] == 1 and out["grid"]["trials"] == 2


def test_proposal_index_reads_rays_trial_folder(bench):
    name = "_trial_8f03195c_7_model_dropout=0.2695,train_batch_size=16_2026-11-29_18-36-56"
    assert bench.proposal_index(name) == 7
    with pytest.raises(ValueError, match="no trial number"):
        bench.proposal_index("somewhere_else")


def test_replay_check_line_says_whether_the_decisions_match(bench):
    grid = [{"curve": flat(v), "epoch_seconds": flat(1.0)} for v in (0.5, 0.2, 0.7)]
    rows = bench.replay_table(grid, concurrent=1, used=(1, 2))
    used = next(r for r in rows if r["used_by_the_rows"])
    assert "the same decisions" in bench.replay_markdown(rows, 1, used["epochs_per_trial"])
    assert "differ" in bench.replay_markdown(rows, 1, [4, 4, 4])


def test_a_missing_or_broken_stored_file_is_one_line_naming_it(bench, tmp_path):
    with pytest.raises(SystemExit, match=r"summary\.json: not found; run the row's sweep first"):
        bench.read_json(tmp_path / "summary.json", "run the row's sweep first")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit, match=r"bad\.json: not valid JSON"):
        bench.read_json(tmp_path / "bad.json", "")
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert bench.read_json(tmp_path / "ok.json", "") == {"a": 1}
