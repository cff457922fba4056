"""lz4 and zstd read-ahead: the next batch decompressed on native threads
(``codecs/_native_batch.c``) into buffers a scan reuses, while this batch is turned into
records. Same records as a plain scan, damage named by block after the records before it,
arrays never left viewing a reused buffer, two scans in one thread never sharing buffers, a
forked child finishing its scan; zstd's batches shared among threads, its dictionary used, and
its frames held to the sizes a plain scan holds them to."""

from __future__ import annotations

import base64
import gc
import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard

import shardpack
from shardpack import CorruptBlockError, DatasetPacker
from shardpack.codecs import Codec, native
from shardpack.codecs import lz4 as lz4_codec
from shardpack.codecs import zstd as zstd_codec
from shardpack.packfile import batches, scan
from shardpack.packfile.reader import PackedFile

from .conftest import assert_a_forked_child_finishes, write_jsonl
from .crafting import PackedParts

pytestmark = pytest.mark.skipif(not native.BUILT, reason="the C module is not built here")

CODECS: dict[str, type[Codec]] = {"lz4": lz4_codec.LZ4Codec, "zstd": zstd_codec.ZstdCodec}


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 64 KiB (the first 16 KiB): many batches from small files, so buffers are
    reused many times over."""
    monkeypatch.setattr(scan, "BATCH_RAW_BYTES", 64 << 10)
    monkeypatch.setattr(scan, "FIRST_BATCH_RAW_BYTES", 16 << 10)


@pytest.fixture(scope="module", params=list(CODECS))
def compression(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def text_packed(
    tmp_path_factory: pytest.TempPathFactory, text_jsonl: Path, compression: str
) -> Path:
    """The text sample packed with the codec under test (lz4 or zstd), in 4 KiB blocks."""
    out = tmp_path_factory.mktemp("ra") / f"gsm.{compression}"
    DatasetPacker().pack(text_jsonl, out, compression=compression, block_size="4K")
    return out


@pytest.fixture(scope="module")
def kd_packed(tmp_path_factory: pytest.TempPathFactory, compression: str) -> tuple[Path, list[Any]]:
    rng = np.random.default_rng(7)
    records = [
        {"id": i, "ids": rng.integers(0, 9, 300).tolist(), "logp": rng.random(200).tolist()}
        for i in range(600)
    ]
    folder = tmp_path_factory.mktemp("ra-kd")
    out = folder / f"kd.{compression}"
    source = write_jsonl(folder / "kd.jsonl", records)
    # unshuffled: a zstd block's arrays would otherwise get bytes of their own when unshuffled
    DatasetPacker().pack(source, out, compression=compression, block_size="16K", shuffle=False)
    return out, records


def _lines(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_read_ahead_scans_in_native_batches(
    text_packed: Path, text_jsonl: Path, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local file's batches are read, checked and decompressed on native threads
    (``start_read``), into the reused buffers."""
    started: list[int] = []
    codec = CODECS[compression]
    original = codec.start_read

    def recording(self: Any, *args: Any) -> Any:
        starts, checksums, out = args[3], args[6], args[7]
        started.append(len(starts))
        assert out is not None and checksums is not None  # into a reused buffer; verified
        return original(self, *args)

    monkeypatch.setattr(codec, "start_read", recording)
    with shardpack.open(text_packed, read_ahead=True) as ds:
        assert list(ds) == _lines(text_jsonl)
        assert len(started) > 2 and sum(started) == ds.files[0].block_count
    batches = len(started)
    with shardpack.open(text_packed) as ds:  # off by default
        list(ds)
    assert len(started) == batches


