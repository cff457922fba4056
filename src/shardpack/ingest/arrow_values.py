"""Arrow columns -> records: the rows of a Parquet / Arrow table as the Python values a pack
stores, so that typed data keeps its type and everything else reads as JSON would.

A list column with a numeric leaf type (``list<int32>``, ``large_list<float16>``,
``fixed_size_list<float32, 8>``, ``list<list<...>>``) gives each row a numpy array of that very
type: N-D when the row is rectangular, else a list of arrays (as a ragged JSON list would be).
Scalars, strings, structs (objects), ``map<string, _>`` (objects) and lists of anything else
become Python values, which the pack then narrows as it narrows JSON. Binary values become
uint8 arrays; dates, times and timestamps ISO 8601 text; decimals their decimal text. A type
with no such form (unions, maps with non-text keys, durations, intervals) is an error naming
its column. docs/ARROW.md lists every rule.

pyarrow is imported by the functions here only, never at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InputError

DTYPE_KEY = b"shardpack:dtype"  # field metadata: the dtype a field's arrays were stored with
_ISO_TYPES = ("is_timestamp", "is_date", "is_time")
_UNSUPPORTED = ("is_union", "is_duration", "is_interval", "is_run_end_encoded")


def table_records(table: Any, source: str) -> list[dict[str, Any]]:
    """The rows of a ``pyarrow.Table`` or ``RecordBatch`` as records (dicts in column order)."""
    names = list(table.schema.names)
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"column names repeat: {', '.join(repeated)}", path=source)
    columns = []
    for name, field in zip(names, table.schema, strict=True):
        column = table.column(name)
        chunks = column.chunks if hasattr(column, "chunks") else [column]
        values: list[Any] = []
        for chunk in chunks:
            values += column_values(chunk, name, source)
        dtype = (field.metadata or {}).get(DTYPE_KEY)
        if dtype is not None:
            values = _restore_dtype(values, dtype.decode("ascii"), name, source)
        columns.append(values)
    if not columns:
        return [{} for _ in range(table.num_rows)]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def column_values(array: Any, path: str, source: str) -> list[Any]:
    """One Python value per element of an Arrow array (``path`` names it in errors)."""
    import pyarrow as pa
    import pyarrow.types as t

    kind = array.type
    if isinstance(kind, pa.ExtensionType):  # e.g. Hugging Face's Array2D: its storage holds it
        return column_values(array.storage, path, source)
    if t.is_dictionary(kind):
        return column_values(array.dictionary_decode(), path, source)
    if t.is_null(kind):
        return [None] * len(array)
    if t.is_floating(kind) or t.is_integer(kind) or t.is_boolean(kind) or _is_text(kind):
        values: list[Any] = array.to_pylist()
        return values
    if _is_binary(kind):
        return [None if b is None else np.frombuffer(b, np.uint8) for b in array.to_pylist()]
    if any(getattr(t, name)(kind) for name in _ISO_TYPES):
        return [None if v is None else v.isoformat() for v in array.to_pylist()]
    if t.is_decimal(kind):
        return [None if v is None else str(v) for v in array.to_pylist()]
    if t.is_struct(kind):
        return _struct_values(array, path, source)
    if t.is_map(kind):
        return _map_values(array, path, source)
    if _is_list(kind):
        return _list_values(array, path, source)
    raise InputError(f"column {path!r}: Arrow type {kind} has no JSON form", path=source)


def _is_text(kind: Any) -> bool:
    import pyarrow.types as t

    return bool(t.is_string(kind) or t.is_large_string(kind) or t.is_string_view(kind))


def _is_binary(kind: Any) -> bool:
    import pyarrow.types as t

    return bool(
        t.is_binary(kind)
        or t.is_large_binary(kind)
        or t.is_fixed_size_binary(kind)
        or t.is_binary_view(kind)
    )


def _is_list(kind: Any) -> bool:
    import pyarrow.types as t

    return bool(
        t.is_list(kind)
        or t.is_large_list(kind)
        or t.is_fixed_size_list(kind)
        or t.is_list_view(kind)
        or t.is_large_list_view(kind)
    )


def _struct_values(array: Any, path: str, source: str) -> list[Any]:
    names = [array.type.field(i).name for i in range(array.type.num_fields)]
    if len(set(names)) != len(names):
        raise InputError(f"column {path!r}: a struct whose field names repeat", path=source)
    children = [
        column_values(child, f"{path}.{name}", source)
        for name, child in zip(names, array.flatten(), strict=True)  # flatten: parent's nulls
    ]
    valid = array.is_valid().to_pylist() if array.null_count else None
    rows: list[Any] = [dict(zip(names, row, strict=True)) for row in zip(*children, strict=True)]
    if not children:
        rows = [{} for _ in range(len(array))]
    if valid is not None:
        rows = [row if ok else None for row, ok in zip(rows, valid, strict=True)]
    return rows


def _map_values(array: Any, path: str, source: str) -> list[Any]:
    if not _is_text(array.type.key_type):
        raise InputError(
            f"column {path!r}: a map with {array.type.key_type} keys has no JSON form "
            "(object keys are text)",
            path=source,
        )
    entries = array.values  # the key/value structs of every row, unsliced
    keys = column_values(entries.field(0), path, source)
    items = column_values(entries.field(1), path, source)
    starts, stops, _ = _bounds(array)
    rows = [
        dict(zip(keys[a:b], items[a:b], strict=True))
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True)
    ]
    valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else None
    return _null_rows(rows, valid)


def _list_values(array: Any, path: str, source: str) -> list[Any]:
    """Rows of a list array: numpy arrays for numeric leaves, else lists of child values."""
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_list_view(array.type) or t.is_large_list_view(array.type):
        target = pa.large_list if t.is_large_list_view(array.type) else pa.list_
        array = array.cast(target(array.type.value_field))
    levels: list[tuple[np.ndarray, np.ndarray]] = []  # per level: starts and stops in its child
    widths: list[int | None] = []  # fixed widths where the level has one
    level = array
    while _is_list(level.type):
        level_starts, level_stops, width = _bounds(level)
        levels.append((level_starts, level_stops))
        widths.append(width)
        level = level.values
        if isinstance(level.type, pa.ExtensionType):
            level = level.storage
    numeric = t.is_integer(level.type) or t.is_floating(level.type) or t.is_boolean(level.type)
    valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else None
    if not numeric or (level.null_count and len(levels) > 1):
        # lists of other values (or nested numbers with nulls among them): plain lists of the
        # child's values, narrowed by the pack as JSON lists are
        items = column_values(array.values, path, source)
        starts, stops = levels[0]
        rows = [items[a:b] for a, b in zip(starts.tolist(), stops.tolist(), strict=True)]
        return _null_rows(rows, valid)
    flat = level.fill_null(False if t.is_boolean(level.type) else 0).to_numpy(zero_copy_only=False)
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    rows = _typed_rows(flat, levels, widths)
    if level.null_count:  # a row holding a null is a list (as JSON holds [3, null])
        nulls = np.cumsum(level.is_null().to_numpy(zero_copy_only=False), dtype=np.int64)
        nulls = np.concatenate(([0], nulls))
        starts, stops = levels[0]
        for i in np.flatnonzero(nulls[stops] != nulls[starts]).tolist():
            rows[i] = level.slice(int(starts[i]), int(stops[i] - starts[i])).to_pylist()
    return _null_rows(rows, valid)


def _bounds(level: Any) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Where each element of a list array lies in ``level.values``: starts, stops, fixed width."""
    import pyarrow.types as t

    if t.is_fixed_size_list(level.type):
        width = level.type.list_size
        starts = (np.arange(len(level), dtype=np.int64) + level.offset) * width
        return starts, starts + width, width
    offsets = level.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    return offsets[:-1], offsets[1:], None


