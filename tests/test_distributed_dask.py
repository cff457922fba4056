"""Packing on a Dask LocalCluster with several worker processes equals a local pack."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shardpack
from shardpack.build.sharded import ShardedPacker
from shardpack.dataset.validate_folder import validate_dataset

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local


def test_dask_pack_equals_local_pack(
    cluster: Any, kd_jsonl: Path, text_jsonl: Path, tmp_path: Path
) -> None:
    from shardpack.build.dask import pack_distributed

    inputs = [kd_jsonl, text_jsonl]
    local = ShardedPacker(workers=1).pack(inputs, tmp_path / "local", shard_size="250K")
    with distributed.Client(cluster) as client:
        result = pack_distributed(inputs, tmp_path / "dask", client=client, shard_size="250K")
        pids = set(client.run(lambda: __import__("os").getpid()).values())
    assert len(pids) == 2
    assert len(result.manifest.shards) >= 4
    assert result.content_hash == local.content_hash
    for entry in local.manifest.shards:
        assert (tmp_path / "dask" / entry.file).read_bytes() == (
            tmp_path / "local" / entry.file
        ).read_bytes()
    assert validate_dataset(tmp_path / "dask", deep=True).ok
    with shardpack.open(tmp_path / "dask") as a, shardpack.open(tmp_path / "local") as b:
        assert len(a) == len(b) and a[len(a) - 1] == b[len(b) - 1]


def test_cli_packs_on_a_dask_scheduler_and_resumes(
    cluster: Any, text_jsonl: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    args = [sys.executable, "-m", "shardpack", "pack", str(text_jsonl), "-o", str(out)]
    args += ["--records-per-shard", "400", "--dask", cluster.scheduler_address, "--json"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["shards"] == 5 and summary["shards_packed"] == 5
    (out / "shard-00002.packed").unlink()  # a lost shard: the run again repairs only it
    again = json.loads(subprocess.run(args, capture_output=True, text=True, timeout=300).stdout)
    assert (again["shards_reused"], again["shards_packed"]) == (4, 1)
    assert again["content_hash"] == summary["content_hash"]
