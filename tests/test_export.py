"""Exported TorchScript / ONNX models against the eager fp32 model, and the export CLI."""

import dataclasses
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mgc.core.config import ChunkConfig, FeatureConfig, ModelConfig, load_config
from mgc.core.device import CPU_FP32
from mgc.data.prepare import prepare
from mgc.export import main
from mgc.features.frontend import Frontend
from mgc.models import build_model
from mgc.models.adapter import TorchClassifier
from mgc.models.bundle import Bundle, load_bundle
from mgc.models.inference import Predictor
from mgc.run.train import fit
from mgc.serve.export import (
    ExportError,
    OnnxClassifier,
    TorchScriptClassifier,
    export_bundle,
    load_exported,
    parity,
    random_inputs,
    serving_contract,
)

# TorchScript needs only torch; ONNX tests skip, with the reason, where its packages are missing.
HAVE_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="needs onnx, onnxscript and onnxruntime")

# Max abs probability difference between an exported graph and the eager fp32 model. Both run
# in fp32 on the CPU; they differ only in kernels and summation order (onnxruntime may fold
# BatchNorm into the convs), which moves probabilities by ~1e-7 on this model. A real export
# fault (softmax missing or applied twice, BatchNorm in training mode, dropout on, a batch
# size frozen into the graph) moves them by 1e-2 or more. 1e-5 is 100× above the first and
# 1000× below the second.
ATOL = 1e-5
FORMATS = ("torchscript", "onnx")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A width-8 cnn4 trained for 2 epochs on synthetic tones (fp32), and a logreg on the same
    features: real bundles, loaded as a server would load them."""
    from conftest import tone, write_audio

    tmp = tmp_path_factory.mktemp("export")
    root = tmp / "ds"
    for g, base in (("blues", 220.0), ("metal", 880.0), ("pop", 3520.0)):
        for i in range(4):
            write_audio(root / g / f"{g}.{i:05d}.wav", tone(base * (1 + 0.05 * i), 4.0, seed=i))
    common = [
        f"data.root={root}",
        f"cache.dir={tmp / 'cache'}",
        "chunks.window_s=1.0",
        "chunks.overlap=0.5",
        "train.threads=1",
        "train.amp=off",
    ]
    out = {}
    for name, extra in (
        ("cnn4", ["model.name=cnn4", "model.width=8", "train.epochs=2"]),
        ("logreg", ["model.name=logreg"]),
    ):
        cfg = load_config(None, common + extra)
        prepare(cfg, use_ray=False)  # the second model finds the features in the cache
        fit(cfg, run_dir=tmp / name)
        out[name] = tmp / name
    return out


@pytest.fixture(scope="module")
def bundle(runs) -> Bundle:
    return load_bundle(runs["cnn4"])


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory):
    """format → (ExportResult, classifier loaded from the file), each exported once."""
    folder, done = tmp_path_factory.mktemp("exported"), {}

    def get(fmt: str) -> tuple:
        if fmt == "onnx" and not HAVE_ONNX:
            pytest.skip("needs onnx, onnxscript and onnxruntime")
        if fmt not in done:
            result = export_bundle(
                bundle, fmt, folder / ("m.ts" if fmt == "torchscript" else "m.onnx")
            )
            done[fmt] = result, load_exported(result.path, len(bundle.genres), threads=1)
        return done[fmt]

    return get


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_matches_eager_at_batch_sizes_1_and_5(bundle, exported, fmt):
    result, classifier = exported(fmt)
    assert isinstance(classifier, TorchScriptClassifier if fmt == "torchscript" else OnnxClassifier)
    assert result.parity <= ATOL  # measured by export_bundle itself, on its own inputs
    eager = bundle.classifier.on(CPU_FP32)
    for batch in (1, 5):
        x = random_inputs(bundle, batch, seed=100 + batch)
        assert x.shape == (batch, 1, 128, 43)  # 1 s windows at 22050 Hz / hop 512
        probs = classifier.predict_proba(x)
        assert probs.shape == (batch, 3) and probs.dtype == np.float64
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)  # softmax is in the graph
        np.testing.assert_allclose(probs, eager.predict_proba(x), rtol=0, atol=ATOL)
        assert parity(bundle, classifier, x) <= ATOL
    # The adapter reports what the bundle does, and runs on the CPU whatever it is asked.
    assert classifier.n_classes == 3 and classifier.params == bundle.classifier.params > 0
    assert classifier.on(CPU_FP32) is classifier


def test_onnx_graph_takes_a_free_batch_of_fixed_model_inputs(exported):
    result, classifier = exported("onnx")
    (inp,), (out,) = classifier.model.get_inputs(), classifier.model.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("logmel", "tensor(float)", ["batch", 1, 128, 43])
    assert (out.name, out.shape) == ("probabilities", ["batch", 3])
    assert result.opset is not None and result.opset >= 18


def test_serving_notes_give_the_preprocessing_numbers(bundle, exported):
    result, _ = exported("onnx")
    json_path, readme_path = result.sidecars
    assert json_path.name == "m.onnx.json" and readme_path.name == "m.onnx.README.txt"
    notes = json.loads(json_path.read_text())
    pre = notes["preprocessing"]
    assert notes["genres"] == bundle.genres == ["blues", "metal", "pop"]
    assert pre["sample_rate"] == 22050 and pre["mel"]["n_mels"] == 128
    assert (pre["stft"]["n_fft"], pre["stft"]["hop_length"]) == (2048, 512)
    assert pre["db"]["top_db"] == 80.0 and pre["normalize"]["enabled"] is True
    assert (pre["windows"]["window_frames"], pre["windows"]["step_frames"]) == (43, 22)
    assert notes["parity"]["max_abs_diff"] == result.parity
    # The stated input is what the Python front end produces for a 3 s wave.
    frontend = Frontend(bundle.features, bundle.chunks)
    wave = np.random.default_rng(0).normal(0, 0.1, 3 * 22050).astype(np.float32)
    x = frontend.windows(frontend.logmel(wave))
    assert list(x.shape[1:]) == notes["input"]["shape"][1:]
    readme = readme_path.read_text()
    assert "NOT in the graph" in readme and "windows of 43 frames" in readme
    assert "n_fft 2048, hop 512" in readme and "(std + 1e-05)" in readme
    # The same contract travels inside the model file, for a copy made without the notes.
    assert exported("onnx")[1].meta["preprocessing"] == pre


@pytest.mark.integration
@pytest.mark.parametrize("fmt", FORMATS)
def test_predictor_with_exported_model_matches_eager_on_real_clips(bundle, exported, gtzan, fmt):
    # The model was trained on synthetic tones, so its genres say nothing about these clips:
    # the test is that the graph gives the eager model's numbers on real log-mels.
    clips = [sorted((gtzan / g).glob("*.*"))[0] for g in ("blues", "metal")]
    eager = Predictor(bundle, CPU_FP32)
    served = Predictor(dataclasses.replace(bundle, classifier=exported(fmt)[1]), CPU_FP32)
    for clip in clips:
        want, got = eager.predict_file(clip), served.predict_file(clip)
        assert len(got.windows) == len(want.windows) > 50  # ~30 s in 1 s windows, half overlap
        np.testing.assert_allclose(
            got.chunk_probabilities, want.chunk_probabilities, rtol=0, atol=ATOL
        )
        np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=0, atol=ATOL)


def test_unscriptable_model_is_traced_with_a_free_batch(tmp_path):
    # TimeAverageMLP's shape check does not compile as TorchScript; the export traces it, and
    # parity at batch sizes 1 and 5 shows the trace did not keep the example's batch of 2.
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp"), 3, 128).eval()
    mlp = Bundle(
        TorchClassifier(model),
        ["a", "b", "c"],
        FeatureConfig(),
        ChunkConfig(window_s=1.0),
        ModelConfig(name="mlp"),
        {},
    )
    result = export_bundle(mlp, "torchscript", tmp_path / "mlp.ts")
    assert result.parity <= ATOL
    x = random_inputs(mlp, 7, seed=3)
    np.testing.assert_allclose(
        load_exported(result.path).predict_proba(x), mlp.classifier.predict_proba(x), atol=ATOL
    )


def test_load_exported_checks_the_class_count(exported):
    path = exported("torchscript")[0].path
    with pytest.raises(ExportError, match="exported for 3 classes"):
        load_exported(path, n_classes=10)


def _parity_printed(stdout: str) -> float:
    return float(re.search(r"max abs diff (\S+)", stdout).group(1))


@needs_onnx
def test_cli_writes_into_the_bundle_by_default(runs, tmp_path, capsys):
    bundle_dir = shutil.copytree(runs["cnn4"] / "bundle", tmp_path / "bundle")
    assert main([str(bundle_dir), "--format", "onnx"]) == 0
    stdout = capsys.readouterr().out
    for name in ("model.onnx", "model.onnx.json", "model.onnx.README.txt"):
        assert (bundle_dir / name).is_file()
    assert f"wrote {bundle_dir / 'model.onnx'}" in stdout
    assert _parity_printed(stdout) <= ATOL
    # The exported file runs on its own, with the class count from its metadata.
    x = random_inputs(load_bundle(bundle_dir), 2)
    assert load_exported(bundle_dir / "model.onnx", threads=1).predict_proba(x).shape == (2, 3)


def test_cli_out_path_and_torchscript(runs, tmp_path, capsys):
    out = tmp_path / "serve" / "genre.ts"
    assert main([str(runs["cnn4"]), "--format", "torchscript", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert out.is_file() and (tmp_path / "serve" / "genre.ts.README.txt").is_file()
    assert not (runs["cnn4"] / "bundle" / "model.ts").exists()  # --out means only there
    assert _parity_printed(stdout) <= ATOL


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}", "--format", "onnx"], "no model bundle here"),
        (["{logreg}", "--format", "onnx"], "scikit-learn pipeline"),
        (["{cnn4}", "--format", "tflite"], "unknown format 'tflite'"),
        (["{cnn4}", "--format", "onnx", "--opset", "13"], "opset 18+"),
        (["{cnn4}", "--format", "torchscript", "--opset", "18"], "onnx only"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(runs, tmp_path, capsys, args, message):
    paths = {"missing": tmp_path / "nope", "logreg": runs["logreg"], "cnn4": runs["cnn4"]}
    argv = [a.format(**paths) for a in args]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not any((paths["cnn4"] / "bundle" / n).exists() for n in ("model.ts", "model.onnx"))


@pytest.mark.parametrize(
    "features",
    [
        FeatureConfig(),  # the default: dB with a per-track floor
        # musicnn's front end, levelled and low-passed, as the shipped model may be
        FeatureConfig(
            sample_rate=16000,
            n_fft=512,
            hop_length=256,
            n_mels=96,
            scale="log10_10000",
            loudness_db=-17.0,
            lowpass_hz=3600.0,
        ),
    ],
)
def test_the_written_contract_reproduces_the_front_end(bundle, features):
    """A server that knows only the contract's numbers and words (librosa for the STFT and the
    filters) computes the log-mel mgc's front end computes: level, low-pass and compression
    included."""
    import librosa

    pre = serving_contract(dataclasses.replace(bundle, features=features))["preprocessing"]
    sr, st, mel, db = pre["sample_rate"], pre["stft"], pre["mel"], pre["db"]
    wave = np.random.default_rng(1).normal(0, 0.05, 2 * sr).astype(np.float32)
    wave += 0.3 * np.sin(2 * np.pi * 440 * np.arange(wave.size) / sr).astype(np.float32)
    level = pre["level"]["loudness_db"]
    y = wave if level is None else wave * 10 ** (level / 20) / np.sqrt(np.mean(wave**2))
    power = (
        np.abs(
            librosa.stft(
                y, n_fft=st["n_fft"], hop_length=st["hop_length"], center=True, pad_mode="constant"
            )
        )
        ** 2
    )
    fb = librosa.filters.mel(
        sr=sr,
        n_fft=st["n_fft"],
        n_mels=mel["n_mels"],
        fmin=mel["f_min"],
        fmax=mel["f_max"],
        norm="slaney",
        htk=False,
    )
    if mel["lowpass_hz"] is not None:
        fb[:, librosa.fft_frequencies(sr=sr, n_fft=st["n_fft"]) > mel["lowpass_hz"]] = 0.0
    m = fb @ power
    if db["scale"] == "log10_10000":
        assert db["formula"] == "log10(10000 * mel_power + 1)"
        ours = np.log10(10000 * m + 1)
    else:
        ours = librosa.power_to_db(m, ref=1.0, amin=1e-10, top_db=db["top_db"])
    theirs = Frontend(features, ChunkConfig()).logmel(wave)
    np.testing.assert_allclose(ours, theirs, atol=2e-3 if db["scale"] == "db" else 2e-4)