def test_shuffled_arrays_are_restored_into_memory_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zstd block stored as byte planes is restored into new memory, which its arrays view:
    no further copy, and arrays kept from the first batch hold their values after later
    batches have gone through the reused buffers."""
    rng = np.random.default_rng(8)
    records = [
        {"id": i, "ids": rng.integers(0, 9, 300).tolist(), "logp": rng.random(200).tolist()}
        for i in range(600)
    ]
    out = tmp_path / "kd.zstd"
    source = write_jsonl(tmp_path / "kd.jsonl", records)
    DatasetPacker().pack(source, out, compression="zstd", block_size="16K", shuffle=True)
    with PackedFile(out) as packed:
        assert len(scan.batch_ranges(packed)) > 3 and all(
            packed.index[block]["flags"] for block in range(packed.block_count)
        )
    outs = _outs_given(monkeypatch, "zstd")
    with shardpack.open(out, read_ahead=True) as ds:
        kept = list(ds)
    assert len(outs) > 3 and all(out is not None for out in outs)  # the reused buffer
    gc.collect()
    for got, want in zip(kept, records, strict=True):
        assert got["ids"].tolist() == want["ids"]
        assert np.allclose(got["logp"], want["logp"])


def test_blocks_not_from_a_local_file_take_start_batch(
    text_packed: Path, text_jsonl: Path, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PackedFile, "local_fd", lambda self: None)
    started: list[int] = []
    codec = CODECS[compression]
    original = codec.start_batch

    def recording(self: Any, stored: Any, raw_sizes: Any, out: Any = None) -> Any:
        started.append(len(stored))
        return original(self, stored, raw_sizes, out)

    monkeypatch.setattr(codec, "start_batch", recording)
    with shardpack.open(text_packed, read_ahead=True) as ds:
        assert list(ds) == _lines(text_jsonl)
        assert len(started) > 2 and sum(started) == ds.files[0].block_count


def _outs_given(monkeypatch: pytest.MonkeyPatch, compression: str) -> list[Any]:
    """The ``out`` of every batch read ahead, as ``start_read`` gets it."""
    outs: list[Any] = []
    codec = CODECS[compression]
    original = codec.start_read

    def recording(self: Any, *args: Any) -> Any:
        outs.append(args[7])
        return original(self, *args)

    monkeypatch.setattr(codec, "start_read", recording)
    return outs


def test_arrays_never_view_a_reused_buffer(
    kd_packed: tuple[Path, list[Any]], compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks with arrays (not stored as byte planes) are decompressed into bytes of their own,
    not the reused buffer: arrays kept from the first batch must hold their values after later
    batches have gone through the buffers."""
    path, records = kd_packed
    with PackedFile(path) as packed:
        assert len(scan.batch_ranges(packed)) > 3
    outs = _outs_given(monkeypatch, compression)
    with shardpack.open(path, read_ahead=True) as ds:
        kept = list(ds)
    assert len(outs) > 3 and all(out is None for out in outs)
    gc.collect()
    for got, want in zip(kept, records, strict=True):
        assert got["ids"].tolist() == want["ids"]
        assert np.allclose(got["logp"], want["logp"])


@pytest.fixture
def claimed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The buffer pairs each scan claims (``scan._claim_buffers``), in order."""
    pairs: list[Any] = []
    original = scan._claim_buffers

    def recording(*args: Any) -> Any:
        pairs.append(original(*args))
        return pairs[-1]

    monkeypatch.setattr(scan, "_claim_buffers", recording)
    return pairs


def test_two_scans_in_one_thread_do_not_share_buffers(
    text_packed: Path, text_jsonl: Path, claimed: list[Any]
) -> None:
    expected = _lines(text_jsonl)
    with shardpack.open(text_packed, read_ahead=True) as ds:
        assert list(ds) == expected  # its buffers go back to this thread's pool
    with (
        shardpack.open(text_packed, read_ahead=True) as a,
        shardpack.open(text_packed, read_ahead=True) as b,
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


def test_a_scan_left_early_gives_its_buffers_back(text_packed: Path, text_jsonl: Path) -> None:
    with shardpack.open(text_packed, read_ahead=True) as ds:
        records = iter(ds)
        next(records)
        del records
        gc.collect()
        assert getattr(scan._pool, "pairs", None) is not None
        assert list(ds) == _lines(text_jsonl)


def test_a_scan_left_early_stops_its_batches_in_flight(
    text_packed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its batches in flight are stopped, not finished, and its buffers go back to the pool
    (for the next scan to write into) only once no native thread writes into them."""
    events: list[tuple[str, int]] = []
    for job_type in (batches.FileJob, batches.NativeJob):
        started, stopped = job_type.__init__, job_type.stop

        def init(self: Any, *args: Any, _started: Any = started) -> None:
            _started(self, *args)
            events.append(("start", id(self)))

        def stop(self: Any, _stopped: Any = stopped) -> None:
            events.append(("stop", id(self)))
            _stopped(self)

        monkeypatch.setattr(job_type, "__init__", init)
        monkeypatch.setattr(job_type, "stop", stop)
    give_back = scan._give_back
    monkeypatch.setattr(
        scan, "_give_back", lambda pairs: (events.append(("give back", 0)), give_back(pairs))
    )
    with shardpack.open(text_packed, read_ahead=True) as ds:
        records = iter(ds)
        next(records)
        del records  # left early: the next batch is in flight
        gc.collect()
    back = events.index(("give back", 0))
    started = {job for what, job in events if what == "start"}
    assert len(started) == 2
    assert started <= {job for what, job in events[:back] if what == "stop"}


