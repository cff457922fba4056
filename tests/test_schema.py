"""JSON Schema: checking records with arrays like the standard validator, --schema at pack time,
the inferred schema (stored, identical for any number of workers), and `shardpack schema`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator

import shardpack
from shardpack import DatasetPacker, OptionError, SchemaError
from shardpack.format.dtypes import LOSSY_DTYPES
from shardpack.format.records import RecordEncoder
from shardpack.ingest.schema_check import RecordChecker
from shardpack.ingest.schema_infer import SchemaInferrer, infer_schema

from .conftest import write_jsonl

SCHEMAS: list[dict[str, Any]] = [
    {"type": "array", "items": {"type": "integer"}},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}},
    {"type": "array", "items": {"type": "number", "exclusiveMaximum": 2.5}},
    {"type": "array", "items": {"type": "boolean"}},
    {"type": "array", "items": {"type": ["string", "null"]}},
    {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2}},
    {"type": "array", "items": {"type": "array", "maxItems": 2, "items": {"minimum": 1}}},
    {"type": "array", "items": {"enum": [1, 2, 3]}},
    {"type": "array", "items": {"multipleOf": 2}},
    {"type": "array", "prefixItems": [{"const": 1}], "items": {"type": "integer"}},
    {"type": "array", "contains": {"const": 3}},
    {"type": "array", "uniqueItems": True},
    {"const": [1, 2, 3]},
    {"type": "array", "items": False},
    {"type": "array", "minItems": 3, "maxItems": 3},
    {"not": {"type": "array", "items": {"type": "integer"}}},
    {"anyOf": [{"items": {"type": "boolean"}}, {"items": {"maximum": 2}}]},
]
VALUES: list[Any] = [
    [1, 2, 3],
    [0, 5, 9],
    [1, 2, 10],
    [-4, 2, 2],
    [1.5, 2.0, 2.25],
    [1.0, 2.0, 3.0],
    [1.5, float("nan"), 3.0],
    [True, False, True],
    [[1, 2], [3, 4]],
    [[1, 2, 3]],
    [[1.5, 2.0], [0.5, 1.0]],
    [[True], [False]],
    [2**40, 3],
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[json.dumps(s) for s in SCHEMAS])
def test_array_checks_agree_with_the_standard_validator(schema: dict[str, Any]) -> None:
    standard = Draft202012Validator(schema)
    checker = RecordChecker(schema)
    for value in VALUES:
        stored = RecordEncoder().convert(json.loads(json.dumps(value)))
        assert isinstance(stored, np.ndarray), value
        expected = standard.is_valid(value)
        assert (checker.first_error(stored) is None) == expected, (schema, value)
        assert (checker.first_error(value) is None) == expected, (schema, value)
    for name in ("float16", "bfloat16"):  # lossy storage types are checked by value too
        stored = RecordEncoder({"": LOSSY_DTYPES[name]}).convert([1.5, 2.0, 3.0])
        assert stored.dtype == LOSSY_DTYPES[name]
        assert (checker.first_error(stored) is None) == standard.is_valid([1.5, 2.0, 3.0])


def test_error_names_the_first_failing_item_exactly() -> None:
    checker = RecordChecker(
        {
            "properties": {
                "ids": {"type": "array", "items": {"type": "array", "items": {"maximum": 5}}}
            }
        }
    )
    record = {"ids": np.array([[1, 2], [3, 4], [5, 9]], dtype=np.int32)}
    with pytest.raises(SchemaError) as info:
        checker.check(record, path="in.jsonl", line=7)
    assert info.value.json_path == "$.ids[2][1]"
    assert (
        str(info.value)
        == "in.jsonl:7: schema violation at $.ids[2][1]: 9 is greater than the maximum of 5"
    )


def test_reason_quoting_a_huge_value_stays_short() -> None:
    checker = RecordChecker({"properties": {"ids": {"type": "string"}}})
    with pytest.raises(SchemaError) as info:
        checker.check({"ids": list(range(100_000))}, path="x", line=1)
    assert len(str(info.value)) < 300


def _kd_records(kd_jsonl: Path) -> list[Any]:
    return [json.loads(line) for line in kd_jsonl.read_text("utf-8").splitlines()]


def test_pack_with_schema_rejects_with_file_line_and_json_path(
    kd_jsonl: Path, tmp_path: Path
) -> None:
    records = _kd_records(kd_jsonl)[:6]
    records[4]["teacher_topk_ids"][3][2] = -1
    src = write_jsonl(tmp_path / "kd.jsonl", records)
    schema = {
        "type": "object",
        "required": ["id", "input_ids"],
        "properties": {
            "id": {"type": "string"},
            "teacher_topk_ids": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            },
        },
    }
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema))
    out = tmp_path / "kd.packed"
    with pytest.raises(SchemaError) as info:
        DatasetPacker().pack(src, out, schema=schema_file)
    assert (info.value.path, info.value.line, info.value.json_path) == (
        str(src),
        5,
        "$.teacher_topk_ids[3][2]",
    )
    assert "-1 is less than the minimum of 0" in str(info.value)
    assert not out.exists()

    result = DatasetPacker().pack(src, out, schema=schema_file, on_error="skip", validate=True)
    assert result.record_count == 5 and result.rejected_count == 1
    reject = json.loads(Path(result.rejects_path).read_text("utf-8"))
    assert reject["line"] == 5 and reject["json_path"] == "$.teacher_topk_ids[3][2]"
    with shardpack.open(out) as ds:
        assert ds.metadata.schema == schema and ds.metadata.schema_source == "user"
        # the rejected record's arrays do not count in the stored dtype statistics
        assert ds.metadata.arrays["input_ids"].stored == {"int32": 5}
    assert DatasetPacker().validate(out, deep=True).schema_checked


def test_bad_schema_file_is_a_usage_error(tmp_path: Path, text_jsonl: Path) -> None:
    bad = tmp_path / "bad.json"
    for content in (
        "{not json",
        '{"type": "bogus"}',
        "[1]",
        '{"$schema": "http://json-schema.org/draft-07/schema#"}',
    ):
        bad.write_text(content)
        with pytest.raises(OptionError, match=r"bad\.json"):
            DatasetPacker().pack(text_jsonl, tmp_path / "x.packed", schema=bad)
    assert not (tmp_path / "x.packed").exists()


def test_inferred_schema_types_required_dtypes_ranks(tmp_path: Path) -> None:
    records = [
        {"id": "a", "ids": [1, 2], "lp": [[-0.5, -1.0]], "meta": {"k": 1}, "tags": ["x"]},
        {"id": "b", "ids": [], "lp": [[-0.25]], "meta": {"k": 2.5, "extra": None}, "flag": True},
        {
            "id": "c",
            "ids": [3],
            "lp": [[-2.0, -3.0], [-1.0, -0.5]],
            "meta": {"k": 3},
            "tags": [1, "y"],
        },
    ]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.packed"
    DatasetPacker().pack(src, out, validate=True)
    with shardpack.open(out) as ds:
        schema = ds.metadata.schema
        assert ds.metadata.schema_source == "inferred"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert sorted(schema["required"]) == ["id", "ids", "lp", "meta"]
    assert props["ids"] == {
        "type": "array",
        "items": {"type": "integer"},
        "x-shardpack-dtype": "int32",
    }
    assert props["lp"] == {
        "type": "array",
        "items": {"type": "array", "items": {"type": "number"}},
        "x-shardpack-dtype": "float32",
    }
    assert props["meta"]["properties"]["k"] == {"type": "number"}
    assert props["meta"]["required"] == ["k"]
    assert props["flag"] == {"type": "boolean"}
    assert props["tags"]["items"] == {"type": ["string", "integer"]}
    for record in records:  # the plain JSON input complies with its inferred schema
        Draft202012Validator(schema).validate(record)


def test_inference_merges_to_the_same_schema_for_any_split(
    kd_jsonl: Path, text_jsonl: Path
) -> None:
    records = [RecordEncoder().convert(r) for r in _kd_records(kd_jsonl)]
    records += [json.loads(line) for line in text_jsonl.read_text("utf-8").splitlines()[:50]]
    whole = infer_schema(records)
    for parts in (2, 3, 7):
        merged = SchemaInferrer()
        for k in range(parts):
            part = SchemaInferrer()
            size = len(records)
            for record in records[k * size // parts : (k + 1) * size // parts]:
                part.add(record)
            merged.merge(part)
        assert merged.to_schema() == whole


def test_workers_give_identical_files_with_schema(
    kd_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the creation time is in the file
    units = 256 * 1024  # several units
    one = DatasetPacker().pack(kd_jsonl, tmp_path / "one.packed", workers=1, unit_bytes=units)
    two = DatasetPacker().pack(kd_jsonl, tmp_path / "two.packed", workers=2, unit_bytes=units)
    assert (tmp_path / "one.packed").read_bytes() == (tmp_path / "two.packed").read_bytes()
    assert one.metadata.schema == two.metadata.schema


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardpack", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_schema_prints_a_schema_that_feeds_back(kd_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "kd.packed"
    assert _cli("pack", str(kd_jsonl), "-o", str(out)).returncode == 0
    proc = _cli("schema", str(out))
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema["properties"]["teacher_topk_ids"]["items"]["items"] == {"type": "integer"}
    # the user tightens it and feeds it back
    schema["properties"]["input_ids"]["items"]["maximum"] = 100
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(schema))
    proc = _cli("validate", str(out), "--schema", str(edited))
    assert proc.returncode == 1
    assert "violates the schema at $.input_ids[" in proc.stderr and "block 0" in proc.stderr
    proc = _cli("validate", str(out), "--schema", str(edited), "--json")
    report = json.loads(proc.stdout)
    assert not report["ok"] and report["schema_failures"] == report["records_checked"]
    assert len(report["problems"]) == 21  # 20 listed, then one summary line
    proc = _cli(
        "pack", str(kd_jsonl), "-o", str(tmp_path / "again.packed"), "--schema", str(edited)
    )
    assert proc.returncode == 1 and f"{kd_jsonl}:1: schema violation at $.input_ids[" in proc.stderr
    json_path = tmp_path / "plain.json"
    json_path.write_text(_cli("schema", str(out)).stdout)
    proc = _cli(
        "pack",
        str(kd_jsonl),
        "-o",
        str(tmp_path / "again.packed"),
        "--schema",
        str(json_path),
        "--validate",
    )
    assert proc.returncode == 0, proc.stderr
    assert _cli("validate", str(tmp_path / "again.packed"), "--deep").returncode == 0
