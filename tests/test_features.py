import dataclasses

import librosa
import numpy as np
import pytest
import torch
from conftest import tone

from mgc.core.audio import load_audio
from mgc.core.config import ChunkConfig, FeatureConfig
from mgc.features.transforms import (
    LogMel,
    SpecAugment,
    Windowing,
    logmel_numpy,
    match_loudness,
    normalize_chunks,
)

# Our log-mel must equal librosa's within this many dB anywhere (float32 FFT round-off only).
TOLERANCE_DB = 0.01


def librosa_logmel(wave: np.ndarray, sr: int = 22050) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=wave, sr=sr, n_fft=2048, hop_length=512, n_mels=128)
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)


def test_logmel_matches_librosa_on_synthetic_audio():
    rng = np.random.default_rng(0)
    wave = tone(440, 3.0) + rng.normal(0, 0.05, int(3.0 * 22050)).astype(np.float32)
    ours = logmel_numpy(wave, LogMel())
    ref = librosa_logmel(wave)
    assert ours.shape == ref.shape == (128, 1 + wave.size // 512)
    assert np.max(np.abs(ours - ref)) < TOLERANCE_DB


def test_logmel_matches_librosa_on_real_clips(gtzan):
    module = LogMel()
    for path in (gtzan / "blues" / "blues.00000.ogg", gtzan / "classical" / "classical.00010.ogg"):
        # The whole path against librosa's: our decoder + log-mel vs librosa.load + melspectrogram.
        ours = logmel_numpy(load_audio(path, 22050), module)
        ref = librosa_logmel(librosa.load(path, sr=22050)[0])
        assert ours.shape == ref.shape, path
        diff = np.abs(ours - ref)
        assert diff.max() < TOLERANCE_DB, f"{path}: max diff {diff.max():.4f} dB"


def test_logmel_blocks_of_frames_give_the_whole_clip_result():
    rng = np.random.default_rng(2)
    wave = torch.from_numpy(rng.normal(0, 0.1, (2, 22050 + 300)).astype(np.float32))
    whole = LogMel(block_frames=10**6)(wave)  # one block: the whole STFT at once
    for block in (1, 7, 43, 44, 45):  # 44 frames in all: edges of the last block
        blocked = LogMel(block_frames=block)(wave)
        assert blocked.shape == whole.shape == (2, 128, 44)
        assert torch.allclose(blocked, whole, atol=1e-4), block
    # Off the CPU fast path (float64 input) the dense filterbank gives the same values.
    assert torch.allclose(LogMel()(wave.double()).float(), whole, atol=1e-3)


def test_top_db_floor_is_per_example_in_a_batch():
    loud = torch.from_numpy(tone(440, 1.0, amp=0.9))
    quiet = loud * 1e-3
    batch = LogMel()(torch.stack([loud, quiet]))
    for i, x in enumerate((loud, quiet)):
        alone = LogMel()(x)
        assert torch.allclose(batch[i], alone, atol=1e-3)


def test_chunking_windows_and_overlap():
    assert Windowing(129, 129).starts(1293) == list(range(0, 1293 - 129 + 1, 129))
    assert len(Windowing(129, 129).starts(1293)) == 10
    starts = Windowing(431, 216).starts(1293)
    assert starts[:3] == [0, 216, 432] and starts[-1] + 431 <= 1293
    assert Windowing(129, 129).starts(100) == [0]
    f = FeatureConfig()
    assert Windowing.from_config(ChunkConfig(window_s=3.0), f) == Windowing(129, 129)
    assert Windowing.from_config(ChunkConfig(window_s=10.0, overlap=0.5), f) == Windowing(431, 216)
    # The whole 30 s clip is a fixed window, whatever the other tracks' lengths.
    assert Windowing.from_config(ChunkConfig(window_s=30.0), f).window == 1292


def test_cut_values_and_padding_with_the_tracks_floor():
    spec = torch.arange(4 * 10, dtype=torch.float32).reshape(4, 10)
    chunks = Windowing(4, 2).cut(spec)
    assert chunks.shape == (4, 4, 4)
    assert torch.equal(chunks[1], spec[:, 2:6])
    short = Windowing(12, 12).cut(spec)
    assert short.shape == (1, 4, 12) and torch.all(short[0, :, 10:] == spec.min())
    assert torch.equal(short[0, :, :10], spec)


def test_normalize_per_chunk():
    x = torch.from_numpy(np.random.default_rng(1).normal(5, 3, (3, 8, 16)).astype(np.float32))
    n = normalize_chunks(x)
    assert torch.allclose(n.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(n.std(dim=(1, 2), correction=0), torch.ones(3), atol=1e-3)
    # Each chunk on its own: the same result as in the batch.
    assert torch.allclose(normalize_chunks(x[1]), n[1], atol=1e-6)


def test_specaugment_masks_only_in_training():
    torch.manual_seed(0)
    aug = SpecAugment(freq_mask=10, time_mask=20, n_freq_masks=2, n_time_masks=2)
    x = torch.ones(8, 1, 64, 128)
    out = aug.train()(x)
    assert out.shape == x.shape and (out == 0).any()
    # Masks are drawn per example.
    zeros = (out == 0).flatten(1).sum(1)
    assert len(set(zeros.tolist())) > 1
    assert torch.equal(aug.eval()(x), x)


@pytest.mark.parametrize("device", ["cpu"])
def test_logmel_runs_batched(device):
    x = torch.randn(2, 22050, device=device)
    assert LogMel().to(device)(x).shape == (2, 128, 44)


def test_loudness_matching_makes_the_features_deaf_to_gain():
    """features.loudness_db: a file and a copy 12 dB quieter (or louder, past full scale) give
    the same log-mel, on musicnn's scale that has no per-track floor; silence stays silence."""
    from mgc.features.frontend import Frontend

    wave = tone(440.0, 2.0, sr=16000) + 0.1 * tone(3000.0, 2.0, sr=16000, seed=1)
    matched = match_loudness(wave, -17.0)
    rms_db = 20 * np.log10(np.sqrt(np.mean(matched.astype(np.float64) ** 2)))
    assert rms_db == pytest.approx(-17.0, abs=1e-3) and matched.dtype == np.float32
    assert not match_loudness(np.zeros(100), -17.0).any()
    features = FeatureConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96)
    musicnn_scale = dataclasses.replace(features, scale="log10_10000")
    level = Frontend(dataclasses.replace(musicnn_scale, loudness_db=-17.0), ChunkConfig())
    plain = Frontend(musicnn_scale, ChunkConfig())
    for gain in (10 ** (-12 / 20), 10 ** (12 / 20)):
        np.testing.assert_allclose(level.logmel(wave * gain), level.logmel(wave), atol=1e-4)
        assert np.abs(plain.logmel(wave * gain) - plain.logmel(wave)).max() > 0.1


def test_lowpass_makes_a_band_limited_copy_look_like_its_original():
    """features.lowpass_hz: what lies above the cut feeds no mel band, so a file band-limited at
    8 kHz sampling (nothing above 4 kHz) and its full-band original give nearly the same
    log-mel; the bands stay where they were, so the part below the cut is unchanged."""
    from mgc.features.augment import band_limit
    from mgc.features.frontend import Frontend

    sr = 16000
    rng = np.random.default_rng(0)
    wave = tone(440.0, 2.0, sr=sr) + 0.05 * rng.standard_normal(2 * sr).astype(np.float32)
    phone = band_limit(wave, sr, 8000)
    features = FeatureConfig(sample_rate=sr, n_fft=512, hop_length=256, n_mels=96)
    musicnn_scale = dataclasses.replace(features, scale="log10_10000")
    full = Frontend(musicnn_scale, ChunkConfig())
    cut = Frontend(dataclasses.replace(musicnn_scale, lowpass_hz=3600.0), ChunkConfig())
    assert np.abs(full.logmel(phone) - full.logmel(wave)).max() > 1.0  # the band is gone
    assert np.abs(cut.logmel(phone) - cut.logmel(wave)).max() < 0.1
    below = librosa.mel_frequencies(96 + 2, fmax=sr / 2, htk=False)[2:] < 3000
    np.testing.assert_allclose(cut.logmel(wave)[below], full.logmel(wave)[below], atol=1e-5)
    assert not cut.logmel(wave)[~below][-10:].any()  # the top bands read as silence
