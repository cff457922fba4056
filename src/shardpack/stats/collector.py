"""Dataset statistics gathered while packing, in one pass, mergeable across work units.

Per field (dotted path; list levels are transparent): how often present, null count, JSON type
counts, string lengths, numeric ranges, array lengths and dtypes. Lengths go into log-linear
histograms (16 sub-buckets per power of two, so percentiles are within ~6%), which merge by
addition: statistics come out the same for any number of worker processes.
"""

from __future__ import annotations

import math
from collections import Counter
from operator import attrgetter
from typing import Any

import numpy as np

from ..format.records import DTYPE_NAMES
from .columns import BatchedPass, Column

SUB_BUCKETS = 16  # per power of two: relative bucket width 1/16


def bucket_of(length: int) -> int:
    """Histogram bucket of a non-negative length: exact below 32, log-linear above."""
    if length < 2 * SUB_BUCKETS:
        return length
    shift = length.bit_length() - 5  # keep 5 significant bits: 16 sub-buckets per octave
    return 2 * SUB_BUCKETS + (shift - 1) * SUB_BUCKETS + (length >> shift) - SUB_BUCKETS


def bucket_bounds(bucket: int) -> tuple[int, int]:
    """The [low, high] lengths that fall into ``bucket``."""
    if bucket < 2 * SUB_BUCKETS:
        return bucket, bucket
    shift, mantissa = divmod(bucket - 2 * SUB_BUCKETS, SUB_BUCKETS)
    low = (mantissa + SUB_BUCKETS) << (shift + 1)
    return low, low + (1 << (shift + 1)) - 1


def buckets_of(lengths: np.ndarray) -> np.ndarray:
    """``bucket_of`` for many non-negative lengths at once."""
    lengths = lengths.astype(np.int64)
    bits = np.zeros(len(lengths), dtype=np.int64)
    positive = lengths > 0
    bits[positive] = np.floor(np.log2(lengths[positive])).astype(np.int64) + 1
    shift = np.maximum(bits - 5, 1)
    logarithmic = 2 * SUB_BUCKETS + (shift - 1) * SUB_BUCKETS + (lengths >> shift) - SUB_BUCKETS
    return np.where(lengths < 2 * SUB_BUCKETS, lengths, logarithmic)


class LengthHistogram:
    """Counts of lengths in log-linear buckets, with exact min, max and total.

    ``add`` only appends to a pending list (it runs once per string per record, so it must be
    cheap); the pending lengths are bucketed with numpy when the histogram is next read or merged.
    """

    __slots__ = ("_pending", "buckets", "count", "max", "min", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None
        self._pending: list[int] = []

    def add(self, length: int) -> None:
        self._pending.append(length)

    def add_all(self, lengths: Any) -> None:
        self._pending.extend(lengths)

    def flush(self) -> None:
        """Bucket the pending lengths."""
        if not self._pending:
            return
        lengths = np.array(self._pending, dtype=np.int64)
        self._pending = []
        values, counts = np.unique(buckets_of(lengths), return_counts=True)
        buckets = self.buckets
        for b, n in zip(values.tolist(), counts.tolist(), strict=True):
            buckets[b] = buckets.get(b, 0) + n
        low, high = int(lengths.min()), int(lengths.max())
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)
        self.count += len(lengths)
        self.total += int(lengths.sum())

    def __getstate__(self) -> dict[str, Any]:
        self.flush()  # travel between processes as buckets, not as a list of lengths
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def merge(self, other: LengthHistogram) -> None:
        self.flush()
        other.flush()
        for b, n in other.buckets.items():
            self.buckets[b] = self.buckets.get(b, 0) + n
        self.count += other.count
        self.total += other.total
        if other.min is not None and (self.min is None or other.min < self.min):
            self.min = other.min
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max

    def percentile(self, q: float) -> int | None:
        """Nearest-rank q-th percentile, as the upper bound of its bucket (capped at the max)."""
        self.flush()
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return min(bucket_bounds(b)[1], self.max or 0)
        return self.max

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LengthHistogram:
        """Rebuild a histogram from ``to_dict`` output (exactly: buckets are stored whole)."""
        hist = cls()
        for low, _high, n in data.get("histogram", []):
            b = bucket_of(int(low))
            hist.buckets[b] = hist.buckets.get(b, 0) + int(n)
        hist.count = int(data.get("count", 0))
        hist.total = int(data.get("total", 0))
        hist.min = data.get("min")
        hist.max = data.get("max")
        return hist

    def to_dict(self) -> dict[str, Any]:
        self.flush()
        if not self.count:
            return {"count": 0}
        return {
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "mean": self.total / self.count,
            "max": self.max,
            "p50": self.percentile(50),
            "p95": self.percentile(95),
            "p99": self.percentile(99),
            "histogram": [[*bucket_bounds(b), n] for b, n in sorted(self.buckets.items())],
        }


