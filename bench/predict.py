"""Prediction cost: a seed-style librosa + eager fp32 pipeline against `mgc`'s, in one run.

    python bench/predict.py --data ../shared/data/gtzan [--model BUNDLE] [--limit 40]
                            [--repeats 3] [--ray-files 64] [--cpus 2]

Part 1, milliseconds per 30 s clip on ONE thread (torch, onnxruntime and BLAS all held to one),
split by stage: read (the file's bytes), decode (mono at the feature rate), log-mel, windows +
per-window normalisation, model, aggregation (mean of the window probabilities). Variants:
  (a) seed    librosa.load + feature.melspectrogram + power_to_db, mgc's windows, the bundle's
              model in eager fp32 (NCHW, no autocast), mean — the baseline, ratio 1.00;
  (b) mgc     the bundle as `python -m mgc.predict` runs it: `Predictor(bundle)` on the CPU's
              default fast path (bf16 + channels-last where the CPU has native bf16). Each stage
              calls what `Predictor.predict_stream` calls; one `Predictor.predict_file` per clip
              is timed as well, to check that the stages add up to the real call;
  (c) onnx    the same Predictor with the bundle's model exported to ONNX (`export_bundle`),
              run by onnxruntime on one intra-op thread.
The clips are GTZAN's first --limit taken across genres (blues.00000, classical.00000, …,
blues.00001, …); each stage's figure is the median over clips × --repeats, the total is the
median of the per-clip totals. Clips go round-robin over the variants, in an order that rotates
from clip to clip, so a burst of load from other processes reaches all of them alike. Every
variant is warmed up on the first clip first (librosa's, oneDNN's and onnxruntime's first-call
costs are not counted).

Part 2, files/s on a folder: `mgc.serve.predict.predict_local` (one process, torch's default threads)
against `mgc.serve.predict.predict_ray` on --cpus CPUs (one worker a CPU, one thread each), on the
first --ray-files clips. Ray's start-up (ray.init, and a first predict_ray call that pays the
workers' first imports and Ray Data's helper actors) is timed apart, as bench/preprocess.py
does. Every predict_ray call also starts its own pool of actors (each loads the bundle); a call
on --cpus files measures that per-call cost, and the rate without it is printed beside.

Results: tables on stdout, bench/out/predict.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.core.device import FastPath, choose_fast_path, machine  # noqa: E402
from mgc.data.datasets import discover  # noqa: E402
from mgc.features.frontend import Frontend  # noqa: E402
from mgc.features.transforms import match_loudness  # noqa: E402
from mgc.models.bundle import Bundle, load_bundle  # noqa: E402
from mgc.models.inference import (  # noqa: E402
    PREDICT_BATCH,
    Predictor,
    calibrate,
    chunk_probabilities,
    track_probabilities,
)
from mgc.serve.export import export_bundle, load_exported  # noqa: E402
from mgc.serve.predict import BUNDLED_MODEL, Options, predict_local, predict_ray  # noqa: E402

OUT_JSON = Path(__file__).resolve().parent / "out" / "predict.json"
STAGES = ["read", "decode", "log-mel", "windows+norm", "model", "aggregate"]
TARGET_MS = 50.0  # per 30 s clip on one core

Stages = dict[str, float]  # stage → seconds, one clip


# ---------------------------------------------------------------------------------------------
# Machine and clips


def machine_info() -> dict[str, Any]:
    """mgc's own machine line (CPU model, native bf16, torch, torch's default threads: call it
    before the threads are set) and what this bench adds to it."""
    import onnxruntime

    return {
        **machine(),
        "cpu_count": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def clips_across_genres(data: str, n: int) -> list[Path]:
    """The first n clips taking one of each genre in turn, each genre's in sorted order, so that
    a short run still sees every genre's kind of audio."""
    by_genre: dict[str, list[Path]] = {}
    for t in discover(data):  # sorted by track id, so each genre's list is sorted
        by_genre.setdefault(t.genre, []).append(Path(t.path))
    lists = [by_genre[g] for g in sorted(by_genre)]
    order = [lst[i] for i in range(max(map(len, lists))) for lst in lists if i < len(lst)]
    return order[:n] if n > 0 else order


