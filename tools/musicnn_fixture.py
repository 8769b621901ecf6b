"""Make tests/fixtures/musicnn_original.npz: what the original musicnn (TensorFlow) computes on
the sample clips, for tests/test_musicnn.py to hold the PyTorch port to.

Runs only in a separate TensorFlow environment, never the project's:

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 librosa
    /tmp/tfvenv/bin/pip install --no-deps musicnn==0.1.0
    TF_USE_LEGACY_KERAS=1 /tmp/tfvenv/bin/python tools/musicnn_fixture.py

For the first 3 s patch (187 frames) of each `mgc/samples/*.ogg`, it stores:

- `patches16`: the original's input, exactly as `musicnn.extractor.batch_data` computes it
  (mel power cast to float16, then log10(10000·x + 1) in float16: inf where 10000·x overflows);
- `patches32`: the same pipeline in float32 throughout (what the port's front end computes);
- `<model>_<input>_<output>`: MSD_musicnn's and MTT_musicnn's `taggram`, `max_pool`,
  `mean_pool` and `penultimate` on each (model `msd`/`mtt`, input `16`/`32`), as the original
  computes them (float32);
- `<model>_64_<output>`: the same graph built in float64, its variables the checkpoint's
  values, on `patches32`: the original network without float32's rounding.

TensorFlow runs on its Eigen kernels (TF_ENABLE_ONEDNN_OPTS=0): its oneDNN ones, the default on
x86, round differently, and the two disagree by up to 2.2e-4 on `max_pool` (values up to ~100).

It prints, for every patch of the clips, how many input bins overflow and what the original
network makes of them. Each model's graph is built once and its session reused (musicnn's own
`extractor()` rebuilds the graph on every call).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from musicnn import configuration as config  # noqa: E402
from musicnn import models  # noqa: E402
from musicnn.extractor import batch_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "musicnn_original.npz"
N_FRAMES = 187  # musicnn's 3 s: librosa.time_to_frames(3, sr=16000, n_fft=512, hop=256) + 1
OUTPUTS = ("taggram", "max_pool", "mean_pool", "penultimate")


class Original:
    """One musicnn model's TF graph and session, built once, in float32 or float64."""

    def __init__(self, model: str, dtype: tf.DType = tf.float32):
        self.dtype = dtype.as_numpy_dtype
        self.graph = tf.Graph()
        with self.graph.as_default(), tf.name_scope("model"):
            self.x = tf.compat.v1.placeholder(dtype, [None, N_FRAMES, config.N_MELS])
            self.is_training = tf.compat.v1.placeholder(tf.bool)
            y, *_, mean_pool, max_pool, penultimate = models.define_model(
                self.x, self.is_training, model, len(config.MSD_LABELS)
            )
            self.fetch = [tf.nn.sigmoid(y), max_pool, mean_pool, penultimate]
            self.session = tf.compat.v1.Session(graph=self.graph)
            checkpoint = f"{os.path.dirname(models.__file__)}/{model}/"
            if dtype == tf.float32:  # as musicnn's extractor does it
                tf.compat.v1.train.Saver().restore(self.session, checkpoint)
            else:  # the Saver refuses float32 values for float64 variables: cast them here
                reader = tf.compat.v1.train.NewCheckpointReader(checkpoint)
                for var in tf.compat.v1.global_variables():
                    value = reader.get_tensor(var.op.name).astype(self.dtype)
                    var.load(value, self.session)

    def __call__(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """(n, 187, 96) → each output, (n, …); one patch per run, as musicnn's extractor does."""
        runs = [
            self.session.run(
                self.fetch, {self.x: patch[None].astype(self.dtype), self.is_training: False}
            )
            for patch in patches
        ]
        return {name: np.concatenate([r[i] for r in runs]) for i, name in enumerate(OUTPUTS)}


def float32_patches(path: Path) -> np.ndarray:
    """`batch_data` without its float16 cast: every patch of the clip, float32."""
    audio, sr = librosa.load(str(path), sr=config.SR)
    power = librosa.feature.melspectrogram(
        y=audio, sr=sr, hop_length=config.FFT_HOP, n_fft=config.FFT_SIZE, n_mels=config.N_MELS
    ).T
    rep = np.log10(10000 * power + 1)
    starts = range(0, rep.shape[0] - N_FRAMES + 1, N_FRAMES)
    return np.stack([rep[s : s + N_FRAMES] for s in starts]).astype(np.float32)


def main() -> None:
    clips = sorted((REPO / "mgc" / "samples").glob("*.ogg"))
    originals = {"msd": Original("MSD_musicnn"), "mtt": Original("MTT_musicnn")}
    in_float64 = {
        "msd": Original("MSD_musicnn", tf.float64),
        "mtt": Original("MTT_musicnn", tf.float64),
    }
    fixture: dict[str, np.ndarray] = {"clips": np.array([c.name for c in clips])}
    firsts: dict[str, list] = {"16": [], "32": []}
    for clip in clips:
        with np.errstate(over="ignore"):  # the float16 overflow being measured
            p16, _ = batch_data(str(clip), N_FRAMES, N_FRAMES)
        p32 = float32_patches(clip)
        assert p16.dtype == np.float16 and p16.shape == p32.shape, (p16.dtype, p16.shape)
        firsts["16"].append(p16[0])
        firsts["32"].append(p32[0])
        finite = np.isfinite(p16)
        print(f"{clip.name}: {len(p16)} patches")
        for i in range(len(p16)):
            out16 = originals["msd"](p16[i : i + 1])
            nan = {k: int(np.isnan(v).sum()) for k, v in out16.items()}
            print(
                f"  patch {i}: {int((~finite[i]).sum())} inf input bins "
                f"({int((~finite[i]).any(axis=1).sum())} frames); MSD outputs NaN: {nan}; "
                f"|p16 - p32| on finite bins <= {np.abs(p16[i] - p32[i])[finite[i]].max():.2e}"
            )
    for source, patches in firsts.items():
        fixture[f"patches{source}"] = np.stack(patches)
        for name, original in originals.items():
            outs = original(fixture[f"patches{source}"])
            fixture |= {f"{name}_{source}_{k}": v for k, v in outs.items()}
    for name, original in in_float64.items():
        outs = original(fixture["patches32"])
        fixture |= {f"{name}_64_{k}": v for k, v in outs.items()}
    fixture["versions"] = np.array(
        [f"tensorflow {tf.__version__}", f"librosa {librosa.__version__}", "musicnn 0.1.0"]
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **fixture)
    print(f"{OUT}: {OUT.stat().st_size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
