"""JSON values <-> record payloads: msgpack for structure, typed numeric arrays in a block arena.

A record payload is the record's JSON value encoded as msgpack, except that every homogeneous
numeric list (ints, floats or bools; 1-D or rectangular N-D) becomes an extension value holding
only its dtype and shape, while its elements go to the block's arena, 8-byte aligned, in the
order the extension values appear. A reader walks the payloads in order with a cursor into the
arena, so arrays come back as zero-copy numpy views and no payload holds a block position: a
record's bytes do not depend on where it lands, which keeps content hashes independent of the
block size.

Lossless rules: ints stay ints (int32 when every value fits, else int64/uint64), floats stay
floats (float32 when every value round-trips bit-exactly, else float64), bools stay bools; a list
mixing types, a ragged list and an empty list stay msgpack lists. Integers beyond 64 bits and
strings holding unpaired surrogates (both legal in JSON) use their own extension types.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from itertools import chain
from typing import Any

import msgspec
import numpy as np

from ..errors import OptionError
from .bounds import MAX_NESTING_DEPTH
from .dtypes import (
    ARRAY_ALIGN,
    ARRAY_HEADERS,
    CODE_BY_DTYPE,
    DTYPE_BY_CODE,
    DTYPE_NAMES,
    EXT_ARRAY,
    EXT_BIGINT,
    EXT_RAW_STR,
    LOSSY_DTYPES,
    MAX_NDIM,
)
from .strings import nativize

_INT32 = np.iinfo(np.int32)


def _unchanged(payload: bytes) -> bytes:
    return payload


class RecordLimitError(OptionError):
    """A record beyond the format's bounds (nesting depth, size: see ``bounds``). Packing
    reports it as an InputError naming the record's line, or rejects the line."""


def parse_dtype_overrides(overrides: Mapping[str, str] | None) -> dict[str, np.dtype]:
    """Validate ``{"field.path": "float16"}`` options into numpy dtypes."""
    result: dict[str, np.dtype] = {}
    for field, name in (overrides or {}).items():
        if name not in LOSSY_DTYPES:
            raise OptionError(
                f"--dtype {field}={name}: choose one of {', '.join(sorted(LOSSY_DTYPES))}"
            )
        result[field] = LOSSY_DTYPES[name]
    return result


def _element_types(values: list, ndim: int) -> set[type]:
    """The exact Python types of the scalars in a rectangular nested list of depth ``ndim``."""
    return set(map(type, _flatten(values, ndim)))


def _flatten(values: list, ndim: int) -> Any:
    flat: Any = values
    for _ in range(ndim - 1):
        flat = chain.from_iterable(flat)
    return flat


def _nested_list_type(scalar: type, ndim: int) -> Any:
    """``list[list[...[scalar]]]`` for msgspec's strict type check (cached)."""
    key = (scalar, ndim)
    found: Any = _LIST_TYPES.get(key)
    if found is None:
        found = scalar
        for _ in range(ndim):
            found = list[found]
        _LIST_TYPES[key] = found
    return found


_LIST_TYPES: dict[tuple[type, int], Any] = {}
_WIDE_DTYPES = {int: np.dtype(np.int64), float: np.dtype(np.float64), bool: np.dtype(np.bool_)}


def narrowest(array: np.ndarray) -> np.ndarray:
    """The same values in the narrowest lossless dtype of the format (int32, float32, ...)."""
    kind = array.dtype.kind
    if kind == "i":
        if array.size and _INT32.min <= array.min() and array.max() <= _INT32.max:
            return array.astype(np.int32)
        return array
    if kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            narrow = array.astype(np.float32)
        # compare bits, not values: keeps NaN payloads, -0.0 and inf exact
        if np.array_equal(narrow.astype(np.float64).view(np.uint64), array.view(np.uint64)):
            return narrow
        return array
    return array