def describe(fast: FastPath) -> str:
    dtype = "bf16" if fast.amp_dtype is torch.bfloat16 else "fp32"
    return f"{dtype}+{'channels_last' if fast.channels_last else 'NCHW'}"


# ---------------------------------------------------------------------------------------------
# Part 1: one clip, stage by stage


class Laps:
    """Seconds between successive `lap` calls, by stage name."""

    def __init__(self) -> None:
        self.times: Stages = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.times[stage] = now - self._t
        self._t = now


def seed_pipeline(model: torch.nn.Module, frontend: Frontend) -> Callable[[Path], tuple]:
    """What the seed projects did, with the bundle's feature numbers (librosa's defaults for a
    default bundle: 22050 Hz, n_fft 2048, hop 512, 128 mels, top_db 80; for a musicnn bundle,
    what musicnn's extractor does: 16 kHz, n_fft 512, hop 256, 96 mels, log10(10000·x + 1))."""
    import librosa

    f = frontend.features
    model = model.eval()

    def run(path: Path) -> tuple[Stages, np.ndarray]:
        t = Laps()
        raw = path.read_bytes()
        t.lap("read")
        # From memory, so that reading the file stays in its own stage; libsndfile decodes
        # the same way from a path or from a file object.
        y, sr = librosa.load(io.BytesIO(raw), sr=f.sample_rate)
        if f.loudness_db is not None:  # a pure numpy gain: the same function mgc uses
            y = match_loudness(y, f.loudness_db)
        t.lap("decode")
        mel = librosa.feature.melspectrogram(
            y=y,
            sr=sr,
            n_fft=f.n_fft,
            hop_length=f.hop_length,
            n_mels=f.n_mels,
            fmin=f.f_min,
            fmax=f.f_max,
        )
        if f.scale == "log10_10000":  # musicnn's own extractor: librosa's mel, then this
            db = np.log10(10000.0 * mel + 1.0)
        else:
            db = librosa.power_to_db(mel, top_db=f.top_db)
        t.lap("log-mel")
        x = frontend.windows(db)  # the same windows and normalisation as mgc
        t.lap("windows+norm")
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1).numpy()
        t.lap("model")
        track = probs.mean(axis=0)
        t.lap("aggregate")
        return t.times, track

    return run


def mgc_pipeline(predictor: Predictor) -> Callable[[Path], tuple]:
    """`Predictor.predict_stream`'s calls one after the other, on a whole clip. For a file no
    longer than one segment (60 s) its `segments` is exactly `windows(logmel(wave))`."""
    frontend, classifier = predictor.frontend, predictor.classifier

    def run(path: Path) -> tuple[Stages, np.ndarray]:
        t = Laps()
        raw = path.read_bytes()
        t.lap("read")
        wave = frontend.decode(path, raw)
        t.lap("decode")
        logmel = frontend.logmel(wave)
        t.lap("log-mel")
        x = frontend.windows(logmel)
        t.lap("windows+norm")
        batches = ((x[i : i + PREDICT_BATCH],) for i in range(0, len(x), PREDICT_BATCH))
        probs, _ = chunk_probabilities(classifier, batches)
        t.lap("model")
        _, track = track_probabilities(probs, np.zeros(len(probs), dtype=np.int64))
        t.lap("aggregate")
        return t.times, track[0]

    return run


def whole_call(predictor: Predictor) -> Callable[[Path], tuple]:
    def run(path: Path) -> tuple[Stages, np.ndarray]:
        t0 = time.perf_counter()
        pred = predictor.predict_file(path)
        return {"predict_file": time.perf_counter() - t0}, pred.probabilities

    return run


@dataclasses.dataclass
class Runner:
    name: str
    run: Callable[[Path], tuple]
    samples: list[Stages] = dataclasses.field(default_factory=list)
    probs: dict[Path, np.ndarray] = dataclasses.field(default_factory=dict)
    wall: float = 0.0
    cpu: float = 0.0

    def timed(self, path: Path) -> None:
        w0, c0 = time.perf_counter(), time.process_time()
        stages, probs = self.run(path)
        self.wall += time.perf_counter() - w0
        self.cpu += time.process_time() - c0
        self.samples.append(stages)
        self.probs.setdefault(path, probs)

    def median_ms(self, stage: str) -> float:
        return 1000 * statistics.median(s[stage] for s in self.samples)

    def total_ms(self) -> float:
        return 1000 * statistics.median(sum(s.values()) for s in self.samples)


