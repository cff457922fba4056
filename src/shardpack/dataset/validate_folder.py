"""Validation of a sharded dataset: every shard checked on its own, and the manifest against the
shards. Missing, extra, truncated, replaced and swapped shards are each named in the report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from ..errors import RemoteError, ShardpackError
from ..storage.failures import remote_errors
from ..storage.folder import bytes_hash
from ..storage.ranges import BytesSource
from ..storage.urls import is_remote
from .locate import is_dataset, locate
from .manifest import MANIFEST_NAME, ShardEntry
from .validate_file import (
    Problem,
    ValidationReport,
    about_the_object,
    validate_path,
    validate_url,
    without_path,
)

if TYPE_CHECKING:
    from ..storage.remote_options import RemoteOptions


def validate_any(
    path: str | os.PathLike[str],
    *,
    deep: bool = False,
    storage_options: dict[str, Any] | None = None,
    schema: Mapping[str, Any] | None = None,
    remote: RemoteOptions | None = None,
) -> ValidationReport:
    """Validate a packed file, or a dataset folder or its manifest (local or URL): what
    ``shardpack validate PATH`` checks, for ``DatasetPacker().validate`` and the CLI alike.
    RemoteError when the store cannot be asked (access denied, cannot connect). ``remote``:
    the settings remote data is read with (timeouts and retries; see ``RemoteOptions``)."""
    remote, storage_options = _settings(path, storage_options, remote)
    if is_dataset(path, storage_options):
        return validate_dataset(path, deep=deep, schema=schema, remote=remote)
    return validate_file(path, deep=deep, schema=schema, remote=remote)


def _settings(
    path: str | os.PathLike[str],
    storage_options: dict[str, Any] | None,
    remote: RemoteOptions | None,
) -> tuple[RemoteOptions | None, dict[str, Any] | None]:
    """The settings to read ``path`` with (None for a local path: nothing remote is read), and
    the storage options they hold."""
    if not is_remote(os.fspath(path)):
        return None, storage_options
    from ..storage.remote_options import resolve_remote

    settings = resolve_remote(remote, storage_options=storage_options).for_urls([path])
    return settings, settings.storage_options or None


def validate_file(
    path: str | os.PathLike[str],
    *,
    deep: bool = False,
    storage_options: dict[str, Any] | None = None,
    schema: Mapping[str, Any] | None = None,
    remote: RemoteOptions | None = None,
) -> ValidationReport:
    """Validate one packed file, local or at a URL. A remote file is read as ``shardpack.open``
    reads it (its header and footer, then the whole object in one request pinned to that
    version) and checked in memory, as each shard of a remote dataset is (``validate_url``)."""
    text = os.fspath(path)
    if not is_remote(text):
        return validate_path(text.removeprefix("file://"), deep=deep, schema=schema)
    return validate_url(
        text, deep=deep, schema=schema, remote=_settings(text, storage_options, remote)[0]
    )


def validate_dataset(
    path: str | os.PathLike[str],
    *,
    deep: bool = False,
    storage_options: dict[str, Any] | None = None,
    schema: Mapping[str, Any] | None = None,
    remote: RemoteOptions | None = None,
) -> ValidationReport:
    """Validate a dataset folder or its manifest (local or URL), every problem into the report.

    ``schema`` checks every record of every shard against that JSON Schema (implies ``deep``);
    otherwise ``deep`` checks each shard's records against the schema stored in it."""
    text = os.fspath(path)
    remote, storage_options = _settings(text, storage_options, remote)
    deep = deep or schema is not None
    report = ValidationReport(paths=[text], deep=deep)
    try:
        located = locate(text, storage_options)
    except ShardpackError as exc:
        if isinstance(exc, RemoteError) and not about_the_object(exc):
            raise  # cannot connect, timed out, access denied: no verdict on the data
        # named once, by the file at fault: "ds: ds/manifest.json: ..." reads as a stutter
        named, _, rest = str(exc).partition(": ")
        inside = os.path.normpath(named).startswith(os.path.normpath(text))
        where = named if rest and inside else text
        report.problems.append(Problem(where, without_path(str(exc), where)))
        return report
    manifest, storage = (
        located.manifest,
        located.locations[0].storage if located.locations else None,
    )
    if manifest is None:  # a single packed file
        return validate_file(text, deep=deep, schema=schema, remote=remote)
    if storage is None:
        from ..storage.folder import open_storage

        storage = open_storage(located.root or text, storage_options)
    listed = {entry.file for entry in manifest.shards}
    by_content: dict[str, list[ShardEntry]] = {}
    for entry in manifest.shards:
        by_content.setdefault(entry.content_hash, []).append(entry)

    for name in storage.list_names():
        if name.endswith(".packed") and name not in listed and name != MANIFEST_NAME:
            report.problems.append(
                Problem(storage.location(name), "extra shard: not listed in the manifest")
            )
    for number, entry in enumerate(manifest.shards):
        where = storage.location(entry.file)
        if not storage.exists(entry.file):
            report.problems.append(
                Problem(where, f"missing shard (manifest entry {number}, {entry.records} records)")
            )
            continue
        # a store that stops answering mid-way is a RemoteError, not a damaged shard
        with remote_errors(where, "cannot read") if storage.is_remote else nullcontext():
            _check_entry(storage, entry, where, number, by_content, deep, report, schema)
    return report


