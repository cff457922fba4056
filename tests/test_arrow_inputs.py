"""Parquet and Arrow IPC (Feather v2) inputs packed with real pyarrow files: typed list columns
keep their Arrow type, untyped data narrows as JSON does, any worker count and shard layout
gives the same bytes, and provenance names each input with its row count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shardpack
from shardpack import InputError

from .conftest import assert_same_json, write_jsonl

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
feather = pytest.importorskip("pyarrow.feather")


def kd_table(rows: int = 600, seed: int = 0) -> Any:
    """A KD-like table: text, list<int32> token ids, list<fixed_size_list<float16, 4>> top-k
    log-probs, a ragged list<list<int64>>, a struct and a float scalar."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=rows)
    ids = [rng.integers(0, 32_000, size=n).astype(np.int32) for n in lengths]
    flat = rng.standard_normal(int(lengths.sum()) * 4).astype(np.float16)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    topk = pa.ListArray.from_arrays(pa.array(offsets), pa.FixedSizeListArray.from_arrays(flat, 4))
    ragged = [[list(range(i % 3)), [i]] for i in range(rows)]
    return pa.table(
        {
            "id": [f"kd-{i:05d}" for i in range(rows)],
            "input_ids": pa.array(ids, pa.list_(pa.int32())),
            "topk": topk,
            "ragged": pa.array(ragged, pa.list_(pa.list_(pa.int64()))),
            "meta": pa.array([{"teacher": "t-7b", "k": 4}] * rows),
            "score": rng.random(rows),
        }
    )


@pytest.fixture(scope="module")
def kd_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pq") / "kd.parquet"
    pq.write_table(kd_table(), path, row_group_size=100)
    return path


def test_typed_list_columns_keep_their_arrow_type(kd_parquet: Path, tmp_path: Path) -> None:
    table = kd_table()
    out = tmp_path / "kd.packed"
    result = shardpack.pack(kd_parquet, out, workers=1)
    assert result.record_count == table.num_rows
    with shardpack.open(out) as ds:
        assert ds.metadata.format_version == "1.2"
        row = ds[7]
        assert list(row) == ["id", "input_ids", "topk", "ragged", "meta", "score"]
        assert row["input_ids"].dtype == np.int32
        assert row["input_ids"].tolist() == table["input_ids"][7].as_py()
        # list<fixed_size_list<float16, 4>>: a 2-D float16 array, bit for bit
        assert row["topk"].dtype == np.float16 and row["topk"].shape == (len(row["input_ids"]), 4)
        want = np.array(table["topk"][7].as_py(), np.float16)
        assert row["topk"].tobytes() == want.tobytes()
        # ragged nested lists: one array per inner list (as a ragged JSON list is stored)
        assert [a.tolist() for a in row["ragged"]] == [[0], [7]]
        assert row["ragged"][0].dtype == np.int64
        assert row["meta"] == {"teacher": "t-7b", "k": 4} and type(row["score"]) is float
        assert ds.metadata.arrays["input_ids"].dtype == "int32"
        assert ds.metadata.arrays["topk"].dtype == "float16"
        assert ds.metadata.lossy == {}  # the file's own types are not a lossy choice


