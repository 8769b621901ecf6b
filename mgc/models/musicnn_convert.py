"""musicnn's TensorFlow checkpoints, from the `musicnn` 0.1.0 wheel, → the bundled torch weights.

Run once (no TensorFlow needed: `mgc.models.tf_checkpoint` reads the checkpoint format):

    pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn_wheel
    python -m mgc.models.musicnn_convert /tmp/musicnn_wheel/musicnn-0.1.0-py3-none-any.whl \\
        --out mgc/bundled/musicnn

It writes `msd_musicnn.pt` and `mtt_musicnn.pt` (float32 state dicts of `Musicnn`: the
checkpoints' weights and batch-norm moving statistics; the optimiser's slots are left out) and
`PROVENANCE.md` (the wheel's and each source file's sha256, this command, musicnn's licence).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mgc.models.musicnn import PRETRAINED, WEIGHTS_DIR, Musicnn
from mgc.models.tf_checkpoint import read_checkpoint, read_index

PACKAGE, VERSION = "musicnn", "0.1.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
CHECKPOINT_FILES = (".index", ".data-00000-of-00001")  # .meta (the graph) is not needed
LICENSE_PATH = f"{PACKAGE}-{VERSION}.dist-info/LICENSE.md"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tf_to_torch(module: nn.Module, tf: dict[str, np.ndarray], scope: str) -> dict[str, np.ndarray]:
    """One layer's TF variables (under `scope`) as `module`'s state-dict entries."""
    if isinstance(module, nn.Conv2d):  # TF (kh, kw, in, out) → torch (out, in, kh, kw)
        weight = tf[f"{scope}/kernel"].transpose(3, 2, 0, 1)
    elif isinstance(module, nn.Conv1d):  # a conv over (frames, all channels) of 1 input map
        weight = tf[f"{scope}/kernel"][:, :, 0, :].transpose(2, 1, 0)
    elif isinstance(module, nn.Linear):  # TF (in, out) → torch (out, in)
        weight = tf[f"{scope}/kernel"].T
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        return {
            "weight": tf[f"{scope}/gamma"],
            "bias": tf[f"{scope}/beta"],
            "running_mean": tf[f"{scope}/moving_mean"],
            "running_var": tf[f"{scope}/moving_variance"],
        }
    else:
        raise TypeError(f"no TF conversion for {type(module).__name__}")
    return {"weight": weight, "bias": tf[f"{scope}/bias"]}


def convert(tf: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A musicnn checkpoint's variables (MSD_musicnn or MTT_musicnn) → `Musicnn`'s state dict.

    Loading it into `Musicnn()` strictly checks that every entry is there with its shape.
    """
    model = Musicnn()
    modules = dict(model.named_modules())
    state: dict[str, torch.Tensor] = {}
    for prefix, scope in model.tf_names().items():
        for key, value in _tf_to_torch(modules[prefix], tf, scope).items():
            state[f"{prefix}.{key}"] = torch.from_numpy(np.ascontiguousarray(value, np.float32))
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
    model.load_state_dict(state)  # strict: every key, every shape
    return model.state_dict()


def checkpoint_from_wheel(
    wheel: zipfile.ZipFile, which: str, folder: Path
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The converted weights of `<WHICH>_musicnn` in `wheel` and the sha256 of its files
    (extracted to `folder`)."""
    source = f"{PACKAGE}/{which.upper()}_musicnn/"
    hashes = {}
    for name in CHECKPOINT_FILES:
        data = wheel.read(source + name)
        hashes[source + name] = sha256(data)
        (folder / name).write_bytes(data)
    return convert(read_checkpoint(f"{folder}/", _variable_names(folder))), hashes


def _variable_names(folder: Path) -> set[str]:
    """The model's variables in a musicnn checkpoint: not Adam's slots, its powers, the step."""
    return {
        n
        for n in read_index(folder / ".index")
        if "Adam" not in n and not n.startswith(("beta1_power", "beta2_power", "global_step"))
    }


def convert_wheel(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str], str]:
    """Every pretrained musicnn's state dict from the wheel at `path`, the sha256 of each
    source file, and the wheel's licence text. Raises ValueError for another wheel."""
    data = Path(path).read_bytes()
    if sha256(data) != WHEEL_SHA256:
        raise ValueError(f"{path}: not {WHEEL} (sha256 {sha256(data)}, expected {WHEEL_SHA256})")
    states, hashes = {}, {}
    with zipfile.ZipFile(path) as wheel, tempfile.TemporaryDirectory() as tmp:
        for which in PRETRAINED:
            folder = Path(tmp) / which
            folder.mkdir()
            states[which], hashes[which] = checkpoint_from_wheel(wheel, which, folder)
        licence = wheel.read(LICENSE_PATH).decode()
    return states, {k: v for h in hashes.values() for k, v in h.items()}, licence


def provenance(hashes: dict[str, str], weights: dict[str, str], licence: str) -> str:
    """PROVENANCE.md: where the bundled weights come from and how to make them again."""
    sources = "\n".join(f"| `{name}` | `{digest}` |" for name, digest in sorted(hashes.items()))
    outputs = "\n".join(f"| `{name}` | `{digest}` |" for name, digest in sorted(weights.items()))
    return f"""# musicnn weights: provenance

The files beside this one are the pretrained weights of musicnn (Jordi Pons and Xavier Serra,
"musicnn: pre-trained convolutional neural networks for music audio tagging", ISMIR 2019 LBD),
converted from the TensorFlow checkpoints of the PyPI package `{PACKAGE}=={VERSION}`:

- `msd_musicnn.pt`: `MSD_musicnn`, trained on the Million Song Dataset's 50 most used tags;
- `mtt_musicnn.pt`: `MTT_musicnn`, trained on MagnaTagATune's 50 most used tags.

Each is a float32 state dict of `mgc.models.musicnn.Musicnn`: the checkpoint's weights and its
batch norms' moving statistics, nothing else (its Adam slots are left out). The conversion
reads the checkpoint format directly (`mgc.models.tf_checkpoint`), without TensorFlow, and
checks each tensor's crc32c. `tests/test_musicnn.py` checks the converted network against the
original (TensorFlow) one and, where the wheel is at hand, redoes the conversion.

## Source

Wheel `{WHEEL}`, sha256 `{WHEEL_SHA256}`.

| file in the wheel | sha256 |
| --- | --- |
{sources}

## Converted

| file | sha256 |
| --- | --- |
{outputs}

Made with:

    pip download --no-deps {PACKAGE}=={VERSION} -d /tmp/musicnn_wheel
    python -m mgc.models.musicnn_convert /tmp/musicnn_wheel/{WHEEL} --out mgc/bundled/musicnn

## Licence (ISC), as the wheel ships it (`{LICENSE_PATH}`)

{licence.strip()}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help=f"the downloaded {WHEEL}")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    states, hashes, licence = convert_wheel(args.wheel)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = {}
    for which, state in states.items():
        target = args.out / f"{which}_musicnn.pt"
        torch.save(state, target)
        weights[target.name] = sha256(target.read_bytes())
        print(f"{target}: {sum(v.numel() for v in state.values())} values")
    (args.out / "PROVENANCE.md").write_text(provenance(hashes, weights, licence))


if __name__ == "__main__":
    main()
