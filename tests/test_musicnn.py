"""musicnn in PyTorch (mgc.models.musicnn) against the original TensorFlow musicnn 0.1.0.

The reference is tests/fixtures/musicnn_original.npz, made by tools/musicnn_fixture.py in a
TensorFlow environment from the sample clips (mgc/samples): the original's input patches and
its outputs. Nothing here needs TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mgc.core.config import ConfigError, FeatureConfig, ModelConfig, load_config
from mgc.data.cache import FEATURE_VERSION, feature_key
from mgc.data.loader import TrackArray, build_chunk_set, iterate_batches
from mgc.features.frontend import Frontend
from mgc.models import build_model, remembers_embeddings
from mgc.models.musicnn import (
    MUSICNN_CHUNKS,
    MUSICNN_FEATURES,
    PATCH_FRAMES,
    TAGS,
    WEIGHTS_DIR,
    Musicnn,
    MusicnnClassifier,
    pretrained_musicnn,
)
from mgc.models.musicnn_convert import WHEEL, WHEEL_SHA256, convert_wheel
from mgc.models.tf_checkpoint import CheckpointError, crc32c, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
FIXTURE = np.load(Path(__file__).parent / "fixtures" / "musicnn_original.npz")
OUTPUTS = ("taggram", "max_pool", "mean_pool", "penultimate")
WHICH = ("msd", "mtt")


def port(which: str, patches: np.ndarray, dtype: torch.dtype) -> dict[str, np.ndarray]:
    model = pretrained_musicnn(which).to(dtype)
    with torch.inference_mode():
        out = model.features(torch.from_numpy(patches.astype(np.float32)).to(dtype))
    return {k: out[k].numpy() for k in OUTPUTS}


# -- (a) the network -------------------------------------------------------------------------


@pytest.mark.parametrize("which", WHICH)
def test_the_port_is_the_original_network(which):
    """In float64 on both sides (the original's graph built in float64 with the checkpoint's
    values), the port computes the original's taggram and features to rounding: ≤ 1e-9
    (measured: 4e-13 on max_pool, 1e-15 on the taggram)."""
    out = port(which, FIXTURE["patches32"], torch.float64)
    for name in OUTPUTS:
        err = np.abs(out[name] - FIXTURE[f"{which}_64_{name}"]).max()
        assert err <= 1e-9, (name, err)


@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize("source", ["32", "16"])
def test_the_port_reproduces_the_original_in_float32(which, source):
    """In float32, as the original runs, on its input patches: the taggram, mean_pool and
    penultimate to ≤ 1e-4 (measured ≤ 5e-6). max_pool's values reach ~100 and sum up to 3,927
    float32 products in the mid end; there the bound is 1e-4 + 2e-6·|value| (measured: 1.1e-4
    at a value of 63; the original's own float32 result is 9e-5 from its float64 one, and TF's
    oneDNN and Eigen kernels disagree by 2.2e-4). float16 input patches (the original's own)
    are compared where the original is finite: the patches without overflow."""
    patches = FIXTURE[f"patches{source}"]
    finite = np.isfinite(patches.astype(np.float32)).all(axis=(1, 2))
    assert finite.any()
    out = port(which, patches[finite], torch.float32)
    for name in OUTPUTS:
        ref = FIXTURE[f"{which}_{source}_{name}"][finite]
        err = np.abs(out[name] - ref)
        bound = 1e-4 + (2e-6 * np.abs(ref) if name == "max_pool" else 0.0)
        assert (err <= bound).all(), (name, err.max())


def test_the_original_breaks_on_float16_overflow():
    """Why the port's front end stays in float32: the original casts the mel power to float16,
    so 10000·power is inf in loud bins (here in the metal and reggae patches), and its network
    then returns NaN for the whole patch (TF's Eigen kernels; its oneDNN ones return finite
    numbers instead, as far as 0.68 off the float32 pipeline's taggram)."""
    overflow = ~np.isfinite(FIXTURE["patches16"].astype(np.float32)).all(axis=(1, 2))
    assert overflow.tolist() == [False, True, True]
    for which in WHICH:
        assert np.isnan(FIXTURE[f"{which}_16_taggram"][overflow]).all()
        assert np.isfinite(FIXTURE[f"{which}_32_taggram"]).all()


def test_the_taggram_reads_as_tags():
    """A sanity check on meaning: MTT_musicnn hears the classical clip as classical."""
    taggram = port("mtt", FIXTURE["patches32"][:1], torch.float32)["taggram"][0]
    top = [TAGS["mtt"][i] for i in np.argsort(taggram)[::-1][:5]]
    assert "classical" in top, top
    assert len(TAGS["msd"]) == len(TAGS["mtt"]) == taggram.size == 50


# -- (b) the front end -------------------------------------------------------------------------


def test_the_musicnn_config_is_written_in_yaml(tmp_path):
    """What a user writes (README) gives musicnn's front end: 187-frame windows, no norm."""
    path = tmp_path / "musicnn.yaml"
    path.write_text(
        "features: {sample_rate: 16000, n_fft: 512, hop_length: 256, n_mels: 96,"
        " scale: log10_10000}\n"
        "chunks: {window_s: 2.992, normalize: false}\n"
        "model: {name: musicnn, pretrained: msd, freeze: true}\n"
    )
    cfg = load_config(path)
    assert cfg.features == MUSICNN_FEATURES
    frontend = Frontend(cfg.features, cfg.chunks)
    assert frontend.windowing.window == PATCH_FRAMES
    assert Frontend(MUSICNN_FEATURES, MUSICNN_CHUNKS).windowing.window == PATCH_FRAMES
    assert not cfg.chunks.normalize and cfg.model.freeze


def test_scale_must_be_known():
    with pytest.raises(ConfigError, match="features.scale"):
        load_config(None, ["features.scale=ln"])


@pytest.mark.parametrize("index", [0, 1, 2])
def test_the_front_end_computes_the_originals_patches(index):
    """The project's front end with musicnn's config, on the same clip, against the original's
    first patch. Against its pipeline in float32: ≤ 5e-5 (measured 1.6e-5: torch's and numpy's
    FFTs). Against the original as it is, float16: ≤ 4e-3 where it is finite (measured 2.2e-3:
    float16 keeps 11 bits, so values in [4, 8) are rounded to 2^-8 ≈ 3.9e-3)."""
    clip = REPO / "mgc" / "samples" / str(FIXTURE["clips"][index])
    frontend = Frontend(MUSICNN_FEATURES, MUSICNN_CHUNKS)
    windows = frontend.windows(frontend.file_logmel(clip))  # (n, 1, 96, 187)
    assert windows.shape == (3, 1, 96, PATCH_FRAMES)  # musicnn cuts 3 patches from 9 s too
    first = windows[0, 0].T.numpy()  # musicnn's (frames, bands)
    assert np.abs(first - FIXTURE["patches32"][index]).max() <= 5e-5
    original = FIXTURE["patches16"][index].astype(np.float32)
    finite = np.isfinite(original)
    assert np.abs(first - original)[finite].max() <= 4e-3


def test_the_loader_feeds_musicnn_the_originals_input():
    """End to end: clip → the project's front end → the training loader's batches → the port,
    against the original's taggram on its float32 pipeline (measured: 5e-7)."""
    frontend = Frontend(MUSICNN_FEATURES, MUSICNN_CHUNKS)
    tracks = [
        TrackArray(str(c), i, torch.as_tensor(frontend.file_logmel(REPO / "mgc" / "samples" / c)))
        for i, c in enumerate(FIXTURE["clips"])
    ]
    x, labels, _ = next(
        iterate_batches(build_chunk_set(tracks, MUSICNN_CHUNKS, MUSICNN_FEATURES), 9)
    )
    assert x.shape == (9, 1, 96, PATCH_FRAMES) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with torch.inference_mode():
        taggram = pretrained_musicnn("msd")(x[:, 0].transpose(1, 2))
    firsts = taggram[[0, 3, 6]].numpy()
    assert np.abs(firsts - FIXTURE["msd_32_taggram"]).max() <= 1e-4


def test_the_feature_key_changes_with_scale_and_only_then():
    """Caches made before `scale`, `loudness_db` and `lowpass_hz` existed keep their key; the
    musicnn scale, a loudness target and a low-pass get their own."""
    default = FeatureConfig()
    later = ("scale", "loudness_db", "lowpass_hz")
    before = {k: v for k, v in dataclasses.asdict(default).items() if k not in later}
    payload = json.dumps({"v": FEATURE_VERSION, **before}, sort_keys=True)
    assert feature_key(default) == hashlib.sha1(payload.encode()).hexdigest()[:12]
    assert feature_key(dataclasses.replace(default, scale="log10_10000")) != feature_key(default)
    assert feature_key(dataclasses.replace(default, loudness_db=-17.0)) != feature_key(default)
    assert feature_key(dataclasses.replace(default, lowpass_hz=3600.0)) != feature_key(default)


# -- (c) the classifier in the model registry ---------------------------------------------------


def _step(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    x, y = torch.rand(4, 1, 96, 64) * 4, torch.tensor([0, 1, 2, 9])
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=1e-2)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimiser.step()


def test_the_registered_model_trains_a_new_head():
    model = build_model(ModelConfig(name="musicnn", pretrained="msd", dropout=0.3), 10, 96)
    assert isinstance(model, MusicnnClassifier)
    assert model.info["pretrained"] == "musicnn:msd" and model.info["n_classes"] == 10
    assert model.head[0].p == 0.3 and model.head[1].out_features == 10
    before = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    _step(model)
    assert all(p.grad is not None for p in model.parameters())
    changed = [k for k, v in model.trunk.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # fine-tuning: the trunk learns too


def test_freeze_leaves_the_trunk_as_it_was():
    cfg = ModelConfig(name="musicnn", pretrained="mtt", freeze=True)
    model = build_model(cfg, 10, 96)
    assert model.info["params"] == 200 * 10 + 10  # the head alone is trained
    trunk = {k: v.clone() for k, v in model.trunk.state_dict().items()}  # + batch-norm stats
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    _step(model)
    assert not model.trunk.training
    assert all(torch.equal(v, trunk[k]) for k, v in model.trunk.state_dict().items())
    assert not all(torch.equal(v, head[k]) for k, v in model.head.state_dict().items())
    reference = pretrained_musicnn("mtt").trunk.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in trunk.items())


def test_freezing_the_front_end_fine_tunes_what_lies_above_it():
    """freeze_front_end: the front end (weights and batch-norm statistics) stays as it was and
    in inference mode; the mid end, back end and head learn; with remember_embeddings the front
    end runs once per distinct window and the logits are those computed without."""
    cfg = ModelConfig(name="musicnn", pretrained="msd", freeze_front_end=True, embedding="pooled")
    model = build_model(cfg, 10, 96)
    front = {k: v.clone() for k, v in model.trunk.front_modules().state_dict().items()}
    n_front = sum(p.numel() for p in model.trunk.front_modules().parameters())
    n_all = sum(p.numel() for p in model.parameters())
    assert model.info["frozen_params"] == n_front and model.info["params"] == n_all - n_front
    mid = model.trunk.midend[0].conv.weight.clone()
    _step(model)
    assert model.trunk.midend[0].training and not model.trunk.timbral[0].training
    fixed = model.trunk.front_modules().state_dict()
    assert all(torch.equal(v, front[k]) for k, v in fixed.items())
    assert not torch.equal(model.trunk.midend[0].conv.weight, mid)  # the mid end fine-tunes

    x = torch.rand(4, 1, 96, PATCH_FRAMES)
    model.eval()
    calls: list[int] = []
    model.trunk.timbral[0].register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    with torch.no_grad():
        plain = model(x)
        assert torch.allclose(
            plain, model.head(model.trunk(x.squeeze(1).transpose(1, 2))["pooled"])
        )
        model.remember_embeddings(True)
        calls.clear()
        assert torch.allclose(model(x[:3]), plain[:3], atol=1e-5)
        assert torch.allclose(model(x.flip(0)), plain.flip(0), atol=1e-5)
    assert calls == [3, 1]  # the front end ran only on windows not seen before
    model.train()
    _step(model)  # a training step on remembered windows reaches the mid end
    with pytest.raises(ConfigError, match="pick one"):
        build_model(dataclasses.replace(cfg, freeze=True), 10, 96)


def test_a_frozen_front_end_keeps_its_low_view():
    """With embedding pooled+low the remembered front output carries the low view too, so the
    head reads what an unremembered pass gives."""
    cfg = ModelConfig(
        name="musicnn", pretrained="msd", freeze_front_end=True, embedding="pooled+low"
    )
    model = build_model(cfg, 10, 96).eval()
    x = torch.rand(2, 1, 96, PATCH_FRAMES)
    with torch.no_grad():
        plain = model(x)
        model.remember_embeddings(True)
        assert torch.allclose(model(x), plain, atol=1e-5)
        kept = next(iter(model._memo.values()))
    assert kept.shape == (2 * model.trunk.front_channels, PATCH_FRAMES)


@pytest.mark.parametrize(
    ("freeze", "front", "per_track", "specaugment", "expected"),
    [
        (True, False, 2, False, True),  # a probe's embeddings are small: kept even if random
        (False, True, 0, False, True),  # every window every epoch: the front end runs once
        (False, True, 2, False, False),  # random windows would pile up 420 kB each
        (False, True, 0, True, False),  # SpecAugment makes every epoch's input new
        (False, False, 0, False, False),  # everything trains: nothing to keep
    ],
)
def test_which_fits_remember_what_their_fixed_part_computed(
    freeze, front, per_track, specaugment, expected
):
    cfg = load_config(None)
    cfg.model.name, cfg.model.pretrained = "musicnn", "msd"
    cfg.model.freeze, cfg.model.freeze_front_end = freeze, front
    cfg.train.windows_per_track = per_track
    cfg.train.specaugment.enabled = specaugment
    assert remembers_embeddings(cfg) is expected


def test_the_probe_head_reads_the_pooled_features_through_an_mlp():
    """embedding=pooled: the head reads what musicnn's own dense layer reads (1506 values, on
    the pretrained batch-norm statistics); head_hidden puts one ReLU layer in the head."""
    cfg = ModelConfig(name="musicnn", pretrained="msd", freeze=True, embedding="pooled")
    cfg.head_hidden = 64
    model = build_model(cfg, 10, 96)
    assert model.info["params"] == 1506 * 64 + 64 + 64 * 10 + 10
    x = torch.rand(3, 1, 96, PATCH_FRAMES)
    with torch.no_grad():
        pooled = model.trunk(x.squeeze(1).transpose(1, 2))["pooled"]
        assert pooled.shape == (3, 1506)
        model.eval()
        assert torch.allclose(model(x), model.head(pooled))
    _step(model)
    with pytest.raises(ConfigError, match="model.embedding"):
        build_model(ModelConfig(name="musicnn", embedding="max"), 10, 96)
    with pytest.raises(ConfigError, match="model.head_hidden"):
        build_model(ModelConfig(name="musicnn", head_hidden=-1), 10, 96)


def test_front_blocks_take_the_max_first_in_inference():
    """In inference a front block maxes its conv over bands before ReLU and batch norm
    (`FrontBlock._max_first`): the output is the plain order's, channels with a negative batch
    norm scale (421 of 1,071 in MSD's weights) included; training keeps the plain order."""
    from mgc.models.musicnn import pretrained_musicnn

    trunk = pretrained_musicnn("msd").trunk.eval()
    blocks = [*trunk.timbral, *trunk.temporal]
    assert any((b.bn.weight < 0).any() for b in blocks)
    x = torch.rand(3, 1, PATCH_FRAMES, 96) * 3
    with torch.no_grad():
        for block in blocks:
            padded = torch.nn.functional.pad(x, (0, 0, *block.time_pad))
            plain = block.bn(torch.relu(block.conv(padded))).amax(dim=3)
            torch.testing.assert_close(block(x), plain, atol=2e-5, rtol=1e-5)
    block = blocks[0].train()
    calls = []
    block.bn.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    block(x)
    assert calls and len(calls[0]) == 4  # the batch norm saw the full map: the plain order


def test_the_low_view_ignores_every_band_above_its_cut_off():
    """embedding=pooled+low: `pooled_low` comes from the front-end filter positions below
    lowband_hz (3.5 kHz: 70 of musicnn's 96 bands), so rewriting every band above it (what
    band-limiting or a codec's cut-off does to the input) leaves it exactly as it was while
    `pooled` moves; `pooled` itself is the plain trunk's. Training mode (the plain order of
    conv, ReLU, batch norm, max) gives the same views as inference's max-first path."""
    from mgc.models.musicnn import bands_below

    assert bands_below(3500.0) == 70 and bands_below(8000.0) == 96
    cfg = ModelConfig(name="musicnn", pretrained="msd", freeze=True, embedding="pooled+low")
    model = build_model(cfg, 10, 96).eval()
    assert model.trunk.lowband == 70
    x = torch.rand(3, 1, 96, PATCH_FRAMES) * 3
    cut = x.clone()
    cut[:, :, 70:] = torch.rand(3, 1, 26, PATCH_FRAMES) * 0.1  # the top bands replaced
    with torch.no_grad():
        a, b = model.embed(x), model.embed(cut)
        assert a.shape == (3, 2 * 1506)
        torch.testing.assert_close(a[:, 1506:], b[:, 1506:], atol=1e-5, rtol=1e-5)
        assert (a[:, :1506] - b[:, :1506]).abs().max() > 0.1
        plain = pretrained_musicnn("msd").trunk.eval()(x.squeeze(1).transpose(1, 2))["pooled"]
        torch.testing.assert_close(a[:, :1506], plain, atol=1e-5, rtol=1e-5)
        model.trunk.train()  # the trunk's training-mode path (batch norms still compared
        for m in model.trunk.modules():  # on their running statistics)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        torch.testing.assert_close(model.embed(x), a, atol=2e-5, rtol=1e-5)
    model.trunk.eval()
    assert model.head[-1].in_features == 2 * 1506
    with pytest.raises(ConfigError, match="model.lowband_hz=2000"):
        build_model(dataclasses.replace(cfg, lowband_hz=2000.0), 10, 96)


def test_a_frozen_trunk_remembers_each_windows_output_when_asked():
    """remember_embeddings: the same logits as without, the trunk run once per distinct window
    (whatever batch it comes in); off again, nothing is kept."""
    model = build_model(ModelConfig(name="musicnn", pretrained="msd", freeze=True), 10, 96)
    model.eval()
    x = torch.rand(4, 1, 96, PATCH_FRAMES)
    with torch.no_grad():
        plain = model(x)
        model.remember_embeddings(True)
        calls = []
        model.trunk.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
        assert torch.allclose(model(x[:3]), plain[:3], atol=1e-5)
        assert torch.allclose(model(x.flip(0)), plain.flip(0), atol=1e-5)
        assert calls == [3, 1]  # the second batch ran only the window not seen before
        model(x.to(torch.bfloat16).float())
        assert calls[-1] == 4  # other bytes, other windows
        model.remember_embeddings(False)
        model(x)
        assert calls[-1] == 4 and model._memo is None
    unfrozen = build_model(ModelConfig(name="musicnn"), 10, 96)
    unfrozen.remember_embeddings(True)  # a trunk that learns is never remembered
    assert unfrozen._memo is None


def test_remembered_embeddings_are_shared_through_a_store(tmp_path: Path):
    """With a store, a second model on the same frozen trunk (another trial or seed) runs the
    trunk on no window the first one saw and gives the same logits; other weights, another
    embedding or another precision find nothing of it."""
    store = str(tmp_path / "embeddings")
    x = torch.rand(4, 1, 96, PATCH_FRAMES)

    def model_and_calls(**kw):
        model = build_model(
            ModelConfig(name="musicnn", pretrained="msd", freeze=True, **kw), 10, 96
        )
        model.eval()
        model.remember_embeddings(True, store=store)
        calls: list[int] = []
        model.trunk.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
        return model, calls

    first, calls = model_and_calls()
    with torch.no_grad():
        plain = first(x[:3])
        assert calls == [3]
        second, calls2 = model_and_calls()
        second.head.load_state_dict(first.head.state_dict())
        assert torch.allclose(second(x), torch.cat([plain, first(x[3:])]), atol=1e-6)
        assert calls2 == [1]  # only the window the first model never saw
        files = sorted((tmp_path / "embeddings").rglob("*.npy"))
        assert len(files) == 4  # one per distinct window
        pooled, calls3 = model_and_calls(embedding="pooled")
        pooled(x)
        assert calls3 == [4]  # another embedding: its own namespace
        other, calls4 = model_and_calls()
        with torch.no_grad():
            other.trunk.dense.bias.add_(1.0)  # other weights: another digest
        other.remember_embeddings(True, store=store)
        other(x)
        assert calls4 == [4]
        third, calls5 = model_and_calls()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            third(x)
        assert calls5 == [4]  # computed at another precision: not mixed with fp32 outputs
    files[0].write_bytes(b"cut short")
    fourth, calls6 = model_and_calls()
    with torch.no_grad():
        fourth(x)
    assert calls6 == [1]  # an unreadable file is computed again


def test_random_init_and_wrong_settings():
    model = build_model(ModelConfig(name="musicnn"), 10, 128)  # any n_mels from scratch
    assert model.info["pretrained"] == "scratch"
    assert model(torch.rand(2, 1, 128, 40)).shape == (2, 10)
    with pytest.raises(ConfigError, match="96 mel bands"):
        build_model(ModelConfig(name="musicnn", pretrained="msd"), 10, 128)
    with pytest.raises(ConfigError, match="'msd' or 'mtt'|msd or mtt"):
        build_model(ModelConfig(name="musicnn", pretrained="imagenet"), 10, 96)


def test_the_tagger_takes_any_patch_length():
    """musicnn pools over time, so shorter or longer patches than 3 s go through (as its
    extractor's input_length allows)."""
    model = Musicnn().eval()
    with torch.inference_mode():
        for frames in (32, PATCH_FRAMES, 400):
            assert model(torch.rand(1, frames, 96)).shape == (1, 50)


# -- (d) the weights -----------------------------------------------------------------------------


def test_provenance_names_the_bundled_weights():
    text = (WEIGHTS_DIR / "PROVENANCE.md").read_text()
    assert WHEEL_SHA256 in text and "ISC" in text and "Permission to use" in text
    for which in WHICH:
        path = WEIGHTS_DIR / f"{which}_musicnn.pt"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert re.search(rf"`{path.name}` \| `{digest}`", text), path.name


def test_crc32c():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


@pytest.fixture(scope="module")
def wheel() -> Path:
    """musicnn's wheel from PyPI, cached under /tmp (or MGC_MUSICNN_WHEEL); skips offline."""
    given = os.environ.get("MGC_MUSICNN_WHEEL")
    path = Path(given) if given else Path("/tmp/musicnn_wheel") / WHEEL
    if not path.is_file() and not given:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "musicnn==0.1.0"]
        cmd += ["-d", str(path.parent), "--timeout", "15", "--retries", "1", "-q"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"musicnn's wheel is not here ({path}) and pip cannot fetch it: {exc}")
    if not path.is_file():
        pytest.skip(f"musicnn's wheel is not at {path}")
    return path


def test_the_converter_reproduces_the_bundled_weights(wheel):
    states, hashes, licence = convert_wheel(wheel)
    assert "Permission to use" in licence and len(hashes) == 4
    for which in WHICH:
        bundled = torch.load(WEIGHTS_DIR / f"{which}_musicnn.pt", weights_only=True)
        assert states[which].keys() == bundled.keys()
        assert all(torch.equal(states[which][k], bundled[k]) for k in bundled)


def test_a_damaged_checkpoint_is_refused(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as zf:
        for name in (".index", ".data-00000-of-00001"):
            (tmp_path / name).write_bytes(zf.read(f"musicnn/MSD_musicnn/{name}"))
    data = bytearray((tmp_path / ".data-00000-of-00001").read_bytes())
    data[1000] ^= 0xFF
    (tmp_path / ".data-00000-of-00001").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint(f"{tmp_path}/")
