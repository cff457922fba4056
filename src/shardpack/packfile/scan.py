"""A full scan of one packed file: every block read, verified and decompressed in order; with
read-ahead the next batch is decompressed off the scanning thread while the caller turns this
one into records.

lz4 and zstd with the C module need no worker: ``Codec.start_read`` (``start_batch`` for
blocks not in a local file) starts native threads that never take the GIL and read, check and
decompress the batch, so the scanning thread hands nothing over. It takes each block as soon as
that block is there, not the batch: the batch's last blocks are still being decompressed while
its first become records. When it gets to a block before the threads have, it decompresses
blocks they have not taken yet (and turns those into records while they are in its cache).

Without the C module, zstd decodes a whole batch in one call without the GIL on a Python
worker thread. A worker thread pays only where its work runs without the GIL from start to end:
a thread that needs the GIL back after every block waits for the scanning thread to give it up,
which happens only every few milliseconds (the interpreter's switch interval). So the worker
takes a batch of blocks per call, and the scanning thread waits until the worker is inside that
call before it goes on: it hands the GIL over once per batch.

Read-ahead is opt-in (``read_ahead=True``): with a core free it took scans 25-40% less time,
but with the other core of two busy the threads share one core, and scans measured 3-17% slower
than without (35-45% before blocks were taken one at a time; docs/BENCHMARKS.md section 6).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codecs import Codec
from ..format.layout import BLOCK_ALIGN, BLOCK_SHUFFLED
from .batches import (
    FileJob,
    NativeJob,
    StoredBatch,
    Worker,
    WorkerJob,
    streamed,
    together,
    whole,
)

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


def _arrays_view_raw_bytes(packed: PackedFile) -> bool:
    """Whether the file's blocks hold arrays left as they are (not stored as byte planes, which
    are restored into memory of their own): such arrays view their block's bytes, which must
    outlive the reused buffers. Those blocks are decompressed into bytes of their own: copying
    them out of the buffer cost the 100 MB KD mix's lz4 read-ahead scan 6-9% more time than the
    page faults of fresh memory (on the native threads)."""
    if not packed.metadata.arrays:
        return False
    return not bool(np.all(packed.index["flags"] & BLOCK_SHUFFLED))


def _pipelined(
    packed: PackedFile, ranges: list[tuple[int, int]]
) -> Iterator[tuple[int, list[Any]]]:
    codec = packed.codec
    worker = None if codec.native_batches else Worker(codec)
    # native batches alternate between two pairs of buffers (stored, raw): batch k + 2 is
    # submitted once batch k has been used, and memory reused is not faulted in again
    buffers = _claim_buffers(packed, ranges) if worker is None else None
    submitted = 0
    in_flight: list[WorkerJob | NativeJob | FileJob] = []

    fd = packed.local_fd() if codec.native_reads else None
    own_bytes = _arrays_view_raw_bytes(packed)

    def submit(first: int, end: int) -> WorkerJob | NativeJob | FileJob:
        job = _submit(first, end)
        in_flight.append(job)
        del in_flight[:-2]  # the batch being used and the next: those before were waited for
        return job

    def _submit(first: int, end: int) -> WorkerJob | NativeJob | FileJob:
        nonlocal submitted
        if buffers is None:
            assert worker is not None
            return worker.submit(StoredBatch(packed, first, end))
        stored, reused = buffers[submitted % 2]
        raw = None if own_bytes else reused
        submitted += 1
        span = together(packed, first, end, stored) if fd is not None else None
        if fd is not None and span is not None:
            return FileJob(packed, fd, range(first, end), memoryview(stored)[:span], raw)
        return NativeJob(codec, StoredBatch(packed, first, end, stored), raw)

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
            yield from (whole(packed, job) if isinstance(job, WorkerJob) else streamed(packed, job))
    finally:
        if os.getpid() == owner:
            if worker is not None:
                worker.jobs.put(None)
            if buffers is not None:
                # a scan left early may have a batch still being written into its buffers:
                # its threads take no more blocks, and the buffers go back to the pool only
                # once no thread writes into them
                for job in in_flight:
                    job.stop()
                _give_back(buffers)