def to_typed_array(values: list) -> np.ndarray | None:
    """A homogeneous numeric (nested) list as a typed array, or None if it must stay a list.

    The first scalar decides the candidate type; msgspec's strict conversion then checks every
    element in C (ints: exactly int, no bool or float; floats: float or int). A float array
    with integral values might hide ints (``[0.5, 1]``), so only then are exact types checked.
    """
    ndim, leaf = 1, values[0]
    while type(leaf) is list:
        if not leaf or ndim >= MAX_NDIM:
            return None
        leaf, ndim = leaf[0], ndim + 1
    scalar = type(leaf)
    dtype = _WIDE_DTYPES.get(scalar)
    if dtype is None:
        return None
    try:
        msgspec.convert(values, _nested_list_type(scalar, ndim), strict=True)
    except msgspec.ValidationError:
        return None  # mixed types or uneven nesting
    shape = [len(values)]
    level = values
    for _ in range(ndim - 1):
        width = len(level[0])
        # every row of this level has the same length, and so on down: a rectangle
        if width == 0 or set(map(len, level)) != {width}:
            return None
        shape.append(width)
        level = list(chain.from_iterable(level)) if len(shape) < ndim else level
    try:
        array = np.fromiter(_flatten(values, ndim), dtype, math.prod(shape)).reshape(shape)
    except OverflowError:
        if scalar is not int:
            return None
        try:  # ints in [2**63, 2**64) fit uint64 when none is negative
            array = np.fromiter(_flatten(values, ndim), np.uint64, math.prod(shape))
        except OverflowError:
            return None  # beyond 64 bits: stays a list of Python ints
        array = array.reshape(shape)
    except (ValueError, TypeError):
        return None
    if scalar is float:
        with np.errstate(invalid="ignore"):
            maybe_ints = bool(np.any(array == np.floor(array)))
        if maybe_ints and _element_types(values, ndim) != {float}:
            return None
    return narrowest(array)


