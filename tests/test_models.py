"""Tests for mgc.models: registry, shapes, sizes, learning, pretrained loading, logreg baseline."""

from __future__ import annotations

import logging
import socket

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from mgc.core.config import ModelConfig
from mgc.models import (
    MODELS,
    build_model,
    count_parameters,
    is_sklearn,
    make_logreg,
    model_names,
    pooled_features,
    sklearn_param_count,
)
from mgc.models.cnn import VGG5, SmallCNN
from mgc.models.torchvision_models import SPECS

TORCH_MODELS = [n for n in model_names() if not is_sklearn(n)]
N_MELS, FRAMES = 64, 96


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny: one thread is as fast, and it does not collapse (OpenMP
    # spin-waiting) when other processes share the two CI cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build(name: str, n_classes: int = 10, n_mels: int = N_MELS, **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name=name, **kw), n_classes=n_classes, n_mels=n_mels)


def _toy_batch(n: int, n_mels: int = N_MELS, frames: int = FRAMES, seed: int = 0):
    """Two classes of 'tones': a horizontal band low (class 0) or high (class 1) in frequency,
    switching on and off in time at a class-dependent rate, over noise; per-chunk normalised."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = 0.5 * torch.randn(n, 1, n_mels, frames, generator=g)
    t = torch.arange(frames)
    for i in range(n):
        lo = n_mels // 6 if y[i] == 0 else n_mels // 2 + n_mels // 6
        rate = 8 if y[i] == 0 else 3
        on = ((t // rate) % 2 == 0).float()
        x[i, 0, lo : lo + n_mels // 8] += 2.0 * on
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)
    return x, y


def test_registry_names():
    names = model_names()
    assert names == list(MODELS)
    for expected in ["logreg", "mlp", "small_cnn", "cnn4", "cnn5", "cnn6", "vgg5", "deep_cnn"]:
        assert expected in names
    for expected in ["resnet18", "efficientnet_b0", "crnn"]:
        assert expected in names
    assert is_sklearn("logreg") and not is_sklearn("cnn4")
    assert ModelConfig().name == "cnn4" and "cnn4" in names


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_forward_shape_and_param_count(name):
    model = _build(name, n_classes=7)
    x = torch.randn(4, 1, N_MELS, FRAMES)
    out = model(x)
    assert out.shape == (4, 7)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable > 0
    assert count_parameters(model) == trainable
    assert model.info["name"] == name
    assert model.info["params"] == trainable
    assert model.info["pretrained"] == "scratch"


def test_count_parameters_ignores_frozen():
    model = _build("cnn4")
    total = count_parameters(model)
    for p in model.features.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in model.features.parameters())
    assert count_parameters(model) == total - frozen


@pytest.mark.parametrize("name", [n for n in TORCH_MODELS if n != "mlp"])
@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 1, 128, 130), (1, 1, 40, 431)])
def test_any_input_size(name, shape):
    model = _build(name, n_classes=3, n_mels=shape[2]).eval()
    with torch.no_grad():
        assert model(torch.randn(*shape)).shape == (shape[0], 3)


def test_mlp_is_tied_to_n_mels():
    model = _build("mlp", n_mels=N_MELS).eval()
    assert model(torch.randn(2, 1, N_MELS, 500)).shape == (2, 10)
    with pytest.raises(ValueError, match="n_mels=64"):
        model(torch.randn(2, 1, 128, 100))


def test_mlp_features_match_pooled_features():
    x = torch.randn(3, 1, N_MELS, FRAMES)
    model = _build("mlp", n_classes=2).eval()
    first = model.net[0]
    expected = torch.from_numpy(pooled_features(x.numpy())) @ first.weight.T + first.bias
    hidden = {}
    first.register_forward_hook(lambda m, i, o: hidden.setdefault("out", o))
    model(x)
    torch.testing.assert_close(hidden["out"], expected, rtol=1e-4, atol=1e-4)


def test_vgg5_classifier_sizes():
    model = _build("vgg5")
    assert isinstance(model, VGG5)
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 512), (512, 128), (128, 10)]
    assert sum(isinstance(m, nn.Dropout) for m in model.classifier) == 2
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [32, 32, 64, 64, 128, 128, 256, 256, 256, 256]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 5
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 5


def test_small_cnn_layers():
    model = _build("small_cnn")
    assert isinstance(model, SmallCNN)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 16, (3, 3)),
        (16, 32, (3, 3)),
    ]
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert [p.kernel_size for p in pools] == [(2, 4), (2, 4)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [64, 10]


@pytest.mark.parametrize("name,blocks", [("cnn4", 4), ("cnn5", 5), ("cnn6", 6)])
def test_plain_cnn_blocks(name, blocks):
    model = _build(name, width=16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [min(16 * 2**i, 128) for i in range(blocks)]
    assert model.classifier[-1].in_features == 2 * convs[-1].out_channels


def test_deep_cnn_is_small_and_deeper():
    model = _build("deep_cnn")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8
    assert max(c.out_channels for c in convs) <= 4 * 32
    assert count_parameters(model) < 1_500_000


def test_width_scales_cnns():
    assert count_parameters(_build("cnn4", width=16)) < count_parameters(_build("cnn4", width=32))


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_a_few_adam_steps_reduce_loss(name):
    # Narrow models on 32×64 inputs keep this quick; the torchvision ones have no width knob,
    # so they get fewer steps (they need fewer anyway). SmallCNN, with no BatchNorm, is slowest.
    model = _build(name, n_classes=2, n_mels=32, dropout=0.0, width=8).train()
    x, y = _toy_batch(8, n_mels=32, frames=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10 if name in SPECS else 20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_channels_last_and_bf16_autocast(name):
    model = _build(name).eval()
    x = torch.randn(2, 1, N_MELS, FRAMES)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(out_cl, ref, rtol=1e-3, atol=1e-3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x.to(memory_format=torch.channels_last))
    assert out.shape == (2, 10)
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", ["cnn4", "vgg5"])
def test_bf16_autocast_training_step(name):
    model = _build(name)
    x, y = _toy_batch(4)
    y = y % 10
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert out.dtype == torch.bfloat16
        loss = nn.functional.cross_entropy(out.float(), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", TORCH_MODELS)
def test_deterministic_given_seed(name):
    a, b = _build(name).state_dict(), _build(name).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_name_lists_names_and_suggests():
    with pytest.raises(ValueError) as err:
        build_model(ModelConfig(name="cnn44"), n_classes=10)
    msg = str(err.value)
    assert "\n" not in msg
    assert "did you mean 'cnn4'" in msg
    for name in model_names():
        assert name in msg


def test_logreg_is_not_built_by_build_model():
    with pytest.raises(ValueError, match="make_logreg"):
        build_model(ModelConfig(name="logreg"), n_classes=10)


# --- M6: torchvision models and ImageNet weights --------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_torchvision_one_channel_and_head(name):
    model = _build(name, dropout=0.25)
    spec = SPECS[name]
    first = model.get_submodule(spec.first_conv)
    assert first.in_channels == 1
    head = model.get_submodule(spec.head)
    assert isinstance(head[0], nn.Dropout) and head[0].p == 0.25
    assert isinstance(head[1], nn.Linear) and head[1].out_features == 10
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_local_imagenet_weights(name, tmp_path):
    spec = SPECS[name]
    torch.manual_seed(123)
    rgb = spec.factory()
    path = tmp_path / f"{name}_imagenet.pth"
    torch.save(rgb.state_dict(), path)
    model = _build(name, pretrained=str(path))
    assert model.info["pretrained"] == f"imagenet:{path.resolve()}"
    rgb_conv = rgb.state_dict()[spec.first_conv + ".weight"]
    torch.testing.assert_close(
        model.state_dict()[spec.first_conv + ".weight"], rgb_conv.sum(dim=1, keepdim=True)
    )
    # Every other backbone tensor is copied exactly; the head is new.
    own = model.state_dict()
    for key, value in rgb.state_dict().items():
        if key.startswith(spec.first_conv + ".") or key.startswith(spec.head + "."):
            continue
        assert torch.equal(own[key], value), key
    assert model.get_submodule(spec.head)[1].out_features == 10
    assert model(torch.randn(2, 1, N_MELS, FRAMES)).shape == (2, 10)


def test_local_weights_wrapped_and_prefixed(tmp_path):
    rgb = torchvision.models.resnet18()
    state = {"module." + k: v for k, v in rgb.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": state}, path)
    model = _build("resnet18", pretrained=str(path))
    assert model.info["pretrained"].startswith("imagenet:")
    torch.testing.assert_close(model.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))


def test_mismatched_weights_file_is_an_error(tmp_path):
    path = tmp_path / "effnet.pth"
    torch.save(torchvision.models.efficientnet_b0().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        _build("resnet18", pretrained=str(path))


def test_missing_weights_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        _build("resnet18", pretrained=str(tmp_path / "nope.pth"))


def _no_network(*args, **kwargs):
    raise OSError("network is unreachable")


def test_download_falls_back_to_scratch_offline(monkeypatch, caplog, tmp_path):
    # Never touch the network in tests: an empty hub cache and a failing connection probe.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", _no_network)
    with caplog.at_level(logging.WARNING):
        model = _build("resnet18", pretrained="download")
    assert model.info["pretrained"] == "scratch"
    assert "network is unreachable" in model.info["pretrained_note"]
    assert "training from scratch" in caplog.text


def test_download_success_is_recorded(monkeypatch, tmp_path):
    fake = torchvision.models.resnet18().state_dict()
    # Pretend the weights are in the hub cache, so no connection is attempted.
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "resnet18-f37072fd.pth").touch()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, **kw: fake)
    model = _build("resnet18", pretrained="download")
    assert model.info["pretrained"] == "imagenet:download:ResNet18_Weights.IMAGENET1K_V1"
    torch.testing.assert_close(model.conv1.weight, fake["conv1.weight"].sum(dim=1, keepdim=True))


def test_pretrained_ignored_for_models_without_weights(caplog):
    with caplog.at_level(logging.WARNING):
        model = _build("cnn4", pretrained="download")
    assert model.info["pretrained"] == "scratch"
    assert "ignored" in caplog.text


# --- M1: logistic regression on pooled features ---------------------------------------------


def test_pooled_features_values_and_shapes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 1, 8, 40)).astype(np.float32)
    feats = pooled_features(x)
    assert feats.shape == (5, 16) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[:, :8], x[:, 0].mean(axis=2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[:, 8:], x[:, 0].std(axis=2), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pooled_features(x[:, 0]), feats)
    with pytest.raises(ValueError):
        pooled_features(np.zeros((2, 3, 8, 40)))


def test_logreg_learns_toy_problem():
    x_train, y_train = _toy_batch(60, seed=1)
    x_test, y_test = _toy_batch(40, seed=2)
    pipe = make_logreg(seed=0)
    assert pipe[-1].max_iter == 2000 and pipe[-1].C == 1.0
    with pytest.raises(ValueError, match="not fitted"):
        sklearn_param_count(pipe)
    pipe.fit(pooled_features(x_train.numpy()), y_train.numpy())
    acc = (pipe.predict(pooled_features(x_test.numpy())) == y_test.numpy()).mean()
    assert acc > 0.8
    # Binary: one coefficient row over 2*n_mels features plus one intercept.
    assert sklearn_param_count(pipe) == 2 * N_MELS + 1


def test_logreg_param_count_multiclass():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(60, 2 * 16))
    labels = np.arange(60) % 3
    pipe = make_logreg(seed=0).fit(feats, labels)
    assert sklearn_param_count(pipe) == 3 * 32 + 3