def test_stop_takes_no_more_blocks() -> None:
    """``stop()`` returns once the threads are done with the blocks they hold, and the blocks
    none has taken are left undecompressed (a scan left early does not finish its batches)."""
    rng = np.random.default_rng(4)
    blocks = [bytes(rng.integers(97, 123, 2 << 20, dtype=np.uint8)) for _ in range(16)]
    frames = _frames("zstd", blocks)
    pending, out = _started("zstd", blocks, frames, 1)
    pending.stop()  # ~2 ms a block: the thread has taken one or two
    size = len(blocks[0])
    untouched = [bytes(out[j * size : (j + 1) * size]) == bytes(size) for j in range(16)]
    assert all(untouched[12:]), untouched
    done = untouched.index(True)  # the blocks before it were taken and finished whole
    assert all(bytes(out[j * size : (j + 1) * size]) == blocks[j] for j in range(done))


def _broken(source: Path, tmp_path: Path, block: int, stored: bytes) -> tuple[Path, int]:
    """``block``'s stored bytes replaced by ``stored``, its checksum made to match."""
    parts = PackedParts.parse(source.read_bytes())
    parts.blocks[block] = stored
    path = tmp_path / "broken.packed"
    path.write_bytes(parts.assemble())
    return path, int(parts.index[block]["first_record"])


def test_a_block_the_codec_refuses_is_named_after_the_records_before_it(
    text_packed: Path, tmp_path: Path, compression: str
) -> None:
    with PackedFile(text_packed) as packed:
        block = scan.batch_ranges(packed)[2][0] + 1  # inside the third batch
        size = int(packed.block_stored_sizes[block])
    path, first_record = _broken(text_packed, tmp_path, block, b"\xff" * size)
    seen = []
    with (
        shardpack.open(path, read_ahead=True) as ds,
        pytest.raises(CorruptBlockError) as caught,
    ):
        for record in ds:
            seen.append(record)
    assert caught.value.block == block and compression in str(caught.value)
    assert len(seen) == first_record


def test_a_checksum_the_native_thread_refuses_is_named(text_packed: Path, tmp_path: Path) -> None:
    with PackedFile(text_packed) as packed:
        block = scan.batch_ranges(packed)[2][0] + 1
        entry = packed.index[block]
    data = bytearray(text_packed.read_bytes())
    data[int(entry["offset"]) + 5] ^= 0x01  # stored bytes changed, checksum not
    path = tmp_path / "damaged.packed"
    path.write_bytes(bytes(data))
    seen = []
    with (
        shardpack.open(path, read_ahead=True) as ds,
        pytest.raises(CorruptBlockError, match="checksum mismatch") as caught,
    ):
        for record in ds:
            seen.append(record)
    assert caught.value.block == block and len(seen) == int(entry["first_record"])


