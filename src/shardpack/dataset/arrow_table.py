"""Records -> Arrow: one Arrow type per top-level field, inferred over every record, then the
records as ``pyarrow`` record batches of that schema (``Dataset.to_arrow``, Parquet export).

Arrays keep their dtype (int32 stays int32, float16 stays float16; bfloat16, which Arrow lacks,
is widened to float32 exactly and the field says ``shardpack:dtype=bfloat16`` so that a pack of
the Parquet file restores it). An N-D array is a list of lists. Fields missing from a record
are null. What Arrow cannot hold as it is (ints and floats in one field, a value beyond 64
bits, a mixed-type list, a record that is not an object, text with an unpaired surrogate) is a
``SchemaError`` naming the record and the field, never a silent change: docs/ARROW.md.

pyarrow is imported by the functions here only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SchemaError
from ..format.dtypes import DTYPE_BY_NAME

BFLOAT16 = DTYPE_BY_NAME["bfloat16"]
DTYPE_KEY = b"shardpack:dtype"  # as ingest.arrow_values reads it back
_INT64_MIN, _UINT64_END = -(2**63), 2**64


@dataclass
class Kind:
    """The inferred type of a field's values: a leaf (``null``, ``bool``, ``int``, ``float``,
    ``str``, ``num`` for numpy values of ``dtype``), a ``list`` of ``item``, or an object
    (``struct``) of ``fields``."""

    tag: str
    dtype: np.dtype | None = None
    item: Kind | None = None
    fields: dict[str, Kind] = field(default_factory=dict)
    negative: bool = False  # int: a value below 0 was seen
    large: bool = False  # int: a value at or above 2**63 was seen
    bfloat16: bool = True  # num: every array was bfloat16 (restored from field metadata)


NULL = Kind("null")


class Inference:
    """Merges the kinds of records one by one: ``add`` raises a SchemaError on a conflict."""

    def __init__(self, source: str = "records") -> None:
        self.source = source
        self.columns: dict[str, Kind] = {}
        self.records = 0

    def add(self, record: Any) -> None:
        number = self.records
        self.records += 1
        if type(record) is not dict:
            raise self.error(number, "$", f"is a {_json_kind(record)}, not an object "
                              "(a table row needs named columns)")  # fmt: skip
        for key, value in record.items():
            known = self.columns.get(key, NULL)
            self.columns[key] = self.merge(known, kind_of(value, number, self, f"$.{key}"),
                                            number, f"$.{key}")  # fmt: skip

    def add_all(self, records: Iterable[Any]) -> Inference:
        for record in records:
            self.add(record)
        return self

    def merge(self, a: Kind, b: Kind, number: int, where: str) -> Kind:
        if a.tag == "null":
            return b
        if b.tag == "null":
            return a
        if a.tag == "list" and b.tag == "list":
            assert a.item is not None and b.item is not None
            return Kind("list", item=self.merge(a.item, b.item, number, f"{where}[]"))
        if a.tag == "struct" and b.tag == "struct":
            fields = dict(a.fields)
            for key, kind in b.fields.items():
                fields[key] = self.merge(fields.get(key, NULL), kind, number, f"{where}.{key}")
            return Kind("struct", fields=fields)
        if a.tag in _NUMBERS and b.tag in _NUMBERS:
            return self._merge_numbers(a, b, number, where)
        if a.tag == b.tag and a.tag in ("str", "bool"):
            return a
        raise self.error(number, where, f"holds {_kind_name(a)} and {_kind_name(b)}; a Parquet "
                          "column holds one type")  # fmt: skip

    def _merge_numbers(self, a: Kind, b: Kind, number: int, where: str) -> Kind:
        classes = {_number_class(a), _number_class(b)}
        if len(classes) > 1:
            names = " and ".join(sorted(classes))
            raise self.error(number, where, f"holds {names}; a Parquet column holds one type "
                              "(convert them to one first)")  # fmt: skip
        if a.tag == "int" and b.tag == "int":
            merged = Kind("int", negative=a.negative or b.negative, large=a.large or b.large)
            if merged.negative and merged.large:
                raise self.error(number, where, "holds integers below 0 and from 2**63 on, "
                                 "which neither int64 nor uint64 holds")  # fmt: skip
            return merged
        dtype = np.promote_types(_as_dtype(a), _as_dtype(b))
        if dtype.kind == "f" and classes == {"integers"}:  # int64 beside uint64
            raise self.error(number, where, f"holds {_kind_name(a)} and {_kind_name(b)}, which "
                              "no one integer type holds")  # fmt: skip
        both_bf16 = a.tag == "num" and b.tag == "num" and a.bfloat16 and b.bfloat16
        return Kind("num", dtype=dtype, bfloat16=both_bf16)

    def error(self, number: int, where: str, reason: str) -> SchemaError:
        return SchemaError(f"record {number} {reason}", path=self.source, json_path=where)


_NUMBERS = ("int", "float", "bool", "num")


def _number_class(kind: Kind) -> str:
    if kind.tag == "num":
        return {"b": "booleans", "f": "floats"}.get(_as_dtype(kind).kind, "integers")
    return {"int": "integers", "float": "floats", "bool": "booleans"}[kind.tag]


def _as_dtype(kind: Kind) -> np.dtype:
    if kind.tag == "num":
        assert kind.dtype is not None
        return np.dtype(np.float32) if kind.dtype == BFLOAT16 else kind.dtype
    if kind.tag == "int":
        return np.dtype(np.uint64 if kind.large else np.int64)
    return np.dtype({"float": np.float64, "bool": np.bool_}[kind.tag])


def _kind_name(kind: Kind) -> str:
    if kind.tag == "num":
        return f"{kind.dtype} values"
    return {"int": "integers", "float": "floats", "bool": "booleans", "str": "text",
            "list": "lists", "struct": "objects"}[kind.tag]  # fmt: skip


def _json_kind(value: Any) -> str:
    names = {list: "list", np.ndarray: "list", str: "string", int: "number", float: "number",
             bool: "boolean", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def kind_of(value: Any, number: int, inference: Inference, where: str) -> Kind:
    """The kind of one value (record ``number``, at ``where``)."""
    kind = type(value)
    if value is None:
        return NULL
    if kind is str:
        return Kind("str")
    if kind is bool:
        return Kind("bool")
    if kind is int:
        if not _INT64_MIN <= value < _UINT64_END:
            raise inference.error(number, where, f"holds {value}, beyond 64 bits")
        return Kind("int", negative=value < 0, large=value >= 2**63)
    if kind is float:
        return Kind("float")
    if kind is np.ndarray:
        leaf = Kind("num", dtype=value.dtype, bfloat16=value.dtype == BFLOAT16)
        for _ in range(value.ndim):
            leaf = Kind("list", item=leaf)
        return leaf
    if kind is dict:
        fields = {key: kind_of(item, number, inference, f"{where}.{key}")
                  for key, item in value.items()}  # fmt: skip
        return Kind("struct", fields=fields)
    if kind is list:
        item = NULL
        for element in value:
            item = inference.merge(item, kind_of(element, number, inference, f"{where}[]"),
                                    number, f"{where}[]")  # fmt: skip
        return Kind("list", item=item)
    raise inference.error(number, where, f"holds a {kind.__name__}")


def arrow_type(kind: Kind) -> Any:
    """The Arrow type of an inferred kind."""
    import pyarrow as pa

    if kind.tag == "null":
        return pa.null()
    if kind.tag == "str":
        return pa.string()
    if kind.tag == "list":
        assert kind.item is not None
        return pa.list_(arrow_type(kind.item))
    if kind.tag == "struct":
        return pa.struct([pa.field(k, arrow_type(v)) for k, v in kind.fields.items()])
    return pa.from_numpy_dtype(_as_dtype(kind))


def arrow_schema(inference: Inference) -> Any:
    """The schema of the inferred columns, in the order they first appeared."""
    import pyarrow as pa

    fields = []
    for name, kind in inference.columns.items():
        leaf = kind
        while leaf.tag == "list" and leaf.item is not None:
            leaf = leaf.item
        bf16 = leaf.tag == "num" and leaf.bfloat16
        fields.append(pa.field(name, arrow_type(kind), metadata={DTYPE_KEY: b"bfloat16"} if bf16
                               else None))  # fmt: skip
    return pa.schema(fields)


def record_batches(
    batches: Iterable[list[Any]], schema: Any, source: str = "records"
) -> Iterator[Any]:
    """Each list of records as a ``pyarrow.RecordBatch`` of ``schema`` (from ``arrow_schema``
    over the same records); ``source`` names them in errors."""
    import pyarrow as pa

    first = 0
    for records in batches:
        columns = [
            build_column([r.get(f.name) for r in records], f.type, f.name, first, source)
            for f in schema
        ]
        yield pa.RecordBatch.from_arrays(columns, schema=schema)
        first += len(records)


def build_column(values: list[Any], kind: Any, name: str, first: int, source: str) -> Any:
    """One Arrow array of ``kind`` from a field's values (``first``: the first's record number)."""
    import pyarrow as pa

    dense = _dense_arrays(values, kind)
    if dense is not None:
        return dense
    prepared = [_plain(v) for v in values]
    try:
        return pa.array(prepared, type=kind)
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        for i, value in enumerate(prepared):  # the record at fault, for the message
            try:
                pa.array([value], type=kind)
            except (pa.ArrowException, ValueError, TypeError, OverflowError) as one:
                raise SchemaError(f"record {first + i} cannot be stored as {kind}: {one}",
                                  path=source, json_path=f"$.{name}") from None  # fmt: skip
        raise SchemaError(f"cannot be stored as {kind}: {exc}", path=source,
                          json_path=f"$.{name}") from None  # fmt: skip


def _plain(value: Any) -> Any:
    """A value pyarrow converts: N-D arrays as lists of rows, bfloat16 as float32."""
    kind = type(value)
    if kind is np.ndarray:
        if value.dtype == BFLOAT16:
            value = value.astype(np.float32)
        return list(map(_plain, value)) if value.ndim > 1 else value
    if kind is dict:
        return {k: _plain(v) for k, v in value.items()}
    if kind is list:
        return [_plain(v) for v in value]
    return value


def _dense_arrays(values: list[Any], kind: Any) -> Any:
    """The common case fast: every value an N-D array (or None) of the column's depth, built
    from one concatenation and offsets instead of value by value; else None."""
    import pyarrow as pa

    depth, leaf = 0, kind
    while pa.types.is_list(leaf):
        depth, leaf = depth + 1, leaf.value_type
    if depth == 0 or not all(
        (type(v) is np.ndarray and v.ndim == depth) or v is None for v in values
    ):
        return None
    arrays = [v for v in values if v is not None]
    dtype = leaf.to_pandas_dtype()
    flat = (
        np.concatenate([a.reshape(-1) for a in arrays]).astype(dtype, copy=False)
        if arrays
        else np.empty(0, dtype)
    )
    shapes = np.array([a.shape for a in arrays], np.int64).reshape(len(arrays), depth)
    result = pa.array(flat, type=leaf)
    # innermost level first: level j has prod(shape[:j]) lists of shape[j] items per array
    for level in range(depth - 1, -1, -1):
        counts = np.prod(shapes[:, :level], axis=1, dtype=np.int64)
        lengths = np.repeat(shapes[:, level], counts)
        if level == 0:
            lengths = _with_nulls(lengths, values)
        offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64))).astype(np.int32)
        mask = None
        if level == 0 and len(arrays) != len(values):
            mask = pa.array([v is None for v in values])
        result = pa.ListArray.from_arrays(pa.array(offsets), result, mask=mask)
    return result


def _with_nulls(lengths: np.ndarray, values: list[Any]) -> np.ndarray:
    """Lengths of the arrays spread to one per value, 0 where a value is None."""
    if len(lengths) == len(values):
        return lengths
    spread = np.zeros(len(values), np.int64)
    spread[[i for i, v in enumerate(values) if v is not None]] = lengths
    return spread
