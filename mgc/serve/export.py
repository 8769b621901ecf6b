"""Export a bundle's CNN for serving, as TorchScript or ONNX: model input in, probabilities out.

    python -m mgc.export BUNDLE --format torchscript|onnx [--out PATH] [--opset N]

What the exported graph is
    Input  `logmel`: float32 (batch, 1, n_mels, window_frames); the batch size is free, the
           other sizes are fixed by the bundle.
    Output `probabilities`: float32 (batch, n_classes), the softmax of the logits (it is part
           of the graph), columns in the order of the bundle's genres.

What a server must do before calling it (the log-mel front end is NOT in the graph)
    `mgc.features.frontend.Frontend(bundle.features, bundle.chunks)` does all of it in Python:
    `frontend.windows(frontend.file_logmel(path))` is the exact model input of a file. Written
    out, with the numbers of each bundle in the `<file>.json` / `<file>.README.txt` written
    beside the exported file (and in the file's own metadata):

    1. Decode to mono (mean of the channels), float32 in [-1, 1], resampled to
       `features.sample_rate` (mgc uses soxr at its default, high quality). With
       `features.loudness_db`, scale the wave to that RMS level (dBFS), nothing clipped.
    2. Power spectrogram: n_fft-point STFT, hop `hop_length`, periodic Hann window of n_fft,
       centred frames (n_fft // 2 zeros padded at each end), |X|²; 1 + samples // hop frames.
    3. Mel: `n_mels` Slaney-scale triangular filters with Slaney area normalisation between
       f_min and f_max (f_max null: sample_rate / 2), applied to the power spectrogram; with
       `features.lowpass_hz`, the filters' weights on STFT bins above it are zero.
    4. Compression, by `features.scale`. "db": 10·log10(max(power, 1e-10)); with `top_db` set,
       values below (the whole track's maximum − top_db) are raised to it. The floor is taken
       per track, before windowing. This matches
       librosa.power_to_db(librosa.feature.melspectrogram(...)) with its defaults.
       "log10_10000" (musicnn): log10(10000·power + 1), no floor.
    5. Windows: `window_frames` frames (round(window_s · sample_rate / hop_length)) starting
       every `step_frames` (round(window_frames · (1 − overlap))); a tail shorter than a
       window is dropped, and a track shorter than one window is padded on the right with its
       own minimum value to give one window.
    6. With `chunks.normalize` (the default), each window is standardised on its own over
       (n_mels, frames): (x − mean) / (std + 1e-5), population std.
    7. A track's probabilities are the mean of its windows' probabilities.

`load_exported` gives an exported file back as a `Classifier`, so `mgc.models.inference.Predictor`
runs it: `Predictor(dataclasses.replace(bundle, classifier=load_exported(path)))`.

TorchScript is deprecated in torch 2.14 (`torch.jit` warns on every call); it is kept here
for libtorch / TorchServe deployments, and ONNX (onnxruntime) is the format to prefer.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mgc.core.config import ConfigError
from mgc.core.device import CPU_FP32, FastPath
from mgc.core.fsio import atomic_write
from mgc.features.transforms import Windowing, normalize_chunks
from mgc.models import is_sklearn
from mgc.models.bundle import BUNDLE_DIR, Bundle

FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}
INPUT_NAME = "logmel"
OUTPUT_NAME = "probabilities"
META_KEY = "mgc.json"  # TorchScript extra file / ONNX metadata_props key holding the contract
MIN_OPSET = 18  # the torch.export-based ONNX exporter writes nothing older
# Batch sizes of the export-time parity check: 1 and one above the example batch of 2, so a
# graph that kept the example's batch size fails instead of passing by accident.
PARITY_BATCHES = (1, 5)
# Max abs probability difference the CLI accepts. Both runtimes compute in fp32 with other
# kernels and summation orders (onnxruntime may fold BatchNorm into the convs), which moves
# probabilities by ~1e-7 on the models here; a wrong graph (no softmax, BatchNorm in training
# mode, active dropout) moves them by 1e-2 or more. 1e-4 sits between with room for deep
# models on other CPUs.
PARITY_ATOL = 1e-4


class ExportError(ConfigError):
    """A bundle, option or file that cannot be exported or loaded; one line.

    A ConfigError so that `run_command` reports it as a user error (one line, exit 2)."""


class Probabilities(nn.Module):
    """The bundle's model with the softmax the eager `TorchClassifier` applies outside it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(logmel), dim=1)


