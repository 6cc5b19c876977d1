"""Read a TensorFlow checkpoint (a "tensor bundle") without TensorFlow.

A TF1/TF2 checkpoint ``<prefix>`` is two files:

- ``<prefix>.index``: a LevelDB-format sorted table. Its key ``""`` holds a ``BundleHeaderProto``;
  every other key is a variable name whose value is a ``BundleEntryProto``: dtype, shape, shard,
  and the byte offset and size of the tensor in the data file.
- ``<prefix>.data-00000-of-00001`` (one per shard): the tensors' raw little-endian bytes.

Only the parts a checkpoint of plain dense tensors uses are read: uncompressed table blocks,
unsliced entries, numeric dtypes. Anything else raises :class:`BundleError` naming the file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["BundleError", "Entry", "read_bundle", "read_index"]

_MAGIC = 0xDB4775248B80FB57  # LevelDB table magic number, little-endian at the file's end
_FOOTER = 48  # two block handles, padded to 40 bytes, then the 8-byte magic
# TensorFlow's DataType enum -> numpy dtype (little-endian), for the types a checkpoint of weights holds
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2",
           19: "<f2", 22: "<u4", 23: "<u8"}


class BundleError(ValueError):
    """A checkpoint that cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Entry:
    """Where one tensor lives: dtype code, shape, shard, offset and size in bytes."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError("varint runs past the end")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message's ``(field number, value)`` pairs: ints for varints and fixed32/64,
    bytes for length-delimited fields."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 1:
            out.append((number, struct.unpack_from("<Q", buf, pos)[0]))
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            out.append((number, buf[pos:pos + length]))
            pos += length
        elif wire == 5:
            out.append((number, struct.unpack_from("<I", buf, pos)[0]))
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def _shape(buf: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated ``dim`` (2), each with ``size`` (1)."""
    dims = []
    for number, value in _fields(buf):
        if number == 3 and value:
            raise ValueError("a tensor of unknown rank")
        if number == 2:
            assert isinstance(value, bytes)
            size = dict(_fields(value)).get(1, 0)
            assert isinstance(size, int)
            dims.append(size)
    return tuple(dims)


def _entry(buf: bytes) -> Entry:
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6, slices 7."""
    got: dict[int, int | bytes] = {}
    for number, value in _fields(buf):
        if number == 7:
            raise ValueError("a sliced (partitioned) variable")
        got[number] = value
    shape = got.get(2, b"")
    assert isinstance(shape, bytes)
    return Entry(int(got.get(1, 0)), _shape(shape), int(got.get(3, 0)), int(got.get(4, 0)),  # type: ignore[arg-type]
                 int(got.get(5, 0)))  # type: ignore[arg-type]


def _block(data: bytes, handle: bytes, pos: int = 0) -> tuple[bytes, int]:
    """The contents of the block a handle (offset varint, size varint) points at."""
    offset, pos = _varint(handle, pos)
    size, pos = _varint(handle, pos)
    if offset + size + 5 > len(data):
        raise ValueError(f"a block at {offset} (+{size}) runs past the end of the file")
    if data[offset + size] != 0:  # the 5-byte trailer: compression type, then a CRC
        raise ValueError(f"a compressed table block (type {data[offset + size]}); only uncompressed "
                         "indexes are supported")
    return data[offset:offset + size], pos


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """A table block's key/value pairs (keys are prefix-compressed against the previous key)."""
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * n_restarts
    out, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        out.append((key, block[pos:pos + length]))
        pos += length
    return out


def read_index(prefix: str | os.PathLike[str]) -> dict[str, Entry]:
    """Variable name -> :class:`Entry`, from ``<prefix>.index``.

    Raises:
        BundleError: when the index is missing, truncated or of a form not supported here.
    """
    path = Path(f"{prefix}.index")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the checkpoint index ({exc.strerror or exc})") from None
    try:
        if len(data) < _FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
            raise ValueError("not a TensorFlow checkpoint index (no table magic number at its end)")
        footer = data[len(data) - _FOOTER:]
        _, pos = _varint(footer, _varint(footer, 0)[1])  # skip the metaindex handle
        index, _ = _block(data, footer, pos)
        out: dict[str, Entry] = {}
        for _, handle in _entries(index):
            block, _ = _block(data, handle)
            for key, value in _entries(block):
                if key:  # "" is the bundle header
                    out[key.decode()] = _entry(value)
        return out
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: {exc}") from None


def read_bundle(prefix: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint as a numpy array, by variable name.

    Args:
        prefix: the checkpoint prefix: ``dir/model.ckpt`` for ``dir/model.ckpt.index``, or
            ``dir/`` for a checkpoint saved as ``dir/.index`` (as musicnn's are).

    Raises:
        BundleError: when a file is missing or truncated, or a tensor is not a plain numeric one.
    """
    out: dict[str, np.ndarray] = {}
    shards: dict[int, bytes] = {}
    entries = read_index(prefix)
    n_shards = 1 + max((e.shard for e in entries.values()), default=0)
    for name, entry in entries.items():
        if entry.dtype not in _DTYPES:
            raise BundleError(f"{prefix}.index: {name}: unsupported dtype code {entry.dtype}")
        if entry.shard not in shards:
            path = Path(f"{prefix}.data-{entry.shard:05d}-of-{n_shards:05d}")
            try:
                shards[entry.shard] = path.read_bytes()
            except OSError as exc:
                raise BundleError(f"{path}: cannot read the checkpoint data ({exc.strerror or exc})") from None
        data = shards[entry.shard]
        dtype = np.dtype(_DTYPES[entry.dtype])
        count = int(np.prod(entry.shape)) if entry.shape else 1
        if entry.size != count * dtype.itemsize or entry.offset + entry.size > len(data):
            raise BundleError(f"{prefix}: {name}: {entry.size} bytes at {entry.offset} do not hold a "
                              f"{entry.shape} {dtype} tensor in a {len(data)}-byte data file")
        arr = np.frombuffer(data, dtype, count=count, offset=entry.offset).reshape(entry.shape)
        out[name] = arr.astype(dtype.newbyteorder("="), copy=True)
    return out
