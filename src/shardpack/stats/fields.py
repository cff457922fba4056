"""What one field path held across records (types, lengths, numbers, arrays), mergeable; and the
statistics of a dataset merged from those of its shards."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..format.metadata import DatasetStats, FieldSummary, NumberSummary, ValueRange
from .histogram import LengthHistogram

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
        self.number_min = min_optional(self.number_min, other.number_min)
        self.number_max = max_optional(self.number_max, other.number_max)
        self.value_min = min_optional(self.value_min, other.value_min)
        self.value_max = max_optional(self.value_max, other.value_max)

    def to_summary(self) -> FieldSummary:
        types: dict[str, int] = {}
        for kind, n in self.types.items():
            name = _TYPE_NAMES.get(kind, "other")
            types[name] = types.get(name, 0) + n
        self.flush()
        summary = FieldSummary(
            present=self.present, types=dict(sorted(types.items())), nulls=types.get("null", 0)
        )
        if self.string_lengths.count:
            summary.string_length = self.string_lengths.to_summary()
        if self.numbers:
            summary.number = NumberSummary(
                count=self.numbers,
                min=self.number_min,
                mean=self.number_sum / self.numbers,
                max=self.number_max,
            )
        if self.array_lengths.count:
            summary.array_length = self.array_lengths.to_summary()
        if self.array_dtypes:
            summary.array_dtypes = dict(sorted(self.array_dtypes.items()))
            summary.array_elements = self.elements
            if self.value_min is not None:
                summary.array_values = ValueRange(min=self.value_min, max=self.value_max)
        return summary

    @classmethod
    def from_summary(cls, summary: FieldSummary) -> FieldStats:
        """A childless FieldStats from one of ``StatsCollector.to_stats().fields``."""
        stats = cls()
        stats.present = summary.present
        stats.types = {_TYPES_BY_NAME.get(name, name): n for name, n in summary.types.items()}
        if summary.string_length is not None:
            stats.string_lengths = LengthHistogram.from_summary(summary.string_length)
        if summary.array_length is not None:
            stats.array_lengths = LengthHistogram.from_summary(summary.array_length)
        stats.array_dtypes = dict(summary.array_dtypes or {})
        stats.elements = summary.array_elements or 0
        number = summary.number
        if number is not None and number.count:
            stats.numbers = number.count
            mean = number.mean if number.mean is not None else math.nan
            stats.number_sum = mean * stats.numbers
            stats.number_min, stats.number_max = number.min, number.max
        values = summary.array_values
        if values is not None:
            stats.value_min, stats.value_max = values.min, values.max
        return stats


_TYPES_BY_NAME: dict[str, Any] = {
    name: kind for kind, name in _TYPE_NAMES.items() if kind is not np.ndarray
}


def merge_stats(parts: list[DatasetStats]) -> DatasetStats:
    """Dataset statistics from the statistics of its shards, as if packed as one file."""
    fields: dict[str, FieldStats] = {}
    for part in parts:
        for path, summary in part.fields.items():
            merged = fields.get(path)
            if merged is None:
                fields[path] = FieldStats.from_summary(summary)
            else:
                merged.merge(FieldStats.from_summary(summary))
    stored = sum(part.stored_bytes for part in parts)
    input_bytes = sum(part.input_bytes for part in parts)
    token_fields = [part.token_field for part in parts if part.token_field]
    return DatasetStats(
        records=sum(part.records for part in parts),
        fields={path: fields[path].to_summary() for path in sorted(fields)},
        raw_bytes=sum(part.raw_bytes for part in parts),
        stored_bytes=stored,
        input_bytes=input_bytes,
        compression_ratio=round(input_bytes / stored, 4) if stored else None,
        token_field=token_fields[0] if token_fields else None,
    )


def min_optional(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def max_optional(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)
