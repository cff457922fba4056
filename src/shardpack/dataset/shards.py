"""The packed files of an open dataset, opened on first use where the manifest already says what
they hold: opening a remote dataset of any number of shards reads only its manifest, and each
shard costs its one round trip (header and footer) when a record of it is first asked for."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..format.metadata import widest_dtypes
from ..packfile.reader import PackedFile, dtype_targets
from ..storage.locks import ForkSafeLock
from ..storage.urls import is_remote
from .identity import check_shard

if TYPE_CHECKING:
    from ..storage.remote import RemoteReader
    from .locate import PackedLocation
    from .manifest import Manifest

# (path, source or None) -> the opened file, with the dataset's reading options
FileOpener = Callable[[str, Any], PackedFile]

OPEN_THREADS = 32  # shards opened side by side when all are needed at once


class ShardSlots:
    """One slot per packed file: its path, its record count, the file once opened."""

    def __init__(
        self,
        paths: Sequence[str],
        counts: Sequence[int],
        openers: Sequence[Callable[[], PackedFile] | None],
        files: Sequence[PackedFile | None],
    ) -> None:
        self.paths = list(paths)
        self.counts = list(counts)
        self.files: list[PackedFile | None] = list(files)  # None until opened
        self._openers = list(openers)
        self._locks = [ForkSafeLock() for _ in self.files]

    @classmethod
    def of_files(cls, files: Sequence[PackedFile]) -> ShardSlots:
        return cls([f.path for f in files], [len(f) for f in files], [None] * len(files), files)

    def __len__(self) -> int:
        return len(self.files)

    def open(self, i: int) -> PackedFile:
        """File ``i``, opened now if it was not (once, whichever thread asks first)."""
        packed = self.files[i]
        if packed is not None:
            return packed
        with self._locks[i]:
            packed = self.files[i]
            if packed is None:
                opener = self._openers[i]
                if opener is None:
                    raise ValueError(f"{self.paths[i]} is closed")
                packed = self.files[i] = opener()
        return packed

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
    openers: list[Callable[[], PackedFile] | None] = []
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
    return ShardSlots(names, counts, openers, files), manifests


def _opener(
    where: PackedLocation,
    reader: RemoteReader | None,
    targets: dict[str, Any],
    open_file: FileOpener,
    number: int = 0,
    listed: Sequence[tuple[str, str]] = (),
) -> Callable[[], PackedFile]:
    """Opens the packed file at ``where`` and checks it against its manifest entry (entry
    ``number`` of ``listed``): content hash, size, record count (``identity.check_shard``)."""

    def open_checked() -> PackedFile:
        packed = open_file(where.path, where.source(reader))
        try:
            check_shard(
                packed,
                entry_number=number,
                size=where.size,
                records=where.records,
                content_hash=where.content_hash,
                listed=listed,
            )
        except BaseException:
            packed.close()
            raise
        if targets:
            packed.widen_arrays(targets)
        return packed

    return open_checked
