"""A frozen trunk's outputs on disk, shared by every fit that uses the same trunk.

A probe on a frozen pretrained trunk spends almost all its time in the trunk: on two CPUs, one
epoch of musicnn over a split's windows takes minutes, the head's epoch about a second. Within a
fit the model keeps what it computed (`MusicnnClassifier.remember_embeddings`); this store keeps
it across fits, so a row's 24 search trials and its final seeds (and the next row on the same
trunk) compute each window's output once in all.

Layout: `<root>/<namespace>/<key[:2]>/<key>.npy`, one float32 vector per window, where root is
a local folder or an fsspec URI (as the feature cache, beside which the trainer puts it: on a
cluster whose cache is in object storage, every node shares the outputs). The namespace names
everything the output depends on besides the window's bytes: the trunk's weights (a digest of
its state), what the head reads, the input's dtype and the autocast dtype the trunk ran at.
Writes are atomic (the feature cache's `write_array`), so concurrent trials that compute the
same window leave one whole file; a file that cannot be read is computed again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import fsspec
import torch
from torch import nn

from mgc.data.cache import read_array, write_array


def module_digest(module: nn.Module) -> str:
    """A short digest of a module's parameters and buffers (names, shapes, dtypes, values):
    equal for equal weights, whichever process or machine computes it."""
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def autocast_tag(device_type: str) -> str:
    """The precision a forward pass on `device_type` runs at now: fp32 or autocast's dtype."""
    if not torch.is_autocast_enabled(device_type):
        return "fp32"
    return str(torch.get_autocast_dtype(device_type)).removeprefix("torch.")


class EmbeddingStore:
    """Per-window vectors under `root/namespace`, keyed by the window's digest (bytes)."""

    def __init__(self, root: str | Path, namespace: str):
        self.fs, base = fsspec.core.url_to_fs(str(root))
        self.folder = f"{base.rstrip('/')}/{namespace}"

    def _path(self, key: bytes) -> str:
        name = key.hex()
        return f"{self.folder}/{name[:2]}/{name}.npy"

    def get(self, key: bytes) -> torch.Tensor | None:
        try:
            return torch.from_numpy(read_array(self.fs, self._path(key)))
        except (OSError, ValueError):  # absent, or unreadable: computed again
            return None

    def put(self, key: bytes, value: torch.Tensor) -> None:
        write_array(self.fs, self._path(key), value.detach().float().cpu().numpy())
