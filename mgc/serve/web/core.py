"""What the web page computes, without Streamlit: which model, which clip, the result row and
the tables and figure the page draws from it. Every function here is plain Python to test."""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mgc.core.audio import AUDIO_EXTENSIONS, stream_audio
from mgc.core.cli import add_reject_option
from mgc.models.bundle import BUNDLE_DIR, Bundle, load_bundle
from mgc.models.inference import Predictor
from mgc.serve.predict import (
    BUNDLED_MODEL,
    NONE_OF_THE_TEN,
    Options,
    model_id,
    predict_one,
    reject_threshold,
)

# Where `python -m mgc.web` tells the page which model to serve when the page is started some
# other way (`streamlit run mgc/web/app.py`, a hosting service): its `--model` script argument
# wins, then this variable, then the bundled model.
MODEL_ENV = "MGC_WEB_MODEL"
MAX_UPLOAD_MB = 50
UPLOAD_TYPES = [ext.lstrip(".") for ext in AUDIO_EXTENSIONS]
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"
CARD_JSON = "model_card.json"  # written by mgc.serve.publish beside the bundle


# ---------------------------------------------------------------------------------------------
# Which model


def _script_args(argv: Sequence[str]) -> argparse.Namespace:
    """The page's own script arguments (`--model`, `--reject-below`); unknown ones are left
    alone (under a test runner they are its)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--model")
    add_reject_option(parser)
    return parser.parse_known_args(list(argv))[0]


def model_path(argv: Sequence[str], environ: Mapping[str, str]) -> Path:
    """The model to serve: `--model` among the page's script arguments, else $MGC_WEB_MODEL,
    else the bundled one."""
    chosen = _script_args(argv).model or environ.get(MODEL_ENV)
    return Path(chosen) if chosen else BUNDLED_MODEL


def reject_setting(argv: Sequence[str]) -> str | None:
    """`--reject-below` among the page's script arguments, as `reject_threshold` takes it."""
    return _script_args(argv).reject_below


def has_bundle(path: Path) -> bool:
    """Whether `path` is a bundle folder or a run folder holding one (what load_bundle takes)."""
    return (path / "bundle.json").is_file() or (path / BUNDLE_DIR / "bundle.json").is_file()


def missing_model_message(path: Path) -> str:
    if path.resolve() == BUNDLED_MODEL.resolve():
        return (
            f"The bundled model is not installed ({BUNDLED_MODEL}). Start the page with "
            "`python -m mgc.web --model RUN_OR_BUNDLE_FOLDER`."
        )
    return f"{path}: no model bundle here (bundle.json missing)."


def card_summary(path: Path) -> list[str]:
    """A few Markdown lines on the model: its card's test results when it was published with
    mgc.serve.publish, else a training run's own metrics.json, else a plain statement that neither is
    there. Never raises: a page must still work with a bare bundle."""
    folder = path / BUNDLE_DIR if (path / BUNDLE_DIR).is_dir() else path
    card_file = folder / CARD_JSON
    if card_file.is_file():
        try:
            return _published_summary(json.loads(card_file.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError):
            return [f"`{CARD_JSON}` is there but unreadable; see `model_card.md` beside it."]
    for metrics_file in (path / "metrics.json", folder.parent / "metrics.json"):
        if metrics_file.is_file():
            try:
                return _run_summary(json.loads(metrics_file.read_text()))
            except (ValueError, KeyError, TypeError, AttributeError):
                break
    return ["No model card beside this bundle: test results unknown."]


def _published_summary(card: dict[str, Any]) -> list[str]:
    shipped = card["shipped_test"]
    tracks = card.get("tracks")
    n_test = tracks.get("test") if isinstance(tracks, dict) else None
    lines = [
        f"`{card['model']}`, {card['params']:,} parameters",
        f"Test ({card['split']} split" + (f", {n_test} tracks" if n_test else "") + "): "
        f"accuracy {shipped['track_accuracy']:.3f}, macro-F1 {shipped['track_macro_f1']:.3f}",
    ]
    acc = card.get("test", {}).get("track_accuracy", {})
    if acc.get("n", 1) > 1 and "std" in acc:
        lines.append(f"Over {acc['n']} seeds: accuracy {acc['mean']:.3f} ± {acc['std']:.3f}")
    if card.get("genres"):
        lines.append("Genres: " + ", ".join(card["genres"]))
    lines.append("Full card: `model_card.md` in the bundle folder.")
    return lines


def _run_summary(metrics: dict[str, Any]) -> list[str]:
    lines = [f"`{metrics['model']}`, {metrics['params']:,} parameters (a training run, no card)"]
    test = metrics.get("test")
    if test:
        n_test = metrics.get("n_tracks", {}).get("test")
        lines.append(
            f"Test ({metrics['split']} split" + (f", {n_test} tracks" if n_test else "") + "): "
            f"accuracy {test['track_accuracy']:.3f}, macro-F1 {test['track_macro_f1']:.3f}"
        )
    return lines


@dataclass
class WebModel:
    """A loaded model and what the page says about it; one per server process."""

    path: Path
    bundle: Bundle
    predictor: Predictor
    model_id: str
    card: list[str]
    reject_below: float | None = None  # "none of the ten" below this top score; None: never
    # One prediction at a time: sessions share the predictor, and two 50 MB uploads decoded at
    # once would double the memory a small server needs for no gain on its few cores.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def window_s(self) -> float:
        frontend = self.predictor.frontend
        return frontend.seconds(frontend.windowing.window)

    @property
    def segment_s(self) -> float:
        """Timeline step: the model's window to a tenth of a second (2.9954 s → 3 s), so that
        the page's segments are exactly those of `mgc.serve.predict FILE --segments --window-s 3`."""
        return max(0.1, round(self.window_s, 1))

    @property
    def options(self) -> Options:
        """Top three, plus the top genre every `segment_s` along the file, which tile the
        timeline without overlapping (the model's own windows overlap)."""
        step = self.segment_s
        return Options(
            top_k=min(3, len(self.bundle.genres)),
            segments=True,
            window_s=step,
            hop_s=step,
            reject_below=self.reject_below,
        )

    def allow_rejection(self, setting: str | None) -> None:
        """Answer "none of the ten" as `--reject-below` `setting` asks (see reject_threshold;
        raises UsageError when the model has no threshold to give)."""
        self.reject_below = reject_threshold(setting, self.bundle, self.path)


def open_model(path: Path) -> WebModel:
    bundle = load_bundle(path)
    return WebModel(path, bundle, Predictor(bundle), model_id(bundle, path), card_summary(path))


# ---------------------------------------------------------------------------------------------
# Which clip


def sample_clips(folder: Path = SAMPLES_DIR) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)


