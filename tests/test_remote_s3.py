"""Remote storage end to end against a real S3-compatible server (moto) on loopback, via s3fs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shardpack
from shardpack import ShardedPacker
from shardpack.dataset.merge import merge_datasets
from shardpack.dataset.validate_folder import validate_dataset
from shardpack.storage.ranges import RangeSource

from .conftest import moto_s3

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[Any, dict[str, Any]]]:
    with moto_s3("data") as found:
        yield found


def test_pack_to_s3_and_read_by_byte_ranges(s3: Any, kd_jsonl: Path, text_jsonl: Path) -> None:
    client, options = s3
    client.put_object(Bucket="data", Key="in/kd.jsonl", Body=kd_jsonl.read_bytes())
    client.put_object(Bucket="data", Key="in/text.jsonl", Body=text_jsonl.read_bytes())
    packer = ShardedPacker(storage_options=options, workers=1)
    result = packer.pack(["s3://data/in/*.jsonl"], "s3://data/ds", shard_size="600K")
    local = ShardedPacker(workers=1).pack(
        [kd_jsonl, text_jsonl], kd_jsonl.parent / "ds-local", shard_size="600K"
    )
    # same inputs, same shards and records (only the input paths in the footers differ)
    assert result.content_hash == local.content_hash and len(result.manifest.shards) >= 3
    for entry, twin in zip(result.manifest.shards, local.manifest.shards, strict=True):
        body = client.get_object(Bucket="data", Key=f"ds/{entry.file}")["Body"].read()
        assert len(body) == entry.size and entry.records == twin.records
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="data", Prefix="ds/")["Contents"]}
    assert "ds/manifest.json" in keys and "ds/unfinished-pack.json" not in keys

    with shardpack.open("s3://data/ds", storage_options=options, block_cache_bytes=4 << 20) as ds:
        expected = json.loads(text_jsonl.read_text().splitlines()[10])
        n_kd = sum(1 for line in kd_jsonl.read_text().splitlines() if line.strip())
        assert len(ds) == result.record_count and ds[n_kd + 10] == expected
        shard, _ = ds._locate(n_kd + 10)
        source = shard._source
        assert isinstance(source, RangeSource)
        # opening fetched the tail; one record fetched one block range, never the whole shard
        assert source.requests <= 3  # tail, header, at most one block
        assert source.bytes_fetched < shard.size / 2
        before = source.requests
        ds[n_kd + 10]
        shard._cache.clear()  # the decoded-block LRU aside, the local block cache serves it
        ds[n_kd + 10]
        assert source.requests == before
    assert validate_dataset("s3://data/ds", storage_options=options, deep=True).ok


def test_remote_validate_names_missing_shard_and_resume_packs_it(s3: Any, text_jsonl: Path) -> None:
    client, options = s3
    client.put_object(Bucket="data", Key="text2.jsonl", Body=text_jsonl.read_bytes())
    packer = ShardedPacker(storage_options=options, workers=1)
    packer.pack("s3://data/text2.jsonl", "s3://data/t2", records_per_shard=700)
    client.delete_object(Bucket="data", Key="t2/shard-00001.packed")
    problems = [str(p) for p in validate_dataset("s3://data/t2", storage_options=options).problems]
    assert problems == [
        "s3://data/t2/shard-00001.packed: missing shard (manifest entry 1, 700 records)"
    ]
    again = packer.pack("s3://data/text2.jsonl", "s3://data/t2", records_per_shard=700)
    assert (again.shards_reused, again.shards_packed) == (2, 1)
    assert validate_dataset("s3://data/t2", storage_options=options).ok


def test_a_mixture_of_a_local_file_and_an_s3_folder_trains_with_workers(
    s3: Any, text_jsonl: Path, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    from shardpack.torch import PackedIterableDataset, make_loader

    client, options = s3
    lines = text_jsonl.read_text("utf-8").splitlines(keepends=True)
    client.put_object(Bucket="data", Key="mix/text.jsonl", Body="".join(lines[500:]).encode())
    ShardedPacker(storage_options=options, workers=1).pack(
        ["s3://data/mix/text.jsonl"], "s3://data/mix/ds", shard_size="200K"
    )
    (tmp_path / "local.jsonl").write_text("".join(lines[:500]), "utf-8")
    local = tmp_path / "local.packed"
    shardpack.DatasetPacker().pack(tmp_path / "local.jsonl", local)
    local_questions = {json.loads(line)["question"] for line in lines[:500]}
    ds = PackedIterableDataset(
        [local, "s3://data/mix/ds"],
        weights=[0.25, 0.75],
        num_samples=800,
        columns=["question"],
        transform=lambda r: {"question": r["question"], "n": 1},
        storage_options=options,
        seed=1,
    )
    batches = list(make_loader(ds, 16, num_workers=2, stateful=False))
    questions = [q for b in batches for q in b["question"]]
    assert len(questions) == 800 and all(isinstance(b["n"], torch.Tensor) for b in batches)
    assert sum(q in local_questions for q in questions) == 200  # the local file's 25%


def test_a_swapped_remote_shard_is_refused_naming_it(s3: Any, text_jsonl: Path) -> None:
    """The footer of each shard is read on open anyway: its content hash must be the manifest's."""
    client, options = s3
    client.put_object(Bucket="data", Key="in/swap.jsonl", Body=text_jsonl.read_bytes())
    packer = ShardedPacker(storage_options=options, workers=1)
    packer.pack(["s3://data/in/swap.jsonl"], "s3://data/swapped", records_per_shard=500)
    first = client.get_object(Bucket="data", Key="swapped/shard-00000.packed")["Body"].read()
    second = client.get_object(Bucket="data", Key="swapped/shard-00001.packed")["Body"].read()
    client.put_object(Bucket="data", Key="swapped/shard-00000.packed", Body=second)
    client.put_object(Bucket="data", Key="swapped/shard-00001.packed", Body=first)
    # a remote shard opens on first use (its footer read once): there it is checked. The
    # manifest's size is what the tail is fetched by: a shard of another size is a short read,
    # a shard of the same size is caught by its content hash; both name the shard
    with (
        shardpack.open("s3://data/swapped", storage_options=options) as ds,
        pytest.raises(shardpack.ShardpackError) as caught,
    ):
        ds[0]
    assert "s3://data/swapped/shard-00000.packed" in str(caught.value)
    client.put_object(Bucket="data", Key="swapped/shard-00000.packed", Body=first)
    doc = json.loads(client.get_object(Bucket="data", Key="swapped/manifest.json")["Body"].read())
    for key in ("bytes", "footer_offset"):  # entry 1 describes shard 0's file, but its hash
        doc["shards"][1][key] = doc["shards"][0][key]
    doc["totals"]["bytes"] = sum(entry["bytes"] for entry in doc["shards"])
    client.put_object(Bucket="data", Key="swapped/manifest.json", Body=json.dumps(doc).encode())
    with (
        shardpack.open("s3://data/swapped", storage_options=options) as ds,
        pytest.raises(shardpack.ManifestError, match=r"holds the records of shard-00000\.packed"),
    ):
        ds[500]  # the first record of shard 1