class RecordEncoder:
    """Encodes parsed JSON values into payloads, appending their arrays to a block's arena.

    Tracks which dtypes each field's arrays were stored with (``array_dtypes``), so the file can
    record one dtype per field and readers can promote the rare record stored narrower.
    """

    def __init__(
        self, dtype_overrides: Mapping[str, np.dtype] | None = None, *, native_strings: bool = True
    ) -> None:
        """``native_strings``: non-ASCII str values as native strings (format 1.2); False keeps
        UTF-8, which readers before 1.2 read."""
        self.dtype_overrides = dict(dtype_overrides or {})
        self._nativize = nativize if native_strings else _unchanged
        self.array_dtypes: dict[str, dict[str, int]] = {}  # path -> {dtype name: count}
        self.lossy_fields: dict[str, str] = {}
        self._arena = bytearray()
        self._encoder = msgspec.msgpack.Encoder(enc_hook=self._append_array)

    def encode(self, value: Any, arena: bytearray, *, converted: bool = False) -> bytes:
        """The payload of ``value``; its arrays are appended to ``arena`` (8-byte aligned).

        ``converted``: ``value`` is the result of ``convert`` already (skips a second walk)."""
        self._arena = arena
        start = len(arena)
        if not converted:
            value = self._convert(value, "")
        try:
            return self._nativize(self._encoder.encode(value))
        except (OverflowError, UnicodeEncodeError):
            # rare: an integer beyond 64 bits or an unpaired surrogate; re-encode the slow way
            del arena[start:]
            return self._nativize(self._encoder.encode(_escape_unencodable(value)))

    def encode_all(self, values: list[Any]) -> list[bytes] | None:
        """The payloads of converted values in one C-level pass, as ``encode`` gives them, if
        none holds an array (else None: arrays need ``encode`` and a block's arena) and none
        needs ``encode``'s slow path (an integer beyond 64 bits, an unpaired surrogate)."""
        self._arena = arena = bytearray()
        try:
            payloads = list(map(self._encoder.encode, values))
        except (OverflowError, UnicodeEncodeError):
            return None
        return None if arena else list(map(self._nativize, payloads))

    def convert_all(self, values: list[Any]) -> list[Any]:
        """``convert`` for many values; when they are objects whose fields hold no list or
        object (flat text records), there is nothing to convert and no record is walked."""
        if set(map(type, values)) == {dict}:
            field_types = set(map(type, chain.from_iterable(map(dict.values, values))))
            if list not in field_types and dict not in field_types:
                return values
        return list(map(self.convert, values))

    def convert(self, value: Any) -> Any:
        """``value`` with its numeric lists as typed arrays (in place where it can), as ``encode``
        would store it; encoding the result again converts nothing twice."""
        return self._convert(value, "")

    def _convert(self, value: Any, path: str, depth: int = 1) -> Any:
        # every container of the record passes here (typed arrays end the walk), so this is
        # where the nesting depth is bounded for everything that walks records later
        if depth > MAX_NESTING_DEPTH:
            raise RecordLimitError(
                f"JSON nested deeper than {MAX_NESTING_DEPTH} levels (the format's limit)"
            )
        kind = type(value)
        if kind is dict:
            for key, item in value.items():
                item_kind = type(item)
                if item_kind is list or item_kind is dict:
                    value[key] = self._convert(item, f"{path}.{key}" if path else key, depth + 1)
            return value
        if kind is list and value:
            first = type(value[0])
            if first is int or first is float or first is list or first is bool:
                array = to_typed_array(value)
                if array is not None:
                    return self.typed(array, path)
            for i, item in enumerate(value):
                item_kind = type(item)
                if item_kind is list or item_kind is dict:
                    value[i] = self._convert(item, path, depth + 1)
        return value

    def convert_record(self, value: Any, path: str = "", depth: int = 1) -> Any:
        """A record made in Python, as it will be stored; the caller's objects are not changed.

        JSON values as ``convert`` (numeric lists become typed arrays); numpy arrays, numpy
        scalars (0-d arrays) and CPU torch tensors keep their own dtype; tuples are lists.
        Anything else (bytes, sets, objects, keys that are not strings) is an OptionError
        naming its path."""
        kind = type(value)
        if kind is str or kind is int or kind is float or kind is bool or value is None:
            return value
        if depth > MAX_NESTING_DEPTH:  # containers only, as ``convert``; ends a self-holding list
            where = _where(path)
            raise RecordLimitError(f"{where}: nested deeper than {MAX_NESTING_DEPTH} levels")
        if kind is dict:
            out = {}
            for key, item in value.items():
                if type(key) is not str:
                    raise OptionError(f"{_where(path)}: keys must be strings, not {key!r}")
                item_kind = type(item)
                if item_kind is str or item_kind is int or item_kind is float or item_kind is bool:
                    out[key] = item  # a leaf kept as it is: no path to build, no call
                else:
                    out[key] = self.convert_record(
                        item, f"{path}.{key}" if path else key, depth + 1
                    )
            return out
        if kind is list or kind is tuple:
            items = list(value)
            if items and type(items[0]) in (int, float, bool, list):
                array = to_typed_array(items)
                if array is not None:
                    return self.typed(array, path)
            return [self.convert_record(item, path, depth + 1) for item in items]
        array = native_array(value, path)
        if array is None:
            raise OptionError(
                f"{_where(path)}: a {kind.__name__} is not a JSON value, numpy array or scalar, "
                "or torch tensor"
            )
        return self.typed(array, path)

    def typed(self, array: np.ndarray, path: str) -> np.ndarray:
        """``array``, the typed form of the list at ``path``, as it is stored (a lossy
        ``--dtype`` applied), counted in ``array_dtypes``."""
        return self.count(self.stored_form(array, path), path)

    def stored_form(self, array: np.ndarray, path: str) -> np.ndarray:
        """``array`` as it is stored at ``path``: a lossy ``--dtype`` applied. Records nothing,
        so a reader may call it before it knows whether it keeps the record."""
        forced = self.dtype_overrides.get(path)
        if forced is None:
            return array
        if array.dtype.kind != "f":
            raise OptionError(
                f"--dtype {path}={forced.name} applies to float arrays, "
                f"but {path!r} holds {array.dtype.name} values"
            )
        with np.errstate(over="ignore"):
            return array.astype(forced)

    def count(self, array: np.ndarray, path: str) -> np.ndarray:
        """Count ``array`` (as ``stored_form`` made it) in ``array_dtypes``, and a lossy path
        in ``lossy_fields``."""
        forced = self.dtype_overrides.get(path)
        if forced is not None:
            self.lossy_fields[path] = forced.name
        seen = self.array_dtypes.setdefault(path, {})
        name = DTYPE_NAMES[array.dtype]
        seen[name] = seen.get(name, 0) + 1
        return array

    def _append_array(self, obj: Any) -> msgspec.msgpack.Ext:
        if not isinstance(obj, np.ndarray):
            raise TypeError(f"cannot encode {type(obj).__name__}")
        arena = self._arena
        pad = -len(arena) % ARRAY_ALIGN
        if pad:
            arena += b"\0" * pad
        arena += np.ascontiguousarray(obj).view(np.uint8).data  # a byte view works for any dtype
        code = CODE_BY_DTYPE[obj.dtype]
        header = ARRAY_HEADERS[obj.ndim].pack(code, obj.ndim, *obj.shape)
        return msgspec.msgpack.Ext(EXT_ARRAY, header)


