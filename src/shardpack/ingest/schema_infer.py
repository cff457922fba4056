"""Inferring a JSON Schema (draft 2020-12) from the records of a pack, mergeable across work
units. Loading a schema and checking records against it live in ``schema_check``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..stats.columns import BatchedPass, Column

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
MAX_INFER_DEPTH = 32
MAX_INFER_PROPERTIES = 512  # more distinct keys than this: a map, not a record shape


# ---- inferring a schema ---------------------------------------------------------------------

_TYPE_NAMES = {
    dict: "object",
    list: "array",
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
_ARRAY_ELEMENT_TYPES = {"b": "boolean", "i": "integer", "u": "integer", "f": "number"}


class _Node:
    """What was seen at one place in the records: types, object keys, array items, dtypes."""

    __slots__ = ("count", "dtypes", "items", "objects", "properties", "types")

    def __init__(self) -> None:
        self.count = 0  # how often a value was seen here (decides "required")
        self.types: set[str] = set()
        self.objects = 0  # how many of those values were objects
        self.properties: dict[str, _Node] | None = {}  # None: too many keys to list
        self.items: _Node | None = None
        self.dtypes: set[str] = set()

    def add_column(self, column: Column, depth: int) -> None:
        """Fold in the values seen at this place in a batch of records."""
        self.count += len(column)
        for kind, group in column.groups.items():
            if kind is np.ndarray:
                for dtype, ndim in {(array.dtype, array.ndim) for array in group}:
                    self._add_array(dtype, ndim)
                continue
            name = _TYPE_NAMES.get(kind)
            if name is None:  # big integers and other decoded scalars
                name = "integer" if issubclass(kind, int) else "string"
            self.types.add(name)
            if depth >= MAX_INFER_DEPTH:
                continue
            if kind is dict:
                self.objects += len(group)
                self._add_properties(column, depth)
            elif kind is list:
                items = column.items
                if len(items):
                    if self.items is None:
                        self.items = _Node()
                    self.items.add_column(items, depth + 1)

    def _add_properties(self, column: Column, depth: int) -> None:
        properties = self.properties
        if properties is None:
            return
        for key, field in column.fields.items():
            child = properties.get(key)
            if child is None:
                if len(properties) >= MAX_INFER_PROPERTIES:
                    self.properties = None
                    return
                child = properties[key] = _Node()
            child.add_column(field, depth + 1)

    def _add_array(self, dtype: np.dtype, ndim: int) -> None:
        # a typed array stands for nested lists: record its rank and element type, not its values
        self.types.add("array")
        self.dtypes.add(dtype.name)
        node = self
        for depth in range(1, ndim + 1):
            if node.items is None:
                node.items = _Node()
            node = node.items
            if depth < ndim:
                node.types.add("array")
            else:
                node.types.add(_ARRAY_ELEMENT_TYPES.get(dtype.kind, "number"))

    def merge(self, other: _Node) -> None:
        """Fold ``other`` (seen later in the input) into this node."""
        self.count += other.count
        self.types |= other.types
        self.objects += other.objects
        self.dtypes |= other.dtypes
        if self.properties is None or other.properties is None:
            self.properties = None
        else:
            for key, child in other.properties.items():
                mine = self.properties.get(key)
                if mine is None:
                    if len(self.properties) >= MAX_INFER_PROPERTIES:
                        self.properties = None
                        break
                    self.properties[key] = mine = _Node()
                mine.merge(child)
        if other.items is not None:
            if self.items is None:
                self.items = _Node()
            self.items.merge(other.items)

    def to_schema(self) -> dict[str, Any]:
        types = set(self.types)
        if "number" in types:
            types.discard("integer")  # every integer is a number
        schema: dict[str, Any] = {}
        if types:
            ordered = [t for t in _TYPE_ORDER if t in types]
            schema["type"] = ordered[0] if len(ordered) == 1 else ordered
        if "object" in types and self.properties is not None and self.properties:
            schema["properties"] = {key: node.to_schema() for key, node in self.properties.items()}
            required = [k for k, node in self.properties.items() if node.count == self.objects]
            if required:
                schema["required"] = required
        if "array" in types and self.items is not None:
            schema["items"] = self.items.to_schema()
        if self.dtypes:
            names = sorted(self.dtypes)
            # an annotation (ignored by validators): the numpy dtype the arrays are stored as
            schema["x-shardpack-dtype"] = names[0] if len(names) == 1 else names
        return schema


_TYPE_ORDER = ["object", "array", "string", "number", "integer", "boolean", "null"]


class SchemaInferrer(BatchedPass):
    """Builds a JSON Schema from records; ``merge`` in input order gives the same result for
    any split of the input, so the schema is identical for any number of workers.

    Records are folded in a batch at a time, column by column (see ``columns``)."""

    def __init__(self) -> None:
        super().__init__()
        self._root = _Node()

    def _fold(self, records: Column) -> None:
        self._root.add_column(records, 0)

    def merge(self, other: SchemaInferrer) -> None:
        self.drain()
        other.drain()
        self.records += other.records
        self._root.merge(other._root)

    def __getstate__(self) -> dict[str, Any]:
        self.drain()  # travel between processes as a shape, not as the unit's records
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def to_schema(self) -> dict[str, Any]:
        self.drain()
        schema: dict[str, Any] = {
            "$schema": DRAFT_2020_12,
            "$comment": f"inferred by shardpack from {self.records} records",
        }
        schema.update(self._root.to_schema())
        return schema


def infer_schema(records: Any) -> dict[str, Any]:
    """The inferred schema of an iterable of records."""
    inferrer = SchemaInferrer()
    inferrer.add_many(list(records))
    return inferrer.to_schema()
