"""shardpack.Writer: records made in Python packed directly, with their own dtypes, atomically,
into one file or a sharded folder, appended to a dataset, with the options of ``pack``."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import shardpack
from shardpack import OptionError, Writer
from shardpack.dataset.validate_folder import validate_dataset

from .conftest import golden_script

GOLDEN = Path(__file__).parent / "golden" / "v1.1"


def _golden_records() -> list[dict[str, Any]]:
    return golden_script("1.1").records()  # type: ignore[no-any-return]


def _same(got: Any, want: Any) -> None:
    if isinstance(want, np.generic):
        want = np.asarray(want)
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
    elif isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            _same(got[key], want[key])
    elif isinstance(want, list) and isinstance(got, np.ndarray):
        assert got.tolist() == want
    else:
        assert type(got) is type(want) and got == want


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
def test_golden_files_of_format_1_1_read_back_exactly(codec: str) -> None:
    path = GOLDEN / f"{codec}.packed"
    with shardpack.open(path) as ds:
        assert ds.metadata.format_version == "1.1" and len(ds) == 40
        for got, want in zip(ds, _golden_records(), strict=True):
            _same(got, want)
        assert ds[3]["score"].shape == () and ds[3]["score"].dtype == np.float32
        assert ds.metadata.arrays["u32"].dtype == "uint32"
    assert shardpack.DatasetPacker().validate(path, deep=True).ok
    hashes = {shardpack.open(GOLDEN / f"{c}.packed").metadata.content_hash for c in ("lz4", "zstd")}
    assert len(hashes) == 1


def test_writer_keeps_every_dtype_and_json_values(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    records = _golden_records()
    for i, record in enumerate(records):
        record["t_bf16"] = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3) / (i + 1)
        record["t_i64"] = torch.tensor([i, -i], dtype=torch.int64)
        record["f16"] = np.arange(4, dtype=np.float16) / (i + 1)
        record["nested"] = {"turns": [{"role": "user", "ids": np.arange(3, dtype=np.int8)}]}
    out = tmp_path / "w.packed"
    with Writer(out, compression="zstd", meta={"teacher": "t-7b"}) as writer:
        writer.write(records[0])
        writer.write_many(records[1:])
    with shardpack.open(out) as ds:
        assert len(ds) == len(records)
        got = ds[7]
        assert got["t_bf16"].dtype == ml_dtypes.bfloat16
        assert (
            got["t_bf16"].view(np.uint16).tolist()
            == records[7]["t_bf16"].view(torch.int16).numpy().view(np.uint16).tolist()
        )
        assert got["t_i64"].tolist() == [7, -7] and got["t_i64"].dtype == np.int64
        assert got["nested"]["turns"][0]["ids"].dtype == np.int8
        assert got["flag"].dtype == np.bool_ and got["flag"].shape == ()
        meta = ds.metadata
        assert meta.format_version == "1.2" and meta.lossy == {}  # given dtypes are not lossy
        assert meta.provenance.meta == {"teacher": "t-7b"} and meta.provenance.inputs == []
        assert meta.stats.fields["u8"].array_dtypes == {"uint8": 40}
        assert meta.stats.records == 40
        assert got["f16"].dtype == np.float16
        assert got["f16"].tobytes() == records[7]["f16"].tobytes()
        assert meta.schema_source == "inferred"
        assert meta.schema["properties"]["u32"]["x-shardpack-dtype"] == "uint32"


def test_a_failed_or_abandoned_writer_leaves_nothing(tmp_path: Path) -> None:
    records = [{"i": i, "x": np.full(100, i, np.float32)} for i in range(500)]
    for layout in ({}, {"records_per_shard": 50}):
        out = tmp_path / ("one.packed" if not layout else "ds")
        with (
            pytest.raises(RuntimeError, match="teacher crashed"),
            Writer(out, unit_bytes=16 * 1024, **layout) as writer,
        ):
            writer.write_many(records)  # several shards are complete by now
            raise RuntimeError("teacher crashed")
        assert not out.exists() or not list(out.iterdir())
        writer = Writer(out, unit_bytes=16 * 1024, **layout)
        writer.write_many(records)
        del writer
        gc.collect()  # never closed: nothing stays behind
        assert not out.exists() or not list(out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_writer_shards_by_size_or_count_and_appends(tmp_path: Path) -> None:
    records = [{"i": i, "ids": np.arange(i % 50, dtype=np.int32), "t": "x" * (i % 30)}
               for i in range(900)]  # fmt: skip
    out = tmp_path / "ds"
    with Writer(out, records_per_shard=200, compression="zstd") as writer:
        writer.write_many(records[:500])
    first = shardpack.open(out)
    assert [e.records for e in first.manifests[0].shards] == [200, 200, 100]
    manifest_before = (out / "manifest.json").read_bytes()
    # an append that fails keeps the dataset as it was
    with (
        pytest.raises(ValueError, match="stop"),
        Writer(out, append=True, records_per_shard=200) as writer,
    ):
        writer.write_many(records[500:])
        raise ValueError("stop")
    assert (out / "manifest.json").read_bytes() == manifest_before
    assert validate_dataset(out).ok
    with Writer(out, append=True, records_per_shard=200, compression="lz4") as writer:
        writer.write_many(records[500:])
    with shardpack.open(out) as ds:
        assert len(ds) == 900 and ds[899]["i"] == 899 and ds[250]["ids"].tolist() == list(range(0))
        assert ds.metadata.shards == 5
        assert ds.metadata.provenance.merged_from[0].content_hash == first.metadata.content_hash
    assert validate_dataset(out, deep=True).ok
    sized = Writer(tmp_path / "sized", shard_size="8K", unit_bytes=4 * 1024)
    sized.write_many(records)
    result = sized.close()
    sizes = [e.size for e in result.manifest.shards]
    # closed once a unit takes a shard past the target: within a unit's worth above it
    assert len(sizes) >= 3 and all(8 * 1024 <= s < 16 * 1024 for s in sizes[:-1])


def test_pack_takes_records_and_workers_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    records = [{"i": i, "lp": np.random.default_rng(i).random((20, 4), dtype=np.float32)}
               for i in range(300)]  # fmt: skip
    one = shardpack.pack(iter(records), tmp_path / "one.packed", unit_bytes=16 * 1024)
    two = shardpack.pack(records, tmp_path / "two.packed", unit_bytes=16 * 1024, workers=2)
    assert one.record_count == 300 and one.content_hash == two.content_hash
    assert (tmp_path / "one.packed").read_bytes() == (tmp_path / "two.packed").read_bytes()


def test_schema_skip_and_bad_values(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"i": {"type": "integer"}}, "required": ["i"]}
    records: list[Any] = [{"i": 1}, {"i": "two"}, {"j": 3}, {"i": 4}]
    out = tmp_path / "s.packed"
    result = shardpack.pack(records, out, schema=schema, on_error="skip")
    assert result.record_count == 2 and result.rejected_count == 2
    rejects = [json.loads(x) for x in Path(result.rejects_path).read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3] and rejects[0]["path"] == "<python>"
    with shardpack.open(out) as ds:
        assert ds.metadata.schema == schema and ds.metadata.schema_source == "user"
    with pytest.raises(shardpack.SchemaError, match=r"<python>:2"):
        shardpack.pack(records, tmp_path / "f.packed", schema=schema)
    for bad, words in [
        ({"b": b"bytes"}, "field 'b': a bytes is not a JSON value"),
        ({"c": np.array([1 + 2j])}, "field 'c': arrays of complex128 cannot be stored"),
        ({1: "x"}, "keys must be strings"),
    ]:
        with pytest.raises(shardpack.InputError, match=words):
            shardpack.pack([bad], tmp_path / "bad.packed")
    assert not (tmp_path / "bad.packed").exists() and not (tmp_path / "f.packed").exists()
    with pytest.raises(OptionError, match="closed"):
        writer = Writer(tmp_path / "c.packed")
        writer.write({"a": 1})
        writer.close()
        writer.write({"a": 2})
    assert os.path.exists(tmp_path / "c.packed")
