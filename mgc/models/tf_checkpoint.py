"""Reading a TensorFlow checkpoint (a V2 "tensor bundle") with numpy alone, no TensorFlow.

A checkpoint `<prefix>` is two files:

- `<prefix>.index`: a LevelDB-format table (SSTable) whose keys are variable names and whose
  values are `BundleEntryProto` messages {dtype, shape, shard_id, offset, size, crc32c}; the
  empty key holds the `BundleHeaderProto` {num_shards, endianness, version}.
- `<prefix>.data-00000-of-00001` (one per shard): the tensors' raw bytes, each at its offset.

Only what TF's own writer produces is read: uncompressed table blocks, little-endian tensors of
numeric types, whole (unsliced) variables. Every tensor's crc32c is checked. The formats are
those of TensorFlow's `tensor_bundle.proto`, `tensor_shape.proto` and LevelDB's `table_format`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_MAGIC = 0xDB4775248B80FB57  # LevelDB's table magic number, the footer's last 8 bytes
_FOOTER = 48  # two block handles padded to 40 bytes, then the magic
_TRAILER = 5  # after each block: compression type (1 byte) and crc32c (4 bytes)

# TensorFlow's DataType enum → numpy dtype (little-endian), for the types a model stores.
_DTYPES = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    19: np.dtype("<f2"),  # DT_HALF
}


class CheckpointError(ValueError):
    """A checkpoint file that is not what this reader understands, or is damaged."""


# -- crc32c (Castagnoli), as TF's tensor bundle records it -----------------------------------------


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of `data` (pure Python: about a second per few MB, fine for a one-off read)."""
    crc, table = 0xFFFFFFFF, _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked form LevelDB and TF store, so that a crc of crc-bearing data stays strong."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# -- protobuf wire format, the few message types needed ---------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The base-128 varint at `pos` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: ints for varint/fixed, bytes for length."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 1:
            yield number, struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 5:
            yield number, struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield number, buf[pos : pos + size]
            pos += size
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")


@dataclass(frozen=True)
class Entry:
    """Where one tensor lies (a `BundleEntryProto`)."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked


Message = dict[int, list[int | bytes]]  # a decoded message: field number → its values


def _message(buf: bytes) -> Message:
    out: Message = {}
    for number, value in _fields(buf):
        out.setdefault(number, []).append(value)
    return out


def _int(message: Message, number: int) -> int:
    """A numeric field's (last) value; 0, protobuf's default, when absent."""
    value = message.get(number, [0])[-1]
    if not isinstance(value, int):
        raise CheckpointError(f"protobuf field {number}: expected a number")
    return value


def _submessages(message: Message, number: int) -> list[Message]:
    return [_message(v) for v in message.get(number, []) if isinstance(v, bytes)]


def _parse_entry(buf: bytes) -> Entry:
    """A BundleEntryProto: dtype = 1, shape = 2 (TensorShapeProto: repeated Dim dim = 2, each
    {int64 size = 1}), shard_id = 3, offset = 4, size = 5, crc32c = 6, slices = 7."""
    entry = _message(buf)
    if 7 in entry:
        raise CheckpointError("sliced (partitioned) variables are not supported")
    shape = tuple(_int(dim, 1) for s in _submessages(entry, 2) for dim in _submessages(s, 2))
    dtype, shard, offset, size, crc = (_int(entry, n) for n in (1, 3, 4, 5, 6))
    return Entry(dtype, shape, shard, offset, size, crc)


# -- the LevelDB table -------------------------------------------------------------------------


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    """A BlockHandle {varint offset, varint size} at `pos`: (offset, size, position after)."""
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def _block(data: bytes, offset: int, size: int) -> bytes:
    """The contents of one table block, which must be stored uncompressed (TF's writer does)."""
    if offset + size + _TRAILER > len(data):
        raise CheckpointError("block handle points past the end of the index file")
    if data[offset + size] != 0:
        raise CheckpointError(f"compressed table block (type {data[offset + size]})")
    return data[offset : offset + size]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of one block: keys are prefix-compressed against the previous one."""
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * n_restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        size, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + size]
        pos += size


def read_index(path: str | Path) -> dict[str, Entry]:
    """Every tensor entry of a checkpoint's `.index` file, by variable name."""
    data = Path(path).read_bytes()
    if len(data) < _FOOTER or struct.unpack("<Q", data[-8:])[0] != _MAGIC:
        raise CheckpointError(f"{path}: not a LevelDB table (no magic number)")
    footer = data[-_FOOTER:]
    *_, after_metaindex = _handle(footer)
    index = _block(data, *_handle(footer, after_metaindex)[:2])
    entries: dict[str, Entry] = {}
    for _, value in _block_entries(index):
        for key, proto in _block_entries(_block(data, *_handle(value)[:2])):
            if key == b"":  # the BundleHeaderProto: {num_shards = 1, endianness = 2, …}
                if _int(_message(proto), 2) != 0:  # 0: little-endian
                    raise CheckpointError(f"{path}: big-endian checkpoint")
                continue
            entries[key.decode()] = _parse_entry(proto)
    return entries


def read_checkpoint(prefix: str | Path, names: set[str] | None = None) -> dict[str, np.ndarray]:
    """The tensors of checkpoint `prefix` (`prefix` + ".index" and its ".data-*" shards), all or
    those in `names`, as numpy arrays; each one's crc32c is checked.

    `prefix` may end in a separator: musicnn's checkpoints are named `<dir>/.index`.
    """
    prefix = str(prefix)
    entries = read_index(prefix + ".index")
    wanted = entries if names is None else {n: entries[n] for n in names if n in entries}
    if names is not None and len(wanted) < len(names):
        raise CheckpointError(f"{prefix}: no variables {sorted(set(names) - set(wanted))}")
    n_shards = 1 + max((e.shard_id for e in entries.values()), default=0)
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name, entry in sorted(wanted.items()):
        dtype = _DTYPES.get(entry.dtype)
        if dtype is None:
            continue  # strings and other non-numeric bookkeeping
        if entry.shard_id not in shards:
            shards[entry.shard_id] = Path(
                f"{prefix}.data-{entry.shard_id:05d}-of-{n_shards:05d}"
            ).read_bytes()
        raw = shards[entry.shard_id][entry.offset : entry.offset + entry.size]
        if len(raw) != entry.size or masked_crc32c(raw) != entry.crc32c:
            raise CheckpointError(f"{prefix}: tensor {name} is damaged (size or crc32c)")
        out[name] = np.frombuffer(raw, dtype).reshape(entry.shape).copy()
    return out
