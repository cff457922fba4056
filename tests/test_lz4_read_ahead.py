"""lz4 read-ahead: the next batch decompressed on a native thread (``codecs/_lz4_batch.c``) into
buffers a scan reuses, while this batch is turned into records. Same records as a plain scan,
damage named by block after the records before it, arrays never left viewing a reused buffer,
two scans in one thread never sharing buffers, and a forked child finishing its scan."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shardpack
from shardpack import CorruptBlockError, DatasetPacker
from shardpack.codecs import lz4 as lz4_codec
from shardpack.packfile import scan
from shardpack.packfile.reader import PackedFile

from .conftest import assert_a_forked_child_finishes, write_jsonl
from .crafting import PackedParts

pytestmark = pytest.mark.skipif(
    not lz4_codec.LZ4Codec.native_batches, reason="the C module is not built here"
)


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 64 KiB (the first 16 KiB): many batches from small files, so buffers are
    reused many times over."""
    monkeypatch.setattr(scan, "BATCH_RAW_BYTES", 64 << 10)
    monkeypatch.setattr(scan, "FIRST_BATCH_RAW_BYTES", 16 << 10)


@pytest.fixture(scope="module")
def text_lz4(tmp_path_factory: pytest.TempPathFactory, text_jsonl: Path) -> Path:
    out = tmp_path_factory.mktemp("ra") / "gsm.lz4"
    DatasetPacker().pack(text_jsonl, out, compression="lz4", block_size="4K")
    return out


@pytest.fixture(scope="module")
def kd_lz4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    rng = np.random.default_rng(7)
    records = [
        {"id": i, "ids": rng.integers(0, 9, 300).tolist(), "logp": rng.random(200).tolist()}
        for i in range(600)
    ]
    folder = tmp_path_factory.mktemp("ra-kd")
    out = folder / "kd.lz4"
    source = write_jsonl(folder / "kd.jsonl", records)
    DatasetPacker().pack(source, out, compression="lz4", block_size="16K")
    return out, records


