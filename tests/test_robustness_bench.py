"""bench/robustness.py end to end on a small trained model: the clips it picks, the conditions it
runs, and the figures it writes for a model card."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "robustness.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("robustness_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bench_scores_agreement_per_condition_and_genre(trained_run, tmp_path: Path):
    bench = load_bench()
    run_dir, root = trained_run
    out = tmp_path / "rob.json"
    args = ["--data", str(root), "--model", str(run_dir), "--limit", "3"]
    assert bench.main([*args, "--conditions", "band limit 8,gain -12", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["clips"] == 3 and sum(report["clips_per_genre"].values()) == 3
    # Only the conditions asked for, beside the clean reference.
    assert set(report["conditions"]) == {"clean", "band limit 8 kHz", "gain -12 dB"}
    assert len(report["clips_per_genre"]) == 3  # one clip of each genre in turn
    for name, result in report["conditions"].items():
        assert 0.0 <= result["agreement"] <= 1.0 and 0.0 <= result["accuracy"] <= 1.0, name
        assert set(result["per_genre"]) == set(report["clips_per_genre"]), name
    clean = report["conditions"]["clean"]
    assert clean["agreement"] == 1.0
    # One clip per genre: each genre's accuracy is that clip's, and the whole is their mean.
    assert all(r["clips"] == 1 and r["accuracy"] in (0.0, 1.0) for r in clean["per_genre"].values())
    assert np.isclose(
        clean["accuracy"], np.mean([r["accuracy"] for r in clean["per_genre"].values()])
    )


def test_an_unknown_condition_is_refused_in_one_line():
    bench = load_bench()
    with pytest.raises(SystemExit, match="'no such' names no condition"):
        bench.pick_conditions("8 kHz,no such")
    assert set(bench.pick_conditions("")) == set(bench.CONDITIONS)
