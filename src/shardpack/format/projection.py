"""Field projection: decode only some top-level fields of object records, skipping the others.

Records are decoded against a TypedDict of the asked fields, so msgspec steps over every other
field's bytes without building it (no string, no dict, no array). Arrays are found by a cursor
over the arena in payload order, so a skipped field that holds arrays must still move the
cursor: such fields (known from the file's ``arrays`` paths) are decoded too, but their arrays
come back as cheap ``(offset, spec)`` marks instead of numpy views, and the fields are dropped;
the asked fields' marks become arrays. Which fields may hold arrays comes from metadata, so a
block decoded this way is checked to have used exactly its arena; the caller falls back to a
full decode where it did not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

import msgspec
import numpy as np

from .decode import ArenaCursor, array_spec
from .dtypes import EXT_ARRAY


class MarkingCursor(ArenaCursor):
    """An arena cursor whose arrays are ``(byte offset, (dtype, nbytes, shape))`` marks: the
    cursor moves exactly as for real arrays, but no numpy object is made."""

    __slots__ = ()

    def ext_hook(self, code: int, data: memoryview) -> Any:
        if code != EXT_ARRAY:
            return super().ext_hook(code, data)
        spec = array_spec(data)
        start = self.arena_start + ((self.position + 7) & ~7)  # ARRAY_ALIGN
        end = start + spec[1]
        if end > self.arena_end:
            raise ValueError("array runs past the end of the block's arena")
        self.position = end - self.arena_start
        return (start, spec)


class NotAnObject(Exception):
    """A record that is not an object, met by a projection: ``index`` within its block."""

    def __init__(self, index: int, kind: str) -> None:
        super().__init__(f"record {index} of the block is a {kind}, not an object")
        self.index = index
        self.kind = kind


def _array_holders(array_paths: Iterable[str]) -> set[str]:
    """Top-level keys that may hold arrays: ``a.b.c`` may be key ``a``, ``a.b`` or ``a.b.c``
    (paths join keys with dots, and keys may contain dots)."""
    holders: set[str] = set()
    for path in array_paths:
        parts = path.split(".")
        holders.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return holders


Decoders = tuple[ArenaCursor, msgspec.msgpack.Decoder, msgspec.msgpack.Decoder]


class Projection:
    """Decoders that keep only ``columns`` of object records (per thread, reused)."""

    def __init__(self, columns: Sequence[str], array_paths: Iterable[str] = ()) -> None:
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise TypeError(f"columns must be a list of field names, got {columns!r}")
        self.columns = tuple(dict.fromkeys(columns))
        holders = _array_holders(array_paths)
        wanted = set(self.columns)
        # skipped fields that may hold arrays: decoded (arrays as marks) to move the cursor
        self.dropped = tuple(sorted(holders - wanted))
        self.resolved = tuple(name for name in self.columns if name in holders)
        fields = dict.fromkeys((*self.columns, *self.dropped), Any)
        self._wanted = frozenset(self.columns)
        # built at run time from the asked names (functional TypedDict), hence the Any
        make_typed_dict: Any = TypedDict
        self.record_type: Any = make_typed_dict("Projected", fields, total=False)
        self._local = threading.local()

    @property
    def marks_arrays(self) -> bool:
        return bool(self.dropped)

    def decoders(self) -> Decoders:
        """This thread's (cursor, record decoder, block decoder)."""
        local = self._local
        try:
            found: Decoders = local.decoders
        except AttributeError:
            cursor = MarkingCursor(b"", 0, 0) if self.dropped else ArenaCursor(b"", 0, 0)
            hook = cursor.ext_hook
            record_type = self.record_type
            found = local.decoders = (
                cursor,
                msgspec.msgpack.Decoder(record_type, ext_hook=hook),
                msgspec.msgpack.Decoder(list[record_type], ext_hook=hook),  # type: ignore[valid-type]
            )
        return found

    def project(self, records: list[Any], first: int = 0) -> list[Any]:
        """The asked fields of fully decoded records, in record order: the slow way, for blocks
        the fast way could not take. ``first``: the block index of ``records[0]``."""
        wanted = self._wanted
        projected = []
        for k, record in enumerate(records):
            if type(record) is not dict:
                raise NotAnObject(first + k, type(record).__name__)
            projected.append({key: value for key, value in record.items() if key in wanted})
        return projected

    def finish(self, records: list[dict[str, Any]], buffer: Any) -> None:
        """Drop the skipped array fields and turn the kept fields' marks into arrays, in place."""
        dropped, resolved = self.dropped, self.resolved
        for record in records:
            for name in dropped:
                record.pop(name, None)
            for name in resolved:
                if name in record:
                    record[name] = _resolve(record[name], buffer)


def _resolve(value: Any, buffer: Any) -> Any:
    kind = type(value)
    if kind is tuple:  # a mark: decoded values are never tuples
        offset, (dtype, _, shape) = value
        return np.ndarray(shape, dtype, buffer, offset)
    if kind is list:
        for i, item in enumerate(value):
            if type(item) in (tuple, list, dict):
                value[i] = _resolve(item, buffer)
    elif kind is dict:
        for key, item in value.items():
            if type(item) in (tuple, list, dict):
                value[key] = _resolve(item, buffer)
    return value
