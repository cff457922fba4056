"""A full scan of one packed file: every block read, verified and decompressed in order; with
read-ahead the next batch is decompressed off the scanning thread while the caller turns this
one into records.

lz4 and zstd with the C module need no worker: ``Codec.start_read`` (``start_batch`` for
blocks not in a local file) starts native threads that never take the GIL and read, check and
decompress the batch, so the scanning thread hands nothing over, and when it gets there before
they are done it decompresses the blocks they have not taken yet.

Without the C module, zstd decodes a whole batch in one call without the GIL on a Python
worker thread. A worker thread pays only where its work runs without the GIL from start to end:
a thread that needs the GIL back after every block waits for the scanning thread to give it up,
which happens only every few milliseconds (the interpreter's switch interval). So the worker
takes a batch of blocks per call, and the scanning thread waits until the worker is inside that
call before it goes on: it hands the GIL over once per batch.

Read-ahead is opt-in (``read_ahead=True``): on a machine whose other core is busy the threads
share one core, and an lz4 scan of GSM8K measured 35-45% slower than without
(docs/BENCHMARKS.md section 6).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from ..codecs import Codec
from ..codecs.base import PendingBlocks
from ..errors import CodecError, CorruptBlockError
from ..format.block import BLOCK_HEADER
from ..format.layout import BLOCK_ALIGN

if TYPE_CHECKING:
    from .reader import PackedFile

BATCH_RAW_BYTES = 1 << 20  # raw bytes per batch handed to the worker
FIRST_BATCH_RAW_BYTES = 128 << 10  # a smaller first batch: decoding starts sooner


def batch_ranges(packed: PackedFile, start: int = 0) -> list[tuple[int, int]]:
    """[first, end) block ranges from ``start`` on, each of about BATCH_RAW_BYTES raw bytes
    (the first about FIRST_BATCH_RAW_BYTES), at least one block each."""
    raw_sizes = packed.block_raw_sizes
    ranges = []
    first, size, limit = start, 0, FIRST_BATCH_RAW_BYTES
    for block in range(start, packed.block_count):
        if block > first and size + raw_sizes[block] > limit:
            ranges.append((first, block))
            first, size, limit = block, 0, BATCH_RAW_BYTES
        size += raw_sizes[block]
    if first < packed.block_count:
        ranges.append((first, packed.block_count))
    return ranges


def reads_ahead(codec: Codec) -> bool:
    """Whether ``codec`` can decode the next batch off the scanning thread."""
    return codec.batch_releases_gil or codec.native_batches


def iter_raw_batches(packed: PackedFile, start: int = 0) -> Iterator[tuple[int, list[Any]]]:
    """(first block number, raw blocks) for every block from ``start`` on, in file order, a
    batch at a time, the next batch decompressed off this thread where the codec can. A batch's
    blocks may be views of a buffer the batch after next reuses: use them before asking for
    the next batch (blocks with arrays, which hand out views of their bytes, never are)."""
    ranges = batch_ranges(packed, start)
    if reads_ahead(packed.codec) and len(ranges) > 1:
        yield from _pipelined(packed, ranges)
        return
    for block in range(start, packed.block_count):
        yield block, [packed.read_raw_block(block)]


class StoredBatch:
    """The stored bytes of consecutive blocks, each verified as it is read.

    Verification stops at the first damaged block: the blocks before it are kept, and ``error``
    is raised once they have been used, so a scan yields every record before the damage.
    """

    __slots__ = ("error", "first", "raw_sizes", "stored")

    def __init__(
        self, packed: PackedFile, first: int, end: int, buffer: bytearray | None = None
    ) -> None:
        """``buffer``: read the batch's stored bytes into it with one read, where they lie
        together (as packs write them) and fit; else one read per block into new memory."""
        self.first = first
        self.stored: list[bytes | memoryview] = []
        self.raw_sizes: list[int] = []
        self.error: CorruptBlockError | None = None
        offsets, sizes, raw_sizes = (
            packed.block_offsets,
            packed.block_stored_sizes,
            packed.block_raw_sizes,
        )
        whole = _read_together(packed, first, end, buffer) if buffer is not None else None
        for block in range(first, end):
            if whole is not None:
                start = offsets[block] - offsets[first]
                stored: bytes | memoryview = whole[start : start + sizes[block]]
            else:
                stored = packed.read_stored(offsets[block], sizes[block])
            if packed.verify:
                try:
                    packed.check_stored(block, stored)
                except CorruptBlockError as exc:
                    self.error = exc
                    break
            self.stored.append(stored)
            self.raw_sizes.append(raw_sizes[block])


def _together(packed: PackedFile, first: int, end: int, buffer: bytearray) -> int | None:
    """The bytes blocks [first, end) span in the file, or None where they do not lie in order,
    back to back but for alignment (a crafted index, never a pack), or would not fit
    ``buffer``."""
    offsets, sizes = packed.block_offsets, packed.block_stored_sizes
    position = offsets[first]
    for block in range(first, end):
        if not position <= offsets[block] <= position + BLOCK_ALIGN:
            return None
        position = offsets[block] + sizes[block]
    span = position - offsets[first]
    return span if span <= len(buffer) else None


def _read_together(
    packed: PackedFile, first: int, end: int, buffer: bytearray
) -> memoryview | None:
    """Blocks [first, end) read with one read into ``buffer`` (a view of the part read), or
    None where they do not lie together within it."""
    span = _together(packed, first, end, buffer)
    if span is None:
        return None
    whole = memoryview(buffer)[:span]
    packed.read_stored_into(packed.block_offsets[first], whole)
    return whole


class _Job:
    """One batch for the worker: stored blocks in, raw blocks (or the codec's error) out."""

    __slots__ = ("batch", "blocks", "done", "error", "started")

    def __init__(self, batch: StoredBatch) -> None:
        self.batch = batch
        self.started = threading.Event()
        self.done = threading.Event()
        self.blocks: list[Any] = []
        self.error: CodecError | None = None

    @property
    def first(self) -> int:
        return self.batch.first

    def wait(self) -> None:
        self.done.wait()

    def one_by_one(self, packed: PackedFile) -> Iterator[tuple[int, list[Any]]]:
        return _one_by_one(packed, self.batch)

    def run(self, codec: Codec) -> None:
        batch = self.batch
        self.started.set()
        try:
            if batch.stored:
                self.blocks = codec.decode_batch(batch.stored, batch.raw_sizes)
        except CodecError as exc:
            self.error = exc
        finally:
            self.done.set()


class _Started:
    """A batch handed to the codec's native threads by ``start`` (None: nothing to hand over):
    its raw blocks, or the codec's error, once waited for."""

    __slots__ = ("_pending", "blocks", "error")

    def __init__(self, start: Callable[[], PendingBlocks] | None) -> None:
        self.blocks: list[Any] = []
        self.error: CodecError | None = None
        self._pending: PendingBlocks | None = None
        if start is not None:
            try:
                self._pending = start()
            except CodecError as exc:
                self.error = exc

    def wait(self) -> None:
        if self._pending is not None:
            self.blocks, self.error = _outcome(self._pending)
            self._pending = None


class _NativeJob(_Started):
    """One batch on the codec's own native threads (``Codec.start_batch``): no worker needed,
    and the scanning thread never waits for one to take the GIL."""

    __slots__ = ("batch", "first")

    def __init__(self, codec: Codec, batch: StoredBatch, out: bytearray | None) -> None:
        """``out``: a buffer the raw blocks are written into (reused by the batch after next)."""
        self.batch, self.first = batch, batch.first
        stored, raw_sizes = batch.stored, batch.raw_sizes
        super().__init__((lambda: codec.start_batch(stored, raw_sizes, out)) if stored else None)

    def one_by_one(self, packed: PackedFile) -> Iterator[tuple[int, list[Any]]]:
        return _one_by_one(packed, self.batch)


class _FileJob(_Started):
    """One batch of a local file read, checked and decompressed on the codec's native threads
    (``Codec.start_read``): the scanning thread neither reads nor hashes it. A fault is named
    by reading the batch again block by block (``one_by_one``)."""

    __slots__ = ("end", "first")

    def __init__(
        self, packed: PackedFile, fd: int, blocks: range, stored: memoryview, out: bytearray
    ) -> None:
        """``blocks`` of the file open as ``fd``; ``stored``: as many bytes as they span
        (``_together``); ``out``: room for their raw bytes."""
        first, end = blocks.start, blocks.stop
        self.first, self.end = first, end
        offsets, sizes = packed.block_offsets, packed.block_stored_sizes
        base = offsets[first]
        checksums = list(packed.block_checksums[first:end]) if packed.verify else None
        super().__init__(
            lambda: packed.codec.start_read(
                fd,
                base,
                stored,
                [offsets[block] - base for block in range(first, end)],
                list(sizes[first:end]),
                list(packed.block_raw_sizes[first:end]),
                checksums,
                out,
            )
        )

    def one_by_one(self, packed: PackedFile) -> Iterator[tuple[int, list[Any]]]:
        for block in range(self.first, self.end):
            yield block, [packed.read_raw_block(block)]


def _outcome(pending: PendingBlocks) -> tuple[list[Any], CodecError | None]:
    """A native batch's raw blocks, or the codec's error."""
    try:
        blocks = pending.result()
    except CodecError as exc:
        return [], exc
    # a block with arrays hands out views of its bytes: those must outlive the reused buffer,
    # so such a block (never in a text pack) gets bytes of its own
    own = [bytes(raw) if type(raw) is memoryview and _has_arena(raw) else raw for raw in blocks]
    return own, None


def _one_by_one(packed: PackedFile, batch: StoredBatch) -> Iterator[tuple[int, list[Any]]]:
    """A batch the codec refused, decoded block by block to name the damaged one."""
    for j, stored in enumerate(batch.stored):
        block = batch.first + j
        yield block, [packed.raw_from_stored(block, stored, verify=False)]
    if batch.error is not None:
        raise batch.error


def _has_arena(raw: memoryview) -> bool:
    return len(raw) < BLOCK_HEADER.size or BLOCK_HEADER.unpack_from(raw)[1] < len(raw)


class _Worker(threading.Thread):
    """Decodes submitted batches in order until given None; one per scan."""

    def __init__(self, codec: Codec) -> None:
        super().__init__(name="shardpack-scan", daemon=True)
        self.codec = codec
        self.jobs: SimpleQueue[_Job | None] = SimpleQueue()

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            job.run(self.codec)

    def submit(self, batch: StoredBatch) -> _Job:
        job = _Job(batch)
        self.jobs.put(job)
        # wait until the worker is about to enter the codec: without this handshake it would
        # get the GIL only when this thread next blocks, and nothing would overlap
        job.started.wait()
        return job


Buffers = list[tuple[bytearray, bytearray]]
_pool = threading.local()  # per thread: the buffers its last scan gave back


def _claim_buffers(packed: PackedFile, ranges: list[tuple[int, int]]) -> Buffers:
    """Two (stored, raw) buffer pairs, each as large as the largest batch of ``ranges`` needs
    (so every batch fits; the C module refuses one that would not): those this thread's last
    scan gave back where they are large enough (fresh memory costs a page fault per 4 KiB, about
    what decompressing into it costs), else new ones. A scan owns them until it gives them
    back: two scans in one thread (a mixture) never share them."""
    sizes, raw_sizes = packed.block_stored_sizes, packed.block_raw_sizes
    stored = max(sum(sizes[first:end]) + BLOCK_ALIGN * (end - first) for first, end in ranges)
    raw = max(sum(raw_sizes[first:end]) for first, end in ranges)
    pairs: Buffers | None = getattr(_pool, "pairs", None)
    _pool.pairs = None
    if pairs is not None and (len(pairs[0][0]) < stored or len(pairs[0][1]) < raw):
        # grown to fit both this file and the last: scans that alternate between two files
        # (lz4 wanting more stored bytes, zstd more raw) would otherwise fault in new memory
        # for every scan
        stored, raw = max(stored, len(pairs[0][0])), max(raw, len(pairs[0][1]))
        pairs = None
    if pairs is None:
        pairs = [(bytearray(stored), bytearray(raw)) for _ in range(2)]
    return pairs


def _give_back(pairs: Buffers) -> None:
    if getattr(_pool, "pairs", None) is None:
        _pool.pairs = pairs


def _pipelined(
    packed: PackedFile, ranges: list[tuple[int, int]]
) -> Iterator[tuple[int, list[Any]]]:
    codec = packed.codec
    worker = None if codec.native_batches else _Worker(codec)
    # native batches alternate between two pairs of buffers (stored, raw): batch k + 2 is
    # submitted once batch k has been used, and memory reused is not faulted in again
    buffers = _claim_buffers(packed, ranges) if worker is None else None
    submitted = 0
    in_flight: list[_Job | _NativeJob | _FileJob] = []

    fd = packed.local_fd() if codec.native_reads else None

    def submit(first: int, end: int) -> _Job | _NativeJob | _FileJob:
        job = _submit(first, end)
        in_flight.append(job)
        del in_flight[:-2]  # the batch being used and the next: those before were waited for
        return job

    def _submit(first: int, end: int) -> _Job | _NativeJob | _FileJob:
        nonlocal submitted
        if buffers is None:
            assert worker is not None
            return worker.submit(StoredBatch(packed, first, end))
        stored, raw = buffers[submitted % 2]
        submitted += 1
        span = _together(packed, first, end, stored) if fd is not None else None
        if fd is not None and span is not None:
            return _FileJob(packed, fd, range(first, end), memoryview(stored)[:span], raw)
        return _NativeJob(codec, StoredBatch(packed, first, end, stored), raw)

    if worker is not None:
        worker.start()
    owner = os.getpid()
    try:
        pending = submit(*ranges[0])
        for k in range(len(ranges)):
            if os.getpid() != owner:  # a forked child goes on without the parent's worker
                for block in range(ranges[k][0], packed.block_count):
                    yield block, [packed.read_raw_block(block)]
                return
            job = pending
            if k + 1 < len(ranges):
                # read and verify the batch after this one while the worker decodes this one
                pending = submit(*ranges[k + 1])
            job.wait()
            if job.error is not None:  # find and name the damaged block, one block at a time
                yield from job.one_by_one(packed)
                continue
            first = job.first
            if job.blocks:
                yield (
                    first,
                    [
                        packed.unshuffled(first + j, memoryview(raw))
                        for j, raw in enumerate(job.blocks)
                    ],
                )
            if not isinstance(job, _FileJob) and job.batch.error is not None:
                raise job.batch.error
    finally:
        if os.getpid() == owner:
            if worker is not None:
                worker.jobs.put(None)
            if buffers is not None:
                # a scan left early may have a batch still being written into its buffers:
                # they go back to the pool only once no thread writes into them
                for job in in_flight:
                    job.wait()
                _give_back(buffers)
