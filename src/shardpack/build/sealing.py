"""The end of a pack: its output sealed, and what it holds as a ``PackResult``.

A single packed file gets its footer (inputs, provenance, rejected lines) and then its name
(``ShardSink.finish``: fsynced and renamed into place, or uploaded); a dataset folder becomes a
dataset when its manifest is written, last, after every shard is in place
(``OutputLayout.finish``). Both first check that every ``--dtype`` matched a float array field,
so a pack that did not is never sealed. An output found up to date gets its result here too,
from its footer or its manifest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..dataset.manifest import Manifest
from ..dataset.validate_file import ValidationReport
from ..format.metadata import FileMetadata, Provenance, SourceSlice
from .checks import check_dtypes_matched, check_written
from .collector import build_manifest
from .outputs import OutputLayout
from .results import PackResult
from .sink import ShardResult, ShardSink


def written_check(
    validate: bool, name: str, reports: list[ValidationReport] | None = None
) -> Callable[[Path], None] | None:
    """``--validate``: deep-validate a complete file under its temporary name, raising so that
    it never reaches ``name`` (its report into ``reports``); None when not asked."""
    if not validate:
        return None

    def check(tmp: Path) -> None:
        report = check_written(tmp, name)
        if reports is not None:
            reports.append(report)

    return check


def seal_file(
    layout: OutputLayout,
    sink: ShardSink,
    provenance: Provenance,
    *,
    rejected: int,
    started: float,
) -> PackResult:
    """The single packed file of ``layout`` put in place: every ``--dtype`` matched, then its
    footer written (its inputs whole, ``provenance``, ``rejected`` lines) and the file named."""
    options = layout.options
    collector = sink.collector  # every --dtype matched: before the file gets its name
    check_dtypes_matched(options.dtypes, collector.lossy_fields, collector.arrays(), sink.records)
    reports: list[ValidationReport] = []
    single = sink.finish(
        inputs=[SourceSlice(f.path) for f in layout.files],
        provenance=provenance,
        rejected=rejected,
        check=written_check(options.validate, layout.output, reports),
    )
    return _file_result(
        layout.output,
        single.metadata,
        single.entry.size,
        time.perf_counter() - started,
        validation=reports[0] if reports else None,
        workers={os.path.basename(layout.output): sorted(single.workers)},
    )


def seal_dataset(
    layout: OutputLayout, results: list[ShardResult], provenance: Provenance, *, started: float
) -> PackResult:
    """The folder of ``layout`` made a dataset of the shards in ``results``: every ``--dtype``
    matched, then the manifest written, last (shards of an earlier plan and the plan file
    removed); with ``--validate``, the whole dataset validated."""
    options = layout.options
    workers = {r.entry.file: sorted(r.workers) for r in results}
    manifest = build_manifest(results, provenance)
    schema = manifest.schema  # every --dtype matched: before the folder becomes a dataset
    check_dtypes_matched(options.dtypes, schema.lossy, schema.arrays, manifest.records)
    layout.finish(manifest, {r.entry.file for r in results})
    validation = None
    if options.validate:
        from ..dataset.validate_folder import validate_dataset

        validation = validate_dataset(layout.output, storage_options=layout.storage_options)
        validation.raise_if_failed()
    return _dataset_result(
        layout.output,
        manifest,
        time.perf_counter() - started,
        validation=validation,
        shards_packed=sum(1 for r in results if not r.reused),
        shards_reused=sum(1 for r in results if r.reused),
        workers=workers,
    )


def up_to_date_result(
    output: str, done: FileMetadata | Manifest, seconds: float, size: int | None
) -> PackResult:
    """The result of a pack that found ``output`` up to date: nothing written. ``size``: that
    of a single packed file."""
    if isinstance(done, Manifest):
        return _dataset_result(
            output, done, seconds, up_to_date=True, shards_reused=len(done.shards)
        )
    return _file_result(output, done, size or 0, seconds, up_to_date=True)


def _file_result(
    output: str, metadata: FileMetadata, size: int, seconds: float, **more: Any
) -> PackResult:
    return PackResult(
        output_path=output,
        record_count=metadata.record_count,
        block_count=metadata.block_count,
        input_bytes=metadata.input_bytes,
        output_bytes=size,
        seconds=seconds,
        content_hash=metadata.content_hash,
        metadata=metadata,
        **more,
    )


def _dataset_result(output: str, manifest: Manifest, seconds: float, **more: Any) -> PackResult:
    return PackResult(
        output_path=output,
        record_count=manifest.records,
        block_count=sum(e.blocks for e in manifest.shards),
        input_bytes=manifest.stats.input_bytes,
        output_bytes=manifest.size,
        seconds=seconds,
        content_hash=manifest.content_hash,
        manifest=manifest,
        **more,
    )
