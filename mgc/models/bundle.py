"""Model bundle: classifier + label map + feature and chunk settings, loadable by one function.

A calibrated bundle's bundle.json also holds `calibration` (written by `mgc.calibrate`): the
temperature its track scores are scaled by, and the top score under which it answers "none of the
ten"; bundles without it load with temperature 1 and no threshold."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgc.core.config import ChunkConfig, ConfigError, FeatureConfig, ModelConfig
from mgc.core.fsio import atomic_write, staged_folder
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
    # What `calibration` in bundle.json says: {"temperature", "reject_below", and how they were
    # fitted}; {} for an uncalibrated bundle.
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        """Track scores are softmax(log(p) / temperature); 1 for an uncalibrated bundle."""
        return float(self.calibration.get("temperature", 1.0))

    @property
    def reject_below(self) -> float | None:
        """The top calibrated score under which the answer is "none of the ten", chosen on
        validation; None when the bundle has none."""
        value = self.calibration.get("reject_below")
        return None if value is None else float(value)

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
    calibration = meta.get("calibration") or {}
    temperature = calibration.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ConfigError(f"{meta_file}: calibration.temperature must be a positive number")
    return Bundle(
        classifier,
        genres,
        features,
        ChunkConfig(**meta["chunks"]),
        model_cfg,
        meta.get("info", {}),
        calibration,
    )


def bundle_folder(path: str | Path) -> Path:
    """The folder holding bundle.json: `path` itself or its `bundle/` (a run folder)."""
    path = Path(path)
    return path / BUNDLE_DIR if (path / BUNDLE_DIR).is_dir() else path


def write_calibrated(
    source: str | Path, out: str | Path, calibration: dict[str, Any], extra: dict[str, str]
) -> Path:
    """A new bundle folder `out`: `source`'s bundle files with `calibration` in its bundle.json,
    plus `extra` files (name → text, e.g. a config and a model card). `out` must not exist: a
    user's bundle is never changed in place. Built beside `out` and renamed into place, so a
    reader never sees half a bundle."""
    src, out = bundle_folder(source), Path(out)
    if out.exists():
        raise ConfigError(f"{out}: exists; choose a new folder for the calibrated bundle")
    with staged_folder(out) as staging:
        shutil.copytree(src, staging, dirs_exist_ok=True)
        meta = json.loads((staging / "bundle.json").read_text())
        meta["calibration"] = calibration
        atomic_write(staging / "bundle.json", json.dumps(meta, indent=2, default=str) + "\n")
        for name, text in extra.items():
            atomic_write(staging / name, text)
    return out
