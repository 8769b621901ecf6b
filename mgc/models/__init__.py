"""Model registry: architectures chosen by name from `ModelConfig`, each reporting its size.

Torch models take (batch, 1, n_mels, frames) float32 log-mel chunks and return logits
(batch, n_classes). `logreg` is the one scikit-learn model: build it with `make_logreg(seed)`
on `pooled_features(x)`, not with `build_model`.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from mgc.core.config import Config, ConfigError, ModelConfig
from mgc.models.baseline import (
    TimeAverageMLP,
    make_logreg,
    pooled_features,
    sklearn_param_count,
)
from mgc.models.cnn import VGG5, DeepCNN, PlainCNN, SmallCNN
from mgc.models.crnn import CRNN
from mgc.models.musicnn import MusicnnClassifier
from mgc.models.torchvision_models import build_torchvision

log = logging.getLogger(__name__)

# name → factory. Torch factories are called as f(cfg, n_classes, n_mels) -> nn.Module;
# sklearn ones (see `is_sklearn`) as f(seed) -> Pipeline.
MODELS: dict[str, Callable[..., Any]] = {
    "logreg": make_logreg,
    "mlp": lambda cfg, n_classes, n_mels: TimeAverageMLP(n_mels, n_classes, dropout=cfg.dropout),
    "small_cnn": lambda cfg, n_classes, n_mels: SmallCNN(n_classes, dropout=cfg.dropout),
    "cnn4": lambda cfg, n_classes, n_mels: PlainCNN(n_classes, 4, cfg.width, cfg.dropout),
    "cnn5": lambda cfg, n_classes, n_mels: PlainCNN(n_classes, 5, cfg.width, cfg.dropout),
    "cnn6": lambda cfg, n_classes, n_mels: PlainCNN(n_classes, 6, cfg.width, cfg.dropout),
    "vgg5": lambda cfg, n_classes, n_mels: VGG5(n_classes, cfg.width, cfg.dropout),
    "deep_cnn": lambda cfg, n_classes, n_mels: DeepCNN(n_classes, cfg.width, cfg.dropout),
    "resnet18": lambda cfg, n_classes, n_mels: build_torchvision(
        "resnet18", n_classes, cfg.dropout, cfg.pretrained
    ),
    "efficientnet_b0": lambda cfg, n_classes, n_mels: build_torchvision(
        "efficientnet_b0", n_classes, cfg.dropout, cfg.pretrained
    ),
    "crnn": lambda cfg, n_classes, n_mels: CRNN(n_classes, cfg.width, dropout=cfg.dropout),
    "musicnn": lambda cfg, n_classes, n_mels: MusicnnClassifier(
        n_classes,
        n_mels,
        cfg.dropout,
        cfg.pretrained,
        cfg.freeze,
        embedding=cfg.embedding,
        head_hidden=cfg.head_hidden,
        heads=cfg.heads,
        lowband_hz=cfg.lowband_hz,
        freeze_front=cfg.freeze_front_end,
    ),
}

_SKLEARN = frozenset({"logreg"})
_TAKES_PRETRAINED = frozenset({"resnet18", "efficientnet_b0", "musicnn"})
_TAKES_FREEZE = frozenset({"musicnn"})

__all__ = [
    "MODELS",
    "remembers_embeddings",
    "build_model",
    "count_parameters",
    "is_sklearn",
    "make_logreg",
    "model_names",
    "pooled_features",
    "sklearn_param_count",
]


def model_names() -> list[str]:
    """Every registered name, sklearn ones included, in registry order."""
    return list(MODELS)


def is_sklearn(name: str) -> bool:
    """True for models built with scikit-learn (`make_logreg`) rather than `build_model`."""
    return name in _SKLEARN


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (the Params column of the results table)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _check_name(name: str) -> None:
    if name in MODELS:
        return
    close = difflib.get_close_matches(name, MODELS, n=1)
    hint = f" — did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"model.name: unknown model '{name}'{hint} (valid: {', '.join(MODELS)})")


def build_model(cfg: ModelConfig, n_classes: int, n_mels: int = 128) -> nn.Module:
    """The torch model named by `cfg.name`, with `model.info` = name, params, pretrained, ….

    Raises ConfigError (a ValueError) for an unknown name, for `logreg` (use `make_logreg`),
    and for `cfg.pretrained` weights that cannot be used.
    """
    _check_name(cfg.name)
    if is_sklearn(cfg.name):
        raise ConfigError(
            f"model.name={cfg.name} is a scikit-learn model: use "
            "mgc.models.make_logreg(seed) on mgc.models.pooled_features(x), not build_model"
        )
    if cfg.pretrained and cfg.name not in _TAKES_PRETRAINED:
        log.warning(
            "model.pretrained=%s ignored: %s always trains from scratch (only %s take weights)",
            cfg.pretrained,
            cfg.name,
            ", ".join(sorted(_TAKES_PRETRAINED)),
        )
    if cfg.heads != 1 and cfg.name not in _TAKES_FREEZE:
        raise ConfigError(f"model.heads={cfg.heads}: only musicnn takes an ensemble of heads")
    for flag in ("freeze", "freeze_front_end"):
        if getattr(cfg, flag) and cfg.name not in _TAKES_FREEZE:
            log.warning("model.%s ignored: %s has no pretrained trunk to freeze", flag, cfg.name)
    model = MODELS[cfg.name](cfg, n_classes, n_mels)
    extra = getattr(model, "info", {})
    model.info = {
        "name": cfg.name,
        "params": count_parameters(model),
        "pretrained": "scratch",
        "n_classes": n_classes,
        "n_mels": n_mels,
        **extra,
    }
    return model


def remembers_embeddings(cfg: Config) -> bool:
    """Whether a fit of cfg keeps its frozen trunk's output for each window and reuses it: a
    pretrained trunk that is frozen and inputs that repeat from epoch to epoch (no SpecAugment,
    no chunk jitter, which would make every epoch's windows new ones). A frozen front end's
    output is 70 times a probe's embedding, so it is kept only where every epoch takes every
    window (`train.windows_per_track` 0), never for random ones that would pile up."""
    m, t = cfg.model, cfg.train
    fixed = m.freeze or (m.freeze_front_end and not t.windows_per_track)
    return fixed and m.name in _TAKES_FREEZE and not t.specaugment.enabled and not t.chunk_jitter