@contextmanager
def _quiet_jit() -> Iterator[None]:
    # torch.jit warns on every script/trace/save/load call that it is deprecated; the export
    # and the adapter use it on purpose (see the module docstring), once is in the docs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit", category=FutureWarning)
        yield


def _as_contiguous_fp32(x: torch.Tensor) -> torch.Tensor:
    # Predictor may hand over channels-last or bf16-placed inputs; exported graphs run on the
    # CPU in fp32 in the default memory format.
    return x.detach().to("cpu", torch.float32).contiguous()


def _to_probabilities(out: np.ndarray, n_classes: int) -> np.ndarray:
    if out.ndim != 2 or (n_classes > 0 and out.shape[1] != n_classes):
        raise ValueError(f"exported model returned shape {out.shape}, expected (B, {n_classes})")
    return out.astype(np.float64)


class TorchScriptClassifier:
    """A TorchScript file written by `export_bundle`, run by torch on the CPU in fp32."""

    def __init__(self, path: str | Path, n_classes: int | None = None):
        self.path = Path(path)
        extra = {META_KEY: ""}
        with _quiet_jit():
            self.model = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
        self.model.eval()
        self.meta = json.loads(extra[META_KEY]) if extra[META_KEY] else {}
        self.n_classes = _n_classes(self.path, self.meta, n_classes)

    def on(self, fast: FastPath) -> TorchScriptClassifier:
        return self  # exported for the CPU in fp32, whatever the Predictor's device

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            out = self.model(_as_contiguous_fp32(x))
        return _to_probabilities(out.numpy(), self.n_classes)

    def save(self, folder: Path) -> None:
        atomic_write(Path(folder) / self.path.name, self.path.read_bytes())

    @property
    def params(self) -> int:
        if "params" in self.meta:
            return int(self.meta["params"])
        return sum(p.numel() for p in self.model.parameters())


