"""Dataset statistics gathered while packing, in one pass, mergeable across work units.

Per field (dotted path; list levels are transparent): how often present, null count, JSON type
counts, string lengths, numeric ranges, array lengths and dtypes. Lengths go into log-linear
histograms (16 sub-buckets per power of two, so percentiles are within ~6%), which merge by
addition: statistics come out the same for any number of worker processes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from operator import attrgetter
from typing import Any

import numpy as np

from ..format.dtypes import DTYPE_NAMES
from ..format.metadata import ArrayField, DatasetStats, FieldSummary
from .columns import BatchedPass, Column
from .fields import FieldStats, max_optional, min_optional


class StatsCollector(BatchedPass):
    """Observes encoded records (numeric lists already numpy arrays) and summarises them.

    Records are summarised a batch at a time, column by column (see ``columns``): ``observe``
    only keeps the record until its batch is full or ``flush`` is called.
    """

    def __init__(self) -> None:
        super().__init__()
        self.root = FieldStats()

    def observe(self, value: Any) -> None:
        self.add(value)

    def observe_many(self, values: list[Any]) -> None:
        """Observe a batch of records at once (the cheap way, in their order)."""
        self.add_many(values)

    def _fold(self, records: Column) -> None:
        _observe_column(records, self.root)

    def merge(self, other: StatsCollector) -> None:
        self.drain()
        other.drain()
        self.records += other.records
        self.root.merge(other.root)

    def flush(self) -> None:
        """Count everything pending; afterwards no record value is referenced any more."""
        self.drain()
        self.root.flush()

    def __getstate__(self) -> dict[str, Any]:
        self.flush()  # travel between processes as counts, not as the unit's records
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def to_stats(self) -> DatasetStats:
        """The records and field statistics (dotted paths, sorted); sizes are the caller's."""
        self.flush()
        fields: dict[str, FieldSummary] = {}
        self._flatten(self.root, "", fields)
        return DatasetStats(records=self.records, fields=dict(sorted(fields.items())))

    def _flatten(self, stats: FieldStats, path: str, out: dict[str, FieldSummary]) -> None:
        for key, child in stats.children.items():
            child_path = f"{path}.{key}" if path else key
            out[child_path] = child.to_summary()
            self._flatten(child, child_path, out)


def _observe_column(column: Column, stats: FieldStats) -> None:
    """Count what one field path held (one value per record that has it)."""
    stats.present += len(column)
    types = stats.types
    for kind, group in column.groups.items():
        types[kind] = types.get(kind, 0) + len(group)
        if kind is str:
            stats.string_lengths.add_all(map(len, group))
        elif kind is dict:
            _observe_fields(column, stats)
        elif kind is np.ndarray:
            _observe_arrays(group, stats)
        elif kind is list:
            _observe_lists(group, column, stats)
        elif kind is int or kind is float:
            _observe_numbers(group, stats)


def _observe_fields(column: Column, stats: FieldStats) -> None:
    children = stats.children
    for key, field in column.fields.items():
        child = children.get(key)
        if child is None:
            child = children[key] = FieldStats()
        _observe_column(field, child)


def _observe_lists(lists: list[list[Any]], column: Column, stats: FieldStats) -> None:
    stats.array_lengths.add_all(map(len, lists))
    # list levels are transparent: objects in lists share the list's path; scalars in lists
    # (strings, mixed values) are not counted one by one
    items = column.items
    groups = items.groups
    if dict in groups:
        _observe_fields(items, stats)
    nested = groups.get(list, []) + groups.get(np.ndarray, [])
    if nested:  # nested arrays: their lengths count under "path.[]"
        _observe_column(Column(nested), stats.child("[]"))


def _observe_arrays(arrays: list[np.ndarray], stats: FieldStats) -> None:
    stats.array_lengths.add_all([len(a) if a.ndim else 1 for a in arrays])  # 0-d: one value
    stats.elements += sum(map(_size, arrays))
    by_dtype = Counter(map(_dtype, arrays))
    for dtype, n in by_dtype.items():
        name = DTYPE_NAMES[dtype]  # a dict lookup: numpy's dtype.name costs ~7 µs
        stats.array_dtypes[name] = stats.array_dtypes.get(name, 0) + n
        if name == "bool":
            continue
        same = arrays if len(by_dtype) == 1 else [a for a in arrays if a.dtype == dtype]
        low_high = _value_range(same)
        if low_high is not None:
            stats.value_min = min_optional(stats.value_min, low_high[0])
            stats.value_max = max_optional(stats.value_max, low_high[1])


RANGE_CHUNK = 16384  # elements: small arrays are joined into chunks of about this size


def _value_range(arrays: list[np.ndarray]) -> tuple[float, float] | None:
    """Smallest and largest element of same-dtype arrays, or None if all are empty.

    A min/max call per array costs microseconds of overhead, and joining a whole batch into one
    array costs page faults on a fresh buffer; chunks of small arrays sit between the two.
    """
    lows: list[Any] = []
    highs: list[Any] = []
    chunk: list[np.ndarray] = []
    chunk_size = 0
    for array in arrays:
        size = array.size
        if size >= RANGE_CHUNK:
            lows.append(array.min())
            highs.append(array.max())
            continue
        chunk.append(array)
        chunk_size += size
        if chunk_size >= RANGE_CHUNK:
            joined = np.concatenate(chunk, axis=None)
            lows.append(joined.min())
            highs.append(joined.max())
            chunk, chunk_size = [], 0
    if chunk_size:
        joined = np.concatenate(chunk, axis=None)
        lows.append(joined.min())
        highs.append(joined.max())
    if not lows:
        return None
    return float(min(lows)), float(max(highs))


_size = attrgetter("size")
_dtype = attrgetter("dtype")


def _observe_numbers(numbers: list[int] | list[float], stats: FieldStats) -> None:
    stats.numbers += len(numbers)
    total = sum(numbers)
    try:
        stats.number_sum += total
    except OverflowError:  # an integer beyond float range
        stats.number_sum += math.inf if total > 0 else -math.inf
    stats.number_min = min_optional(stats.number_min, min(numbers))
    stats.number_max = max_optional(stats.number_max, max(numbers))


def token_field(arrays: Mapping[str, ArrayField]) -> str | None:
    """The field counted as tokens: ``input_ids`` if present, else the first 1-D int array field."""
    if "input_ids" in arrays:
        return "input_ids"
    for path, field in arrays.items():
        if field.dtype.startswith(("int", "uint")) and "." not in path:
            return path
    return None