def per_clip(
    clips: list[Path], repeats: int, model_path: Path
) -> tuple[list[Runner], dict[str, Any]]:
    """Part 1. Each variant gets its own copy of the bundle: `TorchClassifier.on` moves the
    module it holds in place (`nn.Module.to`), so a Predictor on the channels-last path would
    otherwise leave the baseline's weights channels-last too."""
    cpu = torch.device("cpu")
    fast = choose_fast_path(cpu)  # what Predictor(bundle) picks on a machine without a GPU
    seed_bundle = load_bundle(model_path)
    if not isinstance(seed_bundle.model, torch.nn.Module):
        raise SystemExit(f"{model_path}: a scikit-learn bundle; this bench needs a CNN")
    mgc = Predictor(load_bundle(model_path), fast)

    with tempfile.TemporaryDirectory(prefix="mgc-bench-predict-") as tmp:
        t0 = time.perf_counter()
        exported = export_bundle(load_bundle(model_path), "onnx", Path(tmp) / "model.onnx")
        export_s = time.perf_counter() - t0
        # onnxruntime reads the whole file when the session is made; the folder can go after.
        onnx_bundle: Bundle = dataclasses.replace(
            load_bundle(model_path), classifier=load_exported(exported.path, threads=1)
        )
    onnx = Predictor(onnx_bundle, fast)

    runners = [
        Runner(
            "seed",
            seed_pipeline(seed_bundle.model, Frontend(seed_bundle.features, seed_bundle.chunks)),
        ),
        Runner("mgc", mgc_pipeline(mgc)),
        Runner("onnx", mgc_pipeline(onnx)),
        Runner("mgc predict_file", whole_call(mgc)),
        Runner("onnx predict_file", whole_call(onnx)),
    ]
    for r in runners:  # warm-up, not kept
        r.run(clips[0])
    for rep in range(repeats):
        for i, path in enumerate(clips):
            k = (i + rep) % len(runners)
            for r in runners[k:] + runners[:k]:
                r.timed(path)
    setup = {
        "mgc_fast_path": describe(fast),
        "onnx_export_s": export_s,
        "onnx_parity_max_abs": exported.parity,
        "onnx_opset": exported.opset,
        "temperature": mgc.bundle.temperature,
        "clip_seconds": statistics.median(
            len(mgc.frontend.decode(p)) / mgc.bundle.features.sample_rate for p in clips[:10]
        ),
    }
    return runners, setup


