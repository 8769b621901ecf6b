import copy
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from mgc.core.config import (
    Config,
    ConfigError,
    load_config,
    parse_override,
    save_config,
    with_params,
)


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


def test_with_params_sets_dotted_keys_on_a_new_config():
    cfg = load_config()
    before = copy.deepcopy(cfg)
    params = {
        "train.lr": np.float64(3e-4),
        "train.batch_size": np.int64(8),
        "model.dropout": 0.2,
        "train.specaugment.enabled": np.bool_(True),
        "train.optimizer": np.str_("adamw"),
    }
    new = with_params(cfg, params)
    assert new.train.lr == pytest.approx(3e-4) and type(new.train.lr) is float
    assert new.train.batch_size == 8 and type(new.train.batch_size) is int
    assert new.model.dropout == 0.2 and new.train.specaugment.enabled is True
    assert new.train.optimizer == "adamw" and type(new.train.optimizer) is str
    # Everything else is carried over; the input is left as it was.
    assert new.features == cfg.features and new.data == cfg.data
    assert new is not cfg and cfg == before and cfg.train.lr == 1e-3
    assert pickle.loads(pickle.dumps(new)) == new


def test_with_params_rejects_like_load_config():
    cfg = load_config()
    cases = [
        ("train.lrr", 0.1, "unknown config key train.lrr (did you mean train.lr?)"),
        ("train.batch_size", "big", "train.batch_size: expected an integer, got 'big'"),
        ("train.batch_size", np.float64(2.5), "train.batch_size: expected an integer, got 2.5"),
        ("chunks.normalize", np.int64(3), "chunks.normalize: expected true/false, got 3"),
        ("train.lr", -1.0, "train.lr must be positive"),
    ]
    for key, value, message in cases:
        with pytest.raises(ConfigError) as exc:
            with_params(cfg, {key: value})
        assert str(exc.value) == message
        # The command line gets the same wording for the same mistake.
        with pytest.raises(ConfigError) as same:
            load_config(None, [f"{key}={value}"])
        assert str(same.value) == message
    assert cfg == load_config()


def test_retired_key_in_an_old_run_folder_loads_with_a_warning(tmp_path: Path, caplog):
    p = tmp_path / "config.yaml"
    p.write_text("train:\n  num_workers: 4\n  batch_size: 16\n")
    with caplog.at_level(logging.WARNING, logger="mgc.core.config"):
        cfg = load_config(p)
    assert cfg.train.batch_size == 16 and not hasattr(cfg.train, "num_workers")
    assert any("train.num_workers" in r.getMessage() for r in caplog.records)


def test_env_interpolation_home_and_uris(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MGC_TEST_ROOT", raising=False)
    monkeypatch.delenv("MGC_TEST_EXTRA", raising=False)
    monkeypatch.delenv("MGC_TEST_STORE", raising=False)
    p = tmp_path / "c.yaml"
    p.write_text(
        "data:\n"
        "  root: ${MGC_TEST_ROOT:-data/fallback}\n"
        "  extra_train_roots: ['~/extra', '${oc.env:MGC_TEST_EXTRA,more/data}']\n"
        "cache:\n  dir: s3://bucket/mgc-cache\n"
        "run:\n  out_dir: ~/runs\n"
        "sweep:\n  storage_path: ${MGC_TEST_STORE:-s3://bucket/ray}\n"
    )
    cfg = load_config(p)
    assert cfg.data.root == "data/fallback"
    assert cfg.data.extra_train_roots == [str(tmp_path / "home" / "extra"), "more/data"]
    assert cfg.cache.dir == "s3://bucket/mgc-cache"
    assert cfg.run.out_dir == str(tmp_path / "home" / "runs")
    assert cfg.sweep.storage_path == "s3://bucket/ray"

    monkeypatch.setenv("MGC_TEST_ROOT", str(tmp_path / "audio"))
    monkeypatch.setenv("MGC_TEST_EXTRA", "/mnt/extra")
    monkeypatch.setenv("MGC_TEST_STORE", "gs://other/ray")
    cfg = load_config(p)
    assert cfg.data.root == str(tmp_path / "audio")
    assert cfg.data.extra_train_roots[1] == "/mnt/extra"
    assert cfg.sweep.storage_path == "gs://other/ray"
    # The same forms work in overrides; `~` in a default is expanded after the lookup.
    cfg = load_config(
        p, ["data.root=${MGC_TEST_UNSET_X:-~/d}", "cache.dir=${oc.env:MGC_TEST_ROOT}"]
    )
    assert cfg.data.root == str(tmp_path / "home" / "d")
    assert cfg.cache.dir == str(tmp_path / "audio")
    # A run folder records the values used, not the references.
    saved = yaml.safe_load(save_config(cfg, tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["root"] == str(tmp_path / "home" / "d")
    assert saved["sweep"]["storage_path"] == "gs://other/ray"


def test_on_off_options_stay_words(tmp_path: Path):
    cfg = load_config(None, ["train.channels_last=on", "train.compile=off"])
    assert cfg.train.channels_last == "on" and cfg.train.compile == "off"
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  amp: off\n  channels_last: off\n  lr: 3e-4\n")
    cfg = load_config(p)
    assert (cfg.train.amp, cfg.train.channels_last) == ("off", "off")
    assert cfg.train.lr == pytest.approx(3e-4) and type(cfg.train.lr) is float
    with pytest.raises(ConfigError, match=r"^train\.compile must be auto, on or off, got 'maybe'$"):
        load_config(None, ["train.compile=maybe"])


def test_window_must_be_positive():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["chunks.window_s=0"])
    assert str(exc.value) == (
        "chunks.window_s must be > 0 seconds (30 for a whole GTZAN clip; shorter tracks are padded)"
    )
    assert load_config(None, ["chunks.window_s=30"]).chunks.window_s == 30.0


def test_every_error_is_one_line(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MGC_TEST_UNSET", raising=False)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: [1,\n")
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- 1\n- 2\n")
    cases = [
        (None, ["data.root=${MGC_TEST_UNSET}"], "data.root: "),
        (None, ["data.root=${oc.env:MGC_TEST_UNSET"], "data.root: "),
        (None, ["sweep.final_seeds=[a]"], "sweep.final_seeds[0]: "),
        (None, ["sweep.final_seeds=3"], "sweep.final_seeds: expected a list, got 3"),
        (None, ["train=5"], "train: expected a mapping, got 5"),
        (None, ["zzzz=1"], "unknown config key zzzz (valid: experiment, data,"),
        (bad_yaml, [], f"{bad_yaml}: not valid YAML"),
        (a_list, [], f"{a_list}: top level must be a mapping"),
    ]
    for path, overrides, start in cases:
        with pytest.raises(ConfigError) as exc:
            load_config(path, overrides)
        assert str(exc.value).startswith(start) and "\n" not in str(exc.value)
