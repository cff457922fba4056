"""Shards are who the manifest says they are: open, unpack and the torch loader refuse a swapped,
replaced or foreign shard, naming it; ``expected_hash`` pins a whole dataset's records."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import shardpack
from shardpack import DatasetPacker, FormatError, ManifestError, OptionError, ShardedPacker
from shardpack.dataset.manifest import MANIFEST_NAME

from .conftest import plain, write_jsonl
from .crafting import PackedParts

RECORDS = [{"id": i, "text": f"record {i}", "ids": [i, i + 1]} for i in range(1000, 1060)]
OTHER = [{"id": -i, "text": f"other {i:3d}", "ids": [i, -i]} for i in range(60)]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardpack", *args], capture_output=True, text=True, timeout=300
    )


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A sharded dataset of three shards of 20 records each."""
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "ds"
    ShardedPacker().pack(source, out, records_per_shard=20)
    return out


def _refused_everywhere(folder: Path, *expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        shardpack.open(folder)
    for text in expected:
        assert text in str(caught.value)
    for args in (["unpack", str(folder), "-o", "-"], ["head", str(folder)]):
        line = _one_line(_cli(*args))
        assert all(text in line for text in expected), line
    from shardpack.torch import PackedDataset, PackedIterableDataset

    for make in (PackedDataset, PackedIterableDataset):
        with pytest.raises(ManifestError, match=expected[0]):
            dataset = make(str(folder))
            next(iter(dataset)) if make is PackedIterableDataset else len(dataset)


def test_swapped_shards_are_refused_naming_them(folder: Path, tmp_path: Path) -> None:
    first, second = folder / "shard-00000.packed", folder / "shard-00001.packed"
    first.rename(tmp_path / "swap")
    second.rename(first)
    (tmp_path / "swap").rename(second)
    _refused_everywhere(
        folder, "shard-00000.packed: holds the records of shard-00001.packed", "entry 0"
    )


def test_a_shard_of_another_dataset_with_the_same_record_count_is_refused(
    folder: Path, tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign"
    ShardedPacker().pack(
        write_jsonl(tmp_path / "other.jsonl", OTHER), foreign, records_per_shard=20
    )
    shutil.copyfile(foreign / "shard-00002.packed", folder / "shard-00002.packed")
    _refused_everywhere(folder, "shard-00002.packed: content hash", "differs from manifest entry 2")


def test_a_shard_of_the_same_records_packed_otherwise_is_refused_by_its_size(
    folder: Path, tmp_path: Path
) -> None:
    """Same records, same content hash, another codec: not the file the manifest lists."""
    source = write_jsonl(tmp_path / "part.jsonl", RECORDS[20:40])
    DatasetPacker().pack(source, tmp_path / "zstd.packed", compression="zstd")
    with (
        shardpack.open(folder / "shard-00001.packed") as ds,
        shardpack.open(tmp_path / "zstd.packed") as other,
    ):
        assert ds.content_hash == other.content_hash
    shutil.copyfile(tmp_path / "zstd.packed", folder / "shard-00001.packed")
    _refused_everywhere(folder, "shard-00001.packed: is ", "manifest entry 1 lists")


def test_a_manifest_entry_listing_another_record_count_is_refused(folder: Path) -> None:
    doc = json.loads((folder / MANIFEST_NAME).read_text())
    doc["shards"][1]["records"] += 1
    doc["totals"]["records"] += 1
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="holds 20 records but the manifest lists 21"):
        shardpack.open(folder)


@pytest.mark.parametrize(("key", "delta"), [("shards", 1), ("records", -1), ("bytes", 7)])
def test_manifest_totals_that_do_not_add_up_are_refused(folder: Path, key: str, delta: int) -> None:
    doc = json.loads((folder / MANIFEST_NAME).read_text())
    doc["totals"][key] += delta
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=rf"totals\.{key} is .* but the shards add up to"):
        shardpack.open(folder)


def test_expected_hash_pins_a_file_a_folder_and_a_list(folder: Path, tmp_path: Path) -> None:
    with shardpack.open(folder) as ds:
        pinned = ds.content_hash
        assert pinned == ds.metadata.content_hash  # what `shardpack info` shows
        records = [plain(r) for r in ds]
    with shardpack.open(folder, expected_hash=pinned) as ds:
        assert [plain(r) for r in ds] == records
    single = folder / "shard-00000.packed"
    with shardpack.open(single) as ds:
        file_hash = ds.content_hash
    assert shardpack.open(single, expected_hash=file_hash).close() is None
    shards = sorted(str(p) for p in folder.glob("shard-*.packed"))
    # a list reads as the dataset merge would make of it: the folder's hash, for its shards
    assert shardpack.open(shards, expected_hash=pinned).close() is None
    with pytest.raises(FormatError, match="not the pinned"):
        shardpack.open(shards[::-1], expected_hash=pinned)
    with pytest.raises(FormatError, match=f"content hash is {file_hash}, not the pinned"):
        shardpack.open(single, expected_hash=pinned)
    with pytest.raises(OptionError, match="expected_hash must look like"):
        shardpack.open(single, expected_hash="sha256:abc")


def test_a_file_that_only_claims_the_pinned_hash_is_refused(tmp_path: Path) -> None:
    """The footer is the attacker's: claiming the pinned hash is not enough, the records must
    hash to it."""
    real = tmp_path / "real.packed"
    DatasetPacker().pack(write_jsonl(tmp_path / "a.jsonl", RECORDS), real)
    fake = tmp_path / "fake.packed"
    DatasetPacker().pack(write_jsonl(tmp_path / "b.jsonl", OTHER), fake)
    with shardpack.open(real) as ds:
        pinned = ds.content_hash
    parts = PackedParts.parse(fake.read_bytes())
    parts.metadata["content_hash"] = pinned
    fake.write_bytes(parts.assemble())
    with shardpack.open(fake) as ds:
        assert ds.content_hash == pinned and plain(ds[0]) == OTHER[0]  # unpinned, the claim stands
    with pytest.raises(FormatError, match=r"fake.packed: records hash to .* but the footer claims"):
        shardpack.open(fake, expected_hash=pinned)


def test_merge_refuses_a_dataset_with_a_swapped_shard_before_copying(
    folder: Path, tmp_path: Path
) -> None:
    from shardpack.dataset.merge import merge_datasets

    first, second = folder / "shard-00000.packed", folder / "shard-00001.packed"
    data = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(data)
    out = tmp_path / "merged"
    with pytest.raises(ManifestError, match="holds the records of shard-00001"):
        merge_datasets([folder], out)
    assert not out.exists() or not list(out.iterdir())
