"""Shared fixtures: synthetic audio and small folder-per-genre datasets built in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 22050


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write_audio(path: Path, wave: np.ndarray, sr: int = SR, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, **kwargs)
    return path


def write_synth_dataset(root: Path) -> Path:
    """Three genres × four 4-second clips in `root`; each genre has its own pitch range."""
    for g, base in (("blues", 220.0), ("metal", 880.0), ("pop", 3520.0)):
        for i in range(4):
            write_audio(root / g / f"{g}.{i:05d}.wav", tone(base * (1 + 0.05 * i), 4.0, seed=i))
    return root


@pytest.fixture
def synth_dataset(tmp_path: Path) -> Path:
    """Three genres × four 4-second clips; each genre has its own pitch range."""
    return write_synth_dataset(tmp_path / "ds")


def gtzan_dir() -> Path | None:
    """The real GTZAN clips: $MGC_GTZAN_DIR, else ../shared/data/gtzan beside the checkout."""
    env = os.environ.get("MGC_GTZAN_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan"
    return path if path.is_dir() else None


@pytest.fixture
def gtzan() -> Path:
    path = gtzan_dir()
    if path is None:
        pytest.skip("real GTZAN clips not found: set MGC_GTZAN_DIR to run this integration test")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test session (starting it costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, dataset): a small cnn4 trained on synthetic tones of three genres, in fp32
    so that results are exact. Shared by the inference, predict and export tests."""
    from mgc.core.config import load_config
    from mgc.data.prepare import prepare
    from mgc.run.train import fit

    tmp = tmp_path_factory.mktemp("infer")
    root = write_synth_dataset(tmp / "ds")
    cfg = load_config(
        None,
        [
            f"data.root={root}",
            f"cache.dir={tmp / 'cache'}",
            "chunks.window_s=1.0",
            "chunks.overlap=0.5",
            "model.name=cnn4",
            "model.width=8",
            "train.epochs=2",
            "train.threads=1",
            "train.amp=off",
        ],
    )
    prepare(cfg, use_ray=False)
    fit(cfg, run_dir=tmp / "run")
    return tmp / "run", root
