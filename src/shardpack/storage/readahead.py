"""Read-ahead: fetch the blocks a reader will need next, in the order it will need them, in few
large concurrent requests, never more than ``readahead_bytes`` ahead of the reader.

A plan is an iterator of (source, block number) in reading order: every block in file order for
a scan, the epoch's block order for a shuffled loader. A thread turns it into requests:

- without a disk cache, the planned blocks of one file that lie within ``coalesce_gap_bytes`` of
  each other are fetched by one request (at most ``request_bytes``, or for a sequential plan, a
  scan in file order, at most a quarter of the window if that is more; the gaps are dropped);
- with a disk cache, a block's whole *unit* (the blocks starting in its ``request_bytes``-aligned
  stretch of the file) is fetched and stored as one range entry, so the unit's other blocks are
  on disk when a shuffled epoch reaches them; a unit already on disk is not fetched, and one that
  another process has claimed is left to it (readers then wait for its entry).

Fetched blocks are checked against the block index, and the planned ones wait in memory until
read (or until reading has moved ``LAG_BLOCKS`` planned blocks past them).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ..format.layout import checksum

if TYPE_CHECKING:
    from .ranges import RangeSource
    from .remote import RemoteReader

LAG_BLOCKS = 4096  # planned blocks read past before a buffered, unread one is dropped
MAX_BATCH_BLOCKS = 4096  # blocks planned per step, so fetched ones are handed over in time
RECENT_UNITS = 1 << 16  # units remembered per plan (their request, or "nothing to fetch")


class _Request:
    """One range request: the blocks it covers, which of them the plan wants (and when)."""

    __slots__ = ("blocks", "claim", "end", "future", "landed", "source", "start", "wanted")

    def __init__(self, source: RangeSource, blocks: list[int], claim: str | None = None) -> None:
        self.source = source
        self.blocks = blocks
        self.start = int(source.offsets[blocks[0]])
        self.end = int(source.offsets[blocks[-1]] + source.sizes[blocks[-1]])
        self.wanted: dict[int, int] = {}  # block -> position in the plan
        self.claim = claim
        self.future: Future[bytes] | None = None
        self.landed = False


class ReadAhead:
    """The read-ahead of one dataset in one process: at most one plan at a time."""

    def __init__(self, reader: RemoteReader) -> None:
        self.reader = reader
        self._plan: _Plan | None = None
        self._ending: list[threading.Thread] = []  # stopped plans still landing requests

    def start(self, plan: Iterator[tuple[RangeSource, int]], *, sequential: bool = False) -> None:
        """Follow ``plan`` from now on (the previous plan stops). ``sequential``: the plan is
        a scan in file order (without a disk cache its requests may be larger)."""
        self.stop()
        if self.reader.options.readahead_bytes > 0:
            self._plan = _Plan(self.reader, plan, sequential)

    def stop(self, wait_s: float = 0.0) -> None:
        """Send no more requests; those in flight still land in the disk cache (and release
        their claims). ``wait_s``: wait that long for them, and for those of plans stopped
        earlier (a scan stops its plan without waiting; closing the dataset waits)."""
        if self._plan is not None:
            self._plan.stop()
            self._ending.append(self._plan.thread)
            self._plan = None
        deadline = time.monotonic() + wait_s
        for thread in self._ending:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._ending = [thread for thread in self._ending if thread.is_alive()]

    def take(self, source: RangeSource, offset: int, length: int) -> bytes | memoryview | None:
        """The block at ``offset`` if the plan fetched it (waiting while it is in flight)."""
        plan = self._plan
        return plan.take(source, offset, length) if plan is not None else None


class _Plan:
    def __init__(
        self, reader: RemoteReader, plan: Iterator[tuple[RangeSource, int]], sequential: bool
    ) -> None:
        self.reader = reader
        options = reader.options
        self.window = options.readahead_bytes
        self.unit_bytes = options.request_bytes
        self.gap = options.coalesce_gap_bytes
        # a scan reads every byte in order: fewer, larger requests (the window bounds memory)
        self.request_bytes = max(self.unit_bytes, self.window // 4 if sequential else 0)
        # plan again only once a batch worth of room is free: blocks taken one by one must not
        # turn into requests of one block each
        self.batch_bytes = max(self.window // 4, min(self.unit_bytes, self.window // 2), 1)
        self.refill_at = self.window - self.batch_bytes
        self.plan = plan
        self.cond = threading.Condition()
        self.stopped = self.exhausted = False
        self.buffer: dict[tuple[int, int], tuple[Any, int]] = {}  # (source, offset) -> data, pos
        self.by_position: list[tuple[int, tuple[int, int]]] = []  # heap of buffered (pos, key)
        self.inflight: dict[tuple[int, int], _Request] = {}
        self.completed: list[_Request] = []
        self.outstanding = 0
        self.used = 0  # bytes in flight or buffered
        self.position = 0  # of the next planned block
        self.consumed = 0  # plan position of the latest block taken
        self.units: OrderedDict[tuple[int, int], _Request | None] = OrderedDict()
        self.carried: tuple[RangeSource, int, int] | None = None  # left for the next batch
        self._fill()  # the first requests leave before the reader asks for its first block
        self.thread = threading.Thread(target=self._run, name="shardpack-readahead", daemon=True)
        self.thread.start()

    # -- the reader's side ---------------------------------------------------------------------

    def take(self, source: RangeSource, offset: int, length: int) -> bytes | memoryview | None:
        key = (id(source), offset)
        with self.cond:
            while True:
                found = self.buffer.pop(key, None)
                if found is not None:
                    data, position = found
                    before = self.used
                    self.used -= len(data)
                    self.consumed = max(self.consumed, position)
                    self._drop_lagging()
                    if self.used <= self.refill_at < before:
                        self.cond.notify_all()  # room for a batch: wake the planner (only then)
                    return data if len(data) == length else None
                if key not in self.inflight or self.stopped:
                    return None
                self.cond.wait()

    def _drop_lagging(self) -> None:
        heap, limit = self.by_position, self.consumed - LAG_BLOCKS
        while heap and heap[0][0] < limit:
            position, key = heapq.heappop(heap)
            found = self.buffer.get(key)
            if found is not None and found[1] == position:
                del self.buffer[key]
                self.used -= len(found[0])

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            for data, _ in self.buffer.values():
                self.used -= len(data)
            self.buffer.clear()
            self.by_position.clear()
            self.cond.notify_all()

    # -- the planner thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.completed and (
                        self.stopped or self.exhausted or self.used > self.refill_at
                    ):
                        if (self.stopped or self.exhausted) and not self.outstanding:
                            return
                        self.cond.wait()
                    done, self.completed = self.completed, []
                for request in done:
                    self._land(request)
                if not (self.stopped or self.exhausted) and self.used <= self.refill_at:
                    self._fill()
        finally:
            with self.cond:
                self.stopped = True
                self.inflight.clear()
                self.cond.notify_all()

    def _next_blocks(self) -> Iterator[tuple[RangeSource, int, int]]:
        if self.carried is not None:
            carried, self.carried = self.carried, None
            yield carried
        for _ in range(MAX_BATCH_BLOCKS):
            try:
                source, block = next(self.plan)
            except StopIteration:
                self.exhausted = True
                return
            except Exception:  # e.g. a shard that cannot be opened: its reader reports it
                self.exhausted = True
                return
            self.position += 1
            yield source, block, self.position - 1

    def _fill(self) -> None:
        """Plan and send requests until ``readahead_bytes`` are in flight or buffered, a batch
        at a time (so the first requests leave before later files are even opened)."""
        while not self.exhausted and self.used <= self.refill_at:
            self._fill_batch(min(self.window - self.used, self.batch_bytes))

    def _fill_batch(self, budget: int) -> None:
        requests: list[_Request] = []
        if self.reader.disk is not None:
            spent = 0
            for source, block, position in self._next_blocks():
                made = len(requests)
                request = self._unit_request(source, block, requests)
                if request is not None:
                    self._want(request, block, position)
                if len(requests) > made:
                    spent += request.end - request.start if request is not None else 0
                if spent >= budget:
                    break
        else:
            batch: list[tuple[RangeSource, int, int]] = []
            spent = 0
            for source, block, position in self._next_blocks():
                size = int(source.sizes[block])
                if batch and spent + size > budget:  # a block past the batch: the next one's
                    self.carried = (source, block, position)
                    break
                batch.append((source, block, position))
                spent += size
                if spent >= budget:
                    break
            requests = self._coalesce(batch)
        requests.sort(key=lambda r: min(r.wanted.values(), default=0))
        for request in requests:
            self._submit(request)

    def _want(self, request: _Request, block: int, position: int) -> None:
        request.wanted[block] = position
        if request.future is not None:  # already on its way: the reader may wait for it now
            with self.cond:
                self.inflight[(id(request.source), int(request.source.offsets[block]))] = request

    def _unit_request(
        self, source: RangeSource, block: int, new: list[_Request]
    ) -> _Request | None:
        """The request fetching ``block``'s unit: made now, made earlier and not yet landed, or
        None (the unit is on disk, or another process fetches it)."""
        blocks = source.unit_blocks(block)
        key = (id(source), blocks.start)
        if key in self.units:
            request = self.units[key]
            return request if request is not None and not request.landed else None
        disk = self.reader.disk
        if disk is None:
            return None
        request = None
        unit = source.unit_key(int(source.offsets[block]))  # its entry's key and claim's
        if not disk.has(unit) and disk.claim(unit):
            request = _Request(source, list(blocks), unit)
            new.append(request)
        self.units[key] = request
        if len(self.units) > RECENT_UNITS:
            self.units.popitem(last=False)
        return request

    def _coalesce(self, batch: list[tuple[RangeSource, int, int]]) -> list[_Request]:
        """Planned blocks of one file, merged where they are close (no disk cache)."""
        by_source: dict[int, list[tuple[RangeSource, int, int]]] = {}
        for item in batch:
            by_source.setdefault(id(item[0]), []).append(item)
        requests = []
        for items in by_source.values():
            items.sort(key=lambda item: item[1])
            current: _Request | None = None
            for source, block, position in items:
                start = int(source.offsets[block])
                end = start + int(source.sizes[block])
                if (
                    current is None
                    or start < current.end
                    or start - current.end > self.gap
                    or end - current.start > self.request_bytes
                ):
                    current = _Request(source, [block])
                    requests.append(current)
                else:
                    current.blocks.append(block)
                    current.end = end
                current.wanted[block] = position
        return requests

    def _submit(self, request: _Request) -> None:
        source = request.source
        with self.cond:
            for block in request.wanted:
                self.inflight[(id(source), int(source.offsets[block]))] = request
            self.used += request.end - request.start
            self.outstanding += 1
        try:
            future = source.submit(request.start, request.end)
        except Exception:
            future = Future()
            future.set_result(b"")  # lands as a failed request: readers fetch on their own
        request.future = future
        future.add_done_callback(lambda _: self._completed(request))

    def _completed(self, request: _Request) -> None:
        with self.cond:
            self.completed.append(request)
            self.cond.notify_all()

    def _land(self, request: _Request) -> None:
        """Check the fetched blocks, hand the planned ones to the reader, store all on disk."""
        source, disk = request.source, self.reader.disk
        try:
            data = request.future.result() if request.future is not None else b""
        except Exception:
            data = b""  # the reader fetches these blocks itself and reports the error
        view = memoryview(data)
        copy = len(request.wanted) * 2 < len(request.blocks)  # keep no unit alive for a block
        good: list[tuple[int, int, memoryview]] = []
        pieces: dict[tuple[int, int], tuple[Any, int]] = {}
        check = disk is not None  # else the reader checks what it is handed, as for any read
        for block in request.blocks:
            offset, size = int(source.offsets[block]), int(source.sizes[block])
            piece = view[offset - request.start : offset - request.start + size]
            if len(piece) != size or (check and checksum(piece) != int(source.checksums[block])):
                continue  # never cached or handed over: the reader fetches it and checks it
            good.append((offset, size, piece))
            if block in request.wanted:
                pieces[(id(source), offset)] = (
                    bytes(piece) if copy else piece,
                    request.wanted[block],
                )
        with self.cond:
            request.landed = True
            self.outstanding -= 1
            self.used -= request.end - request.start
            for block in request.wanted:
                self.inflight.pop((id(source), int(source.offsets[block])), None)
            if not self.stopped:
                for key, (piece, position) in pieces.items():
                    self.buffer[key] = (piece, position)
                    heapq.heappush(self.by_position, (position, key))
                    self.used += len(piece)
            self.cond.notify_all()
        if disk is not None:  # after the hand-over: the reader need not wait for the disk
            if request.claim is not None and len(good) == len(request.blocks):
                disk.put_range(request.claim, request.start, view)  # the unit, one entry
            else:
                for offset, size, piece in good:
                    disk.put(source.block_key(offset, size), piece)
            if request.claim is not None:
                disk.release(request.claim)
