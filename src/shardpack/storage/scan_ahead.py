"""Whole files fetched ahead of a full scan: each remote file the scan reads from end to end is
asked for whole (header, blocks and footer) in pieces of at most ``request_bytes``, streamed
into memory as they arrive, ahead of the reader, never more than ``readahead_bytes`` fetched (or
in flight) and not yet read.

Reading a file by ranges costs a round trip for its header and footer and then its body block
by block; a scan that will read every byte anyway asks for all of it, as "download, then read"
does, but:

- its blocks are read as the responses stream in: the reader starts after the first blocks of
  the first file, not after the whole file;
- the window slides piece by piece: a piece the reader has passed is dropped and the next piece
  (of this file or a later one) is asked for at once, so requests keep leaving at the reader's
  pace and memory stays bounded by the window;
- pieces are asked for side by side: a store that serves each connection at its own pace (S3:
  about 100 MB/s) sends a window of them at once.

A file that is open already (its version pinned) is fetched with its pin (``If-Match``), so a
replaced object is an ``ObjectChangedError``; a file not yet open is pinned by the first response
and opened from its bytes when they have all arrived, else by a request for its footer alongside
(``RangeSource``). Every block is still checked against the block index as it is read, and the
footer against the manifest entry.

Whole files are fetched only when two of their pieces fit the window, no disk cache is in
use (the disk cache fetches units that every process of the machine shares, see ``readahead``)
and the store answers with ETags (S3). Otherwise a scan reads block ranges through the
read-ahead.
"""

from __future__ import annotations

import itertools
import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future

import numpy as np

from ..errors import RemoteError
from .fetch import Fetcher, FetchStats, ObjectPin
from .locks import ForkSafeLock


class Piece:
    """Bytes ``[start, end)`` of a ``WholeFile``, asked for in one request and streamed into a
    buffer of their own (a ``StreamSink``)."""

    def __init__(self, whole: WholeFile, start: int, end: int) -> None:
        self.whole = whole
        self.url, self.size, self.pin = whole.url, whole.size, whole.pin
        self.start, self.end = start, end
        self.received = 0
        self.buffer: memoryview | None = None
        self.future: Future[None] | None = None
        self.error: BaseException | None = None
        self.released = False
        self.counted = False  # in the scan's window (``ScanAhead.held``)

    @property
    def length(self) -> int:
        return self.end - self.start

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


