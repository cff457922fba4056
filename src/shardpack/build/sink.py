"""Writing one packed file from encoded units, in order: a shard of a dataset, or a whole single
file output. The driver writes through it for local packs, a Dask task for its own shard: the
bytes are the same either way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..dataset.manifest import ShardEntry
from ..format.metadata import FileMetadata, Provenance, SourceSlice
from ..packfile.writer import PackedFileWriter
from ..storage.folder import Storage
from ..storage.urls import is_remote, url_to_fs
from .collector import MetadataCollector
from .options import EncodeOptions
from .units import EncodedUnit

# A single file is in no manifest, and its name need only be one the OS accepts (a space, '+',
# a leading dot): its entry, which only carries its size and hashes, names it by this stand-in
# instead of meeting the shard-name rule of a dataset folder (docs/SHARDING.md, "Safe paths").
SINGLE_FILE_ENTRY = "output.packed"


@dataclass
class ShardResult:
    """What writing one packed file produced: its manifest entry and its footer metadata."""

    index: int
    entry: ShardEntry
    metadata: FileMetadata
    reused: bool = False
    workers: set[str] = field(default_factory=set)  # who encoded its units (not in the file)


@contextmanager
def staged_output(output: str, storage_options: dict[str, Any] | None) -> Iterator[str]:
    """A local path to write the single packed file ``output`` to; a URL is uploaded once the
    file is complete (the writer itself renames a local file into place)."""
    if not is_remote(output):
        yield output.removeprefix("file://")
        return
    fs, fs_path = url_to_fs(output, storage_options)
    with tempfile.TemporaryDirectory(prefix="shardpack-") as folder:
        local = os.path.join(folder, "output.packed")
        yield local
        if os.path.exists(local):
            fs.put_file(local, fs_path)


class ShardSink:
    """Units in order -> one packed file, its metadata and its manifest entry.

    ``storage``/``name`` place a shard in a dataset folder; ``output`` names a single file.
    ``check(path)`` may examine the complete file before it reaches its name (``--validate``).
    """

    def __init__(
        self,
        options: EncodeOptions,
        *,
        index: int = 0,
        storage: Storage | None = None,
        name: str | None = None,
        output: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.index, self.options = index, options
        self.is_shard = storage is not None and name is not None
        self.name = name or os.path.basename(output or "")
        self._stack = ExitStack()
        if storage is not None and name is not None:
            self.local = self._stack.enter_context(storage.staging(name))
        else:
            self.local = self._stack.enter_context(staged_output(output or "", storage_options))
        try:
            self.writer = PackedFileWriter(self.local)
        except BaseException:
            self._stack.close()
            raise
        self.collector = MetadataCollector()
        self.slices: list[SourceSlice] = []
        self.workers: set[str] = set()
        self.units = 0

    def add(self, encoded: EncodedUnit) -> None:
        for block in encoded.blocks:
            self.writer.write_block(block)
        self.collector.add(encoded)
        self.units += 1
        if encoded.worker:
            self.workers.add(encoded.worker)
        spec = encoded.spec
        if spec is None or encoded.end <= encoded.start:
            return
        last = self.slices[-1] if self.slices else None
        if last is not None and last.path == spec.source and last.end == encoded.start:
            self.slices[-1] = SourceSlice(
                last.path, last.start, encoded.end, lines=(last.lines or 0) + encoded.lines
            )
        else:
            self.slices.append(
                SourceSlice(spec.source, encoded.start, encoded.end, lines=encoded.lines)
            )

    @property
    def records(self) -> int:
        return self.writer.record_count

    def finish(
        self,
        *,
        inputs: list[SourceSlice] | None = None,
        provenance: Provenance | None = None,
        rejected: int = 0,
        check: Any = None,
    ) -> ShardResult:
        """Seal the file (its input slices, unless ``inputs`` are given) and put it in place."""
        try:
            metadata = self.collector.metadata(
                self.options,
                self.writer,
                inputs if inputs is not None else self.slices,
                rejected=rejected,
                provenance=provenance,
            )
            size = self.writer.finish(metadata, before_commit=check)
            digest = self.writer.file_hash
        except BaseException:
            self.abort()  # interrupted or refused while sealing: no temp file stays behind
            raise
        self._stack.close()  # uploads a remote file
        entry = ShardEntry(
            file=self.name if self.is_shard else SINGLE_FILE_ENTRY,
            records=metadata.record_count,
            blocks=metadata.block_count,
            size=size,
            file_hash=digest,
            content_hash=metadata.content_hash,
            inputs=metadata.inputs,
            footer_offset=self.writer.footer_offset,  # remote reads fetch the footer exactly
        )
        return ShardResult(self.index, entry, metadata, workers=self.workers)

    def abort(self) -> None:
        self.writer.abort()
        self._stack.__exit__(_Aborted, _Aborted(), None)


class _Aborted(Exception):
    """Thrown into a staging context so that nothing is uploaded."""
