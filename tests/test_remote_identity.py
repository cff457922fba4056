"""Identity checks of remote data against a real S3-compatible server (moto) on loopback: pinning a
remote dataset's content hash reads each shard in one request, a packed file at a URL is up to
date like a local one, and a shard replaced by bytes of another size is a ManifestError on
first use, however it is first used."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shardpack
from shardpack import DatasetPacker, FormatError, ManifestError, ShardedPacker
from shardpack.dataset.manifest import MANIFEST_NAME, Manifest, shard_name
from shardpack.storage.remote_options import RemoteOptions

from .conftest import latency_s3, load_benchmark_module, moto_s3, scan_requests, upload_folder

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
pytest.importorskip("boto3")

s3_latency = load_benchmark_module("s3_latency")
LATENCY_MS = 20


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with latency_s3("data", LATENCY_MS) as srv:
        yield srv


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[Any, dict[str, Any]]]:
    with moto_s3("data") as found:
        yield found


# -- 1. pinning reads each shard whole -----------------------------------------------------------


def test_pinning_a_remote_dataset_reads_each_shard_in_one_request(
    server: Any, local_ds: Path
) -> None:
    manifest = Manifest.from_json((local_ds / MANIFEST_NAME).read_bytes())
    shards, blocks = len(manifest.shards), sum(e.blocks for e in manifest.shards)
    assert shards >= 5 and blocks >= 3 * shards  # one request per block would show
    url = upload_folder(server, local_ds, "pinned")
    remote = RemoteOptions(storage_options=s3_latency.storage_options(server.endpoint))
    with shardpack.open(local_ds) as ds:
        pinned = ds.content_hash
        expected = [repr(r) for r in ds]

    server.reset_log()
    with shardpack.open(url, remote=remote, expected_hash=pinned) as ds:
        # the manifest, then each shard whole (header, blocks and footer at once), and the
        # footer of a shard reached before all of it arrived (hashed as it streams in)
        whole, footers = scan_requests(server, "pinned", local_ds)
        assert len(server.requests(None)) == 1 + len(whole) + len(footers)
        stats = ds.remote_stats()
        assert stats is not None and stats.direct == 0
        assert [repr(r) for r in ds] == expected  # and the dataset reads on as usual

    # a wrong pin fails on the manifest's claim alone, in one line, before any shard is read
    other = "xxh3_128:" + "0" * 32
    server.reset_log()
    with pytest.raises(FormatError, match="not the pinned") as caught:
        shardpack.open(url, remote=remote, expected_hash=other)
    assert "\n" not in str(caught.value)
    assert len(server.requests(None)) == 1


def test_diff_of_other_layouts_reads_each_remote_shard_in_one_request(
    server: Any, local_ds: Path, tmp_path: Path
) -> None:
    from shardpack.dataset.diff import diff_datasets

    manifest = Manifest.from_json((local_ds / MANIFEST_NAME).read_bytes())
    shards = len(manifest.shards)
    url = upload_folder(server, local_ds, "diffed")
    remote = RemoteOptions(storage_options=s3_latency.storage_options(server.endpoint))
    single = tmp_path / "one.packed"
    with shardpack.open(local_ds) as ds:
        shardpack.pack(list(ds), single)  # the same records in one file: another split
    with shardpack.open(url, remote=remote) as left, shardpack.open(single) as right:
        server.reset_log()
        result = diff_datasets(left, right)
        assert result["same_content"] and result["compared"] == "records", result
        # each shard's header and footer (the metadata compared), then each shard whole for
        # its records: never a request per block
        assert len(server.requests(None)) == 3 * shards


# -- 2. a packed file at a URL is up to date -----------------------------------------------------


def test_a_packed_file_at_a_url_is_up_to_date_and_a_damaged_one_repacked(
    s3: Any, text_jsonl: Path
) -> None:
    client, options = s3
    url, key = "s3://data/out/gsm.packed", "out/gsm.packed"
    packer = DatasetPacker(storage_options=options)
    first = packer.pack(text_jsonl, url)
    assert not first.up_to_date
    before = client.head_object(Bucket="data", Key=key)
    body = client.get_object(Bucket="data", Key=key)["Body"].read()

    again = packer.pack(text_jsonl, url)
    assert again.up_to_date and again.content_hash == first.content_hash
    after = client.head_object(Bucket="data", Key=key)
    assert after["ETag"] == before["ETag"] and after["LastModified"] == before["LastModified"]
    assert client.get_object(Bucket="data", Key=key)["Body"].read() == body

    # a block damaged in place (footer and fingerprint intact): validated, so repacked
    damaged = bytearray(body)
    damaged[len(body) // 3] ^= 0xFF
    client.put_object(Bucket="data", Key=key, Body=bytes(damaged))
    repacked = packer.pack(text_jsonl, url)
    assert not repacked.up_to_date
    assert packer.validate(url, storage_options=options).ok

    # not a packed file at all: repacked too
    client.put_object(Bucket="data", Key=key, Body=b"not a packed file")
    assert not packer.pack(text_jsonl, url).up_to_date
    assert packer.pack(text_jsonl, url).up_to_date


# -- 3. a replaced shard on first use -----------------------------------------------------------


@pytest.fixture(scope="module")
def remote_ds(s3: Any, text_jsonl: Path) -> tuple[str, list[bytes], Manifest]:
    client, options = s3
    ShardedPacker(storage_options=options, workers=1).pack(
        text_jsonl, "s3://data/replaced", records_per_shard=300
    )
    manifest = Manifest.from_json(
        client.get_object(Bucket="data", Key=f"replaced/{MANIFEST_NAME}")["Body"].read()
    )
    bodies = [
        client.get_object(Bucket="data", Key=f"replaced/{e.file}")["Body"].read()
        for e in manifest.shards
    ]
    assert len(manifest.shards) >= 3 and len({len(b) for b in bodies[:3]}) == 3
    return "s3://data/replaced", bodies, manifest


@pytest.mark.parametrize("how", ["longer", "appended", "shorter", "swapped", "truncated"])
@pytest.mark.parametrize("use", ["record", "scan by ranges"])
def test_a_shard_replaced_by_bytes_of_another_size_is_a_manifest_error_on_first_use(
    s3: Any, remote_ds: tuple[str, list[bytes], Manifest], how: str, use: str
) -> None:
    client, options = s3
    url, bodies, manifest = remote_ds
    replacement = {
        "longer": bodies[2] + bytes(len(bodies[1]) - len(bodies[2]) + 5000),
        "appended": bodies[1] + bodies[2][:5000],
        "shorter": bodies[1][: len(bodies[1]) - 5000],
        "swapped": bodies[2],
        "truncated": bodies[1][:100],
    }[how]
    remote = RemoteOptions(storage_options=options, readahead_bytes=0)  # no whole-shard scan
    try:
        with shardpack.open(url, remote=remote) as ds:  # the manifest only
            client.put_object(Bucket="data", Key=f"replaced/{shard_name(1)}", Body=replacement)
            if how == "swapped":
                client.put_object(Bucket="data", Key=f"replaced/{shard_name(2)}", Body=bodies[1])
            wanted = rf"replaced/{shard_name(1)}: the object is {len(replacement)} bytes but "
            wanted += rf"manifest entry 1 says {manifest.shards[1].size} \(shard replaced\?\)"
            with pytest.raises(ManifestError, match=wanted):
                if use == "record":
                    ds[manifest.shards[0].records + 5]
                else:
                    for _ in ds:
                        pass
    finally:
        for number in (1, 2):
            client.put_object(
                Bucket="data", Key=f"replaced/{shard_name(number)}", Body=bodies[number]
            )