def report_per_clip(
    runners: list[Runner], setup: dict[str, Any], n_clips: int, repeats: int
) -> dict[str, Any]:
    by = {r.name: r for r in runners}
    columns = {
        "seed": "seed: librosa + fp32",
        "mgc": f"mgc: {setup['mgc_fast_path']}",
        "onnx": "mgc + ONNX",
    }
    totals = {v: by[v].total_ms() for v in columns}
    check = {v: by[f"{v} predict_file"].median_ms("predict_file") for v in ("mgc", "onnx")}
    base = totals["seed"]
    genres_top = {v: {p: int(np.argmax(q)) for p, q in by[v].probs.items()} for v in columns}
    agree = {
        v: sum(genres_top[v][p] == genres_top["seed"][p] for p in genres_top["seed"])
        for v in ("mgc", "onnx")
    }
    diff = {
        v: max(float(np.abs(by[v].probs[p] - by["seed"].probs[p]).max()) for p in by[v].probs)
        for v in ("mgc", "onnx")
    }
    # predict_file applies the bundle's temperature (a calibrated bundle); the stages leave
    # the probabilities as the model gives them, like the seed pipeline, so they are compared
    # after the same calibration.
    temperature = setup["temperature"]
    split_vs_call = {
        v: max(
            float(
                np.abs(
                    calibrate(by[v].probs[p], temperature) - by[f"{v} predict_file"].probs[p]
                ).max()
            )
            for p in by[v].probs
        )
        for v in ("mgc", "onnx")
    }

    width = max(len(c) for c in columns.values())
    print(
        f"\nPart 1: ms per clip ({setup['clip_seconds']:.1f} s), one thread, median of "
        f"{n_clips} clips x {repeats} repeat(s)"
    )
    print(f"{'stage':22s} | " + " | ".join(f"{c:>{width}s}" for c in columns.values()))
    print("-" * (25 + (width + 3) * len(columns)))
    rows: dict[str, dict[str, float | None]] = {}
    for stage in STAGES:
        rows[stage] = {v: by[v].median_ms(stage) for v in columns}
        print(f"{stage:22s} | " + " | ".join(f"{rows[stage][v]:{width}.2f}" for v in columns))
    print("-" * (25 + (width + 3) * len(columns)))
    lines = {
        "total (end to end)": {v: f"{totals[v]:{width}.2f}" for v in columns},
        "one predict_file call": {
            v: f"{check[v]:{width}.2f}" if v in check else f"{'-':>{width}s}" for v in columns
        },
        "ratio seed / variant": {v: f"{base / totals[v]:{width - 1}.2f}x" for v in columns},
        "cpu / wall": {
            v: f"{by[v].cpu / by[v].wall:{width}.2f}" if by[v].wall else "-" for v in columns
        },
        f"<= {TARGET_MS:g} ms a clip": {
            v: f"{'yes' if totals[v] <= TARGET_MS else 'no':>{width}s}" for v in columns
        },
    }
    for label, cells in lines.items():
        print(f"{label:22s} | " + " | ".join(cells[v] for v in columns))
    meets = [columns[v] for v in columns if totals[v] <= TARGET_MS]
    print(
        f"target <= {TARGET_MS:g} ms per 30 s clip on one core: "
        + (f"met by {', '.join(meets)}" if meets else "met by none")
    )
    print(
        "same top genre as the seed pipeline: "
        + ", ".join(f"{v} {agree[v]}/{len(genres_top['seed'])}" for v in agree)
        + "; max abs probability difference: "
        + ", ".join(f"{v} {diff[v]:.1e}" for v in diff)
        + "; stages vs predict_file: "
        + ", ".join(f"{v} {split_vs_call[v]:.1e}" for v in split_vs_call)
    )
    print(
        f"(ONNX export took {setup['onnx_export_s']:.1f} s, not timed; parity with eager fp32 "
        f"{setup['onnx_parity_max_abs']:.1e})"
    )
    return {
        "columns": columns,
        "stage_ms": rows,
        "total_ms": totals,
        "predict_file_ms": check,
        "ratio": {v: base / totals[v] for v in columns},
        "cpu_per_wall": {v: by[v].cpu / by[v].wall for v in columns if by[v].wall},
        "meets_target": {v: totals[v] <= TARGET_MS for v in columns},
        "top1_agrees_with_seed": agree,
        "max_abs_prob_diff_vs_seed": diff,
        "max_abs_prob_diff_stages_vs_predict_file": split_vs_call,
        "samples_s": {r.name: r.samples for r in runners},
        **setup,
    }


# ---------------------------------------------------------------------------------------------
# Part 2: a folder, in one process and over Ray


