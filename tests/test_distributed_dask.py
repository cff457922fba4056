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
from shardpack import ShardedPacker
from shardpack.dataset.validate_folder import validate_dataset

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local


def test_dask_pack_equals_local_pack(
    cluster: Any, kd_jsonl: Path, text_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardpack.build import hashing
    from shardpack.build.dask import pack_distributed

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the manifest's creation time
    inputs = [kd_jsonl, text_jsonl]
    local = ShardedPacker(workers=1).pack(inputs, tmp_path / "local", shard_size="250K")
    hashed_by: dict[int, str] = {}
    result_of = hashing.InputHasher.result

    def recording(self: hashing.InputHasher) -> Any:
        digests = result_of(self)
        hashed_by.update(self.hashed_by)
        return digests

    monkeypatch.setattr(hashing.InputHasher, "result", recording)
    with distributed.Client(cluster) as client:
        result = pack_distributed(inputs, tmp_path / "dask", client=client, shard_size="250K")
        pids = set(client.run(lambda: __import__("os").getpid()).values())
        addresses = set(client.scheduler_info()["workers"])
    assert len(pids) == 2
    assert len(result.manifest.shards) >= 4
    assert result.content_hash == local.content_hash
    # every shard and the manifest itself: byte for byte
    for name in ["manifest.json", *(entry.file for entry in local.manifest.shards)]:
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    # the work ran on the cluster's workers, both of them, never in this process
    who = {w for ws in result.workers.values() for w in ws}
    assert {w.split()[0] for w in who} == addresses
    assert {int(w.split()[-1]) for w in who} == pids
    assert __import__("os").getpid() not in pids
    # the inputs' sha256 too (equal to the local pack's: the manifests are equal above)
    assert sorted(hashed_by) == [0, 1]
    assert {int(w.split()[-1]) for w in hashed_by.values()} <= pids
    assert {w.split()[0] for w in hashed_by.values()} <= addresses
    assert validate_dataset(tmp_path / "dask", deep=True).ok
    with shardpack.open(tmp_path / "dask") as a, shardpack.open(tmp_path / "local") as b:
        assert len(a) == len(b) and a[len(a) - 1] == b[len(b) - 1]


def test_relative_paths_reach_the_workers(cluster: Any, text_jsonl: Path, tmp_path: Path) -> None:
    """Inputs and output given relative to the driver's folder are made absolute before the
    tasks leave; the manifest records them as given, like a local pack."""
    (tmp_path / "in.jsonl").write_bytes(text_jsonl.read_bytes())
    base = [sys.executable, "-m", "shardpack", "pack", "in.jsonl", "--records-per-shard", "700"]
    env = {**__import__("os").environ, "SOURCE_DATE_EPOCH": "1700000000"}
    dask = subprocess.run(
        [*base, "-o", "dask", "--dask", cluster.scheduler_address],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert dask.returncode == 0, dask.stderr
    local = subprocess.run(
        [*base, "-o", "local"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert local.returncode == 0, local.stderr
    manifest = (tmp_path / "dask" / "manifest.json").read_bytes()
    assert manifest == (tmp_path / "local" / "manifest.json").read_bytes()
    assert b'"path": "in.jsonl"' in manifest


def test_an_input_a_worker_cannot_see_is_named_with_the_worker(
    cluster: Any, tmp_path: Path
) -> None:
    from shardpack.build.dask import pack_shard
    from shardpack.build.options import PackOptions
    from shardpack.build.planning import UnitSpec

    missing = str(tmp_path / "only-on-the-driver.jsonl")
    spec = UnitSpec(0, 0, "data/only-on-the-driver.jsonl", missing, 100, 0, 100)
    with distributed.Client(cluster) as client:
        future = client.submit(pack_shard, [spec], PackOptions().encode_options(), str(tmp_path), 0)
        with pytest.raises(shardpack.InputError) as caught:
            future.result()
        addresses = set(client.scheduler_info()["workers"])
    message = str(caught.value)
    assert message.startswith("data/only-on-the-driver.jsonl: cannot open input")
    assert any(f"on Dask worker {address}" in message for address in addresses)
    assert not list(tmp_path.iterdir())  # nothing was left on the worker's side


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