def _typed_rows(
    flat: np.ndarray, levels: list[tuple[np.ndarray, np.ndarray]], widths: list[int | None]
) -> list[Any]:
    """Each top-level element as an array (rectangular) or a list of arrays (ragged)."""
    starts, stops = levels[0]
    if len(levels) == 1:
        return [flat[a:b] for a, b in zip(starts.tolist(), stops.tolist(), strict=True)]
    if len(levels) == 2:
        inner_starts, inner_stops = levels[1]
        if np.array_equal(inner_starts[1:], inner_stops[:-1]):  # rows back to back: views
            return _matrix_rows(flat, levels[0], levels[1], widths[1])
    # rows of the next level, recursively; then each element's rows stacked when rectangular
    inner = _typed_rows(flat, levels[1:], widths[1:])
    return [
        _stack(inner[a:b], widths[1:], flat.dtype)
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True)
    ]


def _matrix_rows(
    flat: np.ndarray,
    outer: tuple[np.ndarray, np.ndarray],
    inner: tuple[np.ndarray, np.ndarray],
    width: int | None,
) -> list[Any]:
    """Two list levels whose inner lists lie back to back: a 2-D view per rectangular row."""
    inner_starts, inner_stops = inner
    lengths = inner_stops - inner_starts
    rows: list[Any] = []
    for a, b in zip(outer[0].tolist(), outer[1].tolist(), strict=True):
        if a == b:
            rows.append(np.empty((0, width or 0), flat.dtype))
            continue
        row_lengths = lengths[a:b]
        first = int(row_lengths[0])
        if width is not None or bool((row_lengths == first).all()):
            start = int(inner_starts[a])
            rows.append(flat[start : start + (b - a) * first].reshape(b - a, first))
        else:  # ragged: one array per inner list, as a ragged JSON list is stored
            pairs = zip(inner_starts[a:b].tolist(), inner_stops[a:b].tolist(), strict=True)
            rows.append([flat[start:stop] for start, stop in pairs])
    return rows


def _stack(parts: list[Any], widths: list[int | None], dtype: np.dtype) -> Any:
    """One N-D array of ``parts`` when they are arrays of one shape, else the list of them."""
    if not parts:
        return np.empty((0, *(w or 0 for w in widths)), dtype)
    first = parts[0]
    if all(type(p) is np.ndarray and p.shape == first.shape for p in parts):
        return np.stack(parts)
    return parts


def _null_rows(rows: list[Any], valid: np.ndarray | None) -> list[Any]:
    if valid is None:
        return rows
    return [row if ok else None for row, ok in zip(rows, valid.tolist(), strict=True)]


def _restore_dtype(values: list[Any], dtype: str, path: str, source: str) -> list[Any]:
    """Arrays of a field that shardpack exported widened (bfloat16 as float32) in their own
    dtype again, as the field metadata says."""
    from ..format.dtypes import DTYPE_BY_NAME

    target = DTYPE_BY_NAME.get(dtype)
    if target is None:
        raise InputError(f"column {path!r}: unknown stored dtype {dtype!r}", path=source)
    convert: Callable[[Any], Any] = lambda v: v.astype(target) if type(v) is np.ndarray else v  # noqa: E731
    return [_map_arrays(v, convert) for v in values]


def _map_arrays(value: Any, convert: Callable[[Any], Any]) -> Any:
    if type(value) is list:
        return [_map_arrays(v, convert) for v in value]
    return convert(value)
