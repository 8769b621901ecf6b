import json
from pathlib import Path

import pytest

from mgc.models.bundle import load_bundle
from mgc.publish import main
from mgc.results.evaluate import evaluate_run
from mgc.serve.predict import BUNDLED_MODEL
from mgc.serve.publish import CARD_JSON, CARD_MD, publish


def test_published_card_matches_what_evaluate_prints(trained_run, tmp_path: Path):
    run_dir, root = trained_run
    out = publish([run_dir], tmp_path / "model", "tiny-cnn4", force=False, trained_on="a test box")
    card = json.loads((out / CARD_JSON).read_text())
    assert card["model_id"] == "tiny-cnn4" and card["genres"] == ["blues", "metal", "pop"]
    assert card["seeds"] == [0] and "std" not in card["test"]["track_accuracy"]  # one seed
    assert card["trained_on"] in ({"cpu": "a test box"},) or "cpu" in card["trained_on"]
    assert load_bundle(out).info["model_id"] == "tiny-cnn4"
    # The published folder is evaluable on its own, with the data given on the command line.
    _, metrics = evaluate_run(
        out, [f"data.root={root}", f"cache.dir={root.parent / 'cache'}"], out_dir=tmp_path / "eval"
    )
    for key in ("track_accuracy", "track_macro_f1", "chunk_accuracy", "chunk_macro_f1"):
        assert metrics[key] == pytest.approx(card["shipped_test"][key]), key
    text = (out / CARD_MD).read_text()
    assert "## Not good for" in text and "GTZAN" in text and "(one seed)" in text


def test_publish_refuses_to_replace_without_force(trained_run, tmp_path: Path, capsys):
    run_dir, _ = trained_run
    out = tmp_path / "model"
    assert main([str(run_dir), "--out", str(out), "--id", "x"]) == 0
    assert main([str(run_dir), "--out", str(out), "--id", "x"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([str(run_dir), "--out", str(out), "--id", "y", "--force"]) == 0
    assert load_bundle(out).info["model_id"] == "y"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]  # no staging left


def test_the_bundled_model_ships_with_its_card():
    card = json.loads((BUNDLED_MODEL / CARD_JSON).read_text())
    bundle = load_bundle(BUNDLED_MODEL)
    assert bundle.genres == card["genres"] and len(bundle.genres) == 10
    assert bundle.info["model_id"] == card["model_id"]
    # It beats the original project's VGG-5 on the same split (0.852 accuracy, 0.773 macro-F1).
    assert card["split"] == "stratified"
    assert card["shipped_test"]["track_accuracy"] > 0.852
    assert card["shipped_test"]["track_macro_f1"] > 0.773
    size = sum(p.stat().st_size for p in BUNDLED_MODEL.rglob("*") if p.is_file())
    assert size < 15e6
