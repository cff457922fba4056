"""Bad JSONL lines: a clear file:line:column error and nothing written, or, with
``on_error="skip"``, the good lines packed and every bad one listed in the rejects file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import shardpack
from shardpack import DatasetPacker, InputError

from .conftest import assert_same_json

GOOD = [{"id": 1, "ids": [1, 2, 3]}, {"id": 2, "ids": [4, 5]}, {"id": 3, "ids": []}]

# (name, bad line bytes, expected column, words expected in the reason)
BAD_LINES = [
    ("trailing comma", b'{"id": 9, "ids": [1, 2],}', 25, "property name"),
    ("trailing comma in list", b'{"id": 9, "ids": [1, 2,]}', 24, "value"),
    ("unterminated string", b'{"id": 9, "name": "abc}', 19, "Unterminated string"),
    ("bare word", b"hello", 1, "Expecting value"),
    ("bare word value", b'{"id": nope}', 8, "Expecting value"),
    ("two values", b'{"id": 9} {"id": 10}', 11, "Extra data"),
    ("invalid utf-8", b'{"id": 9, "name": "caf\xe9"}', 23, "invalid UTF-8"),
    ("nul byte in string", b'{"id": 9, "name": "a\x00b"}', 21, "control character"),
    ("nul byte outside", b'{"id": 9}\x00', 10, "Extra data"),
]


def _write(path: Path, lines: list[bytes], final_newline: bool = True) -> Path:
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline else b""))
    return path


def _good_lines() -> list[bytes]:
    return [json.dumps(r).encode() for r in GOOD]


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardpack", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("name", "bad", "column", "reason"), BAD_LINES, ids=[b[0] for b in BAD_LINES]
)
def test_bad_line_fails_with_position_and_leaves_nothing(
    name: str, bad: bytes, column: int, reason: str, tmp_path: Path
) -> None:
    lines = _good_lines()
    src = _write(tmp_path / "in.jsonl", [lines[0], lines[1], bad, lines[2]])
    out = tmp_path / "out.packed"
    with pytest.raises(InputError) as info:
        DatasetPacker().pack(src, out)
    error = info.value
    assert (error.path, error.line, error.column) == (str(src), 3, column)
    assert reason in str(error)
    assert error.excerpt and len(error.excerpt) <= 40
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]  # no temporary file left either


@pytest.mark.parametrize(
    ("name", "bad", "column", "reason"), BAD_LINES, ids=[b[0] for b in BAD_LINES]
)
def test_skip_packs_good_lines_and_lists_the_bad_one(
    name: str, bad: bytes, column: int, reason: str, tmp_path: Path
) -> None:
    lines = _good_lines()
    src = _write(tmp_path / "in.jsonl", [lines[0], bad, lines[1], bad, lines[2]])
    out = tmp_path / "out.packed"
    result = DatasetPacker().pack(src, out, on_error="skip", validate=True)
    assert result.record_count == 3 and result.rejected_count == 2
    assert result.rejects_path == str(out) + ".rejects.jsonl"
    assert result.metadata.rejected_lines == 2
    with shardpack.open(out) as ds:
        assert ds.metadata.rejected_lines == 2
        assert_same_json(list(ds), GOOD)
    rejects = [json.loads(x) for x in Path(result.rejects_path).read_text("utf-8").splitlines()]
    assert [r["line"] for r in rejects] == [2, 4]
    for r in rejects:
        assert r["path"] == str(src) and r["column"] == column and reason in r["reason"]
        assert r["text"] == bad.decode("utf-8", "backslashreplace")


def test_truncated_last_line(tmp_path: Path) -> None:
    lines = _good_lines()
    cut = lines[2][: len(lines[2]) // 2]
    src = _write(tmp_path / "in.jsonl", [lines[0], lines[1], cut], final_newline=False)
    with pytest.raises(InputError, match=r"in\.jsonl:3:\d+: invalid JSON"):
        DatasetPacker().pack(src, tmp_path / "out.packed")
    result = DatasetPacker().pack(src, tmp_path / "out.packed", on_error="skip")
    assert result.record_count == 2 and result.rejected_count == 1
    # a complete last line without its newline is not damage
    whole = _write(tmp_path / "whole.jsonl", lines, final_newline=False)
    assert DatasetPacker().pack(whole, tmp_path / "whole.packed").record_count == 3


def test_empty_input_is_refused_unless_allowed(tmp_path: Path) -> None:
    for content in (b"", b"\n\n  \n"):
        src = tmp_path / "empty.jsonl"
        src.write_bytes(content)
        out = tmp_path / "empty.packed"
        with pytest.raises(InputError, match="no records"):
            DatasetPacker().pack(src, out)
        assert not out.exists()
        result = DatasetPacker().pack(src, out, allow_empty=True, validate=True)
        assert result.record_count == 0 and result.validation.ok
        with shardpack.open(out) as ds:
            assert len(ds) == 0 and list(ds) == []
        out.unlink()


def test_all_lines_rejected_is_an_error(tmp_path: Path) -> None:
    src = _write(tmp_path / "in.jsonl", [b"{bad", b"worse"])
    out = tmp_path / "out.packed"
    with pytest.raises(InputError, match="all 2 input lines were rejected"):
        DatasetPacker().pack(src, out, on_error="skip")
    assert not out.exists()
    # the rejects file says why (skip mode always writes it: a stale one never lingers)
    listed = Path(str(out) + ".rejects.jsonl").read_text().splitlines()
    assert [json.loads(line)["line"] for line in listed] == [1, 2]


def test_huge_line_packs_and_a_huge_bad_line_gives_a_short_error(tmp_path: Path) -> None:
    text = "x" * (100 * 1024 * 1024)
    big = json.dumps({"id": 0, "text": text}).encode()
    lines = _good_lines()
    src = _write(tmp_path / "big.jsonl", [lines[0], big, lines[1]])
    out = tmp_path / "big.packed"
    result = DatasetPacker().pack(src, out, validate=True)
    assert result.record_count == 3
    with shardpack.open(out) as ds:
        assert ds[1]["text"] == text
        assert_same_json(ds[2], GOOD[1])
    del text
    src.write_bytes(b"\n".join([lines[0], big[:-1] + b",}", lines[1]]) + b"\n")
    with pytest.raises(InputError) as info:
        DatasetPacker().pack(src, tmp_path / "bad.packed")
    assert info.value.line == 2 and len(str(info.value)) < 300
    result = DatasetPacker().pack(src, tmp_path / "bad.packed", on_error="skip")
    assert result.record_count == 2 and result.rejected_count == 1


def test_cli_skip_reports_count_and_rejects_file(tmp_path: Path) -> None:
    lines = _good_lines()
    src = _write(tmp_path / "in.jsonl", [lines[0], b'{"a": 1,}', lines[1]])
    out = tmp_path / "out.packed"
    rejects = tmp_path / "bad-lines.jsonl"
    proc = _run_cli(
        "pack", str(src), "-o", str(out), "--on-error", "skip", "--rejects", str(rejects), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["records"] == 2 and summary["rejected"] == 1
    assert summary["rejects_path"] == str(rejects)
    assert json.loads(rejects.read_text("utf-8"))["line"] == 2
    proc = _run_cli("pack", str(src), "-o", str(tmp_path / "x.packed"))
    assert proc.returncode == 1 and f"{src}:2:9:" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "x.packed").exists()
