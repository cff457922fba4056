"""Guards a mutation sweep could remove with every other test passing: each test here fails with
its guard (named in its docstring) disabled, and passes with it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shardpack
from shardpack import DatasetPacker, ManifestError, OptionError, ShardedPacker
from shardpack.dataset.manifest import MANIFEST_NAME
from shardpack.dataset.validate_file import validate_path
from shardpack.dataset.validate_folder import validate_dataset
from shardpack.errors import CorruptBlockError
from shardpack.format.layout import BLOCK_ALIGN, HEADER_SIZE, TRAILER_SIZE, align, checksum
from shardpack.storage.disk_cache import DiskCache
from shardpack.storage.output_lock import OutputLock, lock_location
from shardpack.storage.ranges import TAIL_PREFETCH_BYTES

from .conftest import moto_s3, write_jsonl
from .crafting import PackedParts, seed_records

RECORDS = [{"id": i, "text": f"record {i} " * 8} for i in range(100)]


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real packed file of many small blocks."""
    folder = tmp_path_factory.mktemp("packed")
    out = folder / "seed.packed"
    DatasetPacker().pack(
        write_jsonl(folder / "seed.jsonl", seed_records()), out, block_size=1024, workers=1
    )
    assert len(PackedParts.parse(out.read_bytes()).blocks) > 5
    return out


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A real sharded dataset of 5 shards."""
    out = tmp_path / "ds"
    ShardedPacker(workers=1).pack(
        write_jsonl(tmp_path / "in.jsonl", RECORDS), out, records_per_shard=20
    )
    return out


def _edit_manifest(folder: Path, shard: int, **changes: Any) -> None:
    doc = json.loads((folder / MANIFEST_NAME).read_text())
    doc["shards"][shard].update(changes)
    (folder / MANIFEST_NAME).write_text(json.dumps(doc))


def _records(path: Path) -> list[str]:
    with shardpack.open(path) as ds:
        return [repr(r) for r in ds]


# ---- V3: blocks laid out back to back ---------------------------------------------------------


@pytest.mark.parametrize("before", [1, "index"])
def test_validate_reports_a_zero_filled_gap_between_parts(
    packed: Path, tmp_path: Path, before: int | str
) -> None:
    """dataset/validate_file.py _check_layout: ``gap_end != align(gap_start, alignment)``.
    A stretch of zeros inserted before a block (or before the index), with the index pointing
    past it, reads fine and has only zero bytes between parts: only the gap check tells that
    the layout is not the writer's, naming where."""
    parts = PackedParts.parse(packed.read_bytes())
    at = len(parts.blocks) if before == "index" else int(before)
    parts.blocks.insert(at, bytes(BLOCK_ALIGN))  # laid out, but in no index entry
    position, offsets = HEADER_SIZE, []
    for stored in parts.blocks:  # where assemble puts each block
        start = align(position, BLOCK_ALIGN)
        offsets.append(start)
        position = start + len(stored)
    del offsets[at]
    parts.index["offset"] = offsets
    parts.keep |= {"offsets", "checksums"}  # the stored bytes did not change: nor do checksums
    gap_at = int(parts.index[at - 1]["offset"] + parts.index[at - 1]["stored_size"])
    path = tmp_path / "gap.packed"
    path.write_bytes(parts.assemble())
    assert _records(path) == _records(packed)  # readers cannot tell

    report = validate_path(path)
    where = "before the index" if before == "index" else f"before block {before}"
    assert [str(p) for p in report.problems] == [f"{path}: unexpected gap {where}"], report.problems
    assert report.problems[0].offset == gap_at


# ---- the manifest -------------------------------------------------------------------------------


def test_validate_names_the_shard_whose_manifest_file_hash_was_edited(dataset: Path) -> None:
    """dataset/validate_folder.py _check_entry: ``digest != entry.file_hash``. An edited
    ``file_hash`` is in no total and the shard reads fine: only the whole-file hash tells the
    manifest does not describe this file (and merge/resume trust that hash)."""
    _edit_manifest(dataset, 2, file_hash="xxh3_128:" + "0" * 32)
    assert len(_records(dataset)) == 100
    report = validate_dataset(dataset)
    assert [str(p) for p in report.problems] == [
        f"{dataset / 'shard-00002.packed'}: file hash differs from the manifest"
    ]


