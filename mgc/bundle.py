"""Model bundle: weights + label map + feature and chunk settings, loadable by one function."""

from __future__ import annotations

import dataclasses
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgc.config import ChunkConfig, FeatureConfig, ModelConfig
from mgc.data.datasets import read_label_map, write_label_map
from mgc.models import build_model, is_sklearn

BUNDLE_DIR = "bundle"


@dataclass
class Bundle:
    model: Any  # nn.Module in eval mode, or a fitted scikit-learn pipeline
    genres: list[str]
    features: FeatureConfig
    chunks: ChunkConfig
    model_cfg: ModelConfig
    info: dict[str, Any]


def save_bundle(
    out_dir: str | Path,
    model: Any,
    genres: list[str],
    features: FeatureConfig,
    chunks: ChunkConfig,
    model_cfg: ModelConfig,
    info: dict[str, Any],
) -> Path:
    out = Path(out_dir) / BUNDLE_DIR
    out.mkdir(parents=True, exist_ok=True)
    write_label_map(genres, out)
    meta = {
        "model": dataclasses.asdict(model_cfg),
        "features": dataclasses.asdict(features),
        "chunks": dataclasses.asdict(chunks),
        "info": info,
    }
    (out / "bundle.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    if isinstance(model, nn.Module):
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "model.pt")
    else:
        with open(out / "model.pkl", "wb") as fh:
            pickle.dump(model, fh)
    return out


def load_bundle(path: str | Path, map_location: str | torch.device = "cpu") -> Bundle:
    """Load a bundle from its folder or from a run folder that holds one."""
    path = Path(path)
    if (path / BUNDLE_DIR).is_dir():
        path = path / BUNDLE_DIR
    meta_file = path / "bundle.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path}: no model bundle here (bundle.json missing)")
    meta = json.loads(meta_file.read_text())
    genres = read_label_map(path)
    model_cfg = ModelConfig(**meta["model"])
    if is_sklearn(model_cfg.name):
        with open(path / "model.pkl", "rb") as fh:
            model = pickle.load(fh)
    else:
        # Built from scratch, then given the trained weights: never fetch pretrained ones here.
        model = build_model(
            dataclasses.replace(model_cfg, pretrained=None), len(genres), meta["features"]["n_mels"]
        )
        model.load_state_dict(
            torch.load(path / "model.pt", map_location=map_location, weights_only=True)
        )
        model.eval()
    return Bundle(
        model,
        genres,
        FeatureConfig(**meta["features"]),
        ChunkConfig(**meta["chunks"]),
        model_cfg,
        meta.get("info", {}),
    )