def native_array(value: Any, path: str) -> np.ndarray | None:
    """A numpy array (or scalar: 0-d) or CPU torch tensor as a little-endian array of a dtype
    the format stores; None when ``value`` is none of these."""
    if isinstance(value, np.generic):
        value = np.asarray(value)
    elif type(value).__module__ == "torch" and type(value).__name__ == "Tensor":
        value = _tensor_array(value, path)
    if not isinstance(value, np.ndarray):
        return None
    dtype = value.dtype
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
        value = value.astype(dtype)
    if dtype not in CODE_BY_DTYPE:
        raise OptionError(
            f"{_where(path)}: arrays of {dtype.name} cannot be stored "
            "(bool, int8-64, uint8-64, float16/32/64 and bfloat16 can)"
        )
    if value.ndim > MAX_NDIM or any(n >= 2**32 for n in value.shape):
        raise OptionError(f"{_where(path)}: an array of shape {value.shape} is too large")
    array: np.ndarray = value
    return array


def _tensor_array(tensor: Any, path: str) -> np.ndarray:
    if tensor.device.type != "cpu":
        raise OptionError(f"{_where(path)}: a tensor on {tensor.device} (move it to the CPU first)")
    tensor = tensor.detach()
    if str(tensor.dtype) == "torch.bfloat16":  # numpy has none: the same bits, as ml_dtypes'
        int16 = sys.modules["torch"].int16  # torch is loaded: the caller holds a tensor
        return tensor.view(int16).numpy().view(DTYPE_BY_CODE[8])  # type: ignore[no-any-return]
    return tensor.numpy()  # type: ignore[no-any-return]


def _where(path: str) -> str:
    return f"field {path!r}" if path else "the record"


def _escape_unencodable(value: Any) -> Any:
    """Replace values msgpack cannot carry (huge ints, unpaired surrogates) by extension values."""
    kind = type(value)
    if kind is int and not -(2**63) <= value < 2**64:
        return msgspec.msgpack.Ext(EXT_BIGINT, str(value).encode("ascii"))
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return msgspec.msgpack.Ext(EXT_RAW_STR, value.encode("utf-8", "surrogatepass"))
        return value
    if kind is list:
        return [_escape_unencodable(item) for item in value]
    if kind is dict:
        escaped = {}
        for key, item in value.items():
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                raise OptionError(
                    f"object key {key!r} holds an unpaired surrogate; keys must be valid Unicode"
                ) from None
            escaped[key] = _escape_unencodable(item)
        return escaped
    return value