def test_without_the_c_module_read_ahead_is_a_plain_scan_or_a_worker(
    text_packed: Path, text_jsonl: Path, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lz4 then has no read-ahead; zstd's batches go to a Python worker thread
    (test_scan.py)."""

    def refuse(*args: Any) -> Any:
        raise AssertionError("no native batch without the C module")

    codec = CODECS[compression]
    for attribute in ("native_batches", "native_reads"):
        monkeypatch.setattr(codec, attribute, False)
    monkeypatch.setattr(codec, "start_batch", refuse)
    monkeypatch.setattr(codec, "start_read", refuse)
    with shardpack.open(text_packed, read_ahead=True) as ds:
        assert list(ds) == _lines(text_jsonl)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_batches_reuse_the_pools_threads(text_packed: Path, compression: str) -> None:
    """Batches are handed to threads kept between them: after the first scans, more scans
    (and their many batches) start no thread."""

    def scan_twice() -> None:
        for _ in range(2):
            with shardpack.open(text_packed, read_ahead=True) as ds:
                for _ in ds:
                    pass

    scan_twice()
    threads = len(os.listdir("/proc/self/task"))
    for _ in range(10):
        scan_twice()
    assert len(os.listdir("/proc/self/task")) == threads


def test_scans_on_several_python_threads_at_once(
    text_packed: Path, text_jsonl: Path, compression: str
) -> None:
    """Python threads scanning at once share the pool, and the scanning threads that help with
    their batches take and give back one kept zstd context among them: every scan reads its
    records whole."""
    expected = _lines(text_jsonl)
    failures: list[BaseException] = []

    def scans() -> None:
        try:
            for _ in range(4):
                with shardpack.open(text_packed, read_ahead=True) as ds:
                    assert list(ds) == expected
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=scans) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


@pytest.mark.skipif(
    not hasattr(os, "fork") or not os.path.isdir("/proc/self/task"), reason="needs fork, /proc"
)
def test_a_forked_child_starts_a_pool_of_its_own(text_packed: Path, text_jsonl: Path) -> None:
    """The parent's pool threads are not in a forked child: the child's first read-ahead scan
    starts its own (``pthread_atfork``), rather than queue batches for threads it lacks (its
    scanning thread would then do every block itself)."""
    import select
    import signal
    import warnings

    expected = _lines(text_jsonl)
    with shardpack.open(text_packed, read_ahead=True) as ds:
        assert list(ds) == expected  # the parent's pool is up
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
        pid = os.fork()
    if pid == 0:
        os.close(read)
        alone = len(os.listdir("/proc/self/task"))
        with shardpack.open(text_packed, read_ahead=True) as ds:
            ok = list(ds) == expected
        started = len(os.listdir("/proc/self/task")) - alone
        os.write(write, b"%d %d" % (ok, started))
        os._exit(0)
    os.close(write)
    answered, _, _ = select.select([read], [], [], 60)
    if not answered:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    answer = os.read(read, 64).decode() if answered else ""
    os.close(read)
    ok, started = answer.split()
    assert ok == "1" and int(started) >= 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_finishes_a_native_scan(text_packed: Path, text_jsonl: Path) -> None:
    assert_a_forked_child_finishes(text_packed, _lines(text_jsonl), read_ahead=True)


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("verify", [True, False], ids=["checksum", "codec"])
def test_zstd_batches_shared_among_threads_name_the_first_damaged_block(
    text_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int, verify: bool
) -> None:
    """Threads take a batch's blocks in turn: records in order, and of two damaged blocks in
    one batch the first is named, after every record before it (found by its checksum, or
    without checksums by zstd)."""
    monkeypatch.setattr(zstd_codec, "NATIVE_THREADS", threads)
    source = tmp_path / "gsm.zstd"
    DatasetPacker().pack(text_jsonl, source, compression="zstd", block_size="4K")
    with shardpack.open(source, read_ahead=True) as ds:
        assert list(ds) == _lines(text_jsonl)
    with PackedFile(source) as packed:
        first, end = scan.batch_ranges(packed)[2]
        assert end - first > 4
    data = bytearray(source.read_bytes())
    with PackedFile(source) as packed:
        for block in (first + 1, end - 1):
            data[int(packed.index[block]["offset"])] ^= 0x10  # the frame's magic
        first_record = int(packed.index[first + 1]["first_record"])
    path = tmp_path / "damaged.zstd"
    path.write_bytes(bytes(data))
    seen = 0
    with (
        shardpack.open(path, verify=verify, read_ahead=True) as ds,
        pytest.raises(CorruptBlockError) as caught,
    ):
        for _ in ds:
            seen += 1
    assert caught.value.block == first + 1 and seen == first_record


def test_a_zstd_frame_without_its_size_is_refused_as_a_plain_scan_refuses_it(
    text_jsonl: Path, tmp_path: Path
) -> None:
    """A frame that leaves out its content size (decompressing to the right bytes) is refused
    by the native threads as ``ZstdCodec.decode`` refuses it: a file one scan reads and another
    refuses would pass ``validate`` and fail a loader."""
    source = tmp_path / "gsm.zstd"
    DatasetPacker().pack(text_jsonl, source, compression="zstd", block_size="4K")
    with PackedFile(source) as packed:
        block = scan.batch_ranges(packed)[2][0] + 1
        raw = bytes(packed.read_raw_block(block))
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(raw)
    path, first_record = _broken(source, tmp_path, block, frame)
    for read_ahead in (False, True):
        seen = 0
        with (
            shardpack.open(path, read_ahead=read_ahead) as ds,
            pytest.raises(CorruptBlockError, match="declares no size") as caught,
        ):
            for _ in ds:
                seen += 1
        assert caught.value.block == block and seen == first_record


def test_scans_alternating_between_two_files_reuse_one_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claimed: list[Any]
) -> None:
    """One file wanting more stored bytes a batch (lz4, incompressible), the other more raw
    bytes (zstd, repetitive): the pool grows to fit both once, rather than being replaced at
    every scan."""
    rng = np.random.default_rng(3)
    noise = [{"t": base64.b64encode(rng.bytes(900)).decode()} for _ in range(300)]
    words = [{"t": "the same words again " * 40} for _ in range(300)]
    lz4_file, zstd_file = tmp_path / "noise.lz4", tmp_path / "words.zstd"
    DatasetPacker().pack(
        write_jsonl(tmp_path / "a.jsonl", noise), lz4_file, compression="lz4", block_size="12K"
    )
    DatasetPacker().pack(
        write_jsonl(tmp_path / "b.jsonl", words), zstd_file, compression="zstd", block_size="64K"
    )
    monkeypatch.setattr(scan._pool, "pairs", None, raising=False)  # earlier scans' buffers
    for path, records in [(lz4_file, noise), (zstd_file, words)] * 3:
        with shardpack.open(path, read_ahead=True) as ds:
            assert list(ds) == records
    (lz4_stored, lz4_raw), (both_stored, both_raw) = claimed[0][0], claimed[1][0]
    # zstd's scan needed more raw bytes and no more stored ones: grown once, then kept
    assert len(both_stored) == len(lz4_stored) and len(both_raw) > len(lz4_raw)
    assert all(pairs is claimed[1] for pairs in claimed[1:])


def test_zstd_read_ahead_uses_the_files_dictionary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [
        {"id": i, "text": f"record {i} says the same words as the others"} for i in range(3000)
    ]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "dict.zstd"
    DatasetPacker().pack(source, out, compression="zstd", block_size="4K", dictionary=True)
    with PackedFile(out) as packed:
        assert packed.codec.dictionary is not None and len(scan.batch_ranges(packed)) > 2
    started: list[int] = []
    original = zstd_codec.ZstdCodec.start_read

    def recording(self: Any, *args: Any) -> Any:
        started.append(len(args[3]))
        return original(self, *args)

    def refuse(*args: Any) -> Any:
        raise AssertionError("the native threads refused a batch")

    monkeypatch.setattr(zstd_codec.ZstdCodec, "start_read", recording)
    monkeypatch.setattr(batches.FileJob, "one_by_one", refuse)  # not decoded again in Python
    with shardpack.open(out, read_ahead=True) as ds:
        assert list(ds) == records
    assert sum(started) > 0


def test_a_scan_takes_each_block_as_soon_as_it_is_there(
    text_packed: Path, text_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A native batch's blocks become records one at a time, each asked for only once the
    block before it has given its records, and the threads are waited for after the batch's
    last block: the last blocks of a batch are still being decompressed while its first give
    records, rather than the whole batch awaited first."""
    events: list[str] = []
    asked, waited = native.NativeBatch.block, native.NativeBatch.result

    def block(self: Any, index: int) -> Any:
        events.append(f"block {index}")
        return asked(self, index)

    def result(self: Any) -> Any:
        events.append("done")
        return waited(self)

    monkeypatch.setattr(native.NativeBatch, "block", block)
    monkeypatch.setattr(native.NativeBatch, "result", result)
    records = []
    with shardpack.open(text_packed, read_ahead=True) as ds:
        for record in ds:
            events.append("record")
            records.append(record)
    assert records == _lines(text_jsonl)
    batches_seen = [batch.split(",") for batch in ",".join(events).split(",done")]
    assert len(batches_seen) > 3
    for batch in batches_seen[:-1]:
        steps = [step for step in batch if step]
        asks = [step for step in steps if step.startswith("block")]
        assert asks == [f"block {j}" for j in range(len(asks))] and len(asks) > 1
        # every block after the first is asked for after the one before gave records
        for before, after in itertools.pairwise(steps):
            assert not (before.startswith("block") and after.startswith("block"))


def _frames(compression: str, blocks: list[bytes]) -> list[bytes]:
    if compression == "zstd":
        return [zstandard.ZstdCompressor(level=1).compress(raw) for raw in blocks]
    codec = lz4_codec.LZ4Codec()
    return [bytes(codec.encode(raw)) for raw in blocks]


def _started(compression: str, blocks: list[bytes], frames: list[bytes], threads: int) -> Any:
    module = native._native_batch
    out = bytearray(sum(map(len, blocks)))
    codec_id = getattr(module, compression.upper())
    pending = module.start(codec_id, frames, [len(raw) for raw in blocks], out, threads, None)
    return pending, out


def test_wait_block_gives_any_block_in_any_order(compression: str) -> None:
    """The C module's ``wait_block(j)``: block j in place in ``out`` when it returns, asked for
    last to first (the caller decompressing the blocks no thread has taken), the rest of the
    batch still right afterwards; an index outside the batch refused."""
    rng = np.random.default_rng(5)
    blocks = [bytes(rng.integers(97, 100, 3000 + 500 * j, dtype=np.uint8)) for j in range(12)]
    frames = _frames(compression, blocks)
    for order in (range(12), range(11, -1, -1)):
        pending, out = _started(compression, blocks, frames, 2)
        starts = np.cumsum([0] + [len(raw) for raw in blocks])
        for j in order:
            assert pending.wait_block(j) is None
            assert bytes(out[starts[j] : starts[j + 1]]) == blocks[j]
        assert pending.result() is None and bytes(out) == b"".join(blocks)
    with pytest.raises(IndexError):
        pending.wait_block(12)
    with pytest.raises(IndexError):
        pending.wait_block(-1)


def test_wait_block_names_the_first_damaged_block(compression: str) -> None:
    """Blocks before a damaged one come whole; that block and every later one name it."""
    blocks = [f"block {j} ".encode() * 400 for j in range(10)]
    frames = _frames(compression, blocks)
    frames[6] = frames[6][:-8] if compression == "lz4" else b"\x00" * len(frames[6])
    pending, out = _started(compression, blocks, frames, 1)
    for j in range(6):
        pending.wait_block(j)
    for j in (6, 9, 7):
        with pytest.raises(ValueError, match=r"^block 6: "):
            pending.wait_block(j)
    with pytest.raises(ValueError, match=r"^block 6: "):
        pending.result()
    assert bytes(out[: sum(map(len, blocks[:6]))]) == b"".join(blocks[:6])


def test_wait_block_sleeps_until_its_block_is_done() -> None:
    """A block a pool thread is still decompressing after the caller's polling gives up (a
    32 MB block: tens of milliseconds), with no block left for the caller to take: the caller
    sleeps and is woken with the block in place. (That the thread wakes it as soon as the block
    is done, not once it leaves the batch, is a matter of speed: measured, not asserted.)"""
    rng = np.random.default_rng(9)
    big = bytes(rng.integers(97, 123, 32 << 20, dtype=np.uint8))
    frames = _frames("zstd", [big])
    outcome: list[Any] = []

    def wait() -> None:
        pending, out = _started("zstd", [big], frames, 1)
        time.sleep(0.002)  # the pool thread has taken the block by now
        pending.wait_block(0)
        outcome.append(bytes(out) == big)
        pending.result()

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(timeout=60)
    assert not waiter.is_alive(), "wait_block was never woken"
    assert outcome == [True]
