"""JSON lines straight into the values a pack stores, numeric lists as typed arrays, through
simdjson: no Python int or float is made for an element of a numeric list.

The reference path (msgspec builds every number as a Python object, then
``RecordEncoder.convert`` copies them into arrays) spends most of a KD pack's time on the numbers.
Here simdjson parses the line and each homogeneous numeric list is copied into a buffer in C.

A line this path cannot prove it reads exactly as the reference path would gets ``None``, and
the caller reads that line the reference way: the values, and so the packed bytes, are the same
whichever path read a line (tests compare both on generated and hostile lines). It declines:
duplicate keys (simdjson returns the first, JSON readers the last), a byte-order mark, escapes
that could hide a ``[`` or put a NUL in a key (simdjson's lookup would stop there), objects of
more than ``FAST_KEYS`` keys, nesting deeper than ``FAST_DEPTH``, and anything simdjson refuses
(invalid JSON, numbers beyond 64 bits or out of range, lone surrogates: those keep the reference
path's handling and its error messages).

Arrays simdjson flattens are checked for shape by their rows' lengths; that no row hides a
nested list is checked for the whole line at once, by counting ``[`` in its bytes against the
lists the walk accounts for (plus any ``[`` inside its strings).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simdjson

from ..format.records import RecordEncoder, narrowest, to_typed_array

FAST_DEPTH = 64  # below the format's MAX_NESTING_DEPTH: deeper lines go the reference way
FAST_KEYS = 64  # objects with more keys go the reference way (simdjson finds a key by a scan)
_BOM = b"\xef\xbb\xbf"
_OPEN_BRACKET = ord("[")  # counted with numpy: 4x faster than bytes.count on a KD line
_Array = simdjson.Array
_Object = simdjson.Object
_INT64 = np.dtype(np.int64)
_FLOAT64 = np.dtype(np.float64)
_SIMDJSON_ERRORS = (ValueError, TypeError, RuntimeError, KeyError, IndexError)


class _Declined(Exception):
    """This line is for the reference path."""


class TypedLineReader:
    """Reads lines for one ``RecordEncoder`` (one unit): ``read(line)`` is the value
    ``encoder.convert(json.loads(line))`` gives, with the same dtype statistics recorded, or None
    when the line must be read the reference way (nothing is recorded then)."""

    def __init__(self, encoder: RecordEncoder) -> None:
        self.encoder = encoder
        self._parser = simdjson.Parser()
        self._arrays: list[tuple[np.ndarray, str]] = []  # as stored, with their field paths
        self._lists = 0  # JSON arrays of the line the walk accounted for

    def read(self, line: bytes) -> Any:
        if line.startswith(_BOM):
            return None  # simdjson would skip it; the reference refuses it
        # an escape that may spell "[" in a string, or a NUL, which would cut a key short where
        # simdjson looks it up (a search for one byte first: it is 50x faster than for several)
        if b"\\" in line and (b"\\u005" in line or b"\\u0000" in line):
            return None
        self._arrays.clear()
        self._lists = 0
        try:
            value = self._value(self._parser.parse(line), "", 1)
        except (_Declined, *_SIMDJSON_ERRORS):
            self._parser = simdjson.Parser()  # no proxy of this line may pin the old one
            return None
        brackets = int(np.count_nonzero(np.frombuffer(line, np.uint8) == _OPEN_BRACKET))
        if brackets != self._lists and brackets - self._lists != _brackets_in_strings(value):
            return None  # a list hidden inside a flattened array (or an uncounted one)
        for array, path in self._arrays:
            self.encoder.count(array, path)
        return value

    def _value(self, value: Any, path: str, depth: int) -> Any:
        kind = type(value)
        if kind is _Object:
            if depth > FAST_DEPTH:
                raise _Declined
            keys = list(value)
            if len(keys) > FAST_KEYS:
                raise _Declined  # each lookup scans the keys: a big map goes the reference way
            out = {}
            for key in keys:
                item = value[key]
                item_kind = type(item)
                if item_kind is _Object or item_kind is _Array:
                    item = self._value(item, f"{path}.{key}" if path else key, depth + 1)
                out[key] = item
            if len(out) != len(keys):
                raise _Declined  # duplicate keys: simdjson's lookup finds the first
            return out
        if kind is _Array:
            if depth > FAST_DEPTH:
                raise _Declined
            return self._list(value, path, depth)
        return value

    def _list(self, value: Any, path: str, depth: int) -> Any:
        count = len(value)
        if not count:
            self._lists += 1
            return []
        first = value[0]
        first_kind = type(first)
        if first_kind is int or first_kind is float or first_kind is _Array or first_kind is bool:
            array = self._flat_array(value, count, first)
            if array is None:  # not one the buffer copy can prove: the reference conversion
                items = value.as_list()
                array = to_typed_array(items)
                if array is None:
                    return self._items(value, path, depth)
                self._lists += _count_lists(items)
            array = self.encoder.stored_form(array, path)  # a lossy --dtype: the same error too
            self._arrays.append((array, path))
            return array
        return self._items(value, path, depth)

    def _items(self, value: Any, path: str, depth: int) -> list[Any]:
        self._lists += 1
        out = []
        for item in value:
            item_kind = type(item)
            if item_kind is _Object or item_kind is _Array:
                item = self._value(item, path, depth + 1)
            out.append(item)
        return out

    def _flat_array(self, value: Any, count: int, first: Any) -> np.ndarray | None:
        """A 1-D or 2-D list of only ints or only non-integral floats, copied in C; None for
        anything else (the caller converts it the reference way).

        Rows are checked for equal lengths here; that none holds a list (which the buffer copy
        would flatten) is checked for the whole line by ``read``."""
        leaf: Any
        if type(first) is _Array:
            width = len(first)
            if not width:
                return None
            leaf = first[0]
            try:
                if set(map(len, value)) != {width}:
                    return None
            except TypeError:  # a row that is a number
                return None
            shape: tuple[int, ...] = (count, width)
            lists = 1 + count
        else:
            leaf = first
            shape = (count,)
            lists = 1
        leaf_kind = type(leaf)
        try:
            if leaf_kind is int:  # every element an int64: simdjson refuses floats and bools
                array = np.frombuffer(value.as_buffer(of_type="i"), _INT64)
            elif leaf_kind is float:  # doubles, but ints too (integral values, checked below)
                array = np.frombuffer(value.as_buffer(of_type="d"), _FLOAT64)
            else:
                return None
        except _SIMDJSON_ERRORS:
            return None
        array = array.reshape(shape)  # (a count that does not fit: ValueError, declined)
        if leaf_kind is float and np.any(array == np.floor(array)):
            return None  # an integral value may be an int in the text: exact types needed
        self._lists += lists
        return narrowest(array)


def _count_lists(value: Any) -> int:
    if type(value) is not list:
        return 0
    return 1 + sum(map(_count_lists, value))


def _brackets_in_strings(value: Any) -> int:
    """How many "[" the strings (keys included) of a read value hold."""
    kind = type(value)
    if kind is str:
        text: str = value
        return text.count("[")
    if kind is dict:
        return sum(key.count("[") + _brackets_in_strings(item) for key, item in value.items())
    if kind is list:
        return sum(map(_brackets_in_strings, value))
    return 0
