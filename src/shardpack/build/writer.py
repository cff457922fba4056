"""``shardpack.Writer``: records made in Python (dicts of JSON values, numpy arrays and scalars,
CPU torch tensors) packed directly, with no JSON text in between, as a teacher's inference loop
makes them:

    with shardpack.Writer("kd.packed", compression="zstd") as writer:
        for batch in teacher(prompts):
            writer.write_many(batch)

The same options as ``pack`` (one ``PackOptions``), one file or a sharded folder
(``shard_size=`` / ``records_per_shard=``, ``append=True`` adds shards to a dataset). Records are
encoded in units of about ``unit_bytes``, in this thread or in worker processes, and written in
order. Nothing appears at the path before ``close()``: an exception inside ``with``, or a writer
dropped unclosed, leaves the path as it was.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import numpy as np

from ..dataset.manifest import MANIFEST_NAME, Manifest, shard_name
from ..errors import OptionError
from ..format.bounds import MAX_NESTING_DEPTH
from ..format.metadata import MergedSource
from ..ingest.rejects import RejectsWriter, default_rejects_path
from ..storage.output_lock import OutputLock
from .checks import check_dtypes_matched
from .collector import build_manifest
from .inputs import InputFile
from .ledger import Ledger
from .options import PackOptions
from .outputs import OutputLayout
from .planning import UnitSpec
from .provenance import build_provenance
from .results import PackResult
from .sink import ShardResult, ShardSink
from .workers import LocalExecutor

SOURCE = "<python>"  # how rejected records and errors name where a record came from


class _Written:
    """What a writer has under way: kept apart from the writer, so that a writer dropped
    without ``close`` can still be cleaned up after (by its finalizer)."""

    def __init__(self, executor: LocalExecutor, rejects: RejectsWriter | None) -> None:
        self.executor = executor
        self.rejects = rejects
        self.sink: ShardSink | None = None  # the shard (or file) being written
        self.single: ShardSink | None = None  # a single file, waiting for close()
        self.done: list[ShardResult] = []  # shards written in full (at their names)
        self.storage: Any = None
        self.open = True
        self.lock: OutputLock | None = None  # the output's lock, released last

    def abort(self) -> None:
        if not self.open:
            return
        self.open = False
        try:
            self._abort()
        finally:
            if self.lock is not None:
                self.lock.release()

    def _abort(self) -> None:
        self.executor.close(abort=True)
        for sink in (self.sink, self.single):
            if sink is not None:
                sink.abort()
        for done in self.done:
            if self.storage is not None:
                self.storage.remove(done.entry.file)
        if self.rejects is not None:
            self.rejects.abort()


class Writer:
    """Packs records written one by one (``write``) or in batches (``write_many``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        options: PackOptions | None = None,
        append: bool = False,
        **pack_options: Any,
    ) -> None:
        pack_options.setdefault("workers", 1)  # the caller's thread: a teacher loop has cores busy
        if options is None:
            options = PackOptions.create(**pack_options)
        elif pack_options:
            options = options.replace(**pack_options)
        self.options = options
        self.path = os.fspath(path)
        self.append = append
        self._started = time.perf_counter()
        self._storage_options = dict(options.storage_options or {}) or None
        self._previous: Manifest | None = None
        self._first_shard = 0
        # trust: one writer per output, held until close() or abort()
        self._lock = OutputLock(self.path, self._storage_options).acquire()
        try:
            self._open_output(append)
        except BaseException:
            self._lock.release()
            raise
        self._w.lock = self._lock
        # a writer dropped without close() removes what it wrote (never a partial output)
        self._finalizer = weakref.finalize(self, self._w.abort)

    def _open_output(self, append: bool) -> None:
        options = self.options
        if append:
            self._open_for_append()
        else:
            self._layout = OutputLayout(self.path, options, [])
        self._encode = options.encode_options()
        self._executor = LocalExecutor(options.worker_count(), self._storage_options)
        self._executor.start(self._encode, fork=False)
        rejects_path = None
        if options.on_error == "skip":
            rejects_path = options.rejects or default_rejects_path(self.path)
        self._rejects = RejectsWriter(rejects_path, self._storage_options) if rejects_path else None
        self.rejects_path = rejects_path
        self._ledger = Ledger([InputFile(SOURCE, SOURCE, False, None, "")], self._rejects)
        self._w = _Written(self._executor, self._rejects)
        self._w.storage = self._layout.storage
        self._pending: list[Any] = []
        self._pending_bytes = 0
        self._written = 0  # records handed over so far (their numbers in messages)
        self._units = 0
        self._shard = self._first_shard
        self._shard_records = 0
        self._closed = False

    # -- writing -------------------------------------------------------------------------------

    def write(self, record: Any) -> None:
        """Add one record (stored when its unit is full; all of them by ``close``)."""
        if self._closed:
            raise OptionError("write to a closed Writer")
        self._pending.append(record)
        self._pending_bytes += estimate_bytes(record)
        per_shard = self.options.records_per_shard
        if self._pending_bytes >= self.options.unit_bytes or (
            per_shard is not None and self._shard_records + len(self._pending) >= per_shard
        ):
            self._flush()

    def write_many(self, records: Iterable[Any]) -> None:
        """Add records in order."""
        for record in records:
            self.write(record)

    def _flush(self) -> None:
        if not self._pending:
            return
        spec = UnitSpec(
            self._units, 0, SOURCE, SOURCE, 0, 0, 0, True,
            first_line=self._written + 1, shard=self._shard, records=self._pending,
        )  # fmt: skip
        self._written += len(self._pending)
        self._shard_records += len(self._pending)
        self._units += 1
        self._pending, self._pending_bytes = [], 0
        if self.options.records_per_shard and self._shard_records >= self.options.records_per_shard:
            self._shard, self._shard_records = self._shard + 1, 0
        for encoded in self._executor.push([spec]):
            self._store(encoded)

    def _store(self, encoded: Any) -> None:
        self._ledger.add(encoded)  # raises the first bad record under on_error="fail"
        shard = encoded.spec.shard
        if self._w.sink is not None and self._w.sink.index != shard:
            self._seal()
        if self._w.sink is None:
            self._w.sink = self._new_sink(shard)
        self._w.sink.add(encoded)
        size = self.options.shard_size
        if size is not None and self._w.sink.writer.stored_bytes >= size:
            self._seal()
            self._shard += 1  # the next unit starts the next shard

    def _new_sink(self, shard: int) -> ShardSink:
        storage = self._layout.storage
        if storage is not None:
            return ShardSink(self._encode, index=shard, storage=storage, name=shard_name(shard))
        return ShardSink(self._encode, output=self.path, storage_options=self._storage_options)

    def _seal(self) -> None:
        sink, self._w.sink = self._w.sink, None
        if sink is None:
            return
        if self._layout.storage is None:
            self._w.single = sink  # sealed by close(), with the provenance
            return
        if sink.records == 0:
            sink.abort()
            return
        self._w.done.append(sink.finish())

    # -- finishing -----------------------------------------------------------------------------

    def close(self) -> PackResult:
        """Store what is left and seal the output; returns what was packed."""
        if self._closed:
            raise OptionError("the Writer is closed already")
        try:
            self._flush()
            for encoded in self._executor.drain():
                self._store(encoded)
            self._ledger.check_not_empty(self.options.allow_empty)
            if self._w.sink is None and self._layout.storage is None and self._w.single is None:
                self._w.sink = self._new_sink(0)  # an empty file, as allow_empty asked
            self._seal()
            result = self._finish()
            if self._rejects is not None:
                self._rejects.commit()
        except BaseException:
            self.abort()
            raise
        self._executor.close()
        self._closed = True
        self._w.open = False
        self._finalizer.detach()
        self._lock.release()
        return result

    def _finish(self) -> PackResult:
        options = self.options
        provenance = build_provenance([], {}, [], options.recorded(), options.meta, None)
        if self._layout.storage is None:
            sink = self._w.single
            if sink is None:
                raise OptionError("nothing to write")
            collector = sink.collector  # every dtype matched: before the file gets its name
            check_dtypes_matched(
                options.dtypes, collector.lossy_fields, collector.arrays(), sink.records
            )
            single = sink.finish(provenance=provenance, rejected=self._ledger.rejected, inputs=[])
            self._w.single = None
            metadata = single.metadata
            return self._result(metadata.record_count, metadata.block_count, single.entry.size,
                                metadata.content_hash, metadata=metadata)  # fmt: skip
        results = list(self._w.done)
        if self._previous is not None:
            kept = [ShardResult(i, entry, _metadata_of(self._layout, entry.file), reused=True)
                    for i, entry in enumerate(self._previous.shards)]  # fmt: skip
            provenance.merged_from = [
                MergedSource(path=self.path, content_hash=self._previous.content_hash,
                             shards=len(self._previous.shards))
            ]  # fmt: skip
            results = kept + results
        manifest = build_manifest(results, provenance)
        schema = manifest.schema  # every dtype matched: before the folder becomes a dataset
        check_dtypes_matched(options.dtypes, schema.lossy, schema.arrays, manifest.records)
        if self._previous is not None:
            manifest.stats.input_bytes = self._previous.stats.input_bytes
        storage = self._layout.storage
        storage.write_bytes(MANIFEST_NAME, manifest.to_json())  # one atomic replace
        return self._result(
            manifest.records, sum(e.blocks for e in manifest.shards), manifest.size,
            manifest.content_hash, manifest=manifest,
        )  # fmt: skip

    def _result(self, records: int, blocks: int, size: int, content: str, **kw: Any) -> PackResult:
        return PackResult(
            output_path=self.path, record_count=records, block_count=blocks, input_bytes=0,
            output_bytes=size, seconds=time.perf_counter() - self._started, content_hash=content,
            rejected_count=self._ledger.rejected, rejects_path=self.rejects_path, **kw,
        )  # fmt: skip

    def abort(self) -> None:
        """Drop everything written: the path stays as it was (an appended dataset keeps its
        earlier shards and manifest)."""
        if self._closed:
            return
        self._closed = True
        self._w.abort()
        self._finalizer.detach()

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

    # -- appending -----------------------------------------------------------------------------

    def _open_for_append(self) -> None:
        if not self.options.sharded:
            raise OptionError("append adds shards to a dataset folder: give a shard size or "
                              "records per shard")  # fmt: skip
        self._layout = OutputLayout(self.path, self.options, [])
        storage = self._layout.storage
        assert storage is not None
        if storage.exists(MANIFEST_NAME):
            self._previous = Manifest.from_json(storage.read_bytes(MANIFEST_NAME))
            numbers = [int(e.file[6:11]) for e in self._previous.shards if e.file[6:11].isdigit()]
            self._first_shard = max(numbers, default=-1) + 1


