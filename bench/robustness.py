"""Does a model keep its answer when the same music arrives differently? Perturbed copies of test
clips (file formats, sample rates, channels, excerpts; band limits, noise, low-bitrate codecs and
gain through `mgc.features.augment`, the training augmentations) against the clean clip.

    python bench/robustness.py --data /path/to/gtzan [--model BUNDLE] [--limit 80]

The clips are the test part of the bundle's own split (never seen in training), or with
`--part valid` its validation part (to choose between models without looking at test), taken in
turn from each genre so that every genre is represented. For each clip and condition the script runs
the same `Predictor` that `mgc.serve.predict` uses (fp32, so the figures are about the audio, not
bf16 rounding) and counts how often the top genre equals the clean clip's (agreement) and the
true genre (accuracy), overall and per genre. It prints both tables and writes
bench/out/robustness.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import chain, zip_longest
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.core.audio import load_audio, write_m4a  # noqa: E402
from mgc.core.config import load_config  # noqa: E402
from mgc.core.device import CPU_FP32, machine  # noqa: E402
from mgc.data.datasets import Track  # noqa: E402
from mgc.data.loader import split_tracks  # noqa: E402
from mgc.features.augment import add_noise, apply_gain, band_limit, codec_roundtrip  # noqa: E402
from mgc.models.bundle import load_bundle  # noqa: E402
from mgc.models.inference import Predictor  # noqa: E402
from mgc.serve.predict import BUNDLED_MODEL  # noqa: E402

SR = 22050
# A condition: the clean wave (mono, SR) and a generator → a file written under a path stem
# (formats that exercise the decoders) or a wave at SR (what the training augmentations do).
Condition = Callable[[np.ndarray, np.random.Generator, Path], Path | np.ndarray]


def _file(suffix: str, make: Callable[[np.ndarray], tuple[np.ndarray, int]], **kw) -> Condition:
    def write(wave: np.ndarray, _rng: np.random.Generator, stem: Path) -> Path:
        data, rate = make(wave)
        path = stem.with_suffix(suffix)
        sf.write(path, data, rate, **kw)
        return path

    return write


def _m4a(wave: np.ndarray, _rng: np.random.Generator, stem: Path) -> Path:
    return write_m4a(stem.with_suffix(".m4a"), soxr.resample(wave, SR, 44100), 44100)


def _excerpt(seconds: float) -> Condition:
    def cut(wave: np.ndarray, rng: np.random.Generator, _stem: Path) -> np.ndarray:
        start = int(rng.integers(0, max(1, wave.size - int(seconds * SR))))
        return wave[start : start + int(seconds * SR)]

    return cut


def _stereo(wave: np.ndarray) -> tuple[np.ndarray, int]:
    up = soxr.resample(wave, SR, 44100)
    return np.stack([up, 0.8 * up], axis=1), 44100


CONDITIONS: dict[str, Condition] = {
    # How files arrive: formats, rates, channels (decoders and resampling)
    "mp3 (libsndfile, 22.05 kHz)": _file(".mp3", lambda w: (w, SR), format="MP3"),
    "m4a / AAC 44.1 kHz": _m4a,
    "wav 44.1 kHz stereo": _file(".wav", _stereo),
    "flac 48 kHz": _file(".flac", lambda w: (soxr.resample(w, SR, 48000), 48000)),
    "wav 8 kHz (telephone band)": _file(".wav", lambda w: (soxr.resample(w, SR, 8000), 8000)),
    "10 s excerpt": _excerpt(10.0),
    "5 s excerpt": _excerpt(5.0),
    # The training augmentations' conditions (mgc.features.augment), at fixed settings
    "band limit 8 kHz": lambda w, _r, _s: band_limit(w, SR, 8000),
    "band limit 16 kHz": lambda w, _r, _s: band_limit(w, SR, 16000),
    "white noise 20 dB SNR": lambda w, r, _s: add_noise(w, 20.0, "white", r),
    "white noise 10 dB SNR": lambda w, r, _s: add_noise(w, 10.0, "white", r),
    "pink noise 10 dB SNR": lambda w, r, _s: add_noise(w, 10.0, "pink", r),
    "mp3 32 kbps": lambda w, _r, _s: codec_roundtrip(w, SR, "mp3", 32),
    "mp3 64 kbps": lambda w, _r, _s: codec_roundtrip(w, SR, "mp3", 64),
    "aac 32 kbps": lambda w, _r, _s: codec_roundtrip(w, SR, "aac", 32),
    "aac 64 kbps": lambda w, _r, _s: codec_roundtrip(w, SR, "aac", 64),
    "gain -12 dB": lambda w, _r, _s: apply_gain(w, -12.0),
    "gain +12 dB, clipped": lambda w, _r, _s: apply_gain(w, 12.0),
}


def pick_conditions(wanted: str) -> dict[str, Condition]:
    """The conditions whose names contain one of the comma-separated parts of `wanted` (all of
    them when it is empty); a part that names none is an error."""
    parts = [w.strip() for w in wanted.split(",") if w.strip()]
    if not parts:
        return CONDITIONS
    for part in parts:
        if not any(part in name for name in CONDITIONS):
            raise SystemExit(f"--conditions: {part!r} names no condition ({', '.join(CONDITIONS)})")
    return {n: c for n, c in CONDITIONS.items() if any(p in n for p in parts)}


def by_genre_in_turn(tracks: list[Track], limit: int) -> list[Track]:
    """Up to `limit` tracks (0: all), one of each genre in turn, so a short run still covers
    every genre."""
    genres = sorted({t.genre for t in tracks})
    lists = [[t for t in tracks if t.genre == g] for g in genres]
    taken = [t for t in chain.from_iterable(zip_longest(*lists)) if t is not None]
    return taken[: limit or None]


def shares(hits: dict[str, list[bool]]) -> dict[str, float]:
    return {k: float(np.mean(v)) for k, v in hits.items() if v}


def summarise(agree: list[bool], right: list[bool], genres: list[str]) -> dict:
    """Overall and per-genre agreement and accuracy of one condition (lists per clip)."""
    per_genre = {
        g: {
            "clips": sum(x == g for x in genres),
            "agreement": float(np.mean([a for a, x in zip(agree, genres, strict=True) if x == g])),
            "accuracy": float(np.mean([r for r, x in zip(right, genres, strict=True) if x == g])),
        }
        for g in sorted(set(genres))
    }
    return {
        "agreement": float(np.mean(agree)),
        "accuracy": float(np.mean(right)),
        "per_genre": per_genre,
    }


def per_genre_table(results: dict[str, dict], key: str, genres: list[str]) -> str:
    short = [g[:7] for g in genres]
    lines = [f"  {key:<28}" + "".join(f"{g:>8}" for g in short)]
    for name, r in results.items():
        cells = "".join(f"{100 * r['per_genre'][g][key]:8.0f}" for g in genres)
        lines.append(f"  {name:<28}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the GTZAN folder (genre sub-folders)")
    parser.add_argument("--model", default=str(BUNDLED_MODEL))
    parser.add_argument("--limit", type=int, default=80, help="clips used (0 = all)")
    parser.add_argument(
        "--part",
        choices=("test", "valid"),
        default="test",
        help="the split's part the clips come from: valid to choose between models, test to report",
    )
    parser.add_argument(
        "--conditions",
        default="",
        help="comma-separated parts of condition names to run (default: all), e.g. '8 kHz,20 dB'",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "robustness.json"))
    args = parser.parse_args(argv)
    conditions = pick_conditions(args.conditions)

    model = Path(args.model)
    bundle = load_bundle(model)
    # The split the model was trained with (its run or published config), on this data folder.
    config = model / "config.yaml"
    cfg = load_config(config if config.is_file() else None, [f"data.root={args.data}"])
    _, parts, split_name, _ = split_tracks(cfg)
    tracks = by_genre_in_turn(parts[args.part], args.limit)
    predictor = Predictor(bundle, CPU_FP32)
    rng = np.random.default_rng(0)
    agree: dict[str, list[bool]] = {"clean": []}
    right: dict[str, list[bool]] = {"clean": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, track in enumerate(tqdm(tracks, desc="clips", unit="clip")):
            truth = bundle.genres.index(track.genre)
            top = int(np.argmax(predictor.predict_file(track.path).probabilities))
            agree["clean"].append(True)
            right["clean"].append(top == truth)
            wave = load_audio(track.path, SR)
            for name, condition in conditions.items():
                made = condition(wave, rng, Path(tmp) / f"{i}")
                if isinstance(made, Path):
                    pred = predictor.predict_file(made)
                    made.unlink()
                else:  # made at SR: to the model's own rate, as a decoder would bring it
                    rate = bundle.features.sample_rate
                    made = soxr.resample(made, SR, rate) if rate != SR else made
                    pred = predictor.predict_wave(np.asarray(made, np.float32))
                got = int(np.argmax(pred.probabilities))
                agree.setdefault(name, []).append(got == top)
                right.setdefault(name, []).append(got == truth)
    seconds = time.perf_counter() - t0
    genres = [t.genre for t in tracks]
    results = {name: summarise(agree[name], right[name], genres) for name in agree}
    info = machine()
    print(f"{info['cpu']} | native bf16: {info['native_bf16']} | torch {info['torch']}")
    print(
        f"{model}: {len(tracks)} {args.part} clips of the {split_name} split "
        f"({', '.join(f'{g} {genres.count(g)}' for g in sorted(set(genres)))}); {seconds:.0f} s"
    )
    print(f"  {'condition':<28}{'agree':>8}{'acc':>8}")
    for name, r in results.items():
        print(f"  {name:<28}{100 * r['agreement']:7.1f}%{100 * r['accuracy']:7.1f}%")
    names = sorted(set(genres))
    print("\nSame top genre as the clean clip, % per genre:")
    print(per_genre_table({k: v for k, v in results.items() if k != "clean"}, "agreement", names))
    print("\nTrue genre on top, % per genre:")
    print(per_genre_table(results, "accuracy", names))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": str(model),
        "split": split_name,
        "part": args.part,
        "clips": len(tracks),
        "clips_per_genre": {g: genres.count(g) for g in names},
        "seconds": seconds,
        "agreement": shares(agree),
        "accuracy": shares(right),
        "conditions": results,
        **info,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
