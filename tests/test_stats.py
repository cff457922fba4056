"""The column-wise statistics pass: what it counts for nested and mixed records, for any batching."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardpack.format.records import RecordEncoder
from shardpack.ingest.schema_infer import SchemaInferrer
from shardpack.stats import StatsCollector
from shardpack.stats.columns import group_by_type, object_columns


def test_object_columns_handle_sparse_keys_in_first_seen_order() -> None:
    objects = [{"b": 1, "a": 2}, {"a": 3}, {"c": None, "b": 4}]
    assert object_columns(objects) == {"b": [1, 4], "a": [2, 3], "c": [None]}
    assert list(object_columns([{"x": 1, "y": 2}, {"y": 3, "x": 4}])) == ["x", "y"]


def test_group_by_type_keeps_exact_types_apart() -> None:
    groups = group_by_type([1, True, "a", 2.0, 3, None])
    assert groups == {int: [1, 3], bool: [True], str: ["a"], float: [2.0], type(None): [None]}


def test_nested_and_mixed_fields() -> None:
    encoder = RecordEncoder()
    records = [
        {"turns": [{"role": "user", "text": "hi"}, {"role": "bot", "text": "hello"}]},
        {"turns": [{"role": "user", "text": "x", "tags": ["a", "b"]}], "v": "1"},
        {"grid": [[1, 2], [3]], "v": 2, "big": 2**70},
        {"v": None, "flags": [True, False], "big": -5},
    ]
    stats = StatsCollector()
    for record in records:
        stats.observe(encoder.convert(record))
    fields = stats.to_stats().to_dict()["fields"]
    assert stats.records == 4
    assert fields["turns"]["array_length"]["total"] == 3
    # list levels are transparent: the dicts in "turns" count under turns.<key>
    assert fields["turns.role"]["present"] == 3
    assert fields["turns.text"]["string_length"]["total"] == len("hihellox")
    assert fields["turns.tags"]["array_length"]["total"] == 2
    assert fields["v"]["types"] == {"int": 1, "null": 1, "string": 1}
    assert fields["v"]["number"] == {"count": 1, "min": 2, "mean": 2.0, "max": 2}
    # a ragged list stays a list; its rows count as nested arrays under "grid.[]"
    assert fields["grid"]["types"] == {"array": 1}
    assert fields["grid.[]"]["array_length"]["total"] == 3
    assert fields["big"]["number"]["max"] == 2**70 and fields["big"]["number"]["min"] == -5
    assert fields["flags"]["array_dtypes"] == {"bool": 1}
    assert fields["flags"]["array_values"] is None


def test_array_value_range_spans_small_and_large_arrays() -> None:
    stats = StatsCollector()
    arrays = [np.arange(5, dtype=np.int32) + 10, np.arange(100_000, dtype=np.int32) - 7]
    arrays += [np.full(3, 200_000, dtype=np.int32), np.zeros(0, dtype=np.int32)]
    stats.observe_many([{"ids": a} for a in arrays])
    ids = stats.to_stats().to_dict()["fields"]["ids"]
    assert ids["array_values"] == {"min": -7, "max": 200_000}
    assert ids["array_elements"] == 100_008


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.text(max_size=5),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("abcd"), inner, max_size=4)
    ),
    max_leaves=12,
)
_records = st.lists(st.dictionaries(st.sampled_from("pqrs"), _values, max_size=4), max_size=30)


@settings(max_examples=60, deadline=None)
@given(records=_records, cuts=st.lists(st.integers(0, 30), max_size=4))
def test_any_batching_gives_the_same_statistics_and_schema(
    records: list[dict], cuts: list[int]
) -> None:
    encoder = RecordEncoder()
    converted = [encoder.convert(record) for record in records]
    whole = StatsCollector()
    whole.observe_many(converted)
    whole_schema = SchemaInferrer()
    whole_schema.add_many(converted)
    parts, part_schemas = StatsCollector(), SchemaInferrer()
    bounds = [0, *sorted(min(c, len(converted)) for c in cuts), len(converted)]
    for start, end in pairwise(bounds):
        part, part_schema = StatsCollector(), SchemaInferrer()
        part.observe_many(converted[start:end])
        part_schema.add_many(converted[start:end])
        parts.merge(part)
        part_schemas.merge(part_schema)
    one_by_one, one_schema = StatsCollector(), SchemaInferrer()
    for record in converted:
        one_by_one.observe(record)
        one_schema.add(record)
    # integers only (no floats): sums are exact for any grouping
    assert parts.to_stats() == whole.to_stats() == one_by_one.to_stats()
    assert part_schemas.to_schema() == whole_schema.to_schema() == one_schema.to_schema()


@pytest.mark.parametrize(
    "records",
    [
        [{"q": f"question {i}", "a": "answer " * (i % 7)} for i in range(3000)],
        [{"ids": list(range(i % 50)), "t": "x"} for i in range(800)],
        [{"big": 2**70 + i, "s": "a"} for i in range(50)],
        [{"nested": {"turns": [{"r": "u", "x": i}]}} for i in range(500)],
        [[1, 2, 3], {"a": 1}, "text", None, 3.5] * 40,
    ],
    ids=["flat-text", "arrays", "bigints", "nested", "mixed"],
)
def test_fast_and_careful_encoding_paths_agree(records: list) -> None:
    from shardpack.build.options import EncodeOptions
    from shardpack.build.units import Unit, UnitEncoder

    lines = [json.dumps(r).encode() for r in records]
    unit = Unit("t.jsonl", list(range(1, len(lines) + 1)), lines)
    options = EncodeOptions(codec={"id": "lz4"}, block_size=512)
    fast = UnitEncoder(options).encode(unit)
    careful = UnitEncoder(EncodeOptions(**{**options.__dict__, "schema": {}})).encode(unit)
    assert len(fast.blocks) > 1
    assert [b.stored for b in fast.blocks] == [b.stored for b in careful.blocks]
    assert [b.record_count for b in fast.blocks] == [b.record_count for b in careful.blocks]
    assert fast.record_digests.tolist() == careful.record_digests.tolist()
    assert fast.stats.to_stats() == careful.stats.to_stats()
    assert fast.array_dtypes == careful.array_dtypes
