"""The batches of a full scan (scan.py): the stored bytes of consecutive blocks, and the
ways a batch is decompressed off the scanning thread: on the codec's native threads, which
also read and check a local file's blocks (``FileJob``) or take blocks already read
(``NativeJob``), each block handed on as soon as it is there (``streamed``); or whole, on a
Python worker thread (``WorkerJob``, zstd without the C module)."""

from __future__ import annotations

import contextlib
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
        whole = read_together(packed, first, end, buffer) if buffer is not None else None
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


def together(packed: PackedFile, first: int, end: int, buffer: bytearray) -> int | None:
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


def read_together(packed: PackedFile, first: int, end: int, buffer: bytearray) -> memoryview | None:
    """Blocks [first, end) read with one read into ``buffer`` (a view of the part read), or
    None where they do not lie together within it."""
    span = together(packed, first, end, buffer)
    if span is None:
        return None
    whole = memoryview(buffer)[:span]
    packed.read_stored_into(packed.block_offsets[first], whole)
    return whole


class WorkerJob:
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

    def stop(self) -> None:
        """The worker decodes its batch in one call: wait for it."""
        self.done.wait()

    def one_by_one(self, packed: PackedFile) -> Iterator[tuple[int, list[Any]]]:
        return one_by_one_stored(packed, self.batch)

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


class Started:
    """A batch of ``count`` blocks handed to the codec's native threads by ``start`` (None:
    nothing to hand over): each raw block as soon as it is there (``block``), and once waited
    for, the threads done with it."""

    __slots__ = ("_pending", "count", "error")

    def __init__(self, start: Callable[[], PendingBlocks] | None, count: int) -> None:
        self.count = count
        self.error: CodecError | None = None
        self._pending: PendingBlocks | None = None
        if start is not None:
            try:
                self._pending = start()
            except CodecError as exc:
                self.error = exc

    def block(self, index: int) -> Any:
        """Raw block ``index`` of the batch (a view of the reused buffer, where there is one);
        CodecError where a block up to it is damaged."""
        if self.error is not None:
            raise self.error
        assert self._pending is not None
        return self._pending.block(index)

    def wait(self) -> None:
        """Until no thread writes into the batch's buffers (its outcome is the blocks')."""
        if self._pending is not None:
            with contextlib.suppress(CodecError):
                self._pending.result()
            self._pending = None

    def stop(self) -> None:
        """No more of the batch decompressed; returns once no thread writes into its buffers."""
        if self._pending is not None:
            self._pending.stop()
            self._pending = None


class NativeJob(Started):
    """One batch on the codec's own native threads (``Codec.start_batch``): no worker needed,
    and the scanning thread never waits for one to take the GIL."""

    __slots__ = ("batch", "first")

    def __init__(self, codec: Codec, batch: StoredBatch, out: bytearray | None) -> None:
        """``out``: a buffer the raw blocks are written into (reused by the batch after next;
        None: bytes of their own each)."""
        self.batch, self.first = batch, batch.first
        stored, raw_sizes = batch.stored, batch.raw_sizes
        super().__init__(
            (lambda: codec.start_batch(stored, raw_sizes, out)) if stored else None, len(stored)
        )

    def one_by_one(self, packed: PackedFile, start: int = 0) -> Iterator[tuple[int, list[Any]]]:
        return one_by_one_stored(packed, self.batch, start)


class FileJob(Started):
    """One batch of a local file read, checked and decompressed on the codec's native threads
    (``Codec.start_read``): the scanning thread neither reads nor hashes it. A fault is named
    by reading the batch again block by block (``one_by_one``)."""

    __slots__ = ("end", "first")

    def __init__(
        self,
        packed: PackedFile,
        fd: int,
        blocks: range,
        stored: memoryview,
        out: bytearray | None,
    ) -> None:
        """``blocks`` of the file open as ``fd``; ``stored``: as many bytes as they span
        (``together``); ``out``: room for their raw bytes (None: bytes of their own each)."""
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
            ),
            end - first,
        )

    def one_by_one(self, packed: PackedFile, start: int = 0) -> Iterator[tuple[int, list[Any]]]:
        for block in range(self.first + start, self.end):
            yield block, [packed.read_raw_block(block)]


def one_by_one_stored(
    packed: PackedFile, batch: StoredBatch, start: int = 0
) -> Iterator[tuple[int, list[Any]]]:
    """A batch the codec refused, decoded block by block from its ``start``-th on to name the
    damaged one."""
    for j in range(start, len(batch.stored)):
        block = batch.first + j
        yield block, [packed.raw_from_stored(block, batch.stored[j], verify=False)]
    if batch.error is not None:
        raise batch.error


def streamed(packed: PackedFile, job: NativeJob | FileJob) -> Iterator[tuple[int, list[Any]]]:
    """A native batch's blocks one at a time, each as soon as it is decompressed: the batch's
    last blocks are still being decompressed while its first become records."""
    first = job.first
    for j in range(job.count):
        try:
            raw = job.block(j)
        except CodecError:  # find and name the damaged block, one block at a time
            yield from job.one_by_one(packed, j)
            return
        block = first + j
        restored = packed.unshuffled(block, raw)
        if restored is raw and type(raw) is memoryview and has_arena(raw):
            # a block with arrays hands out views of its bytes, which must outlive the reused
            # buffer: bytes of its own. Seldom here: a file with arrays left as they are has
            # its blocks decompressed into bytes of their own (scan.py), and a shuffled block
            # was restored into memory of its own already
            restored = bytes(raw)
        yield block, [restored]
    job.wait()
    if isinstance(job, NativeJob) and job.batch.error is not None:
        raise job.batch.error


def whole(packed: PackedFile, job: WorkerJob) -> Iterator[tuple[int, list[Any]]]:
    """A worker's batch, once it has decoded all of it."""
    job.wait()
    if job.error is not None:  # find and name the damaged block, one block at a time
        yield from job.one_by_one(packed)
        return
    if job.blocks:
        first = job.first
        yield (
            first,
            [packed.unshuffled(first + j, memoryview(raw)) for j, raw in enumerate(job.blocks)],
        )
    if job.batch.error is not None:
        raise job.batch.error


def has_arena(raw: memoryview) -> bool:
    return len(raw) < BLOCK_HEADER.size or BLOCK_HEADER.unpack_from(raw)[1] < len(raw)


class Worker(threading.Thread):
    """Decodes submitted batches in order until given None; one per scan."""

    def __init__(self, codec: Codec) -> None:
        super().__init__(name="shardpack-scan", daemon=True)
        self.codec = codec
        self.jobs: SimpleQueue[WorkerJob | None] = SimpleQueue()

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            job.run(self.codec)

    def submit(self, batch: StoredBatch) -> WorkerJob:
        job = WorkerJob(batch)
        self.jobs.put(job)
        # wait until the worker is about to enter the codec: without this handshake it would
        # get the GIL only when this thread next blocks, and nothing would overlap
        job.started.wait()
        return job
