"""Does a model keep its answer when the same music arrives differently? Perturbed copies of test
clips (codecs, sample rates, channels, gain, excerpts) against the clean clip's top genre.

    python bench/robustness.py --data /path/to/gtzan [--model BUNDLE] [--limit 40]

The clips are the test part of the bundle's own split (never seen in training). For each clip
and each perturbation the script writes the perturbed file, runs the same `Predictor` that
`mgc.serve.predict` uses, and counts how often the top genre equals the clean clip's. It prints one
line per perturbation and writes bench/out/robustness.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.core.audio import load_audio, write_m4a  # noqa: E402
from mgc.core.config import load_config  # noqa: E402
from mgc.core.device import CPU_FP32, machine  # noqa: E402
from mgc.data.loader import split_tracks  # noqa: E402
from mgc.models.bundle import load_bundle  # noqa: E402
from mgc.models.inference import Predictor  # noqa: E402
from mgc.serve.predict import BUNDLED_MODEL  # noqa: E402

SR = 22050


def perturbations(wave: np.ndarray, rng: np.random.Generator) -> dict[str, callable]:
    """name → writer(path stem) returning the written file; each a way the same music arrives."""

    def at(rate: int) -> np.ndarray:
        return soxr.resample(wave, SR, rate)

    def excerpt(seconds: float) -> np.ndarray:
        start = int(rng.integers(0, max(1, wave.size - int(seconds * SR))))
        return wave[start : start + int(seconds * SR)]

    def w(suffix: str, data: np.ndarray, rate: int, **kw):
        def write(stem: Path) -> Path:
            path = stem.with_suffix(suffix)
            sf.write(path, data, rate, **kw)
            return path

        return write

    def m4a(stem: Path) -> Path:
        path = stem.with_suffix(".m4a")
        write_m4a(path, at(44100), 44100)
        return path

    stereo = np.stack([at(44100), 0.8 * at(44100)], axis=1)
    return {
        "mp3 (libsndfile, 22.05 kHz)": w(".mp3", wave, SR, format="MP3"),
        "m4a / AAC 44.1 kHz": m4a,
        "wav 44.1 kHz stereo": w(".wav", stereo, 44100),
        "flac 48 kHz": w(".flac", at(48000), 48000),
        "wav 8 kHz (telephone band)": w(".wav", at(8000), 8000),
        "gain -20 dB": w(".wav", wave * 0.1, SR),
        "gain +6 dB, clipped": w(".wav", np.clip(wave * 2.0, -1, 1), SR),
        "10 s excerpt": w(".wav", excerpt(10.0), SR),
        "5 s excerpt": w(".wav", excerpt(5.0), SR),
        "white noise at 20 dB SNR": w(
            ".wav",
            wave + rng.normal(0, np.sqrt(np.mean(wave**2)) / 10, wave.size).astype(np.float32),
            SR,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the GTZAN folder (genre sub-folders)")
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--limit", type=int, default=40, help="test clips used (0 = all)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "robustness.json"))
    args = parser.parse_args(argv)

    model = Path(args.model)
    bundle = load_bundle(model)
    # The split the model was trained with (its run or published config), on this data folder.
    config = model / "config.yaml"
    cfg = load_config(config if config.is_file() else None, [f"data.root={args.data}"])
    _, parts, split_name, _ = split_tracks(cfg)
    tracks = parts["test"][: args.limit or None]
    predictor = Predictor(bundle, CPU_FP32)
    rng = np.random.default_rng(0)
    agree: dict[str, list[bool]] = {}
    clean_right = 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, track in enumerate(tracks):
            clean = predictor.predict_file(track.path).probabilities
            top = int(np.argmax(clean))
            clean_right += bundle.genres[top] == track.genre
            wave = load_audio(track.path, SR)
            for name, write in perturbations(wave, rng).items():
                path = write(Path(tmp) / f"{i}")
                got = int(np.argmax(predictor.predict_file(path).probabilities))
                agree.setdefault(name, []).append(got == top)
                path.unlink()
    info = machine()
    print(f"{info['cpu']} | native bf16: {info['native_bf16']} | torch {info['torch']}")
    print(
        f"{model}: {len(tracks)} test clips of the {split_name} split; clean top genre right "
        f"{clean_right}/{len(tracks)}; {time.perf_counter() - t0:.0f} s"
    )
    rows = {name: float(np.mean(v)) for name, v in agree.items()}
    for name, share in rows.items():
        print(f"  {name:<28} same top genre as the clean clip: {100 * share:5.1f} %")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"model": str(model), "clips": len(tracks), "agreement": rows, **info}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
