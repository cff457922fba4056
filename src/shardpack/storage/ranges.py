"""Byte-range sources of remote packed files: one request for a file's tail (trailer and footer),
then block ranges, optionally through a bounded in-process cache of stored blocks."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from ..errors import FormatError, OptionError
from .urls import reason_of, url_to_fs

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
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()  # data loaders may read from threads

    def get(self, key: tuple[str, int, int]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: tuple[str, int, int], data: bytes) -> None:
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
    """Byte ranges of a remote file: one request for its tail, then one per block read.

    A drop-in for the reader's ``LocalSource`` (``path``, ``size``, ``read``, ``close``).
    ``size`` may be given (from a manifest) to spare the metadata request.
    """

    def __init__(
        self,
        url: str,
        *,
        size: int | None = None,
        storage_options: dict[str, Any] | None = None,
        cache: BlockCache | None = None,
        tail_bytes: int = TAIL_PREFETCH_BYTES,
    ) -> None:
        self.path = url
        self.requests = 0
        self.bytes_fetched = 0
        self._fs, self._fs_path = url_to_fs(url, storage_options)
        self._cache = cache
        try:
            self.size = int(size if size is not None else self._fs.size(self._fs_path))
        except (OSError, ValueError) as exc:
            raise FormatError(f"cannot open: {reason_of(exc)}", path=url) from exc
        self._tail_start = max(0, self.size - tail_bytes)
        self._tail = self._fetch(self._tail_start, self.size - self._tail_start)

    def _fetch(self, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        try:
            data = self._fs.cat_file(self._fs_path, start=offset, end=offset + length)
        except (OSError, ValueError) as exc:
            raise FormatError(
                f"cannot read bytes {offset}-{offset + length}: {reason_of(exc)}", path=self.path
            ) from exc
        self.requests += 1
        self.bytes_fetched += len(data)
        if len(data) != length:
            raise FormatError(
                f"short read at byte {offset}: got {len(data)} of {length} bytes (file changed?)",
                path=self.path,
            )
        return bytes(data)

    def read(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FormatError(f"read of {length} bytes at {offset} is past the end", path=self.path)
        if offset >= self._tail_start:
            start = offset - self._tail_start
            return memoryview(self._tail)[start : start + length]
        if self._cache is None:
            return memoryview(self._fetch(offset, length))
        key = (self.path, offset, length)
        data = self._cache.get(key)
        if data is None:
            data = self._fetch(offset, length)
            self._cache.put(key, data)
        return memoryview(data)

    def close(self) -> None:
        self._tail = b""


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