_TYPE_NAMES = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    dict: "object",
    list: "array",
    np.ndarray: "array",
}


class FieldStats:
    """What one field path held across the records seen."""

    __slots__ = (
        "array_dtypes",
        "array_lengths",
        "children",
        "elements",
        "number_max",
        "number_min",
        "number_sum",
        "numbers",
        "present",
        "string_lengths",
        "types",
        "value_max",
        "value_min",
    )

    def __init__(self) -> None:
        self.present = 0
        self.types: dict[Any, int] = {}  # Python type (name in to_dict) -> count
        self.children: dict[str, FieldStats] = {}
        self.string_lengths = LengthHistogram()
        self.array_lengths = LengthHistogram()
        self.array_dtypes: dict[str, int] = {}
        self.elements = 0
        self.numbers = 0
        self.number_sum = 0.0
        self.number_min: float | None = None
        self.number_max: float | None = None
        self.value_min: float | None = None  # over numeric array elements
        self.value_max: float | None = None

    def flush(self) -> None:
        """Bucket pending lengths, here and in every child."""
        self.string_lengths.flush()
        self.array_lengths.flush()
        for child in self.children.values():
            child.flush()

    def child(self, key: str) -> FieldStats:
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = FieldStats()
        return found

    def merge(self, other: FieldStats) -> None:
        self.flush()
        other.flush()
        self.present += other.present
        for kind, n in other.types.items():
            self.types[kind] = self.types.get(kind, 0) + n
        for key, stats in other.children.items():
            self.child(key).merge(stats)
        self.string_lengths.merge(other.string_lengths)
        self.array_lengths.merge(other.array_lengths)
        for name, n in other.array_dtypes.items():
            self.array_dtypes[name] = self.array_dtypes.get(name, 0) + n
        self.elements += other.elements
        self.numbers += other.numbers
        self.number_sum += other.number_sum
        self.number_min = _min(self.number_min, other.number_min)
        self.number_max = _max(self.number_max, other.number_max)
        self.value_min = _min(self.value_min, other.value_min)
        self.value_max = _max(self.value_max, other.value_max)

    def to_dict(self) -> dict[str, Any]:
        types: dict[str, int] = {}
        for kind, n in self.types.items():
            name = _TYPE_NAMES.get(kind, "other")
            types[name] = types.get(name, 0) + n
        out: dict[str, Any] = {"present": self.present, "types": dict(sorted(types.items()))}
        out["nulls"] = types.get("null", 0)
        self.flush()
        if self.string_lengths.count:
            out["string_length"] = self.string_lengths.to_dict()
        if self.numbers:
            out["number"] = {
                "count": self.numbers,
                "min": self.number_min,
                "mean": self.number_sum / self.numbers,
                "max": self.number_max,
            }
        if self.array_lengths.count:
            out["array_length"] = self.array_lengths.to_dict()
        if self.array_dtypes:
            out["array_dtypes"] = dict(sorted(self.array_dtypes.items()))
            out["array_elements"] = self.elements
            if self.value_min is not None:
                out["array_values"] = {"min": self.value_min, "max": self.value_max}
        return out


