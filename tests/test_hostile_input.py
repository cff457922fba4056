"""Valid JSON at the edges: what ``json.loads`` reads is packed losslessly, or refused with its
line (and rejected under ``--on-error skip``); never a traceback, whatever the packing path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import shardpack
from shardpack import DatasetPacker, InputError, ShardedPacker
from shardpack.format.bounds import MAX_NESTING_DEPTH

from .conftest import assert_same_json

BIG = 10**400


def nested(depth: int, leaf: Any, kind: str) -> Any:
    """``leaf`` inside ``depth`` containers: lists, objects, or both in turn."""
    value = leaf
    for level in range(depth):
        as_list = kind == "list" or (kind == "mixed" and level % 2)
        value = [value, "x"] if as_list else {"k": value, "n": level}
    return value


# every line is valid JSON that json.loads reads; all of them must come back exactly
EDGE_LINES = [
    json.dumps(nested(MAX_NESTING_DEPTH, 1, "list")),
    json.dumps(nested(MAX_NESTING_DEPTH - 1, {"s": "\ud800"}, "object")),  # a lone surrogate
    json.dumps(nested(MAX_NESTING_DEPTH - 1, [BIG, -BIG, 1.5], "mixed")),
    json.dumps({"big": BIG, "small": -BIG, "list": [BIG, 1], "u64": [2**64 - 1, 1]}),
    json.dumps({"floats": [1e308, 1e308, -1e308], "sum": 1e308}),
    json.dumps({"digits": int("9" * 4300)}),  # the most digits Python reads
    '{"inf": 1e400, "ninf": -1e400, "tiny": 1e-400, "nzero": -0.0, "nan": NaN}',
    '{"a": 1, "a": 2, "b": "\\u0000", "": []}',  # json.loads keeps the last duplicate
    '"just a string"',
    "[]",
    "12345678901234567890123456789",
]

REFUSED_LINES = {
    json.dumps(nested(MAX_NESTING_DEPTH + 1, 1, "list")): "nested deeper than 128 levels",
    json.dumps(nested(MAX_NESTING_DEPTH + 1, 1, "object")): "nested deeper than 128 levels",
    "[" * 5000 + "]" * 5000: "nested deeper than 128 levels",  # beyond what json.loads reads
    '{"x": ' + "7" * 5000 + "}": "Exceeds the limit (4300 digits)",
    '{"\\udc80": 1}': "keys must be valid Unicode",
}


def _unpacked(path: Path) -> list[Any]:
    with shardpack.open(path) as ds:
        return [json.loads(json.dumps(r, default=lambda a: a.tolist())) for r in ds]


@pytest.mark.parametrize("path", ["fast", "schema", "workers", "sharded"])
def test_edge_json_packs_losslessly_on_every_path(tmp_path: Path, path: str) -> None:
    source = tmp_path / "edge.jsonl"
    source.write_text("\n".join(EDGE_LINES) + "\n", encoding="utf-8")
    out = tmp_path / "out.packed"
    if path == "sharded":
        ShardedPacker(workers=2).pack(source, out, records_per_shard=4)
    else:
        DatasetPacker().pack(
            source,
            out,
            schema={"$schema": "https://json-schema.org/draft/2020-12/schema"}
            if path == "schema"
            else None,
            workers=2 if path == "workers" else 1,
        )
    records = _unpacked(out)
    assert len(records) == len(EDGE_LINES)
    for line, record in zip(EDGE_LINES, records, strict=True):
        assert_same_json(record, json.loads(line))
    report = DatasetPacker().validate(out, deep=True) if path != "sharded" else None
    assert report is None or report.ok, report and report.problems


@pytest.mark.parametrize("on_error", ["fail", "skip"])
@pytest.mark.parametrize("path", ["fast", "schema"])
def test_json_beyond_the_format_is_refused_with_its_line(
    tmp_path: Path, on_error: str, path: str
) -> None:
    schema = {"type": ["object", "array"]} if path == "schema" else None
    for number, (line, reason) in enumerate(REFUSED_LINES.items()):
        source = tmp_path / f"bad{number}.jsonl"
        source.write_text('{"ok": 1}\n' + line + '\n{"ok": 2}\n', encoding="utf-8")
        out = tmp_path / f"bad{number}.packed"
        if on_error == "fail":
            with pytest.raises(InputError, match=rf"bad{number}\.jsonl:2: ") as caught:
                DatasetPacker().pack(source, out, schema=schema)
            assert reason in str(caught.value) and not out.exists()
            continue
        result = DatasetPacker().pack(source, out, schema=schema, on_error="skip")
        assert result.record_count == 2 and result.rejected_count == 1
        rejected = json.loads(Path(result.rejects_path or "").read_text().splitlines()[0])
        assert rejected["line"] == 2 and reason in rejected["reason"]
        assert _unpacked(out) == [{"ok": 1}, {"ok": 2}]


def test_the_cli_refuses_them_in_one_line(tmp_path: Path) -> None:
    for number, (line, reason) in enumerate(REFUSED_LINES.items()):
        source = tmp_path / f"bad{number}.jsonl"
        source.write_text(line + "\n", encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", "shardpack", "pack", str(source), "-o", str(tmp_path / "o")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"bad{number}.jsonl:1: " in lines[0] and reason in lines[0]


def test_a_schema_that_recurses_forever_is_a_schema_violation_not_a_crash(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"a": [1, [2]]}\n')
    loop = {"$ref": "#"}
    with pytest.raises(shardpack.SchemaError, match=r"in\.jsonl:1: .*recurses too deeply"):
        DatasetPacker().pack(source, tmp_path / "out.packed", schema=loop)
    DatasetPacker().pack(source, tmp_path / "out.packed")
    report = DatasetPacker().validate(tmp_path / "out.packed", schema=loop)
    assert not report.ok and "recurses too deeply" in str(report.problems[0])


def test_python_records_too_deep_or_holding_themselves_are_refused_by_the_writer(
    tmp_path: Path,
) -> None:
    loop: list[Any] = ["x"]
    loop.append(loop)
    for bad in (loop, nested(MAX_NESTING_DEPTH + 1, 1, "object")):
        writer = shardpack.Writer(tmp_path / "w.packed")
        writer.write({"ok": 1})
        writer.write(bad)
        with pytest.raises(InputError, match=r"<python>:2: .*nested deeper than 128 levels"):
            writer.close()
        assert not (tmp_path / "w.packed").exists()
    with shardpack.Writer(tmp_path / "w.packed") as writer:
        writer.write(nested(MAX_NESTING_DEPTH, 1, "mixed"))
    assert _unpacked(tmp_path / "w.packed") == [nested(MAX_NESTING_DEPTH, 1, "mixed")]