def test_any_worker_count_and_layout_packs_the_same_bytes(
    kd_parquet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the footer's creation time
    one = tmp_path / "w1.packed"
    shardpack.pack(kd_parquet, one, workers=1, unit_bytes=8192)
    two = tmp_path / "w2.packed"
    shardpack.pack(kd_parquet, two, workers=2, unit_bytes=8192)
    assert one.read_bytes() == two.read_bytes()
    hashes = set()
    for workers in (1, 2):
        folder = tmp_path / f"ds{workers}"
        result = shardpack.pack(kd_parquet, folder, workers=workers, records_per_shard=130)
        assert [e.records for e in result.manifest.shards] == [130, 130, 130, 130, 80]
        hashes.add(tuple(e.content_hash for e in result.manifest.shards))
    assert len(hashes) == 1
    with shardpack.open(tmp_path / "ds1") as sharded, shardpack.open(one) as single:
        for got, want in zip(sharded, single, strict=True):
            assert got["id"] == want["id"] and got["topk"].tobytes() == want["topk"].tobytes()
        assert sharded[400]["id"] == "kd-00400"


def test_provenance_records_each_input_with_its_rows(kd_parquet: Path, tmp_path: Path) -> None:
    import hashlib

    arrow = tmp_path / "more.arrow"
    feather.write_feather(kd_table(50, seed=1), arrow, chunksize=20)
    result = shardpack.pack([kd_parquet, arrow], tmp_path / "both.packed", workers=1)
    inputs = result.metadata.provenance.inputs
    assert [(i.path, i.lines) for i in inputs] == [(str(kd_parquet), 600), (str(arrow), 50)]
    for source, path in zip(inputs, (kd_parquet, arrow), strict=True):
        assert source.size == path.stat().st_size
        assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # the same under records_per_shard (where JSONL inputs are hashed by the planner)
    sharded = shardpack.pack([kd_parquet, arrow], tmp_path / "ds", records_per_shard=200)
    assert [e.records for e in sharded.manifest.shards] == [200, 200, 200, 50]
    assert sharded.manifest.provenance.inputs[1].sha256 == inputs[1].sha256


def test_files_are_known_by_their_magic_bytes_and_globs_expand(tmp_path: Path) -> None:
    table = kd_table(40, seed=2)
    pq.write_table(table.slice(0, 20), tmp_path / "part-0.bin")  # no telling extension
    feather.write_feather(table.slice(20), tmp_path / "part-1.bin")  # Arrow IPC, Feather v2
    out = tmp_path / "all.packed"
    shardpack.pack(str(tmp_path / "part-*.bin"), out, workers=2)
    with shardpack.open(out) as ds:
        assert [r["id"] for r in ds] == [f"kd-{i:05d}" for i in range(40)]
        assert ds[25]["input_ids"].tolist() == table["input_ids"][25].as_py()


def test_the_command_packs_parquet(kd_parquet: Path, tmp_path: Path) -> None:
    from shardpack.cli.main import main

    out = tmp_path / "cli.packed"
    assert main(["pack", str(kd_parquet), "-o", str(out), "-q", "-j", "2"]) == 0
    assert len(shardpack.open(out)) == 600


def test_untyped_and_nullable_data_narrows_as_json_does(tmp_path: Path) -> None:
    table = pa.table(
        {
            "ints": pa.array([[1, 2], [3, None], None], pa.list_(pa.int64())),
            "words": pa.array([["a"], [], ["b", None]], pa.list_(pa.string())),
            "maybe": pa.array([1, None, 3], pa.int64()),
            "blob": pa.array([b"\x00\xff", None, b""]),
            "when": pa.array([0, 86_400, None], pa.timestamp("s")),
            "money": pa.array(["1.50", None, "-2.25"]).cast(pa.decimal128(5, 2)),
            "tags": pa.array([[("a", 1)], [], None], pa.map_(pa.string(), pa.int16())),
            "cat": pa.array(["x", "y", "x"]).dictionary_encode(),
        }
    )
    path = tmp_path / "mixed.parquet"
    pq.write_table(table, path)
    out = tmp_path / "mixed.packed"
    shardpack.pack(path, out, workers=1)
    rows = list(shardpack.open(out))
    assert rows[0]["ints"].dtype == np.int64 and rows[0]["ints"].tolist() == [1, 2]
    assert rows[1]["ints"] == [3, None] and rows[2]["ints"] is None  # nulls: a JSON list
    assert [r["words"] for r in rows] == [["a"], [], ["b", None]]
    assert [r["maybe"] for r in rows] == [1, None, 3]
    assert rows[0]["blob"].dtype == np.uint8 and rows[0]["blob"].tolist() == [0, 255]
    assert rows[1]["blob"] is None and rows[2]["blob"].tolist() == []
    assert [r["when"] for r in rows] == ["1970-01-01T00:00:00", "1970-01-02T00:00:00", None]
    assert [r["money"] for r in rows] == ["1.50", None, "-2.25"]
    assert [r["tags"] for r in rows] == [{"a": 1}, {}, None]
    assert [r["cat"] for r in rows] == ["x", "y", "x"]


def test_a_column_without_a_json_form_is_named(tmp_path: Path) -> None:
    union = pa.UnionArray.from_sparse(
        pa.array([0, 1], pa.int8()), [pa.array([1, 2]), pa.array(["a", "b"])]
    )
    path = tmp_path / "union.arrow"
    feather.write_feather(pa.table({"ok": [1, 2], "either": union}), path, compression="zstd")
    with pytest.raises(InputError, match=r"union.arrow: column 'either': Arrow type"):
        shardpack.pack(path, tmp_path / "u.packed", workers=1)
    assert not (tmp_path / "u.packed").exists()
    keyed = pa.array([[(1, "a")]], pa.map_(pa.int32(), pa.string()))
    pq.write_table(pa.table({"m": keyed}), tmp_path / "map.parquet")
    with pytest.raises(InputError, match=r"column 'm': a map with int32 keys"):
        shardpack.pack(tmp_path / "map.parquet", tmp_path / "m.packed", workers=1)


def test_jsonl_beside_parquet_packs_as_before(kd_jsonl: Path, tmp_path: Path) -> None:
    alone = shardpack.pack(kd_jsonl, tmp_path / "alone.packed", workers=1)
    assert alone.metadata.format_version == "1.2"  # every pack writes the newest minor
    records = [{"a": 1, "b": [1.5, 2.5]}, {"a": 2, "b": [0.25]}]
    jsonl = write_jsonl(tmp_path / "small.jsonl", records)
    pq.write_table(pa.table({"a": [3], "b": [[4.0]]}), tmp_path / "more.parquet")
    out = tmp_path / "mix.packed"
    shardpack.pack([jsonl, tmp_path / "more.parquet"], out, workers=2)
    rows = list(shardpack.open(out))
    assert_same_json(rows[:2], records)
    assert rows[2]["a"] == 3 and rows[2]["b"].dtype == np.float64  # the column's own type
    assert json.loads(json.dumps(rows[2]["b"].tolist())) == [4.0]