_TYPES_BY_NAME = {name: kind for kind, name in _TYPE_NAMES.items() if kind is not np.ndarray}


def _field_from_dict(data: dict[str, Any]) -> FieldStats:
    """A childless FieldStats from one entry of ``StatsCollector.to_dict()["fields"]``."""
    stats = FieldStats()
    stats.present = int(data.get("present", 0))
    stats.types = {
        _TYPES_BY_NAME.get(name, name): int(n) for name, n in data.get("types", {}).items()
    }
    if "string_length" in data:
        stats.string_lengths = LengthHistogram.from_dict(data["string_length"])
    if "array_length" in data:
        stats.array_lengths = LengthHistogram.from_dict(data["array_length"])
    stats.array_dtypes = {k: int(v) for k, v in data.get("array_dtypes", {}).items()}
    stats.elements = int(data.get("array_elements", 0))
    number = data.get("number")
    if number:
        stats.numbers = int(number["count"])
        stats.number_sum = float(number["mean"]) * stats.numbers
        stats.number_min, stats.number_max = number["min"], number["max"]
    values = data.get("array_values")
    if values:
        stats.value_min, stats.value_max = values["min"], values["max"]
    return stats


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Dataset statistics from the statistics of its shards, as if packed as one file."""
    fields: dict[str, FieldStats] = {}
    for part in parts:
        for path, data in part.get("fields", {}).items():
            merged = fields.get(path)
            if merged is None:
                fields[path] = _field_from_dict(data)
            else:
                merged.merge(_field_from_dict(data))
    totals = {
        key: sum(int(part.get(key) or 0) for part in parts)
        for key in ("records", "input_bytes", "raw_bytes", "stored_bytes")
    }
    stored = totals["stored_bytes"]
    token_fields = [part.get("token_field") for part in parts if part.get("token_field")]
    return {
        **totals,
        "compression_ratio": round(totals["input_bytes"] / stored, 4) if stored else None,
        "fields": {path: fields[path].to_dict() for path in sorted(fields)},
        "token_field": token_fields[0] if token_fields else None,
    }


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


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

    def to_dict(self) -> dict[str, Any]:
        """``{"records": n, "fields": {dotted path: field stats}}``, paths sorted."""
        self.flush()
        fields: dict[str, Any] = {}
        self._flatten(self.root, "", fields)
        return {"records": self.records, "fields": dict(sorted(fields.items()))}

    def _flatten(self, stats: FieldStats, path: str, out: dict[str, Any]) -> None:
        for key, child in stats.children.items():
            child_path = f"{path}.{key}" if path else key
            out[child_path] = child.to_dict()
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
    stats.array_lengths.add_all(map(len, arrays))
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
            stats.value_min = _min(stats.value_min, low_high[0])
            stats.value_max = _max(stats.value_max, low_high[1])


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
        stats.number_sum += math.copysign(math.inf, total)
    stats.number_min = _min(stats.number_min, min(numbers))
    stats.number_max = _max(stats.number_max, max(numbers))


def token_field(metadata: dict[str, Any]) -> str | None:
    """The field counted as tokens: ``input_ids`` if present, else the first 1-D int array field."""
    arrays = metadata.get("arrays", {})
    if "input_ids" in arrays:
        return "input_ids"
    for path, info in arrays.items():
        if info.get("dtype", "").startswith(("int", "uint")) and "." not in path:
            return path
    return None


def block_size_stats(raw_sizes: list[int], stored_sizes: list[int]) -> dict[str, Any]:
    """Per-block raw and stored sizes, summarised."""
    raw = LengthHistogram()
    stored = LengthHistogram()
    for r, s in zip(raw_sizes, stored_sizes, strict=True):
        raw.add(r)
        stored.add(s)
    summary = {}
    for name, hist in (("raw", raw), ("stored", stored)):
        data = hist.to_dict()
        data.pop("histogram", None)
        summary[name] = data
    return summary
