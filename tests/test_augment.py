"""Waveform augmentations (mgc.features.augment) and their copies in prepare, cache and loader."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tone
from torch import nn

from mgc.core.config import (
    AUGMENT_CONDITIONS,
    AugmentConfig,
    ChunkConfig,
    ConfigError,
    FeatureConfig,
    load_config,
)
from mgc.core.device import CPU_FP32
from mgc.data.cache import CopyStore, FeatureStore, augment_key, feature_key
from mgc.data.loader import (
    FeaturesMissing,
    TrackArray,
    build_chunk_set,
    iterate_pairs,
    load_split_data,
    pick_copies,
    pick_versions,
)
from mgc.data.prepare import prepare, training_paths
from mgc.features.augment import (
    APPLY_ORDER,
    add_noise,
    apply_gain,
    augmented_copy,
    band_limit,
    codec_roundtrip,
    draw_conditions,
    encoder_delay,
)

SR = 22050


def chord(seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    """Partials from 220 Hz to 9.9 kHz: energy on both sides of every band limit tested."""
    t = np.arange(int(seconds * sr)) / sr
    freqs = [220, 1000, 3000, 5000, 7000, 9900]
    return (0.1 * sum(np.sin(2 * np.pi * f * t) for f in freqs)).astype(np.float32)


def power_above(wave: np.ndarray, hz: float, sr: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size))) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1 / sr)
    return float(spectrum[freqs > hz].sum() / spectrum.sum())


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [10.0, 20.0])
def test_noise_reaches_the_asked_snr(color: str, snr_db: float):
    wave = chord()
    noisy = add_noise(wave, snr_db, color, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == wave.shape
    noise = noisy.astype(np.float64) - wave
    achieved = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise**2))
    assert achieved == pytest.approx(snr_db, abs=0.05)


def test_pink_noise_has_more_power_low_than_white():
    wave = chord()
    rng = np.random.default_rng(1)
    pink = add_noise(wave, 0.0, "pink", rng) - wave
    white = add_noise(wave, 0.0, "white", rng) - wave
    assert power_above(pink, 2000) < 0.2 < power_above(white, 2000)


def test_noise_leaves_silence_alone():
    silent = np.zeros(1000, np.float32)
    assert np.array_equal(add_noise(silent, 10.0, "white", np.random.default_rng(0)), silent)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_band_limit_removes_what_lies_above_half_the_rate(rate: int):
    wave = chord()
    assert power_above(wave, rate / 2) > 0.1
    limited = band_limit(wave, SR, rate)
    assert limited.shape == wave.shape and limited.dtype == np.float32
    assert power_above(limited, rate / 2 * 1.02) < 1e-4
    # What lies below the cut survives: at 8 kHz three of the six equal partials, at 16 kHz five.
    assert np.std(limited) > 0.6 * np.std(wave)


def test_band_limit_at_or_above_the_rate_is_the_identity():
    wave = chord(0.5)
    assert np.array_equal(band_limit(wave, SR, SR), wave)


@pytest.mark.parametrize("codec", ["mp3", "aac"])
def test_codec_round_trip_keeps_length_rate_and_timing(codec: str):
    wave = chord(1.5)
    out = codec_roundtrip(wave, SR, codec, 64)
    assert out.shape == wave.shape and out.dtype == np.float32
    # Realigned for the encoder's delay: the decoded music sits where the input's does.
    assert encoder_delay(wave, out) == 0
    assert np.corrcoef(wave[2000:-2000], out[2000:-2000])[0, 1] > 0.9
    assert not np.array_equal(out, wave)  # lossy


def test_codec_unknown_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown codec 'ogg'"):
        codec_roundtrip(chord(0.2), SR, "ogg", 64)


def test_encoder_delay_finds_a_shift():
    wave = tone(440, 2.0) + np.random.default_rng(0).normal(0, 0.1, int(2.0 * SR)).astype(
        np.float32
    )
    shifted = np.concatenate([np.zeros(1024, np.float32), wave])
    assert encoder_delay(wave, shifted) == 1024


def test_gain_scales_and_clips():
    wave = np.array([0.01, -0.02, 0.5, -0.9], np.float32)
    np.testing.assert_allclose(apply_gain(wave, -20.0), wave * 0.1, rtol=1e-6)
    loud = apply_gain(wave, 12.0)
    np.testing.assert_allclose(loud[:2], wave[:2] * 10 ** (12 / 20), rtol=1e-6)
    assert loud[2] == 1.0 and loud[3] == -1.0


def test_copies_are_deterministic_by_seed_content_and_index():
    cfg = AugmentConfig(copies=3, conditions=["noise", "gain", "bandlimit"], per_copy=2)
    wave = chord(0.5)
    a, conds_a = augmented_copy(wave, SR, cfg, "ab" * 16, 1)
    b, conds_b = augmented_copy(wave, SR, cfg, "ab" * 16, 1)
    assert np.array_equal(a, b) and conds_a == conds_b and len(conds_a) == 2
    others = [augmented_copy(wave, SR, cfg, "ab" * 16, i)[0] for i in (0, 2)]
    others.append(
        augmented_copy(wave, SR, AugmentConfig(**{**vars(cfg), "seed": 7}), "ab" * 16, 1)[0]
    )
    others.append(augmented_copy(wave, SR, cfg, "cd" * 16, 1)[0])
    assert all(not np.array_equal(a, o) for o in others)


def test_conditions_drawn_in_order_and_from_the_lists():
    cfg = AugmentConfig(per_copy=4, codecs=["aac"], codec_kbps=[32], bandlimit_rates=[8000])
    drawn = draw_conditions(cfg, np.random.default_rng(0))
    assert [c.name for c in drawn] == ["gain", "noise", "bandlimit", "codec"]
    settings = {c.name: dict(c.settings) for c in drawn}
    assert settings["codec"] == {"codec": "aac", "kbps": 32}
    assert settings["bandlimit"] == {"rate": 8000}
    assert -12 <= settings["gain"]["gain_db"] <= 12 and 10 <= settings["noise"]["snr_db"] <= 30


@pytest.mark.parametrize(
    "override, message",
    [
        ("augment.conditions=[noise,reverb]", "augment.conditions: ['reverb']"),
        ("augment.per_copy=5", "augment.per_copy must be between 1"),
        ("augment.noise_snr_db=[30,10]", "augment.noise_snr_db must be [low, high]"),
        ("augment.codecs=[opus]", "augment.codecs: ['opus']"),
        ("augment.copies=-1", "augment.copies must be >= 0"),
        ("train.consistency=0.5", "train.consistency needs augmented copies"),
        ("train.consistency=-1", "train.consistency must be >= 0"),
    ],
)
def test_bad_augment_settings_are_one_line_errors(override: str, message: str):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_augment_keys():
    assert augment_key(AugmentConfig(copies=1)) == augment_key(AugmentConfig(copies=5))
    assert augment_key(AugmentConfig(seed=1)) != augment_key(AugmentConfig(seed=2))
    # The clean log-mels' key does not move whatever the augment section says.
    plain, augmented = load_config(None), load_config(None, ["augment.copies=2"])
    assert feature_key(plain.features) == feature_key(augmented.features)


def cfg_for(root: Path, cache: Path, *extra: str):
    return load_config(
        None,
        [
            f"data.root={root}",
            f"cache.dir={cache}",
            "augment.conditions=[gain,noise,bandlimit]",
            *extra,
        ],
    )


def test_prepare_makes_copies_of_training_tracks_once(synth_dataset: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    cfg = cfg_for(synth_dataset, cache, "augment.copies=2")
    train = training_paths(cfg)
    assert 0 < len(train) < 12
    first = prepare(cfg, use_ray=False)
    assert first.computed == 12 and first.copies == 2 * len(train)
    store = FeatureStore(str(cache), cfg.features)
    copies = CopyStore(store, cfg.augment)
    stored = copies.stored()
    by_path = {e.path: e for e in first.entries}
    for path, entry in by_path.items():
        have = {i for c, i in stored if c == entry.content}
        assert have == ({0, 1} if path in train else set())
        if path in train:
            assert copies.load(entry.content, 0).shape == store.load(entry.content).shape

    warm = prepare(cfg, use_ray=False)
    assert warm.computed == 0 and warm.copies == 0 and warm.ray_seconds == 0.0
    more = prepare(cfg_for(synth_dataset, cache, "augment.copies=3"), use_ray=False)
    assert more.computed == 0 and more.copies == len(train)  # only copy 2 is new
    assert copies.stored() >= stored  # the first two are the same files, untouched


def test_loader_holds_copies_for_training_only_and_epochs_draw_among_them(
    synth_dataset: Path, tmp_path: Path
):
    cache = tmp_path / "cache"
    cfg = cfg_for(synth_dataset, cache, "augment.copies=2")
    clean_only = load_config(None, [f"data.root={synth_dataset}", f"cache.dir={cache}"])
    prepare(clean_only, use_ray=False)
    with pytest.raises(FeaturesMissing) as missing:  # clean log-mels there, copies not
        load_split_data(cfg)
    assert "python -m mgc.prepare" in str(missing.value)
    assert "augment.copies=2 augment.conditions=[gain,noise,bandlimit]" in str(missing.value)
    prepare(cfg, use_ray=False)
    data = load_split_data(cfg)
    assert all(len(t.copies) == 2 for t in data.parts["train"])
    assert all(not t.copies for p in ("valid", "test") for t in data.parts[p])
    chunk_set = build_chunk_set(data.parts["train"], cfg.chunks, cfg.features)
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(12):
        view = pick_versions(chunk_set, generator)
        assert torch.equal(view.chunk_start, chunk_set.chunk_start)
        t0, v0 = chunk_set.tracks[0], view.tracks[0]
        versions = [t0.logmel, *t0.copies]
        seen.add(next(i for i, v in enumerate(versions) if v is v0.logmel))
    assert seen == {0, 1, 2}
    # Without copies nothing is drawn: the generator's stream is untouched.
    plain = build_chunk_set(data.parts["valid"], cfg.chunks, cfg.features)
    state = generator.get_state()
    assert pick_versions(plain, generator) is plain and torch.equal(generator.get_state(), state)


def test_consistency_pairs_are_the_same_windows_of_a_copy():
    """Each clean window sits beside the very same frames (jitter included) of one augmented
    copy of its track, never of the clean log-mel."""
    features = FeatureConfig()
    chunks = ChunkConfig(window_s=1.0, normalize=False)
    gen = torch.Generator().manual_seed(0)
    tracks = []
    for i in range(3):
        logmel = torch.randn(features.n_mels, 300, generator=gen)
        # copy k of a track is its log-mel plus k + 1: the offset names the copy
        tracks.append(TrackArray(f"t{i}", i, logmel, [logmel + 1.0, logmel + 2.0]))
    chunk_set = build_chunk_set(tracks, chunks, features)
    offsets = set()
    for _ in range(6):
        copy_set = pick_copies(chunk_set, gen)
        for x, x_copy, y in iterate_pairs(chunk_set, copy_set, 4, gen, jitter=True):
            diff = x_copy - x
            per_window = diff.flatten(1)
            assert torch.allclose(per_window, per_window[:, :1].expand_as(per_window))
            offsets |= {round(float(d)) for d in per_window[:, 0]}
            assert len(y) == len(x) == len(x_copy)
    assert offsets == {1, 2}
    with pytest.raises(ValueError, match="augmented copies of every training track"):
        pick_copies(build_chunk_set([TrackArray("c", 0, tracks[0].logmel)], chunks, features), gen)


def test_consistency_adds_kl_of_the_copy_from_the_clean_prediction():
    from mgc.run.train import train_step

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the loss, not the step, is tested
    loss_fn = nn.CrossEntropyLoss()
    x, x_copy = torch.randn(5, 1, 3, 4), torch.randn(5, 1, 3, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    plain, _ = train_step(model, x, y, optimizer, loss_fn, CPU_FP32, x_copy, 0.0)
    weighted, _ = train_step(model, x, y, optimizer, loss_fn, CPU_FP32, x_copy, 2.0)
    with torch.no_grad():
        p, q = model(x).softmax(1), model(x_copy).softmax(1)
        both = loss_fn(model(torch.cat([x, x_copy])), torch.cat([y, y]))
        kl = (p * (p.log() - q.log())).sum(1).mean()
    assert plain == pytest.approx(float(both), rel=1e-5)
    assert weighted == pytest.approx(float(both + 2.0 * kl), rel=1e-5)
    assert kl > 0
    # The clean prediction is the target, held fixed: the term's gradient flows through the
    # copy's side only (the step leaves its gradients on the parameters).
    train_step(model, x, y, optimizer, loss_fn, CPU_FP32, x_copy, 2.0)
    got = [w.grad.clone() for w in model.parameters()]

    def grads(detach_clean: bool) -> list[torch.Tensor]:
        model.zero_grad()
        log_p, log_q = model(x).log_softmax(1), model(x_copy).log_softmax(1)
        target = log_p.detach() if detach_clean else log_p
        kl = (target.exp() * (target - log_q)).sum(1).mean()
        (loss_fn(model(torch.cat([x, x_copy])), torch.cat([y, y])) + 2.0 * kl).backward()
        return [w.grad.clone() for w in model.parameters()]

    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, grads(True), strict=True))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, grads(False), strict=True))


def test_every_condition_has_its_place_in_the_order():
    assert sorted(APPLY_ORDER) == sorted(AUGMENT_CONDITIONS)


@pytest.mark.parametrize("consistency", ["0", "0.5"])
def test_a_run_trains_on_the_copies(synth_dataset: Path, tmp_path: Path, consistency: str):
    from mgc.run.train import fit

    cfg = cfg_for(
        synth_dataset,
        tmp_path / "cache",
        "augment.copies=1",
        "chunks.window_s=1.0",
        "model.name=cnn4",
        "model.width=8",
        "train.epochs=2",
        "train.threads=1",
        "train.amp=off",
        f"train.consistency={consistency}",
    )
    prepare(cfg, use_ray=False)
    run = fit(cfg, run_dir=tmp_path / "run")
    assert run.metrics["epochs_run"] == 2 and (tmp_path / "run" / "train_log.csv").is_file()
    assert load_config(tmp_path / "run" / "config.yaml").augment.copies == 1
