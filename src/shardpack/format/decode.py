"""Record payloads -> JSON values: a block's records decoded with one msgspec decoder per thread,
arrays handed out as zero-copy numpy views of the block's arena in the order they were written."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np

from ..errors import FormatError
from .dtypes import (
    ARRAY_HEADERS,
    DTYPE_BY_CODE,
    EXT_ARRAY,
    EXT_BIGINT,
    EXT_NATIVE_STR,
    EXT_RAW_STR,
    MAX_NDIM,
)
from .strings import str_from_native

# An array extension's header bytes (dtype code, ndim, dims) -> (dtype, byte size, shape). A
# field's arrays repeat a few shapes, so one dict lookup replaces unpacking and checking the
# header of most arrays: the hook runs once per array, three times per KD record, and is the
# largest part of a full scan. Cleared when full, so it stays small.
ArraySpec = tuple[np.dtype, int, tuple[int, ...]]
_ARRAY_SPECS: dict[bytes, ArraySpec] = {}
_MAX_ARRAY_SPECS = 4096


def array_spec(data: memoryview) -> ArraySpec:
    """An array extension header's (dtype, byte size, shape), from the cache or parsed."""
    spec = _ARRAY_SPECS.get(bytes(data))
    return spec if spec is not None else _array_spec(data)


def _array_spec(data: memoryview) -> ArraySpec:
    """Parse and check an array extension header (and remember the answer)."""
    size = len(data)
    ndim = (size - 2) >> 2
    if size < 2 or size != 2 + 4 * ndim or ndim > MAX_NDIM or data[1] != ndim:
        raise ValueError(f"bad array header ({size} bytes)")
    header = ARRAY_HEADERS[ndim].unpack(data)
    dtype = DTYPE_BY_CODE.get(header[0])
    if dtype is None:
        raise ValueError(f"unknown dtype code {header[0]}")
    shape = header[2:]
    spec = (dtype, dtype.itemsize * math.prod(shape), shape)
    if len(_ARRAY_SPECS) >= _MAX_ARRAY_SPECS:
        _ARRAY_SPECS.clear()
    _ARRAY_SPECS[bytes(data)] = spec
    return spec


class ArenaCursor:
    """Decodes extension values of one block, handing out arrays from its arena in order.

    ``buffer`` is the whole raw block; arrays are views into it (read-only when it is bytes).
    """

    __slots__ = ("arena_end", "arena_start", "buffer", "position")

    def __init__(self, buffer: bytes | memoryview, arena_start: int, arena_end: int) -> None:
        self.buffer = buffer
        self.arena_start = arena_start
        self.arena_end = arena_end
        self.position = 0  # relative to arena_start

    def ext_hook(self, code: int, data: memoryview) -> Any:
        if code == EXT_ARRAY:
            # bytes(data), not data: hashing a memoryview hashes the whole object it views
            spec = _ARRAY_SPECS.get(bytes(data))
            if spec is None:
                spec = _array_spec(data)
            dtype, nbytes, shape = spec
            start = self.arena_start + ((self.position + 7) & ~7)  # ARRAY_ALIGN
            end = start + nbytes
            if end > self.arena_end:
                raise ValueError("array runs past the end of the block's arena")
            self.position = end - self.arena_start
            # one constructor call: a read-only view when the block is bytes
            return np.ndarray(shape, dtype, self.buffer, start)
        if code == EXT_NATIVE_STR:  # blocks with arrays; text blocks take the C decoder
            return str_from_native(data)
        if code == EXT_BIGINT:
            text = bytes(data)
            if not 0 < len(text) <= 10_000 or not text.lstrip(b"-").isdigit():
                raise ValueError("bad big-integer extension")
            return int(text)
        if code == EXT_RAW_STR:
            return bytes(data).decode("utf-8", "surrogatepass")
        raise ValueError(f"unknown extension type {code}")


_thread_state = threading.local()


def thread_decoder() -> tuple[ArenaCursor, msgspec.msgpack.Decoder]:
    """This thread's reusable (cursor, decoder) pair; point the cursor at a block, then decode.

    Creating a decoder costs more than decoding a small record, so each thread keeps one.
    """
    try:
        return _thread_state.pair  # type: ignore[no-any-return]
    except AttributeError:
        cursor = ArenaCursor(b"", 0, 0)
        pair = (cursor, msgspec.msgpack.Decoder(ext_hook=cursor.ext_hook))
        _thread_state.pair = pair
        return pair


def promote_arrays(value: Any, targets: Mapping[str, np.dtype], path: str = "") -> Any:
    """Cast arrays of the given fields to their dataset-wide dtype (for rare mixed-dtype fields)."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(item) in (dict, list, np.ndarray):
                value[key] = promote_arrays(item, targets, f"{path}.{key}" if path else key)
    elif kind is list:
        for i, item in enumerate(value):
            if type(item) in (dict, list, np.ndarray):
                value[i] = promote_arrays(item, targets, path)
    elif kind is np.ndarray:
        target = targets.get(path)
        if target is not None and value.dtype != target:
            return value.astype(target)
    return value


BYTES_IN_RECORD = (
    "holds bytes (a msgpack bin value), which shardpack never writes: the file was crafted or "
    "damaged past its checksums"
)


def to_jsonable(obj: Any) -> Any:
    """``default`` hook for JSON writers: arrays become lists of Python scalars."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.itemsize == 2 and obj.dtype.kind != "i":
            obj = obj.astype(np.float32)  # float16/bfloat16 have no Python scalar of their own
        return obj.tolist()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        # the reader hands bin values out as they are (refusing them would cost every scan a
        # walk of every record): writing JSON is where they stop, as bad data, not as a bug
        raise FormatError(f"a record {BYTES_IN_RECORD} (validate --deep names the block)")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def holds_bytes(value: Any) -> bool:
    """Whether a decoded record holds a bytes value anywhere (deep validation's check)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is bytes:
            return True
    return False