def folder_rates(files: list[Path], model_path: Path, cpus: int, threads: int) -> dict[str, Any]:
    import ray

    from mgc.core.cluster import init_ray

    torch.set_num_threads(threads)  # predict_local as `python -m mgc.predict` runs it
    bundle = load_bundle(model_path)
    opts = Options()
    n = len(files)

    def local(paths: list[Path]) -> tuple[float, list[dict]]:
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
            rows = list(predict_local(paths, bundle, model_path, opts, "cpu"))
        return time.perf_counter() - t0, rows

    def remote(paths: list[Path]) -> tuple[float, list[dict]]:
        t0 = time.perf_counter()
        rows = list(predict_ray(paths, model_path, opts))
        return time.perf_counter() - t0, rows

    # predict_local first, with Ray not yet started, so that its idle processes take nothing.
    local(files[:1])
    local_s, local_rows = local(files)

    k = min(cpus, n)
    init_s = init_ray(None, cpus, quiet=True)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        warm_s, _ = remote(files[:k])
        small_s, _ = remote(files[:k])  # one file a worker: mostly the pool's own start-up
        ray_s, ray_rows = remote(files)
    finally:
        ray.shutdown()

    errors = sum("error" in r for r in local_rows) + sum("error" in r for r in ray_rows)
    same = sum(
        a.get("top_k", [{}])[0].get("label") == b.get("top_k", [{}])[0].get("label")
        for a, b in zip(local_rows, ray_rows, strict=True)
    )
    # The rate beyond the per-call start-up, from the two call sizes; only where the big call
    # is clearly longer, else noise in the small call's time would swing it wildly.
    separable = n >= 4 * k and ray_s - small_s >= 0.25 * ray_s
    marginal = (n - k) / (ray_s - small_s) if separable else None
    print(
        f"\nPart 2: {n} files, predict_local ({threads} torch threads) vs predict_ray ({cpus} CPUs)"
    )
    print(f"predict_local, one process : {n / local_s:7.1f} files/s ({local_s:.1f} s)")
    print(f"predict_ray, Ray up        : {n / ray_s:7.1f} files/s ({ray_s:.1f} s)")
    print(f"ratio ray / local          : {local_s / ray_s:7.2f}x")
    print(
        f"Ray start-up (not in rates): {init_s:.1f} s ray.init + {warm_s:.1f} s first call "
        f"on {k} file(s); every call starts its own actors: a call on {k} file(s) took "
        f"{small_s:.1f} s"
        + (
            f", so beyond that predict_ray does {marginal:.1f} files/s "
            f"({marginal * local_s / n:.2f}x local)"
            if marginal
            else " (too few files to tell the rate beyond it)"
        )
    )
    print(f"same top genre local vs Ray: {same}/{n}; error rows: {errors}")
    return {
        "files": n,
        "cpus": cpus,
        "local_threads": threads,
        "local_s": local_s,
        "ray_s": ray_s,
        "local_files_per_s": n / local_s,
        "ray_files_per_s": n / ray_s,
        "ratio_ray_over_local": local_s / ray_s,
        "ray_init_s": init_s,
        "ray_first_call_s": warm_s,
        "ray_small_call_files": k,
        "ray_small_call_s": small_s,
        "ray_marginal_files_per_s": marginal,
        "top1_same": same,
        "error_rows": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="folder-per-genre dataset (e.g. GTZAN)")
    parser.add_argument("--model", default=str(BUNDLED_MODEL), help="bundle or run folder")
    parser.add_argument("--limit", type=int, default=40, help="clips for part 1 (0 = all)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the clips")
    parser.add_argument("--ray-files", type=int, default=64, help="clips for part 2 (0 = skip)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for the local Ray")
    parser.add_argument("--out", default=str(OUT_JSON))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    model_path = Path(args.model)
    if not model_path.exists():
        parser.error(f"{model_path}: no such bundle (train one, or pass --model)")

    from threadpoolctl import threadpool_limits

    info = machine_info()
    threads = int(info["threads"])
    print(
        f"{info['cpu']} | native bf16: {'yes' if info['native_bf16'] else 'no'} | "
        f"torch {info['torch']} | onnxruntime {info['onnxruntime']} | threads: 1 in part 1, "
        f"{threads} for predict_local, {args.cpus} Ray workers x 1 | "
        f"load average {info['load_average']}"
        + (f" | GPU {info['gpu']} (not used)" if "gpu" in info else "")
    )
    clips = clips_across_genres(args.data, args.limit)
    print(f"model {model_path}; {len(clips)} clips from {args.data}")

    # One thread everywhere: torch, and numpy's BLAS (librosa's mel product) through
    # threadpoolctl; onnxruntime gets its one thread from OnnxClassifier.
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        runners, setup = per_clip(clips, args.repeats, model_path)
    part1 = report_per_clip(runners, setup, len(clips), args.repeats)

    part2 = None
    if args.ray_files > 0:
        files = clips_across_genres(args.data, args.ray_files)
        part2 = folder_rates(files, model_path, args.cpus, threads)

    info["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": info,
        "settings": {
            "data": args.data,
            "model": str(model_path),
            "clips": len(clips),
            "repeats": args.repeats,
            "ray_files": args.ray_files,
            "cpus": args.cpus,
            "target_ms": TARGET_MS,
        },
        "per_clip_one_thread": part1,
        "folder": part2,
    }
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
