"""What one field path held across records (types, lengths, numbers, arrays), mergeable; and the
statistics of a dataset merged from those of its shards."""

from __future__ import annotations

from typing import Any

import numpy as np

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


def min_optional(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def max_optional(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)
