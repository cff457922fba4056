"""Whole files fetched ahead of a full scan: each remote file the scan reads from end to end is
fetched in ONE request (header, blocks and footer), a few files ahead of the reader, never more
than ``readahead_bytes`` fetched (or in flight) and not yet read.

Reading a file by ranges costs a round trip for its header and footer and then its body in
``request_bytes`` pieces; a scan that will read every byte of it anyway asks for it once, as
"download, then read" does, but reading starts as soon as the first file has arrived and memory
stays bounded. A file that is open already (its version pinned) is fetched with its pin
(``If-Match``), so a replaced object is an ``ObjectChangedError``; a file not yet open is opened
from the fetched bytes and pinned by that response (``RangeSource``). Every block is still checked
against the block index as it is read, and the footer against the manifest entry.

Whole files are fetched only when each of them is at most half the window (one being read, the
next on its way), no disk cache is in use (the disk cache fetches units that every process of the
machine shares, see ``readahead``) and the store answers with ETags (S3). Otherwise a scan reads
block ranges through the read-ahead as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future

from ..errors import ManifestError, RemoteError
from .fetch import Fetcher, FetchStats, ObjectPin
from .locks import ForkSafeLock


class WholeFile:
    """One file's bytes, ``[0, size)``, asked for in one request; ``data`` once it has landed
    and until the scan has read the file (then None: reads go through the caches again)."""

    def __init__(self, url: str, size: int, pin: ObjectPin, counts: FetchStats) -> None:
        self.url = url
        self.size = size
        self.pin = pin
        self.counts = counts
        self.data: bytes | None = None
        self.future: Future[bytes] | None = None
        self.released = False

    def submit(self, fetcher: Fetcher) -> WholeFile:
        self.future = fetcher.submit(self.url, 0, self.size, self.pin, self.counts)
        return self

    def result(self) -> bytes:
        """The file's bytes (waiting for them): exactly ``size`` of an object of that size."""
        if self.data is not None:
            return self.data
        if self.future is None or self.released:
            raise RemoteError("the scan that fetched this file has ended", path=self.url)
        data = self.future.result()
        if self.pin.size is not None and self.pin.size != self.size:
            raise ManifestError(
                f"{self.url}: the object is {self.pin.size} bytes but the manifest says "
                f"{self.size} (shard replaced?)"
            )
        if len(data) != self.size:
            raise RemoteError(
                f"short read: got {len(data)} of {self.size} bytes (object truncated?)",
                path=self.url,
            )
        if not self.released:
            self.data = data
        return data

    def release(self) -> None:
        """The scan is done with this file: drop its bytes (or the request still in flight)."""
        self.released = True
        self.data = None
        if self.future is not None and not self.future.done():
            self.future.cancel()


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
