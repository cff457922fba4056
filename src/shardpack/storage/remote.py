"""What the remote files of one open dataset share in one process: the fetcher (concurrency,
timeouts, retries), the memory and disk caches, the read-ahead, and the counters.

A block is looked for, in order: in the memory cache, in the read-ahead, in the disk cache
(waiting for the process that claimed its fetch, if one did), and only then fetched alone:
one small request. Blocks enter the caches only after their checksum matched the block index.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import msgspec

from ..format.layout import checksum
from .disk_cache import DiskCache
from .fetch import Fetcher
from .locks import ForkSafeLock
from .readahead import ReadAhead
from .remote_options import RemoteOptions
from .scan_ahead import ScanAhead

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from .ranges import BlockCache, RangeSource


class RemoteStats(msgspec.Struct, frozen=True):
    """Counters of one dataset's remote reads in this process."""

    requests: int  # range requests answered
    bytes_fetched: int
    retries: int
    memory_hits: int  # blocks served from the process's memory cache
    readahead_hits: int  # blocks the read-ahead had fetched before they were asked for
    disk_hits: int  # blocks (and footers) served from the shared disk cache
    disk_writes: int
    disk_discarded: int  # disk entries that failed their checksum (and were removed)
    waited: int  # blocks another process (or the read-ahead) was fetching: waited for, not fetched
    direct: int  # blocks fetched on their own, when asked for


class RemoteReader:
    """The shared state behind every ``RangeSource`` of one dataset (see the module docstring)."""

    def __init__(self, options: RemoteOptions, memory: BlockCache | None = None) -> None:
        self.options = options
        self.fetcher = Fetcher(options)
        if memory is None and options.memory_cache_bytes > 0:
            from .ranges import BlockCache

            memory = BlockCache(options.memory_cache_bytes)
        self.memory = memory
        folder = options.disk_cache_dir
        self.disk = (
            DiskCache(folder, options.cache_bytes, claim_timeout_s=2 * options.timeout_s)
            if folder
            else None
        )
        self.readahead = ReadAhead(self)
        self.scan_ahead = ScanAhead(self.fetcher, options.readahead_bytes)
        self._pid = os.getpid()
        self._lock = ForkSafeLock()
        self.readahead_hits = self.waited = self.direct = 0

    def check_process(self) -> None:
        """After a fork (DataLoader workers), start afresh: threads and locks stay behind."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self.readahead = ReadAhead(self)
            self.scan_ahead = ScanAhead(self.fetcher, self.options.readahead_bytes)
            if self.memory is not None:
                self.memory = type(self.memory)(self.memory.max_bytes)

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def read_block(
        self, source: RangeSource, offset: int, length: int, expected: int | None
    ) -> bytes | memoryview:
        """Bytes ``[offset, offset + length)`` of ``source``: a block when ``expected`` (its
        checksum) is given, else any range (never cached)."""
        self.check_process()
        key = source.block_key(offset, length)
        memory = self.memory
        if memory is not None and expected is not None:
            cached = memory.get(key)
            if cached is not None:
                return cached
        data: bytes | memoryview | None = self.readahead.take(source, offset, length)
        if data is not None:
            self.count("readahead_hits")
        elif expected is not None and self.disk is not None:
            data = self._from_disk(source, offset, length, expected)
            unit = source.unit_key(offset)
            if data is None and self.disk.claimed_elsewhere(unit):
                data = self.disk.wait(
                    unit, lambda: self._from_disk(source, offset, length, expected)
                )
                if data is not None:
                    self.count("waited")
        if data is None:
            data = self.fetch_block(source, offset, length, expected)
            self.count("direct")
        if memory is not None and expected is not None:
            memory.put(key, bytes(data))
        return data

    def _from_disk(
        self, source: RangeSource, offset: int, length: int, expected: int
    ) -> bytes | None:
        """The block from its unit's range entry, or from an entry of its own."""
        disk = self.disk
        if disk is None:
            return None
        data = disk.read_range(source.unit_key(offset), offset, length, expected)
        return data if data is not None else disk.get(source.block_key(offset, length), expected)

    def fetch_block(
        self, source: RangeSource, offset: int, length: int, expected: int | None
    ) -> bytes:
        data = source.fetch(offset, offset + length)
        if expected is not None and self.disk is not None and checksum(data) == expected:
            self.disk.put(source.block_key(offset, length), data)
        return data

    def read_ahead(
        self, plan: Iterator[tuple[RangeSource, int]], *, sequential: bool = False
    ) -> None:
        """Fetch these blocks (source, block number), in this order, ahead of their reads.
        ``sequential``: a scan in file order (requests may be larger, see ``ReadAhead``)."""
        self.check_process()
        self.readahead.start(plan, sequential=sequential)

    def scans_whole(self, urls: Sequence[str], sizes: Sequence[int | None]) -> bool:
        """Whether a full scan of these remote files fetches each of them whole, in pieces
        streamed ahead of the reader (``scan_ahead``): no disk cache, S3, and two pieces fit
        the window."""
        self.check_process()
        return (
            self.disk is None
            and self.scan_ahead.fits(sizes)
            and all(self.fetcher.filesystem(url)[2] for url in urls)
        )

    def stop_read_ahead(self) -> None:
        self.readahead.stop()

    def stats(self) -> RemoteStats:
        fetched, disk, memory = self.fetcher.stats, self.disk, self.memory
        return RemoteStats(
            requests=fetched.requests,
            bytes_fetched=fetched.bytes,
            retries=fetched.retries,
            memory_hits=memory.hits if memory is not None else 0,
            readahead_hits=self.readahead_hits,
            disk_hits=disk.hits if disk is not None else 0,
            disk_writes=disk.writes if disk is not None else 0,
            disk_discarded=disk.discarded if disk is not None else 0,
            waited=self.waited,
            direct=self.direct,
        )

    def close(self) -> None:
        self.scan_ahead.stop()
        self.readahead.stop(wait_s=self.options.timeout_s)  # the disk cache is left complete