def test_merge_from_s3_to_a_local_folder_uses_the_storage_options(
    s3: Any, text_jsonl: Path, tmp_path: Path
) -> None:
    """The shards are downloaded with the options that reach the store (endpoint, keys), not
    with fsspec's defaults: here the defaults reach no server at all."""
    client, options = s3
    local = tmp_path / "ds"
    ShardedPacker(workers=1).pack([text_jsonl], local, records_per_shard=40)
    for path in local.iterdir():
        client.put_object(Bucket="data", Key=f"merge-src/{path.name}", Body=path.read_bytes())
    single = tmp_path / "one.packed"
    shardpack.pack(text_jsonl, single, workers=1)
    client.put_object(Bucket="data", Key="merge-src-one.packed", Body=single.read_bytes())

    merged = merge_datasets(
        ["s3://data/merge-src", "s3://data/merge-src-one.packed"],
        tmp_path / "merged",
        storage_options=options,
    )
    sources = [*sorted(p for p in local.iterdir() if p.suffix == ".packed"), single]
    assert len(merged.shards) == len(sources)
    for entry, source in zip(merged.shards, sources, strict=True):
        assert (tmp_path / "merged" / entry.file).read_bytes() == source.read_bytes()
    assert validate_dataset(tmp_path / "merged").ok
