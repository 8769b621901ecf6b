"""Model bundle: classifier + label map + feature and chunk settings, loadable by one function."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgc.core.config import ChunkConfig, FeatureConfig, ModelConfig
from mgc.core.fsio import atomic_write
from mgc.data.datasets import read_label_map, write_label_map
from mgc.models.adapter import Classifier, load_classifier

BUNDLE_DIR = "bundle"


@dataclass
class Bundle:
    classifier: Classifier  # on the CPU in fp32 when loaded; `Predictor` moves it
    genres: list[str]
    features: FeatureConfig
    chunks: ChunkConfig
    model_cfg: ModelConfig
    info: dict[str, Any]

    @property
    def model(self) -> Any:
        """The underlying nn.Module or scikit-learn pipeline."""
        return self.classifier.model


def save_bundle(
    out_dir: str | Path,
    classifier: Classifier,
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
    classifier.save(out)
    atomic_write(out / "bundle.json", json.dumps(meta, indent=2, default=str) + "\n")
    return out


def load_bundle(path: str | Path, map_location: str = "cpu") -> Bundle:
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
    features = FeatureConfig(**meta["features"])
    classifier = load_classifier(path, model_cfg, len(genres), features.n_mels, map_location)
    return Bundle(
        classifier,
        genres,
        features,
        ChunkConfig(**meta["chunks"]),
        model_cfg,
        meta.get("info", {}),
    )
