"""The packed files of an open dataset, opened on first use where the manifest already says what
they hold: opening a remote dataset of any number of shards reads only its manifest, and each
shard costs its one round trip (header and footer) when a record of it is first asked for. A full
scan (``ShardSlots.scan``) fetches remote shards ahead: each whole, streamed in pieces, where it
can (``storage/scan_ahead.py``), else block by block."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import (
    FormatError,
    ManifestError,
    ObjectChangedError,
    RemoteError,
    ShardpackError,
)
from ..format.metadata import widest_dtypes
from ..packfile.reader import PackedFile, dtype_targets
from ..storage.locks import ForkSafeLock
from ..storage.urls import is_remote
from .identity import check_shard

if TYPE_CHECKING:
    from ..storage.ranges import RangeSource
    from ..storage.remote import RemoteReader
    from ..storage.scan_ahead import WholeFile
    from .locate import PackedLocation
    from .manifest import Manifest

# (path, source or None) -> the opened file, with the dataset's reading options
FileOpener = Callable[[str, Any], PackedFile]
# opens a slot's file; given a scan's whole-file request, from those bytes
SlotOpener = Callable[..., PackedFile]

OPEN_THREADS = 32  # shards opened side by side when all are needed at once
OPEN_AHEAD = 4  # shards opened ahead of a remote scan that reads block by block


class ShardSlots:
    """One slot per packed file: its path, its record count, the file once opened."""

    def __init__(
        self,
        paths: Sequence[str],
        counts: Sequence[int],
        openers: Sequence[SlotOpener | None],
        files: Sequence[PackedFile | None],
        sizes: Sequence[int | None] = (),
    ) -> None:
        self.paths = list(paths)
        self.counts = list(counts)
        self.files: list[PackedFile | None] = list(files)  # None until opened
        self._openers = list(openers)
        self._sizes = list(sizes) or [None] * len(self.files)  # in bytes, from the manifest
        self._locks = [ForkSafeLock() for _ in self.files]

    @classmethod
    def of_files(cls, files: Sequence[PackedFile]) -> ShardSlots:
        return cls([f.path for f in files], [len(f) for f in files], [None] * len(files), files)

    def __len__(self) -> int:
        return len(self.files)

    def open(self, i: int, whole: WholeFile | None = None) -> PackedFile:
        """File ``i``, opened now if it was not (once, whichever thread asks first). ``whole``:
        a scan fetched the whole file: opened from those bytes, or, if open already, read
        from them until the scan releases them."""
        packed = self.files[i]
        if packed is None:
            with self._locks[i]:
                packed = self.files[i]
                if packed is None:
                    opener = self._openers[i]
                    if opener is None:
                        raise ValueError(f"{self.paths[i]} is closed")
                    packed = self.files[i] = opener() if whole is None else opener(whole)
                    return packed
        if whole is not None:
            from ..storage.ranges import RangeSource

            if isinstance(packed.source, RangeSource):
                packed.source.hold(whole)
        return packed

    def size_of(self, i: int) -> int | None:
        packed = self.files[i]
        return packed.size if packed is not None else self._sizes[i]

    def scan(self, reader: RemoteReader | None) -> Generator[PackedFile, None, None]:
        """Every file in order, for a full scan. Remote files are fetched ahead: each in one
        request when ``reader.scans_whole`` them (then their blocks are read from those
        bytes), else block by block through the read-ahead, the next files opened meanwhile."""
        remote = [i for i in range(len(self)) if reader is not None and is_remote(self.paths[i])]
        if reader is None or not remote:
            yield from (self.open(i) for i in range(len(self)))
        elif reader.scans_whole([self.paths[i] for i in remote], [self.size_of(i) for i in remote]):
            ahead, wanted = reader.scan_ahead, set(remote)
            sizes = [(self.size_of(i) or 0) if i in wanted else 0 for i in range(len(self))]
            piece_bytes = reader.options.request_bytes
            ahead.start(
                sizes, lambda i: self._whole_request(i, piece_bytes) if i in wanted else None
            )
            try:
                for i in range(len(self)):
                    yield self.open(i, ahead.reach(i))
            finally:
                ahead.stop()
        else:
            reader.read_ahead(self._block_plan(), sequential=True)
            try:
                yield from (self.open(i) for i in range(len(self)))
            finally:
                reader.stop_read_ahead()

    def _whole_request(self, i: int, piece_bytes: int) -> WholeFile | None:
        from ..storage.fetch import FetchStats, ObjectPin
        from ..storage.ranges import RangeSource
        from ..storage.scan_ahead import WholeFile

        packed, size = self.files[i], self._sizes[i]
        if packed is not None:  # pinned already: the request carries its If-Match
            source = packed.source
            return source.whole_request() if isinstance(source, RangeSource) else None
        if size is None:
            return None
        return WholeFile(self.paths[i], size, ObjectPin(self.paths[i]), FetchStats(), piece_bytes)

    def _block_plan(self) -> Iterator[tuple[RangeSource, int]]:
        """Every block of the remote files in file order: the plan of a scan read by ranges."""
        from ..storage.ranges import RangeSource

        for f in range(len(self)):
            for ahead in range(f + 1, min(f + 1 + OPEN_AHEAD, len(self))):
                self.open_soon(ahead)  # their footers arrive while this one is read
            packed = self.open(f)
            if isinstance(packed.source, RangeSource):
                yield from ((packed.source, b) for b in range(packed.block_count))

    def open_soon(self, i: int) -> None:
        """Start opening file ``i`` in the background (its errors are raised to whoever opens it
        for reading)."""
        if self.files[i] is None and self._openers[i] is not None:
            threading.Thread(target=self._try_open, args=(i,), daemon=True).start()

    def _try_open(self, i: int) -> None:
        with contextlib.suppress(Exception):
            self.open(i)

    def all(self) -> list[PackedFile]:
        """Every file, the unopened ones opened side by side (one round trip each)."""
        missing = [i for i, f in enumerate(self.files) if f is None]
        if len(missing) > 1:
            with ThreadPoolExecutor(min(OPEN_THREADS, len(missing))) as pool:
                list(pool.map(self.open, missing))  # the first error is raised here
        return [self.open(i) for i in range(len(self.files))]

    def opened(self) -> list[PackedFile]:
        return [f for f in self.files if f is not None]

    def close(self) -> None:
        for i, packed in enumerate(self.files):
            if packed is not None:
                packed.close()
            self._openers[i] = None


def open_shards(
    paths: Sequence[str | os.PathLike[str]],
    storage_options: dict[str, Any] | None,
    reader: RemoteReader | None,
    open_file: FileOpener,
) -> tuple[ShardSlots, list[Manifest]]:
    """The packed files that ``paths`` stand for, and the manifests among them. Local files and
    files without a manifest entry are opened now; remote shards of a manifest on first use."""
    from .locate import locate

    manifests: list[Manifest] = []
    names: list[str] = []
    counts: list[int] = []
    sizes: list[int | None] = []
    openers: list[SlotOpener | None] = []
    files: list[PackedFile | None] = []
    try:
        for path in paths:
            located = locate(path, storage_options, reader)
            targets: dict[str, Any] = {}
            if located.manifest is not None:
                manifests.append(located.manifest)
                targets = dtype_targets(widest_dtypes(located.manifest.schema.arrays))
            listed = (
                [(e.file, e.content_hash) for e in located.manifest.shards]
                if located.manifest is not None
                else []
            )
            for number, where in enumerate(located.locations):
                opener = _opener(where, reader, targets, open_file, number, listed)
                names.append(where.path)
                sizes.append(where.size)
                if where.records is not None and is_remote(where.path):
                    counts.append(where.records)  # opened on first use
                    openers.append(opener)
                    files.append(None)
                else:
                    packed = opener()
                    files.append(packed)
                    counts.append(len(packed))
                    openers.append(None)
    except BaseException:
        for f in files:
            if f is not None:
                f.close()
        raise
    return ShardSlots(names, counts, openers, files, sizes), manifests


def _opener(
    where: PackedLocation,
    reader: RemoteReader | None,
    targets: dict[str, Any],
    open_file: FileOpener,
    number: int = 0,
    listed: Sequence[tuple[str, str]] = (),
) -> SlotOpener:
    """Opens the packed file at ``where`` (from a scan's whole-file request if given one) and
    checks it against its manifest entry (entry ``number`` of ``listed``): content hash, size,
    record count (``identity.check_shard``)."""

    def open_checked(whole: WholeFile | None = None) -> PackedFile:
        try:
            source = where.source(reader, whole)
        except (FormatError, RemoteError) as exc:
            if not isinstance(exc, ObjectChangedError):  # a short read, a range past its end
                _check_object_size(where, number, reader, None)
            raise
        try:
            _check_object_size(where, number, reader, source)
        except BaseException:
            if source is not None:
                source.close()
            raise
        packed = open_file(where.path, source)
        try:
            check_shard(packed, where, entry_number=number, listed=listed)
        except BaseException:
            packed.close()
            raise
        if targets:
            packed.widen_arrays(targets)
        return packed

    return open_checked


def _check_object_size(
    where: PackedLocation, number: int, reader: RemoteReader | None, source: Any
) -> None:
    """ManifestError when the remote object at ``where`` is not the size manifest entry
    ``number`` lists (a shard replaced or swapped since the manifest was written), checked
    before its bytes are parsed: the size comes with the response to the open's header and
    footer request (its Content-Range total). ``source`` None: the open failed before it had a
    source (a short read, a range past the end): the size is asked for once (a 1-byte suffix
    range) to tell a replaced shard from a store that failed; if that fails too, nothing is
    raised here (the open's own error is)."""
    expected = where.size
    if expected is None or not is_remote(where.path):
        return
    pin = getattr(source, "pin", None)
    actual = getattr(pin, "size", None)
    if source is None and reader is not None:
        from ..storage.fetch import ObjectPin

        probe = ObjectPin(where.path)
        try:
            reader.fetcher.fetch(where.path, -1, None, probe)
        except (OSError, ShardpackError):
            return
        actual = probe.size
    if isinstance(actual, int) and actual != expected:
        raise ManifestError(
            f"{where.path}: the object is {actual} bytes but manifest entry {number} says "
            f"{expected} (shard replaced?)"
        )
