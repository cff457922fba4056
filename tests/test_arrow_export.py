"""Packed data out to Arrow, pandas, Parquet and Arrow IPC with real pyarrow and pandas, and back:
JSONL -> pack -> Parquet -> pack gives the same records where Parquet can hold them; what it
cannot hold is an error naming the record and the field, and leaves no file behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import shardpack
from shardpack import SchemaError, Writer

from .conftest import assert_same_json, plain, write_jsonl

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _unpack(packed: Path, output: Path) -> int:
    from shardpack.cli.main import main

    return main(["unpack", str(packed), "-o", str(output), "-q"])


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_jsonl_to_parquet_and_back_gives_the_same_records(
    kd_jsonl: Path, text_jsonl: Path, tmp_path: Path, suffix: str
) -> None:
    for source in (kd_jsonl, text_jsonl):
        packed = tmp_path / f"{source.stem}.packed"
        shardpack.pack(source, packed, workers=1)
        table_file = tmp_path / f"{source.stem}{suffix}"
        assert _unpack(packed, table_file) == 0
        again = tmp_path / f"{source.stem}-again.packed"
        shardpack.pack(table_file, again, workers=2)
        expected = [json.loads(line) for line in source.read_text("utf-8").splitlines()]
        with shardpack.open(again) as ds:
            assert len(ds) == len(expected)
            for got, want in zip(ds, expected, strict=True):
                assert_same_json(got, want)
    with shardpack.open(tmp_path / "kd_mix-again.packed") as ds:
        row = ds[0]  # arrays keep the dtype the first pack chose (int32 ids, float32 log-probs)
        assert row["input_ids"].dtype == np.int32 and row["teacher_topk_logprobs"].ndim == 2
        assert row["teacher_topk_logprobs"].dtype == np.float32


def test_to_arrow_types_and_missing_fields(kd_mixed_jsonl: Path, tmp_path: Path) -> None:
    packed = tmp_path / "mixed.packed"
    shardpack.pack(kd_mixed_jsonl, packed, workers=1)
    records = [json.loads(line) for line in kd_mixed_jsonl.read_text("utf-8").splitlines()]
    with shardpack.open(packed) as ds:
        table = ds.to_arrow()
    assert table.num_rows == len(records)
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("teacher_topk_logprobs").type == pa.list_(pa.list_(pa.float32()))
    names = table.schema.names
    assert set(names) == {key for record in records for key in record}
    # a field a record lacks is null there (the documented encoding), every other value equal
    rows = table.to_pylist()
    for row, record in zip(rows, records, strict=True):
        assert {k for k, v in row.items() if v is not None} == {
            k for k, v in record.items() if v is not None
        }
        for key, value in record.items():
            assert_same_json(row[key], value, f"$.{key}")


def test_python_dtypes_survive_parquet(tmp_path: Path) -> None:
    records = [
        {
            "bf16": np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
            / (i + 1),
            "f16": np.full(3, 0.5 + i, np.float16),
            "i8": np.arange(4, dtype=np.int8) - i,
            "u16": np.array([i, 65535], np.uint16),
            "flag": np.array([True, i % 2 == 0]),
        }
        for i in range(20)
    ]
    packed = tmp_path / "py.packed"
    shardpack.pack(records, packed)
    out = tmp_path / "py.parquet"
    assert _unpack(packed, out) == 0
    schema = pq.read_schema(out)
    assert schema.field("bf16").type == pa.list_(pa.list_(pa.float32()))
    assert schema.field("bf16").metadata == {b"shardpack:dtype": b"bfloat16"}
    assert schema.field("i8").type == pa.list_(pa.int8())
    assert schema.field("f16").type == pa.list_(pa.float16())
    again = tmp_path / "again.packed"
    shardpack.pack(out, again, workers=1)
    with shardpack.open(again) as ds:
        for got, want in zip(ds, records, strict=True):
            for key, array in want.items():
                assert got[key].dtype == array.dtype and got[key].shape == array.shape, key
                assert got[key].tobytes() == array.tobytes(), key


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"score": 1}, {"score": 0.5}], r"\$\.score: record 1 holds floats and integers"),
        ([{"n": 1}, {"n": 2**70}], r"\$\.n: record 1 holds 1180591620717411303424, beyond 64"),
        ([{"x": [1, "a"]}], r"\$\.x\[\]: record 0 holds integers and text"),
        ([{"a": 1}, [1, 2]], r"\$: record 1 is a list, not an object"),
        ([{"a": 1}, "text"], r"\$: record 1 is a string, not an object"),
        ([{"t": "ok"}, {"t": "\ud800"}], r"\$\.t: record 1 cannot be stored as string"),
        ([{"n": -1}, {"n": 2**63}], r"\$\.n: record 1 holds integers below 0 and from 2\*\*63"),
        ([{"e": {}}, {"e": {}}], r"\$\.e: holds only empty objects"),
    ],
)
def test_what_parquet_cannot_hold_is_an_error_naming_it(
    tmp_path: Path, records: list[Any], message: str
) -> None:
    packed = tmp_path / "odd.packed"
    write_jsonl(tmp_path / "odd.jsonl", records)
    shardpack.pack(tmp_path / "odd.jsonl", packed, workers=1)
    out = tmp_path / "odd.parquet"
    with pytest.raises(SchemaError, match=message):
        shardpack.open(packed).to_arrow() if "empty" not in message else _write(packed, out)
    if "empty" in message:
        assert shardpack.open(packed).to_arrow().num_rows == 2  # Arrow itself holds {}
    assert _unpack(packed, out) == 1  # the command: one line, exit 1, nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.jsonl", "odd.packed"]


def _write(packed: Path, out: Path) -> None:
    from shardpack.dataset.arrow_export import write_table_file

    with shardpack.open(packed) as ds:
        write_table_file(ds, str(out))


def test_to_pandas_keeps_ints_and_arrays(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    records = [{"id": i, "maybe": i if i % 2 else None, "ids": np.arange(i, dtype=np.int32)}
               for i in range(5)]  # fmt: skip
    with Writer(tmp_path / "p.packed") as writer:
        writer.write_many(records)
    df = shardpack.open(tmp_path / "p.packed").to_pandas()
    assert list(df.columns) == ["id", "maybe", "ids"] and len(df) == 5
    assert str(df["id"].dtype) == "int64"
    assert df["maybe"].tolist() == [None, 1, None, 3, None]  # ints stay ints beside nulls
    assert df["ids"][3].dtype == np.int32 and df["ids"][3].tolist() == [0, 1, 2]


def test_a_big_export_is_written_in_batches_of_one_schema(tmp_path: Path) -> None:
    # the first batch has no value in "late": the schema comes from every record, not the first
    records = [{"i": i, "late": None if i < 1500 else [i + 0.5]} for i in range(3000)]
    packed = tmp_path / "big.packed"
    shardpack.pack(records, packed)
    out = tmp_path / "big.parquet"
    assert _unpack(packed, out) == 0
    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == 3000 and meta.num_row_groups == 3
    assert pq.read_schema(out).field("late").type.value_type == pa.float32()  # as packed
    assert pq.read_table(out).column("late")[2000].as_py() == [2000.5]


def test_open_takes_globs_of_files_and_folders(kd_jsonl: Path, tmp_path: Path) -> None:
    records = [{"i": i} for i in range(30)]
    for part in range(3):
        shardpack.pack(records[part * 10 : part * 10 + 10], tmp_path / f"kd-{part}.packed")
        shardpack.pack(records[part * 10 : part * 10 + 10], tmp_path / f"ds-{part}",
                       records_per_shard=4)  # fmt: skip
    with shardpack.open(str(tmp_path / "kd-*.packed")) as ds:
        assert [r["i"] for r in ds] == list(range(30)) and len(ds.files) == 3
    with shardpack.open(f"{tmp_path}/*-*/") as ds:  # a trailing / matches folders only
        assert [r["i"] for r in ds] == list(range(30)) and len(ds.manifests) == 3
    with shardpack.open([str(tmp_path / "ds-[12]"), str(tmp_path / "kd-0.packed")]) as ds:
        assert [r["i"] for r in ds] == list(range(10, 30)) + list(range(10))
    with pytest.raises(shardpack.OptionError, match="no dataset matches"):
        shardpack.open(str(tmp_path / "nothing-*.packed"))


def test_arrow_libraries_load_only_when_used(text_jsonl: Path, tmp_path: Path) -> None:
    code = (
        "import sys, shardpack\n"
        f"shardpack.pack({str(text_jsonl)!r}, {str(tmp_path / 'x.packed')!r}, workers=1)\n"
        f"list(shardpack.open({str(tmp_path / 'x.packed')!r}))\n"
        "print(sorted(m for m in ('pyarrow', 'pandas', 'datasets', 'asyncio',\n"
        "    'shardpack.storage.remote', 'shardpack.ingest.arrow_values') if m in sys.modules))\n"
    )  # the remote stack (asyncio: ~40 ms) and the Arrow conversion load on first use
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert plain(np.arange(2)) == [0, 1]