def _metadata_of(layout: OutputLayout, name: str) -> Any:
    from ..packfile.reader import PackedFile

    storage = layout.storage
    assert storage is not None
    with PackedFile(storage.location(name), source=storage.source(name)) as packed:
        return packed.metadata


def estimate_bytes(value: Any, depth: int = 0) -> int:
    """About how many bytes a record takes, cheaply (units are cut by this estimate, so it
    must be the same for the same records: it is a pure function of them)."""
    kind = type(value)
    if depth > MAX_NESTING_DEPTH:  # trust: the encoder refuses such a record, with its number
        return 8
    if kind is dict:
        total = 2
        for key, item in value.items():
            total += len(key) if type(key) is str else len(str(key))
            # the common leaves inline (a call per field was 12% of a Writer's time)
            item_kind = type(item)
            if item_kind is str and depth < MAX_NESTING_DEPTH:
                total += len(item) + 2
            elif item_kind is np.ndarray and depth < MAX_NESTING_DEPTH:
                total += item.nbytes
            else:
                total += estimate_bytes(item, depth + 1)
        return total
    if kind is str:
        return len(value) + 2
    if kind is list or kind is tuple:
        if value and type(value[0]) in (int, float, bool):
            return 2 + 8 * len(value)
        return 2 + sum(estimate_bytes(item, depth + 1) for item in value)
    nbytes = getattr(value, "nbytes", None)
    return int(nbytes) if isinstance(nbytes, int) else 8
