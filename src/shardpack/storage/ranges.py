"""Byte-range sources of remote packed files: one round trip for a file's header and footer, then
block ranges through the dataset's caches and read-ahead (``remote.RemoteReader``); a file that a
full scan streams whole (``scan_ahead``) is read from those bytes as they arrive, and opened from
them when all have arrived before the reader gets there."""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from ..errors import FormatError, ManifestError, ObjectChangedError, OptionError, RemoteError
from ..format.layout import HEADER_SIZE, TRAILER_SIZE, Trailer, decode_index
from .locks import ForkSafeLock

if TYPE_CHECKING:  # the remote stack (asyncio, read-ahead, disk cache) loads with its first URL
    from .remote import RemoteReader
    from .scan_ahead import WholeFile

TAIL_PREFETCH_BYTES = 256 * 1024  # trailer + footer of most files in one request


class BlockCache:
    """A process-local LRU of fetched byte ranges, bounded in bytes; shared by many sources.

    It holds blocks as stored (compressed), so it is several times denser than the reader's
    decoded-block cache, and it spares repeated range requests across epochs.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise OptionError(f"cache size must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._lock = ForkSafeLock()  # data loaders may read from threads

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: Any, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return  # never evict everything for one oversized block
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self.bytes += len(data)
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= len(old)

    def __getstate__(self) -> dict[str, Any]:
        # a copy in another process starts empty: caches are per process by design
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_bytes"])  # type: ignore[misc]


class RangeSource:
    """Byte ranges of one remote packed file, pinned to the object version seen at open.

    A drop-in for the reader's ``LocalSource`` (``path``, ``size``, ``read``, ``close``).
    Opening costs one round trip: the header and the footer side by side, the footer found
    from ``footer_offset`` (the manifest's) or a ``tail_bytes`` guess; none at all when the
    disk cache holds the footer of this file (by its manifest ``file_hash``); none of its own
    when ``whole`` (a full scan's request for the whole file) is given: the file is opened from
    those bytes. Block reads go through the dataset's ``RemoteReader``: caches, read-ahead, then
    one request per block; while a scan holds the file whole (``hold``), from its bytes.
    """

    def __init__(
        self,
        url: str,
        *,
        size: int | None = None,
        storage_options: dict[str, Any] | None = None,
        cache: BlockCache | None = None,
        tail_bytes: int = TAIL_PREFETCH_BYTES,
        reader: RemoteReader | None = None,
        footer_offset: int | None = None,
        file_hash: str | None = None,
        whole: WholeFile | None = None,
    ) -> None:
        from .fetch import FetchStats, ObjectPin
        from .remote import RemoteReader
        from .remote_options import RemoteOptions

        if reader is None:
            options = RemoteOptions(storage_options=dict(storage_options or {}))
            reader = RemoteReader(options, memory=cache)
        self.path = url
        self.reader = reader
        self.counts = FetchStats()  # this file's requests
        self.pin = ObjectPin(url)
        self._footer_key: str | None = None
        self._head = self._tail = b""
        self._tail_start = 0
        self.offsets = np.zeros(0, np.int64)
        self.sizes = np.zeros(0, np.int64)
        self.checksums = np.zeros(0, np.uint64)
        self._lookup = memoryview(b"").cast("q")
        self._whole: WholeFile | None = None
        if whole is not None and whole.url == url:
            self.size = self._open_whole(whole, footer_offset, tail_bytes)
        else:
            self.size = self._open(size, footer_offset, file_hash, tail_bytes)

    @property
    def requests(self) -> int:
        return self.counts.requests

    @property
    def bytes_fetched(self) -> int:
        return self.counts.bytes

    # -- opening -------------------------------------------------------------------------------

    def _open(
        self, size: int | None, footer_offset: int | None, file_hash: str | None, tail_bytes: int
    ) -> int:
        disk = self.reader.disk
        if disk is not None and file_hash and size is not None:
            self._footer_key = f"footer\0{self.path}\0{file_hash}\0{size}"
            cached = disk.get(self._footer_key)
            if cached is not None and self._restore(cached):
                return size
        fetcher = self.reader.fetcher
        if not fetcher.filesystem(self.path)[2]:
            fetcher.describe(self.path, self.pin)  # other stores: pin (and size) by a listing
            size = size if size is not None else self.pin.size
        if size is None:  # S3: a suffix range tells the size too
            head, tail = self._fetch_many([(0, HEADER_SIZE), (-tail_bytes, 0)])
            size = self.pin.size if self.pin.size is not None else len(tail)
        else:
            start = _tail_start(size, footer_offset, tail_bytes)
            head, tail = self._fetch_many([(0, min(HEADER_SIZE, size)), (start, size)])
        trailer = self._read_footer(head, tail, size, footer_offset, self.fetch)
        if trailer is not None and self._index(trailer) and self._footer_key and disk is not None:
            entry = [self.pin.etag, self.pin.version_id, self._tail_start, head, self._tail]
            disk.put(self._footer_key, msgspec.msgpack.encode(entry))
        return size

    def _open_whole(self, whole: WholeFile, footer_offset: int | None, tail_bytes: int) -> int:
        """Open from a scan's request for the whole file (pinned by its response): from its
        bytes when they have all arrived, else by a request for the footer alongside it, so that
        reading starts with the file's first blocks instead of its last."""
        self.pin, self.counts = whole.pin, whole.counts
        size = whole.size

        def arrived(start: int, end: int) -> bytes:
            view = whole.view(start, end - start)
            if view is None:
                raise RemoteError("the scan that fetched this file has ended", path=self.path)
            return bytes(view)

        # all here: the footer from those bytes; else asked for alongside, pinned as the stream
        # is (one version or an error)
        read = arrived if whole.complete else self.fetch
        tail_start = _tail_start(size, footer_offset, tail_bytes)
        tail = read(tail_start, size)
        head = arrived(0, min(HEADER_SIZE, size))
        trailer = self._read_footer(head, tail, size, footer_offset, read)
        if trailer is not None:
            self._index(trailer)
        self._whole = whole
        return size

    def _read_footer(
        self,
        head: bytes,
        tail: bytes,
        size: int,
        footer_offset: int | None,
        read: Callable[[int, int], bytes],
    ) -> Trailer | None:
        """Keep the header and the footer (``tail``: the file's last bytes, from a guess of
        where the footer starts, extended by ``read(start, end)`` if it starts before that);
        their trailer, or None if the file has none (the reader says why)."""
        tail_start = size - len(tail)
        trailer = _trailer(tail, size, self.path)
        if trailer is not None and trailer.index_offset < tail_start:
            tail = read(trailer.index_offset, tail_start) + tail  # a footer past the guess
            tail_start = trailer.index_offset
        self._check_footer_offset(trailer, footer_offset)
        self._head, self._tail, self._tail_start = head, tail, tail_start
        return trailer

    def _check_footer_offset(self, trailer: Trailer | None, footer_offset: int | None) -> None:
        if trailer and footer_offset is not None and trailer.index_offset != footer_offset:
            raise ManifestError(
                f"{self.path}: the manifest puts the footer at byte {footer_offset} but the "
                f"file's trailer puts it at {trailer.index_offset} (shard replaced?)"
            )

    def whole_request(self) -> WholeFile:
        """A request for this whole file, pinned to the version opened (``If-Match``)."""
        from .scan_ahead import WholeFile

        piece_bytes = self.reader.options.request_bytes
        return WholeFile(self.path, self.size, self.pin, self.counts, piece_bytes)

    def hold(self, whole: WholeFile) -> None:
        """Read this file from ``whole`` (a scan's request for all of it) until it is released.
        Its response must be of the version opened: else ``ObjectChangedError``."""
        if whole.size != self.size:
            raise RemoteError(f"whole read of {whole.size} bytes, not {self.size}", path=self.path)
        if whole.pin is not self.pin:  # asked for before this file was opened elsewhere
            if not whole.wait_response():
                return  # not asked for yet: read by ranges, pinned as opened
            self.pin.observe(whole.pin.etag, whole.pin.version_id, whole.pin.size)
        self._whole = whole

    def _restore(self, cached: bytes) -> bool:
        from .fetch import ObjectPin

        try:
            etag, version, tail_start, head, tail = msgspec.msgpack.decode(cached)
            self.pin = ObjectPin(self.path, etag, version)
            self._head, self._tail, self._tail_start = head, tail, int(tail_start)
            trailer = _trailer(tail, self._tail_start + len(tail), self.path)
            return trailer is not None and self._index(trailer)
        except (msgspec.DecodeError, ValueError, TypeError):
            return False

    def _index(self, trailer: Trailer) -> bool:
        """Read the block table from the footer bytes (offsets, sizes, checksums)."""
        start = trailer.index_offset - self._tail_start
        if start < 0:
            return False
        index = decode_index(self._tail[start : start + trailer.index_size])
        self.offsets = index["offset"].astype(np.int64)
        self.sizes = index["stored_size"].astype(np.int64)
        self.checksums = index["checksum"].astype(np.uint64)
        self._lookup = memoryview(self.offsets.tobytes()).cast("q")
        return True

    # -- reading -------------------------------------------------------------------------------

    def block_at(self, offset: int) -> int | None:
        """The number of the block starting at ``offset``, if one does."""
        i = bisect_left(self._lookup, offset)
        return i if i < len(self._lookup) and self._lookup[i] == offset else None

    def unit_blocks(self, block: int) -> range:
        """The blocks fetched together with ``block`` when whole units are fetched: those
        starting in the same ``request_bytes``-aligned stretch of the file."""
        unit = self.reader.options.request_bytes
        first = int(self.offsets[block]) // unit * unit
        return range(bisect_left(self._lookup, first), bisect_left(self._lookup, first + unit))

    def block_key(self, offset: int, length: int) -> str:
        return f"{self.path}\0{self.pin.token}\0{offset}\0{length}"

    def unit_key(self, offset: int) -> str:
        unit = self.reader.options.request_bytes
        return f"unit\0{self.path}\0{self.pin.token}\0{unit}\0{offset // unit}"

    def read(self, offset: int, length: int) -> bytes | memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FormatError(f"read of {length} bytes at {offset} is past the end", path=self.path)
        if offset >= self._tail_start:
            start = offset - self._tail_start
            return memoryview(self._tail)[start : start + length]
        if offset + length <= len(self._head):
            return memoryview(self._head)[offset : offset + length]
        whole = self._whole
        if whole is not None and not whole.released:
            whole.passed(offset)  # a scan reads in order: the pieces before this block are done
            view = whole.view(offset, length)  # waits for these bytes only
            if view is not None:  # the reader checks each block as usual
                self.reader.count("readahead_hits")
                return view
        block = self.block_at(offset)
        expected = None
        if block is not None and int(self.sizes[block]) == length:
            expected = int(self.checksums[block])
        return self.reader.read_block(self, offset, length, expected)

    def submit(self, start: int, end: int) -> Future[bytes]:
        return self.reader.fetcher.submit(self.path, start, end, self.pin, self.counts)

    def fetch(self, start: int, end: int) -> bytes:
        return self._fetch_many([(start, end)])[0]

    def _fetch_many(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        try:
            found = self.reader.fetcher.fetch_many(self.path, ranges, self.pin, self.counts)
        except ObjectChangedError:
            if self._footer_key is not None and self.reader.disk is not None:
                self.reader.disk.remove(self._footer_key)  # the next open asks the store again
            raise
        for (start, end), data in zip(ranges, found, strict=True):
            if start >= 0 and len(data) != end - start:
                raise RemoteError(
                    f"short read at byte {start}: got {len(data)} of {end - start} bytes "
                    "(object truncated?)",
                    path=self.path,
                )
        return found

    def close(self) -> None:
        self._tail = b""
        self._whole = None


def _tail_start(size: int, footer_offset: int | None, tail_bytes: int) -> int:
    """Where to start reading a file's last bytes to get its footer: at ``footer_offset`` (the
    manifest's) if known, else ``tail_bytes`` before the end; past the header, before the
    trailer."""
    start = footer_offset if footer_offset is not None else size - tail_bytes
    return min(max(HEADER_SIZE, start), max(HEADER_SIZE, size - TRAILER_SIZE))


def _trailer(tail: bytes, size: int, path: str) -> Trailer | None:
    """The trailer at the end of ``tail``, or None if it is not one (the reader reports why)."""
    try:
        return Trailer.decode(bytes(tail[-TRAILER_SIZE:]), size, path)
    except FormatError:
        return None


class BytesSource:
    """A whole file held in memory (used to check a downloaded shard without a local copy)."""

    def __init__(self, data: bytes, path: str) -> None:
        self.path = path
        self.size = len(data)
        self._view = memoryview(data)

    def read(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FormatError(f"read of {length} bytes at {offset} is past the end", path=self.path)
        return self._view[offset : offset + length]

    def close(self) -> None:
        self._view = memoryview(b"")
