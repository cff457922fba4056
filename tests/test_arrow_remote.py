"""Parquet and Arrow inputs at URLs, and ``shardpack.open`` globs of URLs, against a real
S3-compatible server (moto) on loopback, through s3fs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shardpack

from .conftest import moto_s3

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[Any, dict[str, Any]]]:
    with moto_s3("rows") as found:
        yield found


def _table(first: int, rows: int) -> Any:
    ids = [np.arange(i % 7, dtype=np.int32) + i for i in range(first, first + rows)]
    return pa.table(
        {"i": list(range(first, first + rows)), "ids": pa.array(ids, pa.list_(pa.int32()))}
    )


def test_parquet_and_arrow_at_urls_pack_like_local_files(s3: Any, tmp_path: Path) -> None:
    client, options = s3
    for part in range(2):
        body = io.BytesIO()
        pq.write_table(_table(part * 50, 50), body, row_group_size=20)
        client.put_object(Bucket="rows", Key=f"in/part-{part}.parquet", Body=body.getvalue())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, _table(100, 30).schema) as writer:
        writer.write_table(_table(100, 30), max_chunksize=10)
    client.put_object(Bucket="rows", Key="in/part-2.arrow", Body=sink.getvalue().to_pybytes())
    out = tmp_path / "remote.packed"
    result = shardpack.pack("s3://rows/in/part-*", out, storage_options=options, workers=2,
                            unit_bytes=1024)  # fmt: skip
    assert [s.lines for s in result.metadata.provenance.inputs] == [50, 50, 30]
    with shardpack.open(out) as ds:
        assert [r["i"] for r in ds] == list(range(130))
        assert ds[103]["ids"].dtype == np.int32 and ds[103]["ids"].tolist() == [
            103,
            104,
            105,
            106,
            107,
        ]


def test_open_takes_a_glob_of_dataset_folders_at_a_url(s3: Any) -> None:
    _, options = s3
    for name, first in (("kd-a", 0), ("kd-b", 10)):
        records = [{"i": i} for i in range(first, first + 10)]
        shardpack.pack(records, f"s3://rows/sets/{name}", records_per_shard=4,
                       storage_options=options)  # fmt: skip
    with shardpack.open("s3://rows/sets/kd-*/", storage_options=options) as ds:
        assert [r["i"] for r in ds] == list(range(20)) and len(ds.manifests) == 2