class WholeFile:
    """One file's bytes, ``[0, size)``, in ``pieces`` of equal size of at most ``piece_bytes``,
    each asked for when the scan's window has room (``ScanAhead``) and streamed into its own
    buffer as it arrives. ``view(offset, length)`` waits only for those bytes; ``passed(offset)``
    drops the pieces the reader is done with. Held until the scan has read the file
    (``release``: then reads go through the caches again)."""

    def __init__(
        self, url: str, size: int, pin: ObjectPin, counts: FetchStats, piece_bytes: int
    ) -> None:
        self.url = url
        self.size = size
        self.pin = pin
        self.counts = counts
        self.released = False
        count = max(1, -(-size // piece_bytes))
        bounds = [size * k // count for k in range(count + 1)]
        self.pieces = [Piece(self, a, b) for a, b in itertools.pairwise(bounds)]
        self._starts = bounds[:-1]
        self._ready = threading.Condition()
        self._wanted = 0  # the end of the bytes a reader waits for
        self._passed = 0  # the pieces before this one are dropped (``passed``)
        self._responded = False
        # the scan's hooks: ask for the pieces the window has room for; a piece dropped
        self.request_more: Callable[[], None] = lambda: None
        self.on_drop: Callable[[Piece], None] = lambda piece: None

    def submit(self, piece: Piece, fetcher: Fetcher) -> None:
        with self._ready:
            if piece.released:
                return  # the scan let go of it meanwhile
            # numpy's buffer is not zeroed first: the pages fill as the response arrives
            piece.buffer = np.empty(piece.length, np.uint8).data
        piece.future = fetcher.stream(piece, self.counts)
        piece.future.add_done_callback(piece.ended)

    def submit_all(self, fetcher: Fetcher) -> WholeFile:
        """Ask for every piece at once (no scan's window: one file read alone)."""
        for piece in self.pieces:
            self.submit(piece, fetcher)
        return self

    # -- the streams' side (fsspec's event loop) ------------------------------------------------

    def responded(self) -> None:
        with self._ready:
            self._responded = True
            self._ready.notify_all()

    def write(self, piece: Piece, chunk: bytes) -> None:
        at, buffer = piece.received, piece.buffer
        if buffer is None:
            raise RemoteError("the scan let go of these bytes", path=self.url)
        if at + len(chunk) > piece.length:
            raise RemoteError(f"more than the {piece.length} bytes asked for", path=self.url)
        buffer[at : at + len(chunk)] = chunk  # not yet counted as received: no reader sees it
        with self._ready:
            piece.received += len(chunk)
            if piece.start + piece.received >= self._wanted:
                self._ready.notify_all()

    def ended(self) -> None:
        with self._ready:
            self._ready.notify_all()

    # -- the reader's side ----------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Every byte has arrived and is held."""
        return not self.released and all(
            p.buffer is not None and p.received == p.length for p in self.pieces
        )

    def view(self, offset: int, length: int) -> memoryview | None:
        """Bytes ``[offset, offset + length)`` (waiting for them to arrive), or None once they
        are dropped. A failed request for them raises its error."""
        end = offset + length
        first = max(0, bisect_right(self._starts, offset) - 1)
        covering = self.pieces[first : bisect_right(self._starts, max(offset, end - 1))]
        if self.released or any(p.released for p in covering):
            return None
        if any(p.future is None for p in covering):
            self.request_more()  # the window had no room yet: the reader is here now
            if any(p.future is None for p in covering):
                return None  # still none: the caller reads these bytes by range

        def arrived() -> bool:
            return all(p.start + p.received >= min(end, p.end) for p in covering)

        if not arrived():
            self._wait(arrived, end)
        buffers = [p.buffer for p in covering]
        if self.released or any(b is None for b in buffers):
            return None
        if len(covering) == 1:
            start = offset - covering[0].start
            return buffers[0][start : start + length]  # type: ignore[index]
        parts = [
            b[max(0, offset - p.start) : min(p.length, end - p.start)]  # type: ignore[index]
            for p, b in zip(covering, buffers, strict=True)
        ]
        return memoryview(b"".join(parts))  # a block across two pieces: copied once

    def passed(self, offset: int) -> None:
        """The reader has moved on to ``offset``: the pieces that end before it are dropped, and
        the window asks for more."""
        done = max(0, bisect_right(self._starts, offset) - 1)
        if done <= self._passed:
            return  # nothing new: the usual case, once per block read
        for piece in self.pieces[self._passed : done]:
            self._drop(piece)
        self._passed = done
        self.request_more()

    def wait_response(self) -> bool:
        """Wait for a first response (``pin`` then holds the version it brought); False if
        none was asked for."""
        if self.pieces[0].future is None:
            self.request_more()
            if self.pieces[0].future is None:
                return False
        self._wait(lambda: self._responded, 0)
        return True

    def _wait(self, arrived: Callable[[], bool], end: int) -> None:
        with self._ready:
            self._wanted = max(self._wanted, end)
            while not arrived() and not self.released and self._failure(end) is None:
                self._ready.wait()
            failure = None if arrived() or self.released else self._failure(end)
        if failure is not None:
            raise failure

    def _failure(self, end: int) -> BaseException | None:
        """The error of a request that failed before bringing the bytes before ``end`` (any,
        when ``end`` is 0). A dropped piece, or one whose bytes had all arrived when its request
        ended (cancelled while finishing), is no failure."""
        for piece in self.pieces:
            if piece.error is None or piece.released or piece.received == piece.length:
                continue
            if end == 0 or piece.start < end:
                return piece.error
        return None

    def _drop(self, piece: Piece) -> None:
        with self._ready:
            if piece.released:
                return  # dropped already (the reader passed it, then the file was released)
            piece.released, piece.buffer = True, None
            self._ready.notify_all()
        if piece.future is not None and not piece.future.done():
            piece.future.cancel()
        if piece.counted:
            self.on_drop(piece)

    def release(self) -> None:
        """The scan is done with this file: drop its bytes (and the requests still in flight;
        views handed out keep the bytes they show)."""
        with self._ready:
            self.released = True
        for piece in self.pieces:
            self._drop(piece)


class ScanAhead:
    """The whole-file read-ahead of one dataset in one process: at most one scan at a time.

    ``start(sizes, make)``: a scan of ``len(sizes)`` files in this order; ``make(i)`` gives file
    ``i``'s (not yet submitted) ``WholeFile``, or None for a file read otherwise (a local one).
    ``reach(i)``: the reader moves on to file ``i``; the files before it are released. Pieces are
    asked for in file order while those asked for and not yet dropped fit the window (and always
    the next one when none is held): at ``start``, when the reader reaches a file, and when it
    passes a piece.
    """

    def __init__(self, fetcher: Fetcher, window: int) -> None:
        self.fetcher = fetcher
        self.window = window
        self.held = 0  # bytes of the pieces asked for and not yet dropped
        self._lock = ForkSafeLock()
        self._sizes: list[int] = []
        self._make: Callable[[int], WholeFile | None] | None = None
        self._files: dict[int, WholeFile] = {}  # made, not yet released
        self._next = (0, 0)  # the next piece to ask for: (file, piece)
        self._position = 0  # the file being read

    def fits(self, sizes: Sequence[int | None]) -> bool:
        """Whether files of these (known) sizes are fetched whole: two of their pieces fit the
        window (the one being read and the next), so the window can slide."""
        piece = self.fetcher.options.request_bytes
        return self.window > 0 and all(
            s is not None and 2 * min(s, piece) <= self.window for s in sizes
        )

    def start(self, sizes: Sequence[int], make: Callable[[int], WholeFile | None]) -> None:
        self.stop()
        with self._lock:
            self._sizes, self._make = list(sizes), make
            self._next, self._position, self.held = (0, 0), 0, 0
        self._top_up()  # the first requests leave before the reader asks for its first file

    def reach(self, i: int) -> WholeFile | None:
        """File ``i``'s whole-file request (None if it is read otherwise)."""
        with self._lock:
            self._position = i
            done = [self._files.pop(k) for k in [k for k in self._files if k < i]]
        for whole in done:
            whole.release()
        self._top_up()
        with self._lock:
            return self._files.get(i)

    def _top_up(self) -> None:
        while True:
            with self._lock:
                make, (k, j) = self._make, self._next
                if make is None or k >= len(self._sizes):
                    return
                whole = self._files.get(k)
            if whole is None:
                whole = make(k) if k >= self._position else None  # outside the lock
                with self._lock:
                    if self._make is not make or self._next != (k, j):
                        return  # the scan stopped, or another thread moved on meanwhile
                    if whole is None:
                        self._next = (k + 1, 0)
                        continue
                    whole.request_more, whole.on_drop = self._top_up, self._dropped
                    self._files[k] = whole
            with self._lock:
                if self._make is not make or self._next != (k, j):
                    return
                piece = whole.pieces[j]
                if self.held and self.held + piece.length > self.window:
                    return
                self.held += piece.length
                piece.counted = True
                last = j + 1 == len(whole.pieces)
                self._next = (k + 1, 0) if last else (k, j + 1)
            whole.submit(piece, self.fetcher)

    def _dropped(self, piece: Piece) -> None:
        with self._lock:
            self.held -= piece.length

    def stop(self) -> None:
        """End the scan: release every file it fetched (requests in flight are cancelled)."""
        with self._lock:
            files, self._files, self._make = list(self._files.values()), {}, None
        for whole in files:
            whole.release()
