"""One pack pipeline for every scale: inputs -> planned units -> encoded on local workers or a
Dask cluster -> written in order to one packed file or to the shards of a dataset folder.

A single file is the one-shard case of the same plan and executor. The driver plans (without
reading plain inputs), writes what local workers encode, and keeps the ledger; the inputs'
sha256 runs on a thread of its own. Every option works on every path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..dataset.manifest import shard_name
from ..errors import OptionError
from ..ingest.columnar import JSONL
from ..ingest.rejects import RejectsWriter, default_rejects_path
from ..storage.atomic import refuse_inputs_as_output
from ..storage.output_lock import output_lock
from ..storage.streams import InputDigest
from .hashing import InputHasher
from .inputs import InputFile, InputsArg, resolve_inputs
from .ledger import Ledger
from .options import EncodeOptions, PackOptions, ProgressCallback
from .outputs import OutputLayout, content_ids
from .planning import UnitSpec, assign_shards, plan_units
from .provenance import build_provenance
from .results import PackPlan, PackResult, PlannedShard
from .sample import (
    DICTIONARY_TRAIN_BYTES,
    RATIO_SAMPLE_BYTES,
    take_sample,
    train_dictionary,
    units_per_shard,
)
from .sealing import seal_dataset, seal_file, up_to_date_result, written_check
from .sink import ShardResult, ShardSink
from .workers import LocalExecutor, workers_needed


def pack(
    inputs: InputsArg,
    output: str | os.PathLike[str],
    options: PackOptions,
    *,
    progress: ProgressCallback | None = None,
    client: Any = None,
) -> PackResult:
    """Pack ``inputs`` (paths, URLs, globs, ``-``) into ``output``: a packed file, or a dataset
    folder when ``options`` set a shard size or records per shard. ``client``: a Dask client
    that packs the shards on its cluster."""
    started = time.perf_counter()
    # trust: one pack per output, held before the output is looked at (and its leftovers removed)
    with output_lock(os.fspath(output), dict(options.storage_options or {}) or None):
        run = _Run(inputs, os.fspath(output), options, client)
        if not options.force:
            done = run.layout.up_to_date()
            if done is not None:
                seconds = time.perf_counter() - started
                return up_to_date_result(run.output, done, seconds, run.layout.existing_bytes)
        return run.pack(progress, started)


def plan(inputs: InputsArg, output: str | os.PathLike[str], options: PackOptions) -> PackPlan:
    """What ``pack`` would do, without writing anything (``--dry-run``)."""
    run = _Run(inputs, os.fspath(output), options, None)
    units, unit_bytes = run.units(sample_digests={})
    counts: dict[int, list[int]] = {}
    for unit in units:
        entry = counts.setdefault(unit.shard, [0, 0])
        entry[0] += 1
        entry[1] += unit.end - unit.start
    shards = [
        PlannedShard(shard_name(i) if options.sharded else os.path.basename(run.output), *v)
        for i, v in sorted(counts.items())
    ]
    return PackPlan(
        output=run.output,
        sharded=options.sharded,
        inputs=[(f.path, f.size, f.stream) for f in run.files],
        units=sum(v[0] for v in counts.values()),
        unit_bytes=unit_bytes,
        shards=shards,
        workers=run.worker_count() if run.client is None else 0,
        engine="local" if run.client is None else "dask",
        up_to_date=not options.force and run.layout.up_to_date() is not None,
    )


class _Run:
    """One pack, from resolved inputs and a checked output to the result."""

    def __init__(self, inputs: InputsArg, output: str, options: PackOptions, client: Any) -> None:
        if client is not None and not options.sharded:
            raise OptionError(
                "packing on Dask writes a sharded dataset (each shard is a task): give a shard "
                "size or records per shard"
            )
        self.storage_options = dict(options.storage_options or {}) or None
        self.files = resolve_inputs(inputs, self.storage_options)
        self.output = output
        self.client = client
        if options.shard_size is not None:
            # shards are cut at unit boundaries: units no larger than a shard keep them near it
            options = options.replace(unit_bytes=min(options.unit_bytes, options.shard_size))
        self.options = options
        self.layout = OutputLayout(output, options, self.files)
        self.rejects_path = self._rejects_path()

    def _rejects_path(self) -> str | None:
        if self.options.on_error != "skip":
            return None
        path = self.options.rejects or default_rejects_path(self.output)
        if path.rstrip("/") == self.output.rstrip("/"):
            raise OptionError("the rejects file cannot be the output")
        local = [f.location for f in self.files if not f.remote and f.path != "-"]
        refuse_inputs_as_output(path, local, "rejects file")
        return path

    def units(self, sample_digests: dict[int, InputDigest]) -> tuple[Iterator[UnitSpec], int]:
        """The planned units with their shard numbers; trains the dictionary into ``codec``."""
        options = self.options
        units = plan_units(
            self.files,
            unit_bytes=options.unit_bytes,
            records_per_shard=options.records_per_shard,
            digests=sample_digests,
            storage_options=self.storage_options,
        )
        per_shard = None
        by_size = options.shard_size is not None and not options.records_per_shard
        if options.dictionary or by_size:
            # a fixed cost (the first MiBs encoded here), whatever the input's size
            budget = DICTIONARY_TRAIN_BYTES if options.dictionary else RATIO_SAMPLE_BYTES
            sample, units = take_sample(units, budget, self.storage_options)
            if options.dictionary:
                self.codec = train_dictionary(sample, options)
            if by_size and options.shard_size is not None:
                per_shard = units_per_shard(
                    sample, self.encode_options(), options.shard_size, options.unit_bytes
                )
        return assign_shards(units, per_shard), options.unit_bytes

    codec: dict[str, Any] | None = None

    def worker_count(self) -> int:
        return workers_needed(self.options, self.files)

    def encode_options(self) -> EncodeOptions:
        return self.options.encode_options(self.codec)

    def pack(self, progress: ProgressCallback | None, started: float) -> PackResult:
        options, layout = self.options, self.layout
        reused = layout.begin(options.fingerprint([])) if options.sharded else {}
        digests: dict[int, InputDigest] = {}  # inputs the planner reads are hashed on the way
        units, _ = self.units(digests)
        planner_reads = options.records_per_shard is not None  # JSONL: counting its lines
        hashed = [
            i
            for i, f in enumerate(self.files)
            if not f.stream and (not planner_reads or f.kind != JSONL)
        ]
        executor = LocalExecutor(self.worker_count(), self.storage_options)
        submit = None
        if self.client is not None:  # each input hashed by a Dask worker, not read here
            from .dask import hash_submitter

            submit = hash_submitter(self.client, self.storage_options)
        hasher = InputHasher(self.files, hashed, self.storage_options, submit)
        rejects: RejectsWriter | None = None
        try:  # from the first file or process this pack makes: an interrupt cleans up after it
            if self.rejects_path:
                rejects = RejectsWriter(self.rejects_path, self.storage_options)
            ledger = Ledger(self.files, rejects, progress)
            if self.client is None:
                executor.start(self.encode_options())
            self._hasher = hasher.start()
            if self.client is not None:
                from .dask import run_shards

                results = run_shards(self, units, ledger, reused)
            else:
                results = self._run_local(executor, units, ledger, reused)
            ledger.check_not_empty(options.allow_empty)
            digests.update(hasher.result())
            result = self._finish(results, ledger, digests, started)
            if rejects is not None:
                rejects.commit()
        except BaseException:
            single = self._single
            _run_every(
                lambda: executor.close(abort=True),
                hasher.stop,
                rejects.abort if rejects is not None else None,
                single.abort if single is not None else None,
                self._remove_leftovers,
            )
            raise
        executor.close()
        return dataclasses.replace(
            result, rejected_count=ledger.rejected, rejects_path=self.rejects_path
        )

    def _remove_leftovers(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the error that ended the pack
            self.layout.remove_leftovers(also=self.rejects_path)  # is the one to report

    def _run_local(
        self,
        executor: LocalExecutor,
        units: Iterator[UnitSpec],
        ledger: Ledger,
        reused: dict[int, ShardResult],
    ) -> list[ShardResult]:
        """Units through the local workers, written in order by this process."""
        results: list[ShardResult] = []
        pending_reused = sorted(reused)
        sink: ShardSink | None = None
        todo = (unit for unit in units if unit.shard not in reused)
        try:
            for encoded in executor.encode(todo):
                shard = encoded.spec.shard if encoded.spec is not None else 0
                if sink is None or sink.index != shard:
                    if sink is not None:
                        closing, sink = sink, None
                        results.extend(self._close(closing))
                    while pending_reused and pending_reused[0] < shard:
                        ledger.add_reused(reused[pending_reused[0]])
                        results.append(reused[pending_reused.pop(0)])
                    sink = self._sink(shard)
                ledger.add(encoded)
                sink.add(encoded)
            if sink is not None:
                closing, sink = sink, None
                results.extend(self._close(closing, last=True))
            elif not self.options.sharded:
                results.extend(self._close(self._sink(0), last=True))  # an empty input
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        for index in pending_reused:
            ledger.add_reused(reused[index])
            results.append(reused[index])
        return results

    def _sink(self, shard: int) -> ShardSink:
        if self.layout.storage is not None:
            return ShardSink(
                self.encode_options(),
                index=shard,
                storage=self.layout.storage,
                name=shard_name(shard),
            )
        return ShardSink(
            self.encode_options(), output=self.output, storage_options=self.storage_options
        )

    def _close(self, sink: ShardSink, *, last: bool = False) -> list[ShardResult]:
        """Seal a shard (an empty one is dropped); the single file waits for its provenance."""
        if not self.options.sharded:
            self._single = sink
            return []
        if sink.records == 0:
            sink.abort()
            return []
        finished = sink.finish(check=written_check(self.options.validate, sink.name))
        self._note_fingerprint()
        return [finished]

    def _note_fingerprint(self) -> None:
        """Once every input is hashed, the plan records the pack's fingerprint: a resume after
        inputs were touched (same content, new mtime) may then still keep finished shards."""
        hasher = self._hasher
        if self._fingerprint_noted or hasher is None or not hasher.covers_all():
            return
        self._fingerprint_noted = True
        fingerprint = self._fingerprint(hasher.result())
        if fingerprint is not None:
            self.layout.record_fingerprint(fingerprint)

    def _fingerprint(self, digests: dict[int, InputDigest]) -> str | None:
        sha256 = {i: d.sha256.hexdigest() for i, d in digests.items()}
        ids = content_ids(self.files, sha256, self.storage_options)
        return self.options.fingerprint(ids) if ids is not None else None

    _single: ShardSink | None = None
    _hasher: InputHasher | None = None
    _fingerprint_noted = False

    def _finish(
        self,
        results: list[ShardResult],
        ledger: Ledger,
        digests: dict[int, InputDigest],
        started: float,
    ) -> PackResult:
        """Seal the output (sealing.py): the single file, or the folder as a dataset."""
        options = self.options
        fingerprint = self._fingerprint(digests)
        provenance = build_provenance(
            self.files,
            digests,
            ledger.lines,
            options.recorded(),
            options.meta,
            fingerprint,
        )
        if options.sharded:
            return seal_dataset(self.layout, results, provenance, started=started)
        assert self._single is not None
        return seal_file(
            self.layout, self._single, provenance, rejected=ledger.rejected, started=started
        )


__all__ = ["InputFile", "pack", "plan"]


def _run_every(*steps: Callable[[], object] | None) -> None:
    """Run every cleanup step even when one is interrupted (Ctrl-C pressed again, a SIGTERM
    after it): a step skipped would leave temp files behind. An interrupt is raised once all
    have run; a step's own error is dropped: the error that ended the pack is the one to report."""
    interrupt: BaseException | None = None
    for step in steps:
        if step is None:
            continue
        try:
            step()
        except Exception:  # best effort, as above
            continue
        except BaseException as exc:  # KeyboardInterrupt, the CLI's SIGTERM: after the rest
            interrupt = interrupt if interrupt is not None else exc
    if interrupt is not None:
        raise interrupt
