"""Inputs as they come: plain, gzip and zstd files, stdin, BOM, CRLF, blank lines, bad lines."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

import shardpack
from shardpack import DatasetPacker, InputError

RECORDS = [{"a": 1, "t": "é"}, {"a": 2, "ids": [1, 2, 3]}, {"a": 3, "x": None}]
BODY = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS).encode("utf-8")


def _read_all(path: Path) -> list[object]:
    with shardpack.open(path) as ds:
        return [r if "ids" not in r else {**r, "ids": r["ids"].tolist()} for r in ds]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("plain.jsonl", BODY),
        ("gz.jsonl.gz", gzip.compress(BODY)),
        ("zst.jsonl.zst", zstandard.ZstdCompressor().compress(BODY)),
        ("bom.jsonl", b"\xef\xbb\xbf" + BODY),
        ("crlf.jsonl", BODY.replace(b"\n", b"\r\n")),
        ("blank.jsonl", b"\n  \n" + BODY.replace(b"\n", b"\n\n\t\n") + b"   "),
        ("noeol.jsonl", BODY.rstrip(b"\n")),
    ],
)
def test_input_variants(name: str, data: bytes, tmp_path: Path) -> None:
    source = tmp_path / name
    source.write_bytes(data)
    before = source.read_bytes()
    out = tmp_path / "out.packed"
    DatasetPacker().pack(source, out, validate=True)
    assert _read_all(out) == RECORDS
    assert source.read_bytes() == before  # the input is never modified


def test_stdin(tmp_path: Path) -> None:
    out = tmp_path / "stdin.packed"
    proc = subprocess.run(
        [sys.executable, "-m", "shardpack", "pack", "-", "--output", str(out)],
        input=BODY,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _read_all(out) == RECORDS


def test_several_inputs_make_one_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    first.write_bytes(BODY)
    second.write_bytes(gzip.compress(BODY))
    out = tmp_path / "both.packed"
    DatasetPacker().pack([first, second], out)
    assert _read_all(out) == RECORDS + RECORDS


@pytest.mark.parametrize(
    ("line", "column"),
    [
        (b'{"a": 1,}', 9),
        (b'{"a": "unterminated', 7),
        (b"nope", 1),
        (b'{"a": 1} {"b": 2}', 10),
        (b'{"a": "\xff"}', 8),
        (b'{"a": "x\x00y"}', 9),
    ],
)
def test_malformed_line_names_file_line_column(line: bytes, column: int, tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_bytes(b'{"ok": 1}\n\n' + line + b'\n{"ok": 2}\n')
    out = tmp_path / "bad.packed"
    with pytest.raises(InputError) as caught:
        DatasetPacker().pack(source, out)
    err = caught.value
    assert (err.path, err.line, err.column) == (str(source), 3, column)
    assert str(err).startswith(f"{source}:3:{column}: ")
    assert not out.exists()
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open input"):
        DatasetPacker().pack(tmp_path / "nope.jsonl", tmp_path / "x.packed")


def test_failed_repack_keeps_the_earlier_output(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_bytes(BODY)
    bad.write_bytes(BODY + b"{oops\n")
    out = tmp_path / "out.packed"
    DatasetPacker().pack(good, out)
    before = out.read_bytes()
    with pytest.raises(InputError):
        DatasetPacker().pack(bad, out)
    assert out.read_bytes() == before


def test_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(BODY)
    with pytest.raises(shardpack.OptionError, match="one of the inputs"):
        DatasetPacker().pack(source, source)
    assert source.read_bytes() == BODY
