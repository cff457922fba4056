"""Sharded packing: JSONL in, a folder (local or URL) of complete packed shards plus manifest.json.

``pack_shard`` is the engine-free unit of work ("these input slices become this shard").
``ShardedPacker`` plans the shards, keeps the finished ones of an interrupted run that still
validate, packs the rest (in a local process pool, or through a runner such as
``distributed.dask_runner``), and writes the manifest last: a dataset without one is unfinished.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from ..dataset.manifest import MANIFEST_NAME, Manifest, ShardEntry
from ..errors import FormatError, OptionError, ShardpackError
from ..format.metadata import RecordedOptions
from ..packfile.writer import PackedFileWriter
from ..storage.folder import Storage, file_hash, open_storage
from ..storage.lock import output_lock
from ..storage.urls import is_url
from .collector import MetadataCollector, build_manifest
from .options import (
    DEFAULT_COMPRESSION,
    ProgressCallback,
    encode_options,
    parse_size,
    resolve_workers,
)
from .parallel import encode_items, planned_items
from .planning import (
    ShardTask,
    estimate_packed_ratio,
    expand_inputs,
    plan_shards,
    slice_units,
)
from .resume import PLAN_NAME, ShardResult, input_identity, reusable_shards
from .units import UNIT_INPUT_BYTES, EncodedUnit, EncodeOptions, UnitEncoder

# (tasks to pack, encode options, output location, storage options) -> results in any order
Runner = Callable[
    [list[ShardTask], EncodeOptions, str, "dict[str, Any] | None"], Iterable[ShardResult]
]


@dataclass
class ShardedPackResult:
    """What a sharded pack produced."""

    output_path: str
    manifest: Manifest
    shards_packed: int
    shards_reused: int
    input_bytes: int
    seconds: float
    validation: Any = None
    plan: list[ShardTask] = field(default_factory=list, repr=False)

    @property
    def record_count(self) -> int:
        return self.manifest.records

    @property
    def output_bytes(self) -> int:
        return self.manifest.size

    @property
    def content_hash(self) -> str:
        return self.manifest.content_hash

    @property
    def ratio(self) -> float:
        return self.output_bytes / self.input_bytes if self.input_bytes else 0.0


class _ShardSink:
    """One shard being written: staging file, packed-file writer and metadata collector."""

    def __init__(self, storage: Storage, task: ShardTask, options: EncodeOptions) -> None:
        self.task, self.options = task, options
        self._stack = ExitStack()
        self.local = self._stack.enter_context(storage.staging(task.name))
        self.writer = PackedFileWriter(self.local)
        self.collector = MetadataCollector()

    def add(self, encoded: EncodedUnit) -> None:
        for block in encoded.blocks:
            self.writer.write_block(block)
        self.collector.add(encoded)

    def finish(self) -> ShardResult:
        task = self.task
        if self.writer.record_count != task.records:
            raise FormatError(
                f"shard {task.name}: packed {self.writer.record_count} records but the plan "
                f"counted {task.records} (inputs changed during the pack?)"
            )
        inputs = [item.source_slice() for item in task.slices]
        metadata = self.collector.metadata(self.options, self.writer, inputs)
        size = self.writer.finish(metadata)
        digest = file_hash(self.local)
        self._stack.close()  # uploads remote shards
        entry = ShardEntry(
            file=task.name,
            records=metadata.record_count,
            blocks=metadata.block_count,
            size=size,
            file_hash=digest,
            content_hash=metadata.content_hash,
            inputs=inputs,
        )
        return ShardResult(task.index, entry, metadata)

    def abort(self) -> None:
        self.writer.abort()
        self._stack.__exit__(_Aborted, _Aborted(), None)


class _Aborted(Exception):
    """Thrown into a staging context so that nothing is uploaded."""


def pack_shard(
    task: ShardTask,
    options: EncodeOptions,
    output: str,
    storage_options: dict[str, Any] | None = None,
) -> ShardResult:
    """Pack one shard in this process: the unit of work any engine can run.

    Reads only the task's input slices and writes only ``output``/``task.name``; the output is
    byte-identical whichever machine or engine runs it.
    """
    storage = open_storage(output, storage_options)
    encoder = UnitEncoder(options)
    sink = _ShardSink(storage, task, options)
    try:
        for unit in slice_units(task.slices, storage_options):
            sink.add(encoder.encode(unit))
        return sink.finish()
    except BaseException:
        sink.abort()
        raise


def local_runner(workers: int, progress: ProgressCallback | None = None) -> Runner:
    """Runs shard tasks on this machine: the units of all shards flow through one process pool,
    in order, so every core stays busy across shard boundaries; one writer per shard."""

    def run(
        tasks: list[ShardTask],
        options: EncodeOptions,
        output: str,
        storage_options: dict[str, Any] | None,
    ) -> Iterator[ShardResult]:
        storage = open_storage(output, storage_options)
        owners: deque[ShardTask] = deque()  # the task of each unit in flight, in order
        items = planned_items(tasks, storage_options, owners)

        sink: _ShardSink | None = None
        done_bytes = done_records = 0
        try:
            for encoded in encode_items(items, options, workers, storage_options):
                task = owners.popleft()
                if sink is None or sink.task is not task:
                    if sink is not None:
                        yield sink.finish()
                    sink = None
                    sink = _ShardSink(storage, task, options)
                sink.add(encoded)
                done_bytes += encoded.input_bytes
                done_records += len(encoded.record_digests)
                if progress is not None:
                    progress(done_bytes, done_records)
            if sink is not None:
                result, sink = sink.finish(), None
                yield result
        finally:
            if sink is not None:
                sink.abort()

    return run


class ShardedPacker:
    """Packs JSONL inputs into a sharded dataset folder (local path or fsspec URL)."""

    def __init__(
        self,
        *,
        compression: str = DEFAULT_COMPRESSION,
        level: int | None = None,
        block_size: int | str | None = None,
        dtypes: Mapping[str, str] | None = None,
        workers: int = 1,
        storage_options: dict[str, Any] | None = None,
        shuffle: bool | None = None,
    ) -> None:
        self.shuffle = shuffle
        self.compression = compression
        self.level = level
        self.block_size = None if block_size is None else parse_size(block_size)
        self.dtypes = dict(dtypes or {})
        self.workers = workers
        self.storage_options = storage_options

    def options(self) -> EncodeOptions:
        return encode_options(
            self.compression,
            level=self.level,
            block_size=self.block_size,
            dtypes=self.dtypes,
            shuffle=self.shuffle,
        )

    def plan(
        self,
        inputs: Sequence[str],
        *,
        shard_size: int | str | None = None,
        records_per_shard: int | None = None,
    ) -> list[ShardTask]:
        """The shard tasks for ``inputs`` (already expanded); deterministic."""
        input_budget = None
        if shard_size is not None:
            # shard size means packed bytes: convert with the ratio measured on a sample
            ratio = estimate_packed_ratio(inputs, self.options(), self.storage_options)
            input_budget = max(1, int(parse_size(shard_size) / ratio))
        return plan_shards(
            inputs,
            shard_input_bytes=input_budget,
            records_per_shard=records_per_shard,
            storage_options=self.storage_options,
        )

    def pack(
        self,
        inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        output: str | os.PathLike[str],
        *,
        shard_size: int | str | None = None,
        records_per_shard: int | None = None,
        resume: bool = True,
        validate: bool = False,
        runner: Runner | None = None,
        progress: ProgressCallback | None = None,
    ) -> ShardedPackResult:
        """Pack ``inputs`` (paths, URLs, globs) into the dataset folder ``output``.

        ``shard_size`` is the target packed size of a shard (e.g. "512M"; shards come out close
        to it, cut at record boundaries); ``records_per_shard`` caps records per shard. With
        ``resume`` a re-run after an interruption keeps the finished shards that validate.
        """
        # trust: one pack per output folder, taken before anything in it is looked at or removed
        with output_lock(os.fspath(output), self.storage_options):
            return self._pack_locked(
                inputs,
                os.fspath(output),
                shard_size=shard_size,
                records_per_shard=records_per_shard,
                resume=resume,
                validate=validate,
                runner=runner,
                progress=progress,
            )

    def _pack_locked(
        self,
        inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        out: str,
        *,
        shard_size: int | str | None,
        records_per_shard: int | None,
        resume: bool,
        validate: bool,
        runner: Runner | None,
        progress: ProgressCallback | None,
    ) -> ShardedPackResult:
        started = time.perf_counter()
        paths = expand_inputs(inputs, self.storage_options)
        storage = open_storage(out, self.storage_options)
        _check_output_folder(storage, paths)
        options = self.options()
        UnitEncoder(options)  # fail fast on bad options, before any output exists
        tasks = self.plan(paths, shard_size=shard_size, records_per_shard=records_per_shard)
        fingerprint = {
            "inputs": [input_identity(p, self.storage_options) for p in paths],
            "encode": {
                "codec": options.codec,
                "block_size": options.block_size,
                "dtypes": dict(sorted(options.dtype_overrides.items())),
            },
            "sharding": {"shard_size": shard_size, "records_per_shard": records_per_shard},
        }
        reused = reusable_shards(storage, tasks, fingerprint) if resume else {}
        storage.remove(MANIFEST_NAME)  # from here on the folder is unfinished until the end
        plan_doc = {"fingerprint": fingerprint, "shards": [t.name for t in tasks]}
        storage.write_bytes(PLAN_NAME, json.dumps(plan_doc, indent=1).encode("utf-8"))

        todo = [task for task in tasks if task.index not in reused]
        results = dict(reused)
        if todo:
            run = runner or local_runner(resolve_workers(self.workers), progress)
            for result in run(todo, options, out, self.storage_options):
                results[result.index] = result
        missing = [task.name for task in tasks if task.index not in results]
        if missing:
            raise ShardpackError(f"{out}: the runner did not return shards {', '.join(missing)}")

        ordered = [results[task.index] for task in tasks]
        recorded = RecordedOptions(
            codec=options.codec,
            block_size=options.block_size,
            dtypes=dict(sorted(options.dtype_overrides.items())),
            shuffle=options.shuffle,
            unit_input_bytes=UNIT_INPUT_BYTES,
            shard_size=None if shard_size is None else parse_size(shard_size),
            records_per_shard=records_per_shard,
        )
        manifest = build_manifest(ordered, fingerprint, recorded)
        _remove_stale_shards(storage, {task.name for task in tasks})
        storage.write_bytes(MANIFEST_NAME, manifest.to_json())
        storage.remove(PLAN_NAME)

        packed = ShardedPackResult(
            output_path=out,
            manifest=manifest,
            shards_packed=sum(1 for r in ordered if not r.reused),
            shards_reused=sum(1 for r in ordered if r.reused),
            input_bytes=manifest.stats.input_bytes,
            seconds=time.perf_counter() - started,
            plan=tasks,
        )
        if validate:
            from ..dataset.validate_folder import validate_dataset

            packed.validation = validate_dataset(
                out, deep=True, storage_options=self.storage_options
            )
            packed.validation.raise_if_failed()
        return packed


def _check_output_folder(storage: Storage, inputs: list[str]) -> None:
    if not storage.is_remote and os.path.isfile(storage.root):
        raise OptionError(f"output {storage.root} is a file; a sharded pack writes a folder")
    ours = {MANIFEST_NAME, PLAN_NAME}
    names = storage.list_names()
    foreign = [
        name
        for name in names
        if name not in ours and not _is_shard_file(name) and not _is_leftover(name)
    ]
    if foreign:
        raise OptionError(
            f"output folder {storage.root} holds files that are not part of a shardpack dataset "
            f"({', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''}); use an empty folder"
        )
    for path in inputs:
        inside = os.path.abspath(path).startswith(os.path.abspath(storage.root) + os.sep)
        if not storage.is_remote and not is_url(path) and inside:
            raise OptionError(f"input {path} lies inside the output folder {storage.root}")
    # only now, in a folder that is ours: temp files of a killed run of ours
    for name in names:
        if _is_leftover(name):
            storage.remove(name)


def _is_leftover(name: str) -> bool:
    """A temp file this packer writes beside a shard or the manifest (``temp_beside``)."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    target = name[1:].rsplit(".", 2)[0]  # ".NAME.<random>.tmp" -> NAME
    return target in (MANIFEST_NAME, PLAN_NAME) or _is_shard_file(target)


def _is_shard_file(name: str) -> bool:
    return name.startswith("shard-") and name.endswith(".packed")


def _remove_stale_shards(storage: Storage, keep: set[str]) -> None:
    """Shard files of an earlier, larger plan would show up as extra shards: remove them."""
    for name in storage.list_names():
        if _is_shard_file(name) and name not in keep:
            storage.remove(name)


def pack_file(
    packer: ShardedPacker,
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str,
) -> ShardResult:
    """Pack inputs into one packed file where inputs or output are URLs (no manifest)."""
    from ..storage.folder import split_location

    paths = expand_inputs(inputs, packer.storage_options)
    folder, name = split_location(output)
    tasks = plan_shards(paths, records_per_shard=2**62, storage_options=packer.storage_options)
    if not tasks:
        raise OptionError("the inputs hold no records")
    first = tasks[0]
    task = ShardTask(0, name, first.slices, first.records, first.input_bytes, first.units)
    options = packer.options()
    run = local_runner(resolve_workers(packer.workers))
    with output_lock(output, packer.storage_options):  # trust: one pack per output
        results = list(run([task], options, folder, packer.storage_options))
    return results[0]
