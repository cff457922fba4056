"""Typed reading of JSON lines (simdjson, numeric lists straight into arrays) gives exactly the
values of the reference path (msgspec, then ``RecordEncoder.convert``), or declines the line.

A wrong typed read would be silent data loss, so every guard of ``TypedLineReader`` has a line
here that it must decline or read exactly, and generated lines compare the two paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardpack
from shardpack.errors import InputError
from shardpack.format.records import RecordEncoder
from shardpack.ingest import jsonl
from shardpack.ingest.jsonl import read_values
from shardpack.ingest.typed_lines import FAST_KEYS, TypedLineReader

from .test_bad_input import BAD_LINES
from .test_lossless import json_values


def reference(line: bytes) -> tuple[Any, dict[str, dict[str, int]]]:
    encoder = RecordEncoder()
    value = encoder.convert(msgspec.json.decode(line))
    return value, encoder.array_dtypes


def assert_identical(actual: Any, expected: Any, where: str = "$") -> None:
    """Same structure, types, key order, and arrays of the same dtype, shape and bytes."""
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, np.ndarray):
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), where
        assert actual.tobytes() == expected.tobytes(), where
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: keys differ"
        for key in expected:
            assert_identical(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_identical(a, e, f"{where}[{i}]")
    else:
        assert actual == expected or (actual != actual and expected != expected), where
        if isinstance(expected, float):
            assert np.copysign(1, actual) == np.copysign(1, expected), where


def typed_or_declined(line: bytes) -> Any:
    """The typed read of ``line``, checked against the reference; None when declined."""
    encoder = RecordEncoder()
    value = TypedLineReader(encoder).read(line)
    if value is not None:
        expected, dtypes = reference(line)
        assert_identical(value, expected)
        assert encoder.array_dtypes == dtypes
    else:
        assert encoder.array_dtypes == {}, "a declined line must record no statistics"
    return value


def kd_line(tokens: int = 40, top_k: int = 8, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    logprobs = np.log(rng.dirichlet(np.ones(top_k), size=tokens)).round(6) - 1e-7
    record = {
        "id": f"kd-{seed}",
        "prompt": "Explain [the] step; then answer.",
        "input_ids": rng.integers(0, 32_000, tokens).tolist(),
        "teacher_topk_ids": rng.integers(0, 32_000, (tokens, top_k)).tolist(),
        "teacher_topk_logprobs": logprobs.tolist(),
        "meta": {"temperature": 0.7, "top_k": top_k, "layers": [[0.25, 0.5], [0.75, 1.5]]},
    }
    return json.dumps(record).encode()


def test_kd_lines_are_read_typed_and_equal_the_reference() -> None:
    for seed in range(5):
        value = typed_or_declined(kd_line(seed=seed))
        assert value is not None, "an ordinary KD line must take the typed path"
        assert value["teacher_topk_logprobs"].dtype == np.float64
        assert value["teacher_topk_ids"].shape == (40, 8)
        assert value["teacher_topk_ids"].dtype == np.int32


@pytest.mark.parametrize(
    "text",
    [
        # a list hidden in an array that simdjson's buffer copy would flatten
        '{"a": [1.5, [2.5]]}',
        '{"a": [[1.5, 2.5], [3.5, [4.5]]]}',
        '{"a": [[1, []], [[2, 3], 4]]}',  # leaves and row lengths both match a 2x2 array
        '{"a": [[0.5, [1.5]], [2.5, 3.5]], "s": "]["}',
        # ... and a "[" in a string, escaped, to balance the count
        '{"a": [1.5, [2.5]], "s": "\\u005b"}',
        '{"a": [1.5, [2.5]], "s": "\\u005B"}',
        # duplicate keys: JSON keeps the last value, simdjson's lookup finds the first
        '{"a": [1.5, 2.5], "a": [3.5, 4.5]}',
        '{"a": 1, "b": 2, "a": [0.5]}',
        # a NUL in a key: simdjson's lookup of "a\0b" would find "a"
        '{"": [0.5, 1.5], "\\u0000": [2.5, 3.5]}',
        '{"a": [0.5, 1.5], "a\\u0000b": [2.5, 3.5]}',
        '{"": null, "\\u0000": false}',
        # a map with more keys than the reader looks up one by one
        "{" + ", ".join(f'"k{i}": [{i}.5, 0.25]' for i in range(80)) + "}",
        # a byte-order mark simdjson would skip
        '\ufeff{"a": [1.5]}',
        # types the buffer copy would coerce
        '{"a": [0.5, 1]}',
        '{"a": [1, 0.5]}',
        '{"a": [[0.5, 1.5], [2, 3.5]]}',
        '{"a": [1.0, 2.0]}',
        '{"a": [-0.0, 0.5]}',
        '{"a": [true, 1]}',
        '{"a": [1, true]}',
        '{"a": [0.5, true]}',
        '{"a": [9223372036854775808, 1]}',
        '{"a": [1, 9223372036854775808]}',
        '{"a": [1, 18446744073709551616]}',
        '{"a": [0.5, null]}',
        '{"a": [[0.5], 1.5]}',
        '{"a": [[0.5], "x"]}',
        '{"a": [[0.5], {"k": 1}]}',
        '{"a": [[1, 2], "ab"]}',
        '{"a": [[[1, 2]], [[3, 4]]]}',
        '{"a": [[], []]}',
        '{"a": [[1], []]}',
        '{"a": [[1, 2], [3]]}',
        '{"a": [[1, 2], [3], [4, 5, 6]]}',  # ragged, yet as many numbers as a 3x2 array
        '{"a": [1e400]}',
        '{"a": [2.5e-400, 0.5]}',
        '{"a": "\\ud800"}',
        '{"a": [' + ",".join(["[0.5]"] * 3) + "]}",
        '[[0.5, 1.5], "[", [2.5]]',
        '"[[["',
        "[]",
        "7",
    ],
)
def test_hostile_lines_are_declined_or_read_exactly(text: str) -> None:
    line = text.encode("utf-8")
    try:
        msgspec.json.decode(line)
    except msgspec.DecodeError:
        assert TypedLineReader(RecordEncoder()).read(line) is None
        return
    typed_or_declined(line)


def test_the_structure_check_is_what_catches_a_hidden_list() -> None:
    """Row lengths and element counts match a 2x2 array; only the "[" count tells."""
    line = b'{"a": [[1, []], [[2, 3], 4]], "b": [0.5, [0.25]]}'
    assert typed_or_declined(line) is None
    value = typed_or_declined(b'{"a": [[1, 5], [2, 4]], "b": [0.5, 0.25], "s": "[x]"}')
    assert value is not None and value["a"].shape == (2, 2)


def test_a_line_declined_halfway_records_no_statistics() -> None:
    encoder = RecordEncoder()
    reader = TypedLineReader(encoder)
    assert reader.read(b'{"a": [0.5, 1.5], "b": [1, [2]]}') is None
    assert encoder.array_dtypes == {}
    assert reader.read(kd_line()) is not None  # the reader is usable after a declined line
    assert set(encoder.array_dtypes) == {
        "input_ids",
        "teacher_topk_ids",
        "teacher_topk_logprobs",
        "meta.layers",
    }


numeric_arrays = st.one_of(
    st.lists(st.integers(-(2**63), 2**64 - 1), min_size=1, max_size=12),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=12),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(-2, 2), st.booleans()), min_size=1),
    st.integers(1, 4).flatmap(
        lambda k: st.lists(
            st.lists(st.floats(-50, 50) | st.integers(-9, 9), min_size=k, max_size=k), min_size=1
        )
    ),
    st.lists(st.lists(st.floats(-1, 1), max_size=3), min_size=1, max_size=4),  # often ragged
)
values = st.recursive(
    json_values | numeric_arrays,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@settings(max_examples=1000, deadline=None)
@given(value=values, ascii_only=st.booleans())
def test_generated_lines_read_typed_equal_the_reference(value: Any, ascii_only: bool) -> None:
    line = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    typed_or_declined(line)


def test_read_values_mixes_paths_line_by_line_with_statistics_in_line_order() -> None:
    lines = [
        kd_line(seed=1),
        b'{"role": "user", "content": "hi"}',  # short text: the reference path
        json.dumps({"prose": "word, " * 400, "n": [0.5, 1.5]}).encode(),  # long, few numbers
        kd_line(seed=2).replace(b'"input_ids"', b'"ids"'),
    ]
    typed = RecordEncoder()
    got = read_values(lines, typed)
    assert got is not None
    expected_encoder = RecordEncoder()
    expected = [expected_encoder.convert(msgspec.json.decode(line)) for line in lines]
    assert_identical(got, expected)
    assert typed.array_dtypes == expected_encoder.array_dtypes
    assert list(typed.array_dtypes) == list(expected_encoder.array_dtypes)
    assert read_values([*lines, b"{not json"], RecordEncoder()) is None


PACK_OPTIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "lossy dtype": {"dtypes": {"teacher_topk_logprobs": "float16"}},
    "schema, skip": {
        "schema": {"type": "object", "required": ["input_ids"]},  # rejects the text records
        "on_error": "skip",
    },
    "bad line, skip": {"on_error": "skip"},
}


@pytest.mark.parametrize("case", list(PACK_OPTIONS))
def test_a_pack_is_byte_identical_with_and_without_typed_reading(
    case: str, kd_mixed_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way a unit is read (all lines at once; one by one for a schema, lossy dtypes or a
    bad line) gives the same bytes and rejects whichever path reads each line. One worker runs
    in this process, so the patches below reach the encoder."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    source = kd_mixed_jsonl
    if case == "bad line, skip":
        lines = kd_mixed_jsonl.read_bytes().splitlines()
        bad = kd_line()[:-200]  # a long numeric line cut short: invalid JSON
        source = tmp_path / "with_bad_line.jsonl"
        source.write_bytes(b"\n".join([*lines[:10], bad, *lines[10:]]) + b"\n")
    reads = []
    original = TypedLineReader.read

    def counted(self: TypedLineReader, line: bytes) -> Any:
        value = original(self, line)
        reads.append(value is not None)
        return value

    monkeypatch.setattr(TypedLineReader, "read", counted)
    outputs = {}
    for path in ("typed", "plain"):
        if path == "plain":
            monkeypatch.setattr(jsonl, "_mostly_numbers", lambda line: False)
            reads.clear()
        out = tmp_path / f"{path}.packed"
        result = shardpack.pack(source, out, workers=1, **PACK_OPTIONS[case])
        rejects = result.rejects_path
        outputs[path] = (
            out.read_bytes(),
            Path(rejects).read_bytes() if rejects else None,
            result.rejected_count,
        )
        if path == "typed":
            assert sum(reads) > 20, "the distill records must be read typed"
    assert reads == []
    assert outputs["typed"] == outputs["plain"]
    if case != "defaults" and case != "lossy dtype":
        assert outputs["typed"][2] > 0


def test_a_lossy_dtype_on_an_int_field_fails_alike_on_the_typed_path(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(kd_line() + b"\n")
    with pytest.raises(InputError) as caught:
        shardpack.pack(source, tmp_path / "out.packed", dtypes={"input_ids": "float16"})
    assert caught.value.line == 1
    assert "applies to float arrays" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "bad", "column", "reason"),
    [case for case in BAD_LINES if case[1].startswith(b"{")],
    ids=[case[0] for case in BAD_LINES if case[1].startswith(b"{")],
)
def test_a_bad_long_numeric_line_is_named_with_its_line_and_column(
    name: str, bad: bytes, column: int, reason: str, tmp_path: Path
) -> None:
    """A line the typed reader is offered and refuses gets the reference path's error."""
    prefix = b'{"pad": [' + b", ".join([b"0.123456789"] * 200) + b"], "
    line = prefix + bad[1:]
    assert jsonl._mostly_numbers(line)
    source = tmp_path / "in.jsonl"
    source.write_bytes(kd_line() + b"\n" + line + b"\n")
    with pytest.raises(InputError) as caught:
        shardpack.pack(source, tmp_path / "out.packed", workers=1)
    error = caught.value
    assert (error.path, error.line, error.column) == (str(source), 2, column + len(prefix) - 1)
    assert reason in str(error)


def test_a_map_of_many_keys_is_left_to_the_reference_path() -> None:
    """simdjson finds each key by scanning the object, so n keys cost n² comparisons there."""
    big = "{" + ", ".join(f'"k{i}": [{i}.5, 0.25]' for i in range(FAST_KEYS + 1)) + "}"
    assert TypedLineReader(RecordEncoder()).read(big.encode()) is None
    small = "{" + ", ".join(f'"k{i}": [{i}.5, 0.25]' for i in range(FAST_KEYS)) + "}"
    assert typed_or_declined(small.encode()) is not None