def test_a_manifest_listing_itself_as_a_shard_is_refused(dataset: Path) -> None:
    """dataset/manifest.py Manifest.from_json: ``MANIFEST_NAME in names``. The entry keeps the
    real shard's counts, so every total still adds up; without the guard the manifest's own
    JSON is opened as a packed file."""
    _edit_manifest(dataset, 1, file="manifest.json")
    wanted = f"{dataset / MANIFEST_NAME}: the manifest cannot list itself as a shard"
    with pytest.raises(ManifestError) as caught:
        shardpack.open(dataset)
    assert str(caught.value) == wanted
    problems = validate_dataset(dataset).problems  # named once, by the manifest
    assert [(p.path, p.message) for p in problems] == [
        (str(dataset / MANIFEST_NAME), "the manifest cannot list itself as a shard")
    ]


@pytest.mark.parametrize("where", ["past the end", "in the trailer", "in the header"])
def test_a_manifest_footer_offset_outside_its_file_is_refused(dataset: Path, where: str) -> None:
    """dataset/manifest.py ShardEntry.__post_init__: ``HEADER_SIZE <= footer_offset <= size -
    TRAILER_SIZE``. Local reads never use the offset, so without the guard such a manifest
    opens and validates clean; remote readers would fetch the footer from it."""
    size = json.loads((dataset / MANIFEST_NAME).read_text())["shards"][3]["bytes"]
    offset = {
        "past the end": size + 1,
        "in the trailer": size - TRAILER_SIZE + 1,
        "in the header": HEADER_SIZE - 1,
    }[where]
    _edit_manifest(dataset, 3, footer_offset=offset)
    wanted = f"footer_offset {offset} lies outside a file of {size} bytes - at `$.shards[3]`"
    with pytest.raises(ManifestError, match=r"manifest\.json: .*") as caught:
        shardpack.open(dataset)
    assert str(caught.value).endswith(wanted), caught.value
    problems = validate_dataset(dataset).problems
    assert len(problems) == 1 and problems[0].message.endswith(wanted), problems
    assert problems[0].path == str(dataset / MANIFEST_NAME)


def test_validate_names_a_shard_whose_manifest_footer_offset_is_wrong(dataset: Path) -> None:
    """dataset/validate_folder.py _check_entry: the entry's ``footer_offset`` against the
    file's trailer. An offset inside the file but 8 bytes short passes the manifest's range
    check and every local read, while a remote reader fetching the footer from it fails on the
    shard's first use: validate must say so first, naming the shard and both offsets."""
    doc = json.loads((dataset / MANIFEST_NAME).read_text())
    right = doc["shards"][1]["footer_offset"]
    _edit_manifest(dataset, 1, footer_offset=right - 8)
    assert len(_records(dataset)) == len(RECORDS)  # local reads never use it
    problems = validate_dataset(dataset).problems
    assert [(p.path, p.message) for p in problems] == [
        (
            str(dataset / "shard-00001.packed"),
            f"the manifest puts the footer at byte {right - 8}, the file's footer starts at {right}",
        )
    ]


# ---- the disk cache -----------------------------------------------------------------------------


def test_a_disk_cache_read_outside_a_range_entry_is_a_miss_that_keeps_the_entry(
    tmp_path: Path,
) -> None:
    """storage/disk_cache.py DiskCache.read_range: ``start <= offset <= offset + length <=
    start + size``. A block asked of a range entry that does not hold all of it (as another
    layout of the same file would) is a miss; it is not read from the entry's header or past
    its end, nor taken for a damaged entry and deleted with the blocks it does hold."""
    remote_file = os.urandom(4096)
    start, end = 1024, 2048
    cache = DiskCache(str(tmp_path), 1 << 20)
    cache.put_range("unit", start, remote_file[start:end])
    for offset in (start - 8, end - 32):  # straddling the entry's start, then its end
        wanted = remote_file[offset : offset + 64]
        assert cache.read_range("unit", offset, 64, checksum(wanted)) is None
    assert cache.discarded == 0 and cache.has("unit")
    block = remote_file[start + 64 : start + 640]
    assert cache.read_range("unit", start + 64, len(block), checksum(block)) == block


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[Any, dict[str, Any]]]:
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    pytest.importorskip("boto3")
    with moto_s3("data") as found:
        yield found


