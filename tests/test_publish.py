import json
from pathlib import Path

import pytest

from mgc.models.bundle import load_bundle
from mgc.publish import main
from mgc.results.evaluate import evaluate_run
from mgc.serve.predict import BUNDLED_MODEL
from mgc.serve.publish import CARD_JSON, CARD_MD, latency_lines, pretrained_note, publish


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
    # Chosen on the artist-filtered split, where it beats the published probes on musicnn's
    # (77.2 %) and Jukebox's (79.7 %) features, and the plain probe on musicnn's own TensorFlow
    # features (84.0 %), on the same test tracks.
    assert card["split"] == "fault_filtered"
    assert card["shipped_test"]["track_accuracy"] >= 0.84
    # Trained to keep its answer under band limits, noise, codecs and gain (augmented copies and
    # a consistency term); the robustness figures on its card are on all of the split's test clips.
    assert card["recipe"]["augmented_copies"] > 0 and card["recipe"]["consistency"] > 0
    # The card names how the copies were made: two conditions each, band limits at 8 kHz only.
    assert card["recipe"]["conditions_per_copy"] == 2 and card["recipe"]["bandlimit_rates"] == [
        8000
    ]
    rob = card["robustness"]["conditions"]
    assert card["robustness"]["clips"] >= 200
    # Issue 19's targets: at least 90 % at an 8 kHz band limit, 80 % at 20 dB white noise.
    assert rob["band limit 8 kHz"]["agreement"] >= 0.9
    assert rob["white noise 20 dB SNR"]["agreement"] >= 0.9
    assert rob["gain -12 dB"]["agreement"] >= 0.9
    # The speed-up over the seed pipeline (issue 19 asks at least 2.5x): 2.95x on an AMD EPYC
    # with the front end's max as max_pool2d, where the aminmax before it measured 1.99x in the
    # same window (bench/README.md). The card carries the measured one.
    assert card["latency"]["ratio_vs_seed"]["mgc"] >= 2.5
    # It costs more than bench/predict.py's 50 ms aim, and the card says so (issue 19).
    assert card["latency"]["target_ms"] == 50.0
    assert "The trade:" in (BUNDLED_MODEL / CARD_MD).read_text()
    assert bundle.calibration["temperature"] > 0 and "ISC" in card["pretrained"]
    assert bundle.features.loudness_db is not None  # the level of a recording does not matter
    size = sum(p.stat().st_size for p in BUNDLED_MODEL.rglob("*") if p.is_file())
    assert size < 15e6


def test_card_carries_robustness_figures_and_pretrained_provenance(trained_run, tmp_path: Path):
    """--robustness puts bench/robustness.py's figures on the card (with each condition's
    weakest genre); a musicnn trunk's card names where its weights come from and their licence."""
    run_dir, _ = trained_run
    per_genre = {"blues": {"clips": 2, "agreement": 1.0, "accuracy": 0.5}}
    bench = {
        "split": "fault_filtered",
        "clips": 4,
        "conditions": {
            "clean": {"agreement": 1.0, "accuracy": 0.75, "per_genre": per_genre},
            "band limit 8 kHz": {
                "agreement": 0.75,
                "accuracy": 0.5,
                "per_genre": {**per_genre, "pop": {"clips": 2, "agreement": 0.5, "accuracy": 0.5}},
            },
        },
    }
    (tmp_path / "rob.json").write_text(json.dumps(bench))
    cols = {"seed": "seed: librosa + fp32", "mgc": "mgc: bf16"}
    timed = {
        "machine": {"cpu": "A CPU", "native_bf16": True, "torch": "2.x"},
        "per_clip_one_thread": {
            "columns": cols,
            "total_ms": {"seed": 600.0, "mgc": 240.0},
            "stage_ms": {"model": {"seed": 560.0, "mgc": 220.0}},
            "ratio": {"seed": 1.0, "mgc": 2.5},
        },
    }
    (tmp_path / "lat.json").write_text(json.dumps(timed))
    out = tmp_path / "model"
    args = [
        str(run_dir),
        "--out",
        str(out),
        "--id",
        "x",
        "--robustness",
        str(tmp_path / "rob.json"),
    ]
    assert main([*args, "--latency", str(tmp_path / "lat.json")]) == 0
    card = json.loads((out / CARD_JSON).read_text())
    assert card["robustness"]["conditions"]["band limit 8 kHz"]["agreement"] == 0.75
    text = (out / CARD_MD).read_text()
    assert "| band limit 8 kHz | 75.0% | 50.0% | pop 50% |" in text
    assert "| mgc: bf16 | 240.0 ms | 220.0 ms | 2.50× |" in text and "A CPU" in text
    assert card["latency"]["ratio_vs_seed"]["mgc"] == 2.5
    # No aim in the bench's json: the card says no trade.
    assert card["latency"]["target_ms"] is None and "The trade" not in text
    assert card["pretrained"] is None  # trained from scratch: nothing to credit
    note = pretrained_note("musicnn:msd")
    assert "MSD" in note and "ISC" in note and "musicnn==0.1.0" in note
    provenance = Path(__file__).resolve().parents[1] / note.split(" in ")[-1].rstrip(".")
    assert provenance.is_file() and "ISC" in provenance.read_text()
    assert pretrained_note("scratch") is None and pretrained_note(None) is None