class OnnxClassifier:
    """An ONNX file written by `export_bundle`, run by onnxruntime's CPUExecutionProvider.

    `threads` sets onnxruntime's intra-op threads (None: its default, one per core); 1 keeps a
    server process to one core, or a test beside other jobs from contending for them all."""

    def __init__(self, path: str | Path, n_classes: int | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ExportError(f"{path}: running ONNX models needs onnxruntime ({exc})") from exc
        self.path = Path(path)
        self.threads = threads
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings name graph internals
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.model = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types, unrelated to OSError
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no such file") from exc
            raise ExportError(f"{self.path}: onnxruntime cannot load it ({exc})") from exc
        meta = self.model.get_modelmeta().custom_metadata_map.get(META_KEY)
        self.meta = json.loads(meta) if meta else {}
        self.input_name = self.model.get_inputs()[0].name
        self.n_classes = _n_classes(self.path, self.meta, n_classes)

    def on(self, fast: FastPath) -> OnnxClassifier:
        return self  # the CPU provider only, in fp32

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        (out,) = self.model.run(None, {self.input_name: _as_contiguous_fp32(x).numpy()})
        return _to_probabilities(out, self.n_classes)

    def save(self, folder: Path) -> None:
        atomic_write(Path(folder) / self.path.name, self.path.read_bytes())

    @property
    def params(self) -> int:
        # onnxruntime does not list the weights; -1 (unknown) for files written elsewhere.
        return int(self.meta.get("params", -1))


def _n_classes(path: Path, meta: dict[str, Any], given: int | None) -> int:
    stored = meta.get("n_classes")
    if given is not None and stored is not None and int(given) != int(stored):
        raise ExportError(f"{path}: exported for {stored} classes, but n_classes={given}")
    if given is None and stored is None:
        raise ExportError(f"{path}: no mgc metadata in this file; pass n_classes")
    return int(given if given is not None else stored)


def load_exported(
    path: str | Path, n_classes: int | None = None, threads: int | None = None
) -> TorchScriptClassifier | OnnxClassifier:
    """The exported model in `path` as a `Classifier` (TorchScript or ONNX, told apart by the
    file's content). `n_classes` is read from the file's metadata when not given, and checked
    against it when given; `threads` applies to ONNX only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if zipfile.is_zipfile(path):  # TorchScript archives are zip files, ONNX protobufs are not
        return TorchScriptClassifier(path, n_classes)
    return OnnxClassifier(path, n_classes, threads)


def serving_contract(bundle: Bundle) -> dict[str, Any]:
    """What the exported graph takes and returns, and the preprocessing a server must apply."""
    f, c = bundle.features, bundle.chunks
    windowing = Windowing.from_config(c, f)
    eps = inspect.signature(normalize_chunks).parameters["eps"].default
    if f.scale == "log10_10000":  # musicnn's compression: no floor
        compress = {"formula": "log10(10000 * mel_power + 1)", "top_db": None, "floor": "none"}
    else:
        floor = (
            f"values below (the whole track's maximum - {f.top_db} dB) are raised to it; "
            "taken per track before windowing"
            if f.top_db is not None
            else "none"
        )
        compress = {
            "formula": "10 * log10(max(mel_power, 1e-10))",
            "top_db": f.top_db,
            "floor": floor,
        }
    level = (
        {
            "loudness_db": f.loudness_db,
            "formula": "wave * 10**(loudness_db / 20) / rms(wave), rms over the whole file (each "
            "60 s segment of a longer stream); nothing clipped; a silent wave stays as it is",
        }
        if f.loudness_db is not None
        else {"loudness_db": None, "formula": "none: the wave as decoded"}
    )
    return {
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 1, f.n_mels, windowing.window],
            "dtype": "float32",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", len(bundle.genres)],
            "dtype": "float32",
            "meaning": "softmax probabilities (inside the graph), columns in `genres` order",
        },
        "genres": list(bundle.genres),
        "n_classes": len(bundle.genres),
        "params": int(bundle.classifier.params),
        "model": dataclasses.asdict(bundle.model_cfg),
        "frontend": "mgc.features.frontend.Frontend(bundle.features, bundle.chunks): "
        "frontend.windows(frontend.file_logmel(path)) is the model input of a file",
        "preprocessing": {
            "decode": "mono (mean of channels), float32 in [-1, 1], resampled with soxr (HQ)",
            "sample_rate": f.sample_rate,
            "level": level,
            "stft": {
                "n_fft": f.n_fft,
                "hop_length": f.hop_length,
                "win_length": f.n_fft,
                "window": "periodic Hann",
                "center": True,
                "pad": f"{f.n_fft // 2} zeros at each end",
                "power": 2.0,
                "frames": "1 + n_samples // hop_length",
            },
            "mel": {
                "n_mels": f.n_mels,
                "f_min": f.f_min,
                "f_max": f.f_max if f.f_max is not None else f.sample_rate / 2,
                "scale": "slaney",
                "norm": "slaney",
                "lowpass_hz": f.lowpass_hz,
                "lowpass": "the filters' weights on STFT bins above lowpass_hz are 0 (null: none)",
            },
            "db": {"scale": f.scale, **compress},
            "windows": {
                "window_s": c.window_s,
                "overlap": c.overlap,
                "window_frames": windowing.window,
                "step_frames": windowing.step,
                "tail": "a remainder shorter than a window is dropped",
                "short_track": "padded on the right to one window with the track's minimum",
            },
            "normalize": {
                "enabled": bool(c.normalize),
                "formula": f"per window over (n_mels, frames): (x - mean) / (std + {eps}), "
                "population std",
            },
            "aggregate": "a track's probabilities are the mean of its windows' probabilities",
            "calibrate": {
                "temperature": bundle.temperature,
                "formula": "track scores = softmax(log(track probabilities) / temperature); "
                "1 leaves them as they are",
                "reject_below": bundle.reject_below,
                "reject": 'answer "none of the ten" when the top track score is below '
                "reject_below (null: no threshold was fitted; see mgc.calibrate)",
            },
        },
    }


def _readme(contract: dict[str, Any], exported: Path, fmt: str) -> str:
    p, i, o = contract["preprocessing"], contract["input"], contract["output"]
    st, mel, db, w, norm = p["stft"], p["mel"], p["db"], p["windows"], p["normalize"]
    run = (
        f'torch.jit.load("{exported.name}")(x)'
        if fmt == "torchscript"
        else f'onnxruntime.InferenceSession("{exported.name}").run(None, {{"{i["name"]}": x}})'
    )
    lines = [
        f"{exported.name}: {contract['model']['name']} genre classifier ({fmt}), "
        f"{contract['params']:,} parameters",
        "",
        f"Input  {i['name']}: {i['dtype']} {tuple(i['shape'])} (batch size free)",
        f"Output {o['name']}: {o['dtype']} {tuple(o['shape'])}, {o['meaning']}",
        f"Genres: {', '.join(contract['genres'])}",
        f"Run: {run}",
        "",
        "The log-mel front end is NOT in the graph. Apply, in order:",
        f"1. decode: {p['decode']}, at {p['sample_rate']} Hz; level: {p['level']['formula']}"
        + (
            f", loudness_db {p['level']['loudness_db']:g}"
            if p["level"]["loudness_db"] is not None
            else ""
        ),
        f"2. STFT: n_fft {st['n_fft']}, hop {st['hop_length']}, {st['window']} window of "
        f"{st['win_length']} samples, centred ({st['pad']}), power {st['power']}; "
        f"{st['frames']} frames",
        f"3. mel: {mel['n_mels']} {mel['scale']}-scale filters, {mel['norm']} norm, "
        f"{mel['f_min']}-{mel['f_max']} Hz"
        + (f"; {mel['lowpass']}, lowpass_hz {mel['lowpass_hz']:g}" if mel["lowpass_hz"] else ""),
        f"4. compress: {db['formula']}; top_db {db['top_db']}: floor {db['floor']}",
        f"5. windows of {w['window_frames']} frames ({w['window_s']} s) every "
        f"{w['step_frames']} frames (overlap {w['overlap']}); {w['tail']}; "
        f"a shorter track is {w['short_track']}",
        "6. normalise: "
        + (norm["formula"] if norm["enabled"] else "none (the bundle was trained without it)"),
        f"7. {p['aggregate']}",
        f"8. calibrate: {p['calibrate']['formula']}, temperature {p['calibrate']['temperature']:g}"
        + (
            f"; {p['calibrate']['reject']}, reject_below {p['calibrate']['reject_below']:g}"
            if p["calibrate"]["reject_below"] is not None
            else ""
        ),
        "",
        f"In Python, {contract['frontend']}.",
        "Every number above is also in the .json file beside this one.",
        "",
    ]
    return "\n".join(lines)


def default_output(bundle_path: str | Path, fmt: str) -> Path:
    """`<bundle folder>/model.ts` or `model.onnx`; a run folder's bundle is found as
    `load_bundle` finds it."""
    path = Path(bundle_path)
    if (path / BUNDLE_DIR).is_dir():
        path = path / BUNDLE_DIR
    return path / FORMATS[fmt]


def random_inputs(bundle: Bundle, batch: int, seed: int = 0) -> torch.Tensor:
    """(batch, 1, n_mels, window_frames) standard-normal model inputs: the distribution of
    per-window-normalised log-mels, enough to compare two runs of one graph."""
    window = Windowing.from_config(bundle.chunks, bundle.features).window
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, bundle.features.n_mels, window, generator=g)


def parity(
    bundle: Bundle, exported: TorchScriptClassifier | OnnxClassifier, inputs: torch.Tensor
) -> float:
    """Max abs difference between the exported model's probabilities and the bundle's eager
    model's, in fp32 on the CPU, on the same model inputs."""
    eager = bundle.classifier.on(CPU_FP32).predict_proba(inputs)
    return float(np.abs(exported.predict_proba(inputs) - eager).max())


def _torch_model(bundle: Bundle) -> nn.Module:
    model = bundle.model
    if is_sklearn(bundle.model_cfg.name) or not isinstance(model, nn.Module):
        raise ExportError(
            f"model {bundle.model_cfg.name} is a scikit-learn pipeline: only torch models "
            "export to TorchScript or ONNX"
        )
    return model


def _write_torchscript(wrapped: nn.Module, example: torch.Tensor, path: Path, meta: str) -> None:
    with _quiet_jit():
        try:
            scripted = torch.jit.script(wrapped)
        except Exception:
            # Scripting fails on Python the TorchScript compiler lacks (TimeAverageMLP's shape
            # check formats a tuple); tracing records the same ops for the fixed input shape,
            # and the parity check at two batch sizes catches a trace that fixed the batch.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                scripted = torch.jit.trace(wrapped, example)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf, _extra_files={META_KEY: meta})
    atomic_write(path, buf.getvalue())


def _write_onnx(
    wrapped: nn.Module, example: torch.Tensor, path: Path, meta: str, opset: int | None
) -> int:
    if opset is not None and opset < MIN_OPSET:
        # The exporter would fall back to opset 18 with a traceback in the log, not fail.
        raise ExportError(f"--opset {opset}: the torch.onnx exporter writes opset {MIN_OPSET}+")
    try:
        import onnx  # noqa: F401  (the exporter's own imports fail with less helpful messages)
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the onnx and onnxscript packages ({exc})") from exc
    program = torch.onnx.export(
        wrapped,
        (example,),
        dynamo=True,
        verbose=False,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", min=1)}},
    )
    proto = program.model_proto
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset is not None and written != opset:
        raise ExportError(f"--opset {opset}: the exporter wrote opset {written} instead")
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, meta
    proto.producer_name = "mgc.export"
    # One self-contained file (weights inside, not in a .data file beside it): the models here
    # are far below protobuf's 2 GiB limit, and one file is one atomic write.
    atomic_write(path, proto.SerializeToString())
    return int(written)


@dataclass
class ExportResult:
    path: Path  # the exported model
    format: str
    parity: float  # max abs probability difference vs eager fp32, random inputs
    n_inputs: int  # how many random inputs `parity` was measured on
    sidecars: list[Path]  # <file>.json and <file>.README.txt
    opset: int | None = None


def export_bundle(
    bundle: Bundle, fmt: str, out: str | Path, opset: int | None = None, seed: int = 0
) -> ExportResult:
    """Write `bundle`'s model as `fmt` to `out` (atomically), load it back, measure parity
    against the eager fp32 model on random inputs of batch sizes 1 and 5, and write the
    serving contract beside it as `<out>.json` and `<out>.README.txt`."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    if opset is not None and fmt != "onnx":
        raise ExportError("--opset applies to --format onnx only")
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; --out takes a file name")
    model = _torch_model(bundle)
    wrapped = Probabilities(model).eval()
    contract = serving_contract(bundle)
    meta = json.dumps({"format": fmt, "torch": torch.__version__, **contract})
    # Batch 2: torch.export treats sizes 0 and 1 as special and would pin the batch to them.
    example = random_inputs(bundle, 2, seed)
    was_training = model.training
    model.eval()
    try:
        if fmt == "torchscript":
            _write_torchscript(wrapped, example, out, meta)
            written_opset = None
        else:
            written_opset = _write_onnx(wrapped, example, out, meta, opset)
    finally:
        model.train(was_training)

    exported = load_exported(out, len(bundle.genres), threads=1)
    batches = [random_inputs(bundle, b, seed + 1 + i) for i, b in enumerate(PARITY_BATCHES)]
    diff = max(parity(bundle, exported, x) for x in batches)

    sidecar = {
        **contract,
        "format": fmt,
        "file": out.name,
        "torch": torch.__version__,
        "opset": written_opset,
        "parity": {
            "max_abs_diff": diff,
            "vs": "eager fp32 on the CPU",
            "batches": list(PARITY_BATCHES),
        },
    }
    json_path = out.with_name(out.name + ".json")
    readme_path = out.with_name(out.name + ".README.txt")
    atomic_write(json_path, json.dumps(sidecar, indent=2) + "\n")
    atomic_write(readme_path, _readme(contract, out, fmt))
    return ExportResult(
        out, fmt, diff, sum(PARITY_BATCHES), [json_path, readme_path], written_opset
    )