_SAMPLE_NAME = re.compile(r"(?P<genre>[a-z]+)\.(?P<track>\d{5})_(?P<a>\d+)-(?P<b>\d+)s$")


def sample_label(path: Path) -> str:
    """`metal.00012_10-19s.ogg` → `metal: GTZAN metal.00012, 10-19 s`."""
    m = _SAMPLE_NAME.match(path.stem)
    if not m:
        return path.name
    return f"{m['genre']}: GTZAN {m['genre']}.{m['track']}, {m['a']}-{m['b']} s"


def upload_problem(size_bytes: int, limit_mb: int = MAX_UPLOAD_MB) -> str | None:
    """Why an upload is refused before decoding, or None. Streamlit enforces the same limit;
    this check keeps it when the page is served with another server.maxUploadSize."""
    if size_bytes > limit_mb * 1024 * 1024:
        return (
            f"The file is {size_bytes / 1024 / 1024:.1f} MB; the limit is {limit_mb} MB. "
            f"For longer recordings use `python -m mgc.predict FILE --segments`."
        )
    return None


@contextmanager
def upload_as_file(name: str, data: bytes) -> Iterator[Path]:
    """The uploaded bytes as a temporary file with the upload's suffix (some decoders go by
    it), deleted when the block ends whatever happens inside."""
    suffix = Path(name).suffix.lower()
    fd, tmp = tempfile.mkstemp(prefix="mgc-web-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The result


def classify(model: WebModel, path: Path, shown_name: str) -> dict[str, Any]:
    """predict_one's row for the file, as the CLI would write it, named as the user knows it
    (not by its temporary path)."""
    with model.lock:
        row = predict_one(model.predictor, path, model.model_id, model.options)
    return {**row, "file": shown_name}


def headline(row: dict[str, Any]) -> str:
    top = row["top_k"][0]
    if row.get("answer") == NONE_OF_THE_TEN:
        return (
            f"Genre: {NONE_OF_THE_TEN} (closest: {top['label']}, {100 * top['score']:.1f} %, "
            f"below {100 * row['reject_below']:.0f} %)"
        )
    return f"Top genre: {top['label']} ({100 * top['score']:.1f} %)"


def probability_frame(row: dict[str, Any]) -> pd.DataFrame:
    """Every genre's probability, highest first."""
    table = pd.DataFrame(
        {"genre": list(row["probabilities"]), "probability": list(row["probabilities"].values())}
    )
    return table.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)


def timeline_frame(row: dict[str, Any]) -> pd.DataFrame:
    """One row per segment: start, end, its top genre and that genre's score."""
    return pd.DataFrame(
        [
            {
                "start": s["start"],
                "end": s["end"],
                "genre": s["top"][0]["label"],
                "score": s["top"][0]["score"],
            }
            for s in row.get("segments", [])
        ],
        columns=["start", "end", "genre", "score"],
    )


def first_segment_logmel(predictor: Predictor, path: Path) -> tuple[np.ndarray, float]:
    """(log-mel in dB, seconds it covers) of the file's first segment: for a file no longer
    than one segment (60 s) the very log-mel the model's windows were cut from. Only that much
    is decoded. Raises AudioError."""
    sr = predictor.bundle.features.sample_rate
    blocks = stream_audio(path, sr, block_s=predictor.segment_s)
    try:
        wave = next(blocks)
    finally:
        blocks.close()
    return predictor.frontend.logmel(wave), len(wave) / sr


def spectrogram_figure(logmel: np.ndarray, seconds: float, title: str = ""):
    """A matplotlib Figure of a (n_mels, frames) dB array. Built without pyplot: the page runs
    sessions in threads, and pyplot's global current figure is not theirs to share."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.8), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(
        logmel,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0.0, seconds, 0, logmel.shape[0]),
        interpolation="nearest",
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="dB", pad=0.01)
    return fig