def _check_entry(
    storage: Any,
    entry: ShardEntry,
    where: str,
    number: int,
    by_content: dict[str, list[ShardEntry]],
    deep: bool,
    report: ValidationReport,
    schema: Mapping[str, Any] | None = None,
) -> None:
    size = storage.size(entry.file)
    size_problem = None
    if size < entry.size:
        size_problem = Problem(
            where, f"truncated shard: {size} bytes, the manifest says {entry.size}"
        )
    elif size > entry.size:
        size_problem = Problem(
            where, f"shard is {size} bytes, the manifest says {entry.size} (replaced?)"
        )
    source = None
    if storage.is_remote:
        data = storage.read_bytes(entry.file)  # validation reads every byte anyway
        source = BytesSource(data, where)
        digest = bytes_hash(data)
    else:
        digest = storage.hash_file(entry.file)
    shard_report = validate_path(where, deep=deep, schema=schema, source=source)
    report.files_checked += shard_report.files_checked
    report.blocks_checked += shard_report.blocks_checked
    report.records_checked += shard_report.records_checked
    report.schema_checked = report.schema_checked or shard_report.schema_checked
    report.schema_failures += shard_report.schema_failures
    if shard_report.files_checked == 0:  # unreadable footer: nothing more to compare
        report.problems.extend([size_problem] if size_problem else [])
        report.problems.extend(shard_report.problems)
        return
    from ..packfile.reader import PackedFile

    if source is not None:
        source = BytesSource(data, where)
    packed = PackedFile(where, source=source)
    try:
        records, content = packed.record_count, packed.metadata.content_hash
        footer_offset = packed.trailer.index_offset
    finally:
        packed.close()
    if content != entry.content_hash:
        twins = [e.file for e in by_content.get(str(content), []) if e.file != entry.file]
        if twins:  # a swap explains any size difference: name only the swap
            report.problems.append(
                Problem(
                    where,
                    f"holds the records of {twins[0]}, not those of manifest entry {number} "
                    "(shards swapped?)",
                )
            )
            return
        report.problems.append(
            Problem(where, "content hash differs from the manifest (shard replaced?)")
        )
    if size_problem is not None:
        report.problems.append(size_problem)
    report.problems.extend(shard_report.problems)
    if content != entry.content_hash:
        return
    if records != entry.records:
        report.problems.append(
            Problem(where, f"holds {records} records, the manifest says {entry.records}")
        )
    elif digest != entry.file_hash and size == entry.size:
        report.problems.append(Problem(where, "file hash differs from the manifest"))
    if entry.footer_offset is not None and entry.footer_offset != footer_offset:
        # a remote reader fetches the footer from there: the dataset would fail on first use
        report.problems.append(
            Problem(
                where,
                f"the manifest puts the footer at byte {entry.footer_offset}, "
                f"the file's footer starts at {footer_offset}",
            )
        )