@pytest.fixture(scope="module")
def large_packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A packed file larger than the tail a remote open fetches, so blocks are fetched apart."""
    folder = tmp_path_factory.mktemp("large")
    records = [{"id": i, "hex": os.urandom(256).hex()} for i in range(1500)]
    out = folder / "large.packed"
    DatasetPacker().pack(write_jsonl(folder / "in.jsonl", records), out, block_size="16K")
    assert out.stat().st_size > 3 * TAIL_PREFETCH_BYTES
    return out


@pytest.mark.parametrize("read", ["scan", "one record"])
def test_blocks_cached_for_an_object_are_not_served_for_its_replacement(
    s3: tuple[Any, dict[str, Any]], large_packed: Path, tmp_path: Path, read: str
) -> None:
    """storage/fetch.py ObjectPin.token in storage/ranges.py RangeSource.block_key / unit_key:
    the object's ETag in every disk cache key. The object is replaced by bytes of the same size
    and the same footer, one block different: a reader sharing the cache dir reads the new
    version (and finds its block 2 damaged), never the old version's block from the cache. A
    scan reads through the read-ahead's unit entries, one record without read-ahead through
    block entries. (A file opened by URL: in a dataset whose manifest still lists the old
    file_hash, the cached footer pins the old version on purpose, see test_remote_reading.)"""
    client, options = s3
    key = f"replaced-{read.replace(' ', '-')}.packed"
    url = f"s3://data/{key}"
    body = large_packed.read_bytes()
    parts = PackedParts.parse(body)
    client.put_object(Bucket="data", Key=key, Body=body)
    remote = shardpack.RemoteOptions(
        storage_options=options,
        cache_dir=str(tmp_path / "cache"),
        readahead_bytes=(64 << 20) if read == "scan" else 0,
    )
    record = int(parts.index[2]["first_record"])

    def use() -> list[str]:
        with shardpack.open(url, remote=remote) as ds:
            return [repr(r) for r in ds] if read == "scan" else [repr(ds[record])]

    local = _records(large_packed)
    assert use() == (local if read == "scan" else [local[record]])
    assert DiskCache(str(tmp_path / "cache"), 1 << 30).usage() > 0  # the blocks read
    changed = bytearray(body)
    changed[int(parts.index[2]["offset"]) + 10] ^= 0xFF
    client.put_object(Bucket="data", Key=key, Body=bytes(changed))
    with pytest.raises(CorruptBlockError) as caught:
        use()
    assert caught.value.block == 2 and "checksum mismatch" in str(caught.value)
    assert str(caught.value).startswith(url)


# ---- the output lock ----------------------------------------------------------------------------


def test_a_lock_file_replaced_between_open_and_flock_is_not_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """storage/output_lock.py _acquire: the inode at the path checked after ``flock``. A pack
    opens the lock file of a holder that then lets go (removes it) while a third pack makes and
    locks a new one: the first pack's ``flock`` succeeds on the removed file, and without the
    check two packs would write the same output."""
    import fcntl

    out = str(tmp_path / "out.packed")
    holder = OutputLock(out).acquire()
    real_flock, third = fcntl.flock, []

    def flock(fd: int, operation: int) -> None:
        if not third:  # between this pack's open and its flock
            third.append(OutputLock(out))
            holder.release()
            third[0].acquire()
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    try:
        with pytest.raises(OptionError, match="is being written by another pack"):
            OutputLock(out).acquire()
    finally:
        monkeypatch.undo()
        for lock in third:
            lock.release()
    assert third and not os.path.exists(lock_location(out))


def test_releasing_a_lock_leaves_a_lock_file_that_is_not_its_own(tmp_path: Path) -> None:
    """storage/output_lock.py _release: unlink only when the path is still the inode held.
    The lock file of a running pack was removed by hand and a second pack took a new one: the
    first pack's release must not delete the second's, or a third pack would start too."""
    out = str(tmp_path / "out.packed")
    first = OutputLock(out).acquire()
    os.unlink(lock_location(out))
    second = OutputLock(out).acquire()
    first.release()
    try:
        with pytest.raises(OptionError, match="is being written by another pack"):
            OutputLock(out).acquire()
    finally:
        second.release()
    assert not os.path.exists(lock_location(out))
