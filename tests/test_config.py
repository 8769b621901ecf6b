from pathlib import Path

import pytest
import yaml

from mgc.config import Config, ConfigError, load_config, parse_override, save_config


def test_defaults_are_the_papers_features():
    cfg = load_config()
    f = cfg.features
    assert (f.sample_rate, f.n_fft, f.hop_length, f.n_mels, f.top_db) == (
        22050,
        2048,
        512,
        128,
        80.0,
    )


def test_yaml_and_overrides_are_typed(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.01\n  specaugment:\n    enabled: true\nchunks:\n  window_s: 10\n")
    cfg = load_config(
        p, ["train.lr=3e-4", "chunks.overlap=0.5", "model.name=vgg5", "train.batch_size=16"]
    )
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.specaugment.enabled is True
    assert cfg.chunks.window_s == 10.0 and isinstance(cfg.chunks.window_s, float)
    assert cfg.chunks.overlap == 0.5
    assert cfg.model.name == "vgg5" and cfg.train.batch_size == 16


def test_unknown_key_names_it_and_the_nearest():
    with pytest.raises(
        ConfigError, match=r"unknown config key train\.lrr \(did you mean train\.lr\?\)"
    ):
        load_config(None, ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"unknown config key trian"):
        load_config(None, ["trian.lr=0.1"])


def test_bad_type_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected an integer, got 'big'"):
        load_config(None, ["train.batch_size=big"])
    with pytest.raises(ConfigError, match=r"chunks\.normalize: expected true/false"):
        load_config(None, ["chunks.normalize=3"])


def test_value_checks_and_one_line_messages(tmp_path: Path):
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["chunks.overlap=1.5"])
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"cache\.batch_size must be positive"):
        load_config(None, ["cache.batch_size=0"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("noequals")


def test_base_inheritance_lets_a_row_change_one_thing(tmp_path: Path):
    (tmp_path / "e0.yaml").write_text("model:\n  name: cnn4\ntrain:\n  lr: 0.001\n")
    (tmp_path / "e1.yaml").write_text("base: e0.yaml\ntrain:\n  specaugment:\n    enabled: true\n")
    cfg = load_config(tmp_path / "e1.yaml")
    assert cfg.model.name == "cnn4" and cfg.train.lr == 0.001 and cfg.train.specaugment.enabled


def test_env_paths_are_resolved_and_saved(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MGC_DATA_ROOT", str(tmp_path / "audio"))
    cfg = load_config()
    assert cfg.data.root == str(tmp_path / "audio")
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    saved = yaml.safe_load(out.read_text())
    assert saved["data"]["root"] == str(tmp_path / "audio")
    # The saved file loads back to the same config.
    assert load_config(out) == cfg
    assert isinstance(cfg, Config)
