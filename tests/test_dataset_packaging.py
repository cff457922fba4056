"""The usage pipelines already rely on, exactly as written: the Python API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import shardpack
from shardpack import DatasetPacker

from .conftest import assert_same_json

CODECS = ["lz4", "zstd", "none"]


def _lines(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardpack", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_api_pack_and_open_as_users_write_it(kd_jsonl: Path, tmp_path: Path) -> None:
    packer = DatasetPacker()
    out = tmp_path / "kd_mix.packed"
    result = packer.pack(
        input_path=str(kd_jsonl), output_path=str(out), compression="lz4", validate=True
    )
    assert result.validation.ok
    expected = _lines(kd_jsonl)

    ds = shardpack.open(str(out))
    assert len(ds) == len(expected) == result.record_count
    assert_same_json(ds[0], expected[0])
    assert_same_json(ds[-1], expected[-1])
    assert_same_json(ds[2:5], expected[2:5])
    assert_same_json(ds[::7], expected[::7])
    for record, line in zip(ds, expected, strict=True):
        assert_same_json(record, line)
    batches = list(ds.iter_batches(8))
    assert [len(b) for b in batches[:-1]] == [8] * (len(batches) - 1)
    assert sum(len(b) for b in batches) == len(expected)
    assert_same_json(batches[1][0], expected[8])
    with pytest.raises(IndexError):
        ds[len(expected)]
    ds.close()


def test_numeric_fields_come_back_as_narrow_numpy_arrays(kd_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "kd.packed"
    DatasetPacker().pack(input_path=kd_jsonl, output_path=out)
    with shardpack.open(out) as ds:
        record = ds[3]
        assert record["input_ids"].dtype == np.int32
        assert record["teacher_topk_ids"].dtype == np.int32
        assert record["teacher_topk_ids"].ndim == 2
        # float32 model outputs printed as float64 reprs are stored as float32, bit-exact
        assert record["teacher_topk_logprobs"].dtype == np.float32
        assert record["teacher_topk_logprobs"].ctypes.data % 8 == 0
        assert ds.metadata.arrays["teacher_topk_logprobs"].dtype == "float32"


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_each_codec(
    codec: str, kd_jsonl: Path, text_jsonl: Path, tmp_path: Path
) -> None:
    for source in (kd_jsonl, text_jsonl):
        out = tmp_path / f"{source.stem}.{codec}.packed"
        DatasetPacker().pack(input_path=source, output_path=out, compression=codec, validate=True)
        expected = _lines(source)
        with shardpack.open(out) as ds:
            assert ds.metadata.codec["id"] == codec
            assert len(ds) == len(expected)
            for record, line in zip(ds, expected, strict=True):
                assert_same_json(record, line)
        unpacked = tmp_path / f"{source.stem}.{codec}.jsonl"
        proc = run_cli("unpack", str(out), "--output", str(unpacked))
        assert proc.returncode == 0, proc.stderr
        for got, want in zip(_lines(unpacked), expected, strict=True):
            assert_same_json(got, want)


def test_cli_pack_validate_info_head_unpack(text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "gsm.packed"
    proc = run_cli(
        "pack",
        str(text_jsonl),
        "--output",
        str(out),
        "--compression",
        "zstd",
        "--level",
        "5",
        "--block-size",
        "128K",
        "--validate",
    )
    assert proc.returncode == 0, proc.stderr
    assert "packed 2000 records" in proc.stdout

    info = run_cli("info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["records"] == 2000
    assert facts["metadata"]["codec"] == {"id": "zstd", "level": 5}
    assert facts["metadata"]["block_size"] == 128 * 1024
    assert run_cli("info", str(out)).returncode == 0

    head = run_cli("head", str(out), "-n", "3")
    assert head.returncode == 0
    assert [json.loads(line) for line in head.stdout.splitlines()] == _lines(text_jsonl)[:3]


def test_cli_accepts_input_flag_as_pipelines_write_it(text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "gsm.packed"
    proc = run_cli(
        "pack",
        "--input",
        str(text_jsonl),
        "--output",
        str(out),
        "--compression",
        "lz4",
        "--validate",
    )
    assert proc.returncode == 0, proc.stderr
    with shardpack.open(out) as ds:
        assert len(ds) == 2000


def test_cli_bad_data_exits_1_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": 2,}\n', encoding="utf-8")
    out = tmp_path / "bad.packed"
    proc = run_cli("pack", str(bad), "--output", str(out))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"{bad}:2:" in proc.stderr
    assert not out.exists()


def test_cli_bad_usage_exits_2(tmp_path: Path) -> None:
    assert run_cli("pack", "--output", str(tmp_path / "x.packed")).returncode == 2
    proc = run_cli("pack", "in.jsonl", "--output", "x", "--compression", "brotli")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run_cli("pack", "in.jsonl", "--output", "x", "--block-size", "lots")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert run_cli("frobnicate").returncode == 2


def test_cli_damaged_file_exits_1(text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "gsm.packed"
    DatasetPacker().pack(text_jsonl, out)
    data = bytearray(out.read_bytes())
    data[100] ^= 0x40
    out.write_bytes(bytes(data))
    proc = run_cli("validate", str(out))
    assert proc.returncode == 1
    assert "block 0" in proc.stderr and "checksum" in proc.stderr
    proc = run_cli("unpack", str(out), "--output", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_console_script_is_installed() -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("shardpack")), "--version"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and shardpack.__version__ in proc.stdout
