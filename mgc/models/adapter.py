"""One interface over torch and scikit-learn models: model input batches → class probabilities.

The torch-or-scikit-learn question is answered here once (`load_classifier`); training,
evaluation, bundles and prediction all hold a `Classifier` and call `predict_proba`.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from torch import nn

from mgc.core.config import ModelConfig
from mgc.core.device import CPU_FP32, FastPath
from mgc.core.fsio import atomic_path
from mgc.models import build_model, is_sklearn
from mgc.models.baseline import pooled_features, sklearn_param_count

TORCH_WEIGHTS = "model.pt"
SKLEARN_PICKLE = "model.pkl"


class Classifier(Protocol):
    n_classes: int

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        """(B, 1, n_mels, frames) model input → (B, n_classes) float64 probabilities."""
        ...

    def on(self, fast: FastPath) -> Classifier: ...

    def save(self, folder: Path) -> None: ...

    @property
    def params(self) -> int: ...


class TorchClassifier:
    def __init__(self, model: nn.Module, fast: FastPath = CPU_FP32):
        self.model = model
        self.fast = fast
        self.n_classes = int(model.info["n_classes"]) if hasattr(model, "info") else -1

    def on(self, fast: FastPath) -> TorchClassifier:
        # A copy: nn.Module.to moves in place, and the bundle's own model must stay as loaded
        # (CPU, NCHW, fp32) for whoever else holds it: an exporter, a second predictor.
        return TorchClassifier(fast.place(copy.deepcopy(self.model)), fast)

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        self.model.eval()
        with torch.inference_mode(), self.fast.autocast():
            logits = self.model(self.fast.to_input(x))
        return torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64)

    def save(self, folder: Path) -> None:
        weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        with atomic_path(folder / TORCH_WEIGHTS) as tmp:
            torch.save(weights, tmp)

    @property
    def params(self) -> int:
        return int(self.model.info["params"])


class SklearnClassifier:
    """A pipeline fitted on time-pooled chunks (`pooled_features`)."""

    def __init__(self, pipeline: Pipeline, n_classes: int):
        self.model = pipeline
        self.n_classes = n_classes

    def on(self, fast: FastPath) -> SklearnClassifier:
        return self  # scikit-learn runs on the CPU whatever the device

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        p = self.model.predict_proba(pooled_features(x.numpy()))
        # scikit-learn leaves out classes absent from training; put them back as zero columns.
        out = np.zeros((p.shape[0], self.n_classes), dtype=np.float64)
        out[:, self.model.classes_] = p
        return out

    def save(self, folder: Path) -> None:
        with atomic_path(folder / SKLEARN_PICKLE) as tmp, open(tmp, "wb") as fh:
            pickle.dump(self.model, fh)

    @property
    def params(self) -> int:
        return sklearn_param_count(self.model)


def load_classifier(
    folder: Path, model_cfg: ModelConfig, n_classes: int, n_mels: int, map_location="cpu"
) -> Classifier:
    """The classifier saved in `folder` by `Classifier.save`, on the CPU in fp32."""
    if is_sklearn(model_cfg.name):
        with open(folder / SKLEARN_PICKLE, "rb") as fh:
            return SklearnClassifier(pickle.load(fh), n_classes)
    # Built from scratch, then given the trained weights: never fetch pretrained ones here.
    model = build_model(dataclasses.replace(model_cfg, pretrained=None), n_classes, n_mels)
    state = torch.load(folder / TORCH_WEIGHTS, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return TorchClassifier(model.eval())
