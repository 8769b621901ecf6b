"""M6: torchvision ResNet18 / EfficientNet-B0 with a one-channel input and optional ImageNet weights.

The first conv is replaced by a 1-channel conv of the same geometry; when ImageNet weights are
loaded it is initialised with the sum of the RGB kernels, which gives the same response to a
grey image as the RGB network. The head becomes Dropout + Linear(n_classes) and is never loaded.

`pretrained`: None → from scratch; a local file → an ImageNet state dict loaded from it;
"download" → torchvision's DEFAULT weights, falling back to scratch (with a warning) offline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from mgc.core.config import ConfigError
from mgc.core.net import check_reachable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Spec:
    """Where the pieces of one torchvision architecture live."""

    factory: Callable[[], nn.Module]
    weights: Callable[[], torchvision.models.WeightsEnum]  # DEFAULT ImageNet weights
    first_conv: str  # state-dict prefix of the RGB input conv
    head: str  # state-dict prefix of the ImageNet classifier (never loaded)


SPECS: dict[str, _Spec] = {
    "resnet18": _Spec(
        factory=torchvision.models.resnet18,
        weights=lambda: torchvision.models.ResNet18_Weights.DEFAULT,
        first_conv="conv1",
        head="fc",
    ),
    "efficientnet_b0": _Spec(
        factory=torchvision.models.efficientnet_b0,
        weights=lambda: torchvision.models.EfficientNet_B0_Weights.DEFAULT,
        first_conv="features.0.0",
        head="classifier",
    ),
}


def _set_module(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def _one_channel(conv: nn.Conv2d) -> nn.Conv2d:
    """A 1-input-channel conv with `conv`'s geometry, kaiming-initialised like torchvision's."""
    new = nn.Conv2d(
        1,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def _unwrap_state_dict(obj: object, path: str) -> dict[str, torch.Tensor]:
    """Accept a bare state dict, or one under "state_dict"/"model"; strip DDP/compile prefixes."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"model.pretrained={path}: not a state dict of tensors")
    out = {}
    for key, value in obj.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def load_imagenet_weights(
    model: nn.Module, state: Mapping[str, torch.Tensor], spec: _Spec, source: str
) -> None:
    """Load an RGB ImageNet state dict into the one-channel `model`, skipping the head.

    The RGB input kernels (out, 3, kh, kw) are summed to (out, 1, kh, kw). Anything else missing,
    unexpected or of the wrong shape is an error: a partial load would silently train from
    (mostly) scratch while the results table says "imagenet".
    """
    head = spec.head + "."
    conv_key = spec.first_conv + ".weight"
    mapped = {k: v for k, v in state.items() if not k.startswith(head)}
    if conv_key in mapped and mapped[conv_key].dim() == 4 and mapped[conv_key].shape[1] == 3:
        mapped[conv_key] = mapped[conv_key].sum(dim=1, keepdim=True)
    own = model.state_dict()
    wrong = [k for k, v in mapped.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if not k.startswith(head) and k not in mapped]
    unexpected = [k for k in mapped if k not in own]
    if wrong or missing or unexpected:
        raise ConfigError(
            f"model.pretrained={source}: does not fit this architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrong-shape keys;"
            f" first: {(missing + unexpected + wrong)[0]})"
        )
    model.load_state_dict(mapped, strict=False)


def _fetch_imagenet(weights: torchvision.models.WeightsEnum, timeout_s: float = 10.0) -> dict:
    """torchvision's download (or its hub cache); fails fast offline instead of hanging.

    torchvision's download has no timeout of its own; the connection probe bounds the wait
    offline, and is skipped when the hub cache already holds the file.
    """
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not cached.is_file():
        check_reachable(weights.url, timeout_s)
    return weights.get_state_dict(progress=False)


def build_torchvision(
    name: str, n_classes: int, dropout: float = 0.3, pretrained: str | None = None
) -> nn.Module:
    """A one-channel torchvision model with a Dropout+Linear head; sets `model.info["pretrained"]`.

    info["pretrained"] is "scratch", "imagenet:<file path>" or "imagenet:download:<weights
    name>"; when a download fails, it is "scratch" and info["pretrained_note"] says why.
    """
    spec = SPECS[name]
    model = spec.factory()
    first = model.get_submodule(spec.first_conv)
    assert isinstance(first, nn.Conv2d)
    _set_module(model, spec.first_conv, _one_channel(first))
    head = model.get_submodule(spec.head)
    linear = head if isinstance(head, nn.Linear) else head[-1]
    _set_module(
        model,
        spec.head,
        nn.Sequential(nn.Dropout(dropout), nn.Linear(linear.in_features, n_classes)),
    )
    # torchvision uses in-place activations; plain ones are safer under autocast and compile.
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False

    info: dict[str, str] = {"pretrained": "scratch"}
    if pretrained is None or pretrained == "":
        pass
    elif pretrained == "download":
        weights = spec.weights()
        try:
            state = _fetch_imagenet(weights)
        except Exception as err:  # offline, proxy, corrupt download: train from scratch
            log.warning("%s: could not download %s (%s); training from scratch", name, weights, err)
            info["pretrained_note"] = f"download of {weights} failed: {type(err).__name__}: {err}"
        else:
            load_imagenet_weights(model, state, spec, f"download ({weights})")
            info["pretrained"] = f"imagenet:download:{weights}"
    else:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"model.pretrained={pretrained}: no such file (give a state-dict path, 'download' or null)"
            )
        obj = torch.load(path, map_location="cpu", weights_only=True)
        load_imagenet_weights(model, _unwrap_state_dict(obj, pretrained), spec, pretrained)
        info["pretrained"] = f"imagenet:{path.resolve()}"
    model.info = info
    return model
