"""A full scan of one packed file: every block read, verified and decompressed in order; for a
codec that decodes a whole batch of blocks in one call without the GIL (zstd), the next batch is
decompressed on a worker thread while the caller turns this one into records.

A worker thread pays only where its work runs without the GIL from start to end: a thread that
needs the GIL back after every block waits for the scanning thread to give it up, which happens
only every few milliseconds (the interpreter's switch interval). So the worker takes a batch of
blocks per call, and the scanning thread waits until the worker is inside that call before it
goes on: it hands the GIL over once per batch. Blocks are still read one at a time: a 1 MiB read
into fresh memory measured slower here than 32-64 KiB reads into memory the allocator reuses.

The worker is opt-in (``read_ahead=True``): a prototype took a GSM8K zstd scan from 6.2 to
5.0 ms while a core was free, but on a machine whose other core is busy the two threads share
one core and the handovers cost more than the overlap gives (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from ..codecs import Codec
from ..errors import CodecError, CorruptBlockError

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


def iter_raw_blocks(packed: PackedFile, start: int = 0) -> Iterator[tuple[int, Any]]:
    """(block number, raw block bytes) for every block from ``start`` on, in file order, the
    next batch decompressed on a worker thread when the codec can do that without the GIL."""
    ranges = batch_ranges(packed, start)
    if packed.codec.batch_releases_gil and len(ranges) > 1:
        yield from _pipelined(packed, ranges)
        return
    for block in range(start, packed.block_count):
        yield block, packed.read_raw_block(block)


class StoredBatch:
    """The stored bytes of consecutive blocks, each verified as it is read.

    Verification stops at the first damaged block: the blocks before it are kept, and ``error``
    is raised once they have been used, so a scan yields every record before the damage.
    """

    __slots__ = ("error", "first", "raw_sizes", "stored")

    def __init__(self, packed: PackedFile, first: int, end: int) -> None:
        self.first = first
        self.stored: list[bytes | memoryview] = []
        self.raw_sizes: list[int] = []
        self.error: CorruptBlockError | None = None
        offsets, sizes, raw_sizes = (
            packed.block_offsets,
            packed.block_stored_sizes,
            packed.block_raw_sizes,
        )
        for block in range(first, end):
            stored = packed.read_stored(offsets[block], sizes[block])
            if packed.verify:
                try:
                    packed.check_stored(block, stored)
                except CorruptBlockError as exc:
                    self.error = exc
                    break
            self.stored.append(stored)
            self.raw_sizes.append(raw_sizes[block])


class _Job:
    """One batch for the worker: stored blocks in, raw blocks (or the codec's error) out."""

    __slots__ = ("batch", "blocks", "done", "error", "started")

    def __init__(self, batch: StoredBatch) -> None:
        self.batch = batch
        self.started = threading.Event()
        self.done = threading.Event()
        self.blocks: list[Any] = []
        self.error: CodecError | None = None

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


def _pipelined(packed: PackedFile, ranges: list[tuple[int, int]]) -> Iterator[tuple[int, Any]]:
    worker = _Worker(packed.codec)
    worker.start()
    owner = os.getpid()
    try:
        pending = worker.submit(StoredBatch(packed, *ranges[0]))
        for k in range(len(ranges)):
            if os.getpid() != owner:  # a forked child goes on without the parent's worker
                for block in range(ranges[k][0], packed.block_count):
                    yield block, packed.read_raw_block(block)
                return
            job = pending
            if k + 1 < len(ranges):
                # read and verify the batch after this one while the worker decodes this one
                pending = worker.submit(StoredBatch(packed, *ranges[k + 1]))
            job.done.wait()
            batch = job.batch
            if job.error is not None:  # find and name the damaged block, one block at a time
                for j, stored in enumerate(batch.stored):
                    block = batch.first + j
                    yield block, packed.raw_from_stored(block, stored, verify=False)
            else:
                for j, raw in enumerate(job.blocks):
                    block = batch.first + j
                    yield block, packed.unshuffled(block, memoryview(raw))
            if batch.error is not None:
                raise batch.error
    finally:
        if os.getpid() == owner:
            worker.jobs.put(None)