@pytest.fixture(scope="module")
def probe_seeds(tmp_path_factory) -> tuple[list[Path], Path]:
    """(two run folders, dataset): seeds 0 and 1 of a frozen-trunk musicnn probe on synthetic
    tones, one epoch each, in fp32."""
    from conftest import write_synth_dataset

    from mgc.core.config import load_config
    from mgc.data.prepare import prepare
    from mgc.run.train import fit

    tmp = tmp_path_factory.mktemp("probe")
    root = write_synth_dataset(tmp / "ds")
    runs = []
    for seed in (0, 1):
        cfg = load_config(
            None,
            [
                f"data.root={root}",
                f"cache.dir={tmp / 'cache'}",
                "features.sample_rate=16000",
                "features.n_fft=512",
                "features.hop_length=256",
                "features.n_mels=96",
                "features.scale=log10_10000",
                "chunks.window_s=2.992",
                "chunks.normalize=false",
                "model.name=musicnn",
                "model.pretrained=msd",
                "model.freeze=true",
                "model.embedding=pooled",
                "model.head_hidden=16",
                "train.epochs=1",
                "train.threads=1",
                "train.amp=off",
                f"train.seed={seed}",
            ],
        )
        prepare(cfg, use_ray=False)
        fit(cfg, run_dir=tmp / f"seed{seed}")
        runs.append(tmp / f"seed{seed}")
    return runs, root


def test_an_ensemble_ships_the_seeds_heads_on_one_trunk(probe_seeds, tmp_path: Path):
    """--ensemble: one bundle whose probabilities are the mean of the seeds' (one trunk pass,
    two heads), and whose card's shipped figures are what evaluating that bundle gives."""
    import shutil

    import numpy as np
    import torch

    runs, root = probe_seeds
    # A bundle saved before model.heads existed has no such key: still the same settings.
    older = shutil.copytree(runs[1], tmp_path / "older")
    meta = json.loads((older / "bundle" / "bundle.json").read_text())
    del meta["model"]["heads"]
    (older / "bundle" / "bundle.json").write_text(json.dumps(meta))
    out = publish([runs[0], older], tmp_path / "ens", "probe-ens", False, None, ensemble=True)
    merged = load_bundle(out)
    assert merged.model_cfg.heads == 2 and merged.info["heads"] == 2
    singles = [load_bundle(r) for r in runs]
    x = torch.randn(3, 1, 96, 187)
    mean = np.mean([b.classifier.predict_proba(x) for b in singles], axis=0)
    np.testing.assert_allclose(merged.classifier.predict_proba(x), mean, atol=1e-6)
    assert merged.classifier.params == 2 * singles[0].classifier.params
    card = json.loads((out / CARD_JSON).read_text())
    assert card["shipped_seed"] == "ensemble" and card["seeds"] == [0, 1]
    _, metrics = evaluate_run(
        out, [f"data.root={root}", f"cache.dir={root.parent / 'cache'}"], out_dir=tmp_path / "ev"
    )
    for key in ("track_accuracy", "track_macro_f1"):
        assert metrics[key] == pytest.approx(card["shipped_test"][key], abs=1e-3), key
    text = (out / CARD_MD).read_text()
    assert "ensemble of seeds [0, 1]" in text
    frozen = merged.info["frozen_params"]
    assert f"{card['params']:,} trained parameters on a frozen trunk of {frozen:,}" in text


def test_an_ensemble_needs_seeds_of_a_frozen_trunk(trained_run, probe_seeds, tmp_path: Path):
    from mgc.core.config import ConfigError

    run_dir, _ = trained_run
    runs, _ = probe_seeds
    with pytest.raises(ConfigError, match="two or more runs"):
        publish(runs[:1], tmp_path / "a", "x", False, None, ensemble=True)
    with pytest.raises(ConfigError, match="differ in more than train.seed|frozen trunk"):
        publish([run_dir, run_dir], tmp_path / "b", "x", False, None, ensemble=True)


def test_cost_section_states_the_trade_only_above_the_aim():
    lat = {
        "columns": {"seed": "seed", "mgc": "mgc"},
        "total_ms": {"seed": 800.0, "mgc": 200.0},
        "model_ms": {"seed": 700.0, "mgc": 150.0},
        "ratio_vs_seed": {"seed": 1.0, "mgc": 4.0},
        "machine": {"cpu": "A CPU", "native_bf16": True, "torch": "2.x"},
        "target_ms": 50.0,
    }
    text = "\n".join(latency_lines(lat))
    assert "The trade: 200.0 ms a clip is 4.0× the 50 ms" in text
    assert "The trade" not in "\n".join(latency_lines({**lat, "target_ms": 250.0}))
    assert "The trade" not in "\n".join(latency_lines({**lat, "target_ms": None}))
