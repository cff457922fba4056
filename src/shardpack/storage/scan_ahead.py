"""Whole files fetched ahead of a full scan: each remote file the scan reads from end to end is
fetched in ONE request (header, blocks and footer), a few files ahead of the reader, never more
than ``readahead_bytes`` fetched (or in flight) and not yet read.

Reading a file by ranges costs a round trip for its header and footer and then its body in
``request_bytes`` pieces; a scan that will read every byte of it anyway asks for it once, as
"download, then read" does, but its blocks are read as the response streams in, so the reader
starts after the first blocks of the first file, not after the whole file, and memory stays
bounded. A file that is open already (its version pinned) is fetched with its pin (``If-Match``),
so a replaced object is an ``ObjectChangedError``; a file not yet open is pinned by that response
and opened from its bytes when they have all arrived, else by a request for its footer alongside
(``RangeSource``). Every block is still checked against the block index as it is read, and the
footer against the manifest entry.

Whole files are fetched only when each of them is at most half the window (one being read, the
next on its way), no disk cache is in use (the disk cache fetches units that every process of the
machine shares, see ``readahead``) and the store answers with ETags (S3). Otherwise a scan reads
block ranges through the read-ahead as before.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future

import numpy as np

from ..errors import RemoteError
from .fetch import Fetcher, FetchStats, ObjectPin
from .locks import ForkSafeLock


class WholeFile:
    """One file's bytes, ``[0, size)``, asked for in pieces of at most ``request_bytes``, all at
    once, each streamed into one buffer as it arrives: ``view(offset, length)`` waits only for
    those bytes, so a scan reads a file's first blocks while the rest is on its way, and a store
    that serves each connection at its own pace (S3: about 100 MB/s) sends the pieces side by
    side. Held until the scan has read the file (``release``: then reads go through the caches
    again)."""

    def __init__(self, url: str, size: int, pin: ObjectPin, counts: FetchStats) -> None:
        self.url = url
        self.size = size
        self.pin = pin
        self.counts = counts
        self.released = False
        self.pieces: list[Piece] = []
        self._buffer: memoryview | None = None
        self._ready = threading.Condition()
        self._wanted = 0  # the end of the bytes a reader waits for
        self._arrived = 0  # bytes [0, _arrived) have all arrived
        self._responded = False

    def submit(self, fetcher: Fetcher) -> WholeFile:
        # numpy's buffer is not zeroed first: the pages fill as the responses arrive
        self._buffer = np.empty(self.size, np.uint8).data
        count = -(-self.size // fetcher.options.request_bytes)  # pieces of equal size
        bounds = [self.size * k // count for k in range(count + 1)]
        self.pieces = [Piece(self, a, b) for a, b in itertools.pairwise(bounds) if b > a]
        for piece in self.pieces:
            piece.future = fetcher.stream(piece, self.counts)
            piece.future.add_done_callback(piece.ended)
        return self

    # -- the streams' side (fsspec's event loop) ------------------------------------------------

    def responded(self) -> None:
        with self._ready:
            self._responded = True
            self._ready.notify_all()

    def write(self, piece: Piece, chunk: bytes) -> None:
        at, buffer = piece.start + piece.received, self._buffer
        if buffer is None or at + len(chunk) > piece.end:
            raise RemoteError(f"more than the {self.size} bytes asked for", path=self.url)
        buffer[at : at + len(chunk)] = chunk  # not yet counted as arrived: no reader sees it
        with self._ready:
            piece.received += len(chunk)
            self._arrived = self._contiguous()
            if self._arrived >= self._wanted:
                self._ready.notify_all()

    def _contiguous(self) -> int:
        for piece in self.pieces:
            if piece.received < piece.end - piece.start:
                return piece.start + piece.received
        return self.size

    def ended(self) -> None:
        with self._ready:
            self._ready.notify_all()

    # -- the reader's side ----------------------------------------------------------------------

    @property
    def received(self) -> int:
        """Bytes ``[0, received)`` have arrived."""
        return self._arrived

    @property
    def complete(self) -> bool:
        return self._arrived == self.size and not self.released

    def view(self, offset: int, length: int) -> memoryview | None:
        """Bytes ``[offset, offset + length)`` (waiting for them to arrive), or None once the
        file is released. A failed request for them raises its error."""
        end = offset + length
        if self._arrived < end:
            self._wait(lambda: self._arrived >= end, end)
        buffer = self._buffer
        return None if buffer is None or self.released else buffer[offset:end]

    def wait_response(self) -> None:
        """Wait for a first response (``pin`` then holds the version it brought)."""
        self._wait(lambda: self._responded, 0)

    def _wait(self, arrived: Callable[[], bool], end: int) -> None:
        if not self.pieces:
            raise RemoteError("this file was never asked for", path=self.url)
        with self._ready:
            self._wanted = max(self._wanted, end)
            while not arrived() and not self.released and self._failure(end) is None:
                self._ready.wait()
            failure = None if arrived() or self.released else self._failure(end)
        if failure is not None:
            raise failure

    def _failure(self, end: int) -> BaseException | None:
        """The error of a failed request for bytes before ``end`` (any, when ``end`` is 0)."""
        for piece in self.pieces:
            if piece.error is not None and (end == 0 or piece.start + piece.received < end):
                return piece.error
        return None

    def release(self) -> None:
        """The scan is done with this file: drop its bytes (or the requests still in flight;
        views handed out keep the bytes they show)."""
        with self._ready:
            self.released = True
            self._buffer = None
            self._ready.notify_all()
        for piece in self.pieces:
            if piece.future is not None and not piece.future.done():
                piece.future.cancel()


class Piece:
    """Bytes ``[start, end)`` of a ``WholeFile``, asked for in one request (``StreamSink``)."""

    def __init__(self, whole: WholeFile, start: int, end: int) -> None:
        self.whole = whole
        self.url, self.size, self.pin = whole.url, whole.size, whole.pin
        self.start, self.end = start, end
        self.received = 0
        self.future: Future[None] | None = None
        self.error: BaseException | None = None

    def responded(self) -> None:
        self.whole.responded()

    def write(self, chunk: bytes) -> None:
        self.whole.write(self, chunk)

    def ended(self, future: Future[None]) -> None:
        try:
            error = future.exception()
        except CancelledError:
            error = RemoteError("the scan that fetched this file has ended", path=self.url)
        self.error = error
        self.whole.ended()


class ScanAhead:
    """The whole-file read-ahead of one dataset in one process: at most one scan at a time.

    ``start(sizes, make)``: a scan of ``len(sizes)`` files in this order; ``make(i)`` gives file
    ``i``'s (not yet submitted) ``WholeFile``, or None for a file read otherwise (a local one).
    ``reach(i)``: the reader moves on to file ``i``; the files before it are released and more
    are fetched while they fit the window. Called from the scanning thread only.
    """

    def __init__(self, fetcher: Fetcher, window: int) -> None:
        self.fetcher = fetcher
        self.window = window
        self._lock = ForkSafeLock()
        self._sizes: list[int] = []
        self._make: Callable[[int], WholeFile | None] | None = None
        self._files: dict[int, WholeFile] = {}  # submitted, not yet released
        self._next = 0  # the next file to submit
        self._position = 0  # the file being read

    def fits(self, sizes: Sequence[int | None]) -> bool:
        """Whether files of these sizes are fetched whole: each at most half the window."""
        return self.window > 0 and all(s is not None and 2 * s <= self.window for s in sizes)

    def start(self, sizes: Sequence[int], make: Callable[[int], WholeFile | None]) -> None:
        self.stop()
        with self._lock:
            self._sizes, self._make = list(sizes), make
            self._next = self._position = 0
        self._top_up()  # the first requests leave before the reader asks for its first file

    def reach(self, i: int) -> WholeFile | None:
        """File ``i``'s whole-file request (None if it is read otherwise)."""
        with self._lock:
            self._position = i
            for done in [k for k in self._files if k < i]:
                self._files.pop(done).release()
        self._top_up()
        with self._lock:
            return self._files.get(i)

    def _top_up(self) -> None:
        while True:
            with self._lock:
                make, k = self._make, self._next
                if make is None or k >= len(self._sizes):
                    return
                held = sum(self._sizes[j] for j in self._files)
                if k > self._position and held + self._sizes[k] > self.window:
                    return
                self._next += 1
            whole = make(k)  # outside the lock: it may look at the file's slot
            if whole is not None:
                whole.submit(self.fetcher)
                with self._lock:
                    if self._make is make:
                        self._files[k] = whole
                        continue
                whole.release()  # the scan stopped meanwhile

    def stop(self) -> None:
        """End the scan: release every file it fetched (requests in flight are cancelled)."""
        with self._lock:
            files, self._files, self._make = list(self._files.values()), {}, None
        for whole in files:
            whole.release()