def _lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_lz4_read_ahead_scans_in_native_batches(
    text_lz4: Path, text_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local file's batches are read, checked and decompressed on the native thread
    (``start_read``), into the reused buffers."""
    started: list[int] = []
    original = lz4_codec.LZ4Codec.start_read

    def recording(self: Any, *args: Any) -> Any:
        starts, checksums, out = args[3], args[6], args[7]
        started.append(len(starts))
        assert out is not None and checksums is not None  # into a reused buffer; verified
        return original(self, *args)

    monkeypatch.setattr(lz4_codec.LZ4Codec, "start_read", recording)
    with shardpack.open(text_lz4, read_ahead=True) as ds:
        assert list(ds) == _lines(text_jsonl)
        assert len(started) > 2 and sum(started) == ds.files[0].block_count
    batches = len(started)
    with shardpack.open(text_lz4) as ds:  # off by default
        list(ds)
    assert len(started) == batches


def test_blocks_not_from_a_local_file_take_start_batch(
    text_lz4: Path, text_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PackedFile, "local_fd", lambda self: None)
    started: list[int] = []
    original = lz4_codec.LZ4Codec.start_batch

    def recording(self: Any, stored: Any, raw_sizes: Any, out: Any = None) -> Any:
        started.append(len(stored))
        return original(self, stored, raw_sizes, out)

    monkeypatch.setattr(lz4_codec.LZ4Codec, "start_batch", recording)
    with shardpack.open(text_lz4, read_ahead=True) as ds:
        assert list(ds) == _lines(text_jsonl)
        assert len(started) > 2 and sum(started) == ds.files[0].block_count


def test_arrays_never_view_a_reused_buffer(kd_lz4: tuple[Path, list[Any]]) -> None:
    """Blocks with arrays get bytes of their own: arrays kept from the first batch must hold
    their values after later batches have gone through the buffers."""
    path, records = kd_lz4
    with PackedFile(path) as packed:
        assert len(scan.batch_ranges(packed)) > 3
    with shardpack.open(path, read_ahead=True) as ds:
        kept = list(ds)
    gc.collect()
    for got, want in zip(kept, records, strict=True):
        assert got["ids"].tolist() == want["ids"]
        assert np.allclose(got["logp"], want["logp"])


def test_two_scans_in_one_thread_do_not_share_buffers(
    text_lz4: Path, text_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    claimed: list[Any] = []
    original = scan._claim_buffers

    def recording(*args: Any) -> Any:
        claimed.append(original(*args))
        return claimed[-1]

    monkeypatch.setattr(scan, "_claim_buffers", recording)
    expected = _lines(text_jsonl)
    with shardpack.open(text_lz4, read_ahead=True) as ds:
        assert list(ds) == expected  # its buffers go back to this thread's pool
    with (
        shardpack.open(text_lz4, read_ahead=True) as a,
        shardpack.open(text_lz4, read_ahead=True) as b,
    ):
        first, second = iter(a), iter(b)
        got_a, got_b = [], []
        for _ in range(len(expected)):  # a record from each in turn, as a mixture reads them
            got_a.append(next(first))
            got_b.append(next(second))
    assert got_a == expected and got_b == expected
    assert claimed[1] is claimed[0]  # the pool's, reused
    buffers = [{id(buffer) for pair in pairs for buffer in pair} for pairs in claimed[1:]]
    assert not buffers[0] & buffers[1]


def test_a_scan_left_early_gives_its_buffers_back(text_lz4: Path, text_jsonl: Path) -> None:
    with shardpack.open(text_lz4, read_ahead=True) as ds:
        records = iter(ds)
        next(records)
        del records
        gc.collect()
        assert getattr(scan._pool, "pairs", None) is not None
        assert list(ds) == _lines(text_jsonl)


def test_a_scan_left_early_waits_for_its_batch_in_flight(
    text_lz4: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its buffers go back to the pool (for the next scan to write into) only once no native
    thread writes into them."""
    events: list[tuple[str, int]] = []
    for job_type in (scan._FileJob, scan._NativeJob):
        started, waited = job_type.__init__, job_type.wait

        def init(self: Any, *args: Any, _started: Any = started) -> None:
            _started(self, *args)
            events.append(("start", id(self)))

        def wait(self: Any, _waited: Any = waited) -> None:
            events.append(("wait", id(self)))
            _waited(self)

        monkeypatch.setattr(job_type, "__init__", init)
        monkeypatch.setattr(job_type, "wait", wait)
    give_back = scan._give_back
    monkeypatch.setattr(
        scan, "_give_back", lambda pairs: (events.append(("give back", 0)), give_back(pairs))
    )
    with shardpack.open(text_lz4, read_ahead=True) as ds:
        records = iter(ds)
        next(records)
        del records  # left early: the next batch is in flight
        gc.collect()
    back = events.index(("give back", 0))
    started = {job for what, job in events if what == "start"}
    assert len(started) == 2
    assert started <= {job for what, job in events[:back] if what == "wait"}


def _broken_lz4(source: Path, tmp_path: Path, block: int) -> tuple[Path, int]:
    """``block``'s stored bytes replaced by bytes LZ4 refuses, its checksum made to match."""
    parts = PackedParts.parse(source.read_bytes())
    parts.blocks[block] = b"\xff" * len(parts.blocks[block])
    path = tmp_path / "broken.lz4"
    path.write_bytes(parts.assemble())
    return path, int(parts.index[block]["first_record"])


def test_a_block_lz4_refuses_is_named_after_the_records_before_it(
    text_lz4: Path, tmp_path: Path
) -> None:
    with PackedFile(text_lz4) as packed:
        block = scan.batch_ranges(packed)[2][0] + 1  # inside the third batch
    path, first_record = _broken_lz4(text_lz4, tmp_path, block)
    seen = []
    with (
        shardpack.open(path, read_ahead=True) as ds,
        pytest.raises(CorruptBlockError) as caught,
    ):
        for record in ds:
            seen.append(record)
    assert caught.value.block == block and "lz4" in str(caught.value)
    assert len(seen) == first_record


def test_a_checksum_the_native_thread_refuses_is_named(text_lz4: Path, tmp_path: Path) -> None:
    with PackedFile(text_lz4) as packed:
        block = scan.batch_ranges(packed)[2][0] + 1
        entry = packed.index[block]
    data = bytearray(text_lz4.read_bytes())
    data[int(entry["offset"]) + 5] ^= 0x01  # stored bytes changed, checksum not
    path = tmp_path / "damaged.lz4"
    path.write_bytes(bytes(data))
    seen = []
    with (
        shardpack.open(path, read_ahead=True) as ds,
        pytest.raises(CorruptBlockError, match="checksum mismatch") as caught,
    ):
        for record in ds:
            seen.append(record)
    assert caught.value.block == block and len(seen) == int(entry["first_record"])


def test_without_the_c_module_read_ahead_is_a_plain_scan(
    text_lz4: Path, text_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("no native batch without the C module")

    monkeypatch.setattr(lz4_codec.LZ4Codec, "native_batches", False)
    monkeypatch.setattr(lz4_codec.LZ4Codec, "start_batch", refuse)
    with shardpack.open(text_lz4, read_ahead=True) as ds:
        assert list(ds) == _lines(text_jsonl)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_finishes_an_lz4_scan(text_lz4: Path, text_jsonl: Path) -> None:
    assert_a_forked_child_finishes(text_lz4, _lines(text_jsonl), read_ahead=True)
