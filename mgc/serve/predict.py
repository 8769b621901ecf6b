"""`python -m mgc.predict PATH...`: the genre of any audio file, or of every audio file in folders.

Each file goes through the bundle's own path (decode, log-mel, windows, model, mean of the
window probabilities), streamed a segment at a time so hour-long files fit in a bounded amount
of memory. A file that cannot be used gets one line on stderr and an `error` row; the others go
on. Exit status: 0 when every file was classified, 1 when some were not, 2 on bad usage.

Scores are the bundle's calibrated ones (`mgc.calibrate`; an uncalibrated bundle's are the mean
window probabilities). With a rejection threshold (`--reject-below`) a file whose top score is
below it is answered "none of the ten", its scores still listed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mgc.core.audio import AUDIO_EXTENSIONS, AudioError, looks_like_audio
from mgc.core.cli import REJECT_WITH_MODEL, add_reject_option
from mgc.core.device import choose_fast_path, select_device
from mgc.data.datasets import printable
from mgc.models.bundle import Bundle, load_bundle
from mgc.models.inference import Prediction, Predictor, calibrate

log = logging.getLogger(__name__)

# The model that ships with the package (see its model_card.md); used when --model is not given.
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "bundled" / "gtzan"
# Below this peak level a file is called silent: nothing a genre model could say is meaningful.
SILENCE_PEAK = 10 ** (-60 / 20)  # -60 dBFS
PROGRESS_MIN_FILES = 4
# The answer for a file whose top calibrated score is below the rejection threshold.
NONE_OF_THE_TEN = "none of the ten"


class UsageError(ValueError):
    """Bad arguments: exit status 2."""


# ---------------------------------------------------------------------------------------------
# Which files


def find_audio(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """(files to classify, files passed over) for the given files and folders.

    A file named on the command line is always tried. In folders (recursive, hidden entries
    skipped) a file counts as audio by its content or, failing that, by its extension, so a
    broken `song.mp3` is reported rather than silently left out.
    """
    chosen: list[Path] = []
    ignored: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    f = Path(root) / name
                    is_audio = f.suffix.lower() in AUDIO_EXTENSIONS or looks_like_audio(f)
                    (chosen if is_audio else ignored).append(f)
        elif path.exists() or path.is_symlink():
            chosen.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return chosen, ignored


# ---------------------------------------------------------------------------------------------
# One file → one result row


def top_labels(probs: np.ndarray, genres: list[str], k: int) -> list[dict[str, Any]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": genres[i], "score": round(float(probs[i]), 6)} for i in order]


def segment_rows(
    pred: Prediction, top_k: int, window_s: float | None, hop_s: float | None
) -> list[dict[str, Any]]:
    """Per-segment top genres: the model's own windows, or windows of `window_s` seconds every
    `hop_s`, each the mean of the model windows whose middle falls inside it."""
    if window_s is None:
        spans = [(a, b, pred.chunk_probabilities[i]) for i, (a, b) in enumerate(pred.windows)]
    else:
        hop = hop_s or window_s
        mids = np.array([(a + b) / 2 for a, b in pred.windows])
        spans, start = [], 0.0
        while start < max(pred.duration_s, 1e-9):
            end = min(start + window_s, pred.duration_s)
            inside = (mids >= start) & (mids < end)
            if not inside.any():  # shorter than a model window: the nearest one speaks for it
                inside = np.abs(mids - (start + end) / 2) == np.abs(mids - (start + end) / 2).min()
            spans.append((start, end, pred.chunk_probabilities[inside].mean(axis=0)))
            start += hop
    return [
        {
            "start": round(a, 3),
            "end": round(b, 3),
            "top": top_labels(calibrate(p, pred.temperature), pred.genres, top_k),
        }
        for a, b, p in spans
    ]


@dataclasses.dataclass
class Options:
    top_k: int = 3
    segments: bool = False
    window_s: float | None = None
    hop_s: float | None = None
    # Below this top score the answer is "none of the ten"; None: always the top genre.
    reject_below: float | None = None


def predict_one(predictor: Predictor, path: Path, model_id: str, opts: Options) -> dict[str, Any]:
    """The output row of one file; errors become an `error` row instead of an exception."""
    row: dict[str, Any] = {"file": str(path), "model": model_id}
    try:
        pred = predictor.predict_file(path)
        if float(np.abs(pred.peak)) < SILENCE_PEAK:
            raise AudioError(path, "silent (peak below -60 dBFS)")
    except AudioError as exc:
        return {**row, "error": exc.reason}
    except MemoryError:
        return {**row, "error": "out of memory"}
    except Exception as exc:  # whatever else one file trips on, the others still get their turn
        log.debug("%s", path, exc_info=True)
        return {**row, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    row["duration_s"] = round(pred.duration_s, 3)
    if pred.padded:
        window = predictor.frontend.seconds(predictor.frontend.windowing.window)
        row["note"] = f"shorter than one {window:g} s window: padded"
    row["top_k"] = top_labels(pred.probabilities, pred.genres, opts.top_k)
    if opts.reject_below is not None:
        top = row["top_k"][0]
        row["answer"] = NONE_OF_THE_TEN if top["score"] < opts.reject_below else top["label"]
        row["reject_below"] = opts.reject_below
    row["probabilities"] = {
        g: round(float(p), 6) for g, p in zip(pred.genres, pred.probabilities, strict=True)
    }
    if opts.segments:
        row["segments"] = segment_rows(pred, opts.top_k, opts.window_s, opts.hop_s)
    return row


def model_id(bundle: Bundle, path: Path) -> str:
    return str(bundle.info.get("model_id") or path.resolve().name)


def reject_threshold(value: str | None, bundle: Bundle, path: Path) -> float | None:
    """The rejection threshold `--reject-below` asks for: None when not given; the bundle's own
    (chosen on validation by `mgc.calibrate`) when given without a number; else the number, a
    probability. Raises UsageError naming the bundle when it has no threshold to give."""
    if value is None:
        return None
    if value == REJECT_WITH_MODEL:
        if bundle.reject_below is None:
            raise UsageError(
                f"{path}: this model has no rejection threshold; give one (--reject-below 0.5) "
                "or calibrate it first: python -m mgc.calibrate MODEL --out NEW_FOLDER"
            )
        return bundle.reject_below
    try:
        threshold = float(value)
    except ValueError:
        raise UsageError(f"--reject-below: {value!r} is not a number") from None
    if not 0.0 <= threshold <= 1.0:
        raise UsageError("--reject-below must be a probability between 0 and 1")
    return threshold


# ---------------------------------------------------------------------------------------------
# Many files: in this process, or mapped over a Ray cluster


def predict_local(
    files: list[Path], bundle: Bundle, bundle_path: Path, opts: Options, device: str
) -> Iterator[dict[str, Any]]:
    from tqdm import tqdm

    predictor = Predictor(bundle, choose_fast_path(select_device(device)))
    mid = model_id(bundle, bundle_path)
    show = len(files) >= PROGRESS_MIN_FILES
    for path in tqdm(files, desc="predict", unit="file", disable=not show, file=sys.stderr):
        yield predict_one(predictor, path, mid, opts)


class _RayPredict:
    """Ray Data UDF: a Predictor per worker, the same `predict_one` per file."""

    def __init__(self, bundle_path: str, opts: dict[str, Any]):
        import torch

        torch.set_num_threads(1)  # one CPU per worker: more threads only fight
        self.path = Path(bundle_path)
        self.bundle = load_bundle(self.path)
        self.predictor = Predictor(self.bundle, choose_fast_path(select_device("cpu")))
        self.opts = Options(**opts)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        out = predict_one(
            self.predictor, Path(row["file"]), model_id(self.bundle, self.path), self.opts
        )
        return {"json": json.dumps(out)}  # one column: rows differ in shape (errors, segments)


def predict_ray(files: list[Path], bundle_path: Path, opts: Options) -> Iterator[dict[str, Any]]:
    import ray

    from mgc.core.cluster import init_ray

    init_ray(quiet=True)
    workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_items([{"file": str(f)} for f in files]).map(
        _RayPredict,
        fn_constructor_kwargs={"bundle_path": str(bundle_path), "opts": dataclasses.asdict(opts)},
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(files))),
        num_cpus=1,
    )
    by_file = {r["file"]: r for r in (json.loads(x["json"]) for x in ds.iter_rows())}
    for f in files:  # the input order, whatever order the workers finished in
        yield by_file[str(f)]


# ---------------------------------------------------------------------------------------------
# Output


def to_csv(rows: list[dict[str, Any]], genres: list[str]) -> str:
    """One row per file, a column per genre. (JSON keeps a name that is not UTF-8 exactly, as
    escaped surrogates; text formats show its odd bytes as `\\xNN`.)"""
    rejecting = any("reject_below" in r for r in rows)
    table = pd.DataFrame(
        [
            {
                "file": printable(r["file"]),
                "model": r["model"],
                "duration_s": r.get("duration_s"),
                "top_label": r["top_k"][0]["label"] if "top_k" in r else None,
                "top_score": r["top_k"][0]["score"] if "top_k" in r else None,
                **({"answer": r.get("answer")} if rejecting else {}),
                **{g: r.get("probabilities", {}).get(g) for g in genres},
                "error": r.get("error"),
            }
            for r in rows
        ]
    )
    return table.to_csv(index=False, lineterminator="\n")


def to_table(rows: list[dict[str, Any]]) -> str:
    """What a person reads in a terminal: file, length, the top genres."""
    lines = []
    names = [printable(r["file"]) for r in rows]
    width = min(60, max((len(n) for n in names), default=4))
    for r, name in zip(rows, names, strict=True):
        name = name if len(name) <= width else "…" + name[-(width - 1) :]
        if "error" in r:
            lines.append(f"{name:<{width}}  error: {r['error']}")
            continue
        tops = "  ".join(f"{t['label']} {100 * t['score']:.1f}%" for t in r["top_k"])
        if r.get("answer") == NONE_OF_THE_TEN:
            tops = f"{NONE_OF_THE_TEN} (best: {tops})"
        note = f"  ({r['note']})" if "note" in r else ""
        lines.append(f"{name:<{width}}  {r['duration_s']:8.1f} s  {tops}{note}")
        for seg in r.get("segments", []):
            top = seg["top"][0]
            lines.append(
                f"{'':<{width}}    {seg['start']:7.1f}-{seg['end']:<7.1f} {top['label']} "
                f"{100 * top['score']:.0f}%"
            )
    return "\n".join(lines) + "\n"


def render(rows: list[dict[str, Any]], fmt: str, genres: list[str]) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        return to_csv(rows, genres)
    return to_table(rows)


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mgc.predict", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files and folders (recursive)")
    p.add_argument("--model", help="a bundle folder or run folder (default: the bundled model)")
    p.add_argument("--top-k", type=int, default=3, help="genres listed per file (default 3)")
    p.add_argument(
        "--format",
        choices=["json", "csv", "table"],
        help="default: table on a terminal, else json (csv when --out ends in .csv)",
    )
    p.add_argument("--out", help="write the results here instead of standard output")
    p.add_argument("--segments", action="store_true", help="also the top genres along the file")
    p.add_argument("--window-s", type=float, help="segment length in seconds (with --segments)")
    p.add_argument("--hop-s", type=float, help="segment hop in seconds (default: --window-s)")
    add_reject_option(p)
    p.add_argument("--ray", action="store_true", help="map the files over Ray Data's workers")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    return p


def check_options(args: argparse.Namespace) -> Options:
    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    for name in ("window_s", "hop_s"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    if args.hop_s is not None and args.window_s is None:
        raise UsageError("--hop-s needs --window-s")
    return Options(
        args.top_k, args.segments or args.window_s is not None, args.window_s, args.hop_s
    )


def output_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    if args.out:
        return "csv" if args.out.lower().endswith(".csv") else "json"
    return "table" if sys.stdout.isatty() else "json"
