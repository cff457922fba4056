"""Full scans: records in order equal to json.loads, zstd batches decoded on a Python worker
thread (read-ahead where the C module is not built: ``python_worker``), damage still named by
block, and ``iter_batches`` as lists or as columns."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shardpack
from shardpack import CorruptBlockError, DatasetPacker, OptionError
from shardpack.codecs import zstd as zstd_codec
from shardpack.packfile import batches, scan
from shardpack.packfile.reader import PackedFile

from .conftest import assert_a_forked_child_finishes, write_jsonl


@pytest.fixture(scope="module")
def zstd_packed(tmp_path_factory: pytest.TempPathFactory, text_jsonl: Path) -> Path:
    out = tmp_path_factory.mktemp("scan") / "gsm.zstd"
    DatasetPacker().pack(text_jsonl, out, compression="zstd", block_size="8K")
    return out


@pytest.fixture
def python_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """zstd read-ahead as without the C module: batches to a Python worker thread."""
    for attribute in ("native_batches", "native_reads"):
        monkeypatch.setattr(zstd_codec.ZstdCodec, attribute, False)


def _lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _damaged_copy(source: Path, tmp_path: Path, block: int) -> tuple[Path, int]:
    with PackedFile(source) as packed:
        entry = packed.index[block]
    data = bytearray(source.read_bytes())
    data[int(entry["offset"])] ^= 0x10  # the zstd frame's magic: the decompressor refuses it
    path = tmp_path / "damaged.packed"
    path.write_bytes(bytes(data))
    return path, int(entry["first_record"])


@pytest.mark.usefixtures("python_worker")
def test_zstd_scan_runs_in_batches_on_a_worker(
    zstd_packed: Path, text_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    original = batches.WorkerJob.run

    def recording(self: Any, codec: Any) -> None:
        sizes.append(len(self.batch.stored))
        assert threading.current_thread().name == "shardpack-scan"
        original(self, codec)

    monkeypatch.setattr(batches.WorkerJob, "run", recording)
    with shardpack.open(zstd_packed, read_ahead=True) as ds:
        assert list(ds) == _lines(text_jsonl)
        assert len(sizes) > 1 and sum(sizes) == ds.files[0].block_count


def _scan_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "shardpack-scan" and t.is_alive()]


@pytest.mark.usefixtures("python_worker")
def test_scan_stops_its_worker_when_left_early(zstd_packed: Path) -> None:
    assert _scan_workers() == []
    with shardpack.open(zstd_packed, read_ahead=True) as ds:
        records = iter(ds)
        next(records)
        workers = _scan_workers()
        assert len(workers) == 1
        del records  # the generator closes, and its worker ends
    workers[0].join(timeout=10)
    assert _scan_workers() == []


@pytest.mark.usefixtures("python_worker")
def test_read_ahead_is_off_by_default(zstd_packed: Path) -> None:
    with shardpack.open(zstd_packed) as ds:
        records = iter(ds)
        next(records)
        assert _scan_workers() == []


@pytest.mark.parametrize("verify", [True, False], ids=["checksum", "codec"])
@pytest.mark.usefixtures("python_worker")
def test_damage_in_a_later_batch_is_named_after_the_records_before_it(
    zstd_packed: Path, tmp_path: Path, verify: bool
) -> None:
    """With checksums the damage is found while reading; without them, by the decompressor on
    the worker: either way every record before the damaged block comes first."""
    with PackedFile(zstd_packed) as packed:
        block = scan.batch_ranges(packed)[1][0] + 2  # inside the second batch
    path, first_record = _damaged_copy(zstd_packed, tmp_path, block)
    seen = []
    with (
        shardpack.open(path, verify=verify, read_ahead=True) as ds,
        pytest.raises(CorruptBlockError) as caught,
    ):
        for record in ds:
            seen.append(record)
    assert caught.value.block == block
    assert len(seen) == first_record
    if verify:
        assert "checksum mismatch" in str(caught.value)


@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.usefixtures("python_worker")
def test_read_ahead_decompresses_a_batch_on_several_threads(
    zstd_packed: Path,
    text_jsonl: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    threads: int,
) -> None:
    """On a machine with cores to spare a batch's frames are decompressed by several threads:
    the records, and the block a damaged frame is named by, are those of one thread."""
    monkeypatch.setattr(zstd_codec, "BATCH_THREADS", threads)
    with shardpack.open(zstd_packed, read_ahead=True) as ds:
        assert list(ds) == _lines(text_jsonl)
    with PackedFile(zstd_packed) as packed:
        block = scan.batch_ranges(packed)[1][0] + 1
    path, first_record = _damaged_copy(zstd_packed, tmp_path, block)
    seen = 0
    with (
        shardpack.open(path, verify=False, read_ahead=True) as ds,
        pytest.raises(CorruptBlockError) as caught,
    ):
        for _ in ds:
            seen += 1
    assert caught.value.block == block
    assert seen == first_record


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 1), (4, 2), (16, 4)])
def test_batch_threads_leave_the_reader_a_core(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert zstd_codec._batch_threads() == threads


def test_iter_batches_slices_blocks(text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "gsm.lz4"
    DatasetPacker().pack(text_jsonl, out, block_size="16K")
    expected = _lines(text_jsonl)
    with shardpack.open([out, out]) as ds:  # two files: batches run across the file boundary
        batches = list(ds.iter_batches(333))
        assert [len(b) for b in batches] == [333] * 12 + [4000 - 333 * 12]
        assert [r for b in batches for r in b] == expected + expected
        assert len(list(ds.iter_batches(333, drop_last=True))) == 12
        assert [len(b) for b in ds.iter_batches(5000)] == [4000]


def test_iter_batches_as_columns(tmp_path: Path) -> None:
    records: list[Any] = [
        {"text": "a", "ids": [1, 2, 3], "probs": [0.5, 0.25]},
        {"text": "b", "ids": [4, 5, 6], "probs": [0.125]},
        {"text": "c", "ids": [7, 8, 9], "probs": [0.5, 0.5], "extra": None},
        {"ids": [1, 2, 3], "text": "d", "probs": [1.5]},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.packed"
    DatasetPacker().pack(source, out)
    with shardpack.open(out) as ds:
        first, second = ds.iter_batches(2, as_columns=True)
    assert list(first) == ["text", "ids", "probs"]
    assert first["text"] == ["a", "b"]
    assert isinstance(first["ids"], np.ndarray) and first["ids"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert [p.tolist() for p in first["probs"]] == [[0.5, 0.25], [0.125]]  # ragged: a list
    # a field some records lack: None for them; fields in order of first appearance
    assert list(second) == ["text", "ids", "probs", "extra"]
    assert second["extra"] == [None, None] and second["text"] == ["c", "d"]


def test_as_columns_needs_object_records(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}, "text"])
    out = tmp_path / "out.packed"
    DatasetPacker().pack(source, out)
    with shardpack.open(out) as ds, pytest.raises(OptionError, match="object records"):
        list(ds.iter_batches(2, as_columns=True))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.usefixtures("python_worker")
def test_a_forked_child_finishes_a_scan_without_the_parents_worker(
    zstd_packed: Path, text_jsonl: Path
) -> None:
    assert_a_forked_child_finishes(zstd_packed, _lines(text_jsonl), read_ahead=True)
