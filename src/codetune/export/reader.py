"""A small GGUF reader: the metadata and the tensor table, parsed in one pass.

`gguf.GGUFReader` builds numpy views of every part of every metadata field, which takes
seconds for an 8k vocabulary and minutes for Qwen's 152k; the check after writing only needs
the values. The layout (GGUF v2/v3, ggml-org/ggml docs/gguf.md): magic "GGUF", version u32,
tensor count u64, key/value count u64; each key a string (u64 length + UTF-8), a value type u32
and the value (an array: element type u32, count u64, elements); then per tensor its name,
n_dims u32, dims u64 (innermost first), ggml type u32 and offset u64 into the data section,
which starts at the next multiple of `general.alignment` (32 by default).
"""

from __future__ import annotations

import math
import mmap
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
          10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9


class Tensor(NamedTuple):
    name: str
    shape: tuple[int, ...]  # numpy order (outermost first)
    ggml_type: int
    offset: int  # absolute, in the file
    nbytes: int


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: int) -> Any:
        if vtype == STRING:
            return self.string()
        if vtype != ARRAY:
            return self.take(_SCALAR[vtype])
        etype, count = self.take("<I"), self.take("<Q")
        if etype == STRING:
            return [self.string() for _ in range(count)]
        if etype == ARRAY:
            return [self.value(ARRAY) for _ in range(count)]
        dtype = np.dtype(_NUMPY[etype])
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).tolist()
        self.pos += count * dtype.itemsize
        return out


def read(path: str | Path) -> tuple[dict[str, Any], list[Tensor]]:
    """(metadata {key: value}, tensors) of the GGUF file at `path` (mapped, not read whole:
    the tensor data is not touched)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _parse(path, memoryview(data))


def _parse(path: str | Path, buf: memoryview) -> tuple[dict[str, Any], list[Tensor]]:
    import gguf  # optional: gguf (the export extra)

    c = _Cursor(buf)
    if bytes(c.buf[:4]) != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    c.pos = 4
    version, n_tensors, n_kv = c.take("<I"), c.take("<Q"), c.take("<Q")
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} is not supported")
    meta = {}
    for _ in range(n_kv):
        key = c.string()
        meta[key] = c.value(c.take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = c.string()
        dims = [c.take("<Q") for _ in range(c.take("<I"))]
        infos.append((name, dims, c.take("<I"), c.take("<Q")))
    align = int(meta.get("general.alignment", 32))
    start = (c.pos + align - 1) // align * align
    tensors = []
    for name, dims, qtype, offset in infos:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
        tensors.append(Tensor(name, tuple(reversed(dims)), qtype, start + offset,
                              math.prod(dims) // block * size))
    c.buf.release()
    return meta, tensors


def values(path: str | Path, t: Tensor) -> np.ndarray:
    """The tensor `t` of the file at `path` as float32, dequantized, in its numpy shape."""
    import gguf  # optional: gguf (the export extra)

    qtype = gguf.GGMLQuantizationType(t.ggml_type)
    raw = np.fromfile(path, dtype=np.uint8, count=t.nbytes, offset=t.offset)
    byte_shape = gguf.quant_shape_to_byte_shape(t.shape, qtype)
    return np.asarray(gguf.quants.dequantize(raw.reshape(byte_shape), qtype),
                      dtype=np.float32).reshape(t.shape)
