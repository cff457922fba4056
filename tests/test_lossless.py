"""Lossless round trips: every JSON value comes back equal, with the same types, for each codec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardpack
from shardpack import DatasetPacker

from .conftest import assert_same_json

CODECS = ["lz4", "zstd", "none"]

EDGE_CASES: list[Any] = [
    {"nested": {"a": {"b": {"c": [1, {"d": None}]}}}, "z": 1, "a": 2},  # key order kept
    {"text": 'astral 𝄞 😀, escapes " \\ / \b \f \n \r \t, nul \u0000 inside, é ß 中文'},
    {"big": 123456789012345678901234567890, "neg": -(2**70), "edge": [2**63 - 1, -(2**63)]},
    {"u64": [2**63, 2**64 - 1], "mixed_big": [1, 2**64]},
    {"floats": [-0.0, 1e308, 5e-324, 2.5, 0.1], "zero": -0.0, "tiny": 5e-324, "huge": 1e308},
    {"empty_list": [], "empty_obj": {}, "nested_empty": [[], {}], "null": None},
    {
        "mixed": [1, 2.5, "x", None, True, [1], {"k": 1}],
        "int_float": [1, 2.5],
        "bool_int": [True, 1],
    },
    {"ragged": [[1, 2, 3], [4], []], "ragged_floats": [[0.5], [1.5, 2.5]]},
    {"bools": [True, False, True], "bool2d": [[True], [False]]},
    {
        "ints": [1, 2, 3],
        "floats": [1.0, 2.0],
        "f2d": [[0.1, 0.2], [0.3, 0.4]],
        "i3d": [[[1, 2]], [[3, 4]]],
    },
    {"float_with_int": [0.5, 1], "ints_as_floats": [1.0, 2.0, 3.0]},
    {"deep": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]], "deep_obj": {"a": {"b": {"c": {"d": {}}}}}},
    [1, 2, 3],
    "a top-level string",
    42,
    3.5,
    True,
    None,
    [],
    {},
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
    {"unpaired": "\ud800 alone", "list": ["\udfff"]},
    {"nan": float("nan"), "inf": [float("inf"), float("-inf")], "lp": [-0.5, float("-inf")]},
    {"str_numbers": ["1", "2"], "numbers_then_str": [1, "2"]},
]


def _pack_values(values: list[Any], tmp_path: Path, codec: str, **options: Any) -> Path:
    source = tmp_path / f"in-{codec}.jsonl"
    source.write_text("".join(json.dumps(v) + "\n" for v in values), encoding="utf-8")
    out = tmp_path / f"out-{codec}.packed"
    DatasetPacker().pack(source, out, compression=codec, validate=True, **options)
    return out


@pytest.mark.parametrize("shuffle", [False, True], ids=["plain", "shuffled"])
@pytest.mark.parametrize("codec", CODECS)
def test_edge_cases_round_trip(codec: str, shuffle: bool, tmp_path: Path) -> None:
    out = _pack_values(EDGE_CASES, tmp_path, codec, block_size=256, shuffle=shuffle)
    with shardpack.open(out) as ds:
        assert len(ds) == len(EDGE_CASES)
        for i, expected in enumerate(EDGE_CASES):
            assert_same_json(ds[i], json.loads(json.dumps(expected)), f"record {i}")
        for got, expected in zip(ds, EDGE_CASES, strict=True):
            assert_same_json(got, json.loads(json.dumps(expected)))


def test_unpack_writes_lines_json_reads_back_equal(tmp_path: Path) -> None:
    from shardpack.dataset.export import write_jsonl

    out = _pack_values(EDGE_CASES, tmp_path, "zstd")
    target = tmp_path / "back.jsonl"
    with shardpack.open(out) as ds:
        assert write_jsonl(ds, str(target)) == len(EDGE_CASES)
    lines = target.read_text(encoding="utf-8").splitlines()
    for line, expected in zip(lines, EDGE_CASES, strict=True):
        assert_same_json(json.loads(line), json.loads(json.dumps(expected)))


def test_types_and_dtypes(tmp_path: Path) -> None:
    record = {
        "ids": [1, 2, 3],
        "big_ids": [1, 2**40],
        "f32": [0.5, -0.25],
        "f64": [0.1, 0.2],
        "flags": [True, False],
        "table": [[1, 2], [3, 4]],
        "mixed": [1, 2.5],
    }
    out = _pack_values([record], tmp_path, "lz4")
    with shardpack.open(out) as ds:
        got = ds[0]
    assert got["ids"].dtype == np.int32
    assert got["big_ids"].dtype == np.int64
    assert got["f32"].dtype == np.float32
    assert got["f64"].dtype == np.float64
    assert got["flags"].dtype == np.bool_
    assert got["table"].shape == (2, 2)
    assert got["mixed"] == [1, 2.5] and type(got["mixed"][0]) is int


def test_field_keeps_one_dtype_across_records(tmp_path: Path) -> None:
    records = [{"ids": [1, 2]}, {"ids": [3, 2**40]}, {"p": [0.5]}, {"p": [0.1]}, {"ids": [5]}]
    out = _pack_values(records, tmp_path, "lz4", block_size=64)
    with shardpack.open(out) as ds:
        assert ds.metadata.arrays["ids"].dtype == "int64"
        assert ds.metadata.arrays["ids"].stored == {"int32": 2, "int64": 1}
        assert {ds[i]["ids"].dtype for i in (0, 1, 4)} == {np.dtype(np.int64)}
        assert {r["ids"].dtype for r in ds if "ids" in r} == {np.dtype(np.int64)}
        assert ds[2]["p"].dtype == ds[3]["p"].dtype == np.float64
        assert_same_json(ds[1], records[1])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_lossy_dtype_is_opt_in_per_field_and_recorded(dtype: str, tmp_path: Path) -> None:
    records = [{"lp": [[0.1, -1.5], [-2.25, 3.3]], "other": [0.1, 0.2]}]
    out = _pack_values(records, tmp_path, "lz4", dtypes={"lp": dtype})
    with shardpack.open(out) as ds:
        got = ds[0]
        assert got["lp"].dtype.name == dtype
        assert got["other"].dtype == np.float64  # untouched: lossless default
        assert ds.metadata.lossy == {"lp": dtype}
        np.testing.assert_allclose(
            got["lp"].astype(np.float32), np.array(records[0]["lp"]), rtol=1e-2
        )


def test_lossy_dtype_rejects_non_float_fields(tmp_path: Path) -> None:
    with pytest.raises(shardpack.InputError, match="applies to float arrays"):
        _pack_values([{"ids": [1, 2]}], tmp_path, "lz4", dtypes={"ids": "float16"})
    with pytest.raises(shardpack.OptionError, match="choose one of"):
        _pack_values([{"ids": [1.5]}], tmp_path, "lz4", dtypes={"ids": "float8"})


# --- property-based: arbitrary JSON values ---------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
numeric_lists = (
    st.lists(st.integers(min_value=-(2**40), max_value=2**40), min_size=1, max_size=20)
    | st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=20)
    | st.lists(st.booleans(), min_size=1, max_size=5)
    | st.integers(1, 4).flatmap(
        lambda k: st.lists(st.lists(st.floats(allow_nan=False), min_size=k, max_size=k), min_size=1)
    )
)
json_values = st.recursive(
    scalars | numeric_lists,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(), children, max_size=6)
    ),
    max_leaves=40,
)


@pytest.mark.parametrize("codec", CODECS)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(json_values, min_size=1, max_size=12))
def test_arbitrary_json_round_trips(codec: str, values: list[Any], tmp_path: Path) -> None:
    out = _pack_values(values, tmp_path, codec, block_size=128)
    with shardpack.open(out) as ds:
        assert len(ds) == len(values)
        for got, expected in zip(ds, values, strict=True):
            assert_same_json(got, json.loads(json.dumps(expected)))
        i = len(values) // 2
        assert_same_json(ds[i], json.loads(json.dumps(values[i])))
