"""Integrity checks of packed files, collected into a report instead of stopping at the first.

The default check opens the footer (header, trailer, footer checksum, index consistency), checks
that every byte between the parts is the writer's zero padding, and verifies every block's
checksum and decompression, so any single damaged byte is found. ``deep`` also decodes every
record, checks counts and each record's arrays against the block layout, recomputes the content
hash (which catches blocks reordered with consistent checksums) and re-checks every record
against the stored JSON Schema, or against the schema passed in. A file at a URL is fetched
whole, pinned to one version, and checked from memory (``validate_url``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import xxhash

from ..errors import (
    CorruptBlockError,
    FormatError,
    ObjectChangedError,
    OptionError,
    RemoteError,
    ShardpackError,
)
from ..format.decode import BYTES_IN_RECORD, holds_bytes
from ..format.layout import BLOCK_ALIGN, HEADER, HEADER_SIZE, INDEX_ALIGN, align
from ..packfile.reader import PackedFile
from ..storage.failures import failure_reason
from ..storage.ranges import BytesSource, RangeSource
from ..storage.remote_options import RemoteOptions
from .identity import record_digests

if TYPE_CHECKING:
    from ..ingest.schema_check import RecordChecker
    from ..storage.fetch import ObjectPin

MAX_SCHEMA_PROBLEMS = 20  # then one summary line: a wrong schema must not flood the report


@dataclass
class Problem:
    """One thing wrong, and where."""

    path: str
    message: str
    block: int | None = None
    first_record: int | None = None
    last_record: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        where = self.path
        if self.block is not None:
            where += f": block {self.block}"
            if self.first_record is not None and self.last_record is not None:
                where += f" (records {self.first_record}-{self.last_record})"
            if self.offset is not None:
                where += f" at byte {self.offset}"
        return f"{where}: {self.message}"


@dataclass
class ValidationReport:
    """The outcome of validating one or more packed files."""

    paths: list[str]
    deep: bool
    files_checked: int = 0
    blocks_checked: int = 0
    records_checked: int = 0
    schema_checked: bool = False
    schema_failures: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_failed(self) -> None:
        if self.problems:
            more = (
                f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
            )
            raise FormatError(f"validation failed: {self.problems[0]}{more}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "paths": self.paths,
            "deep": self.deep,
            "files_checked": self.files_checked,
            "blocks_checked": self.blocks_checked,
            "records_checked": self.records_checked,
            "schema_checked": self.schema_checked,
            "schema_failures": self.schema_failures,
            "problems": [asdict(p) | {"text": str(p)} for p in self.problems],
        }


def validate_path(
    path: str | os.PathLike[str],
    *,
    deep: bool = False,
    schema: Mapping[str, Any] | None = None,
    source: Any = None,
) -> ValidationReport:
    """Validate one packed file; every problem found goes into the report.

    ``schema`` checks every record against that JSON Schema (and implies ``deep``); otherwise
    ``deep`` checks records against the schema stored in the file, if any. ``source`` reads the
    file's bytes from elsewhere (e.g. a remote shard); see PackedFile.
    """
    path = os.fspath(path)
    deep = deep or schema is not None
    report = ValidationReport(paths=[path], deep=deep)
    _validate_file(path, deep, report, schema, source)
    return report


def validate_url(
    url: str,
    *,
    deep: bool = False,
    schema: Mapping[str, Any] | None = None,
    remote: RemoteOptions | None = None,
    pin: ObjectPin | None = None,
) -> ValidationReport:
    """Validate the packed file at ``url`` from memory: its bytes fetched whole, pinned to one
    version of the object, and checked as ``validate_path`` checks a local file.

    Without ``pin`` the file is opened as ``shardpack.open`` opens a URL (``RangeSource``: its
    header and footer, which pin the version), then fetched whole of that version, in pieces of
    ``request_bytes`` streamed as a scan's are. ``pin``: the version whose footer was read
    already (an up-to-date check), fetched whole with it in one request (a replaced object
    fails If-Match). What is wrong with the object (not there, too short,
    replaced while read) goes into the report; a store that does not answer (cannot connect,
    access denied, timed out) raises a RemoteError: no verdict on the data. ``remote``: the
    settings to read with (storage options, timeouts, retries)."""
    from ..storage.remote import RemoteReader  # the remote stack loads with its first URL

    # no read-ahead, and no disk cache (cache_dir ""): every byte checked is the store's
    settings = remote if remote is not None else RemoteOptions()
    reader = RemoteReader(msgspec.structs.replace(settings, readahead_bytes=0, cache_dir=""))
    source: BytesSource | RangeSource | None = None
    try:
        try:
            if pin is not None:
                source = BytesSource(reader.fetcher.fetch(url, 0, None, pin), url)
            else:
                source = RangeSource(url, reader=reader)
                source.hold(source.whole_request().submit_all(reader.fetcher))
        except ShardpackError as exc:
            if not about_the_object(exc):
                raise  # cannot connect, access denied, timed out: no verdict on the data
            report = ValidationReport(paths=[url], deep=deep or schema is not None)
            report.problems.append(Problem(url, without_path(str(exc), url)))
            return report
        return validate_path(url, deep=deep, schema=schema, source=source)
    finally:
        if source is not None:
            source.close()
        reader.close()


def about_the_object(exc: ShardpackError) -> bool:
    """Whether ``exc`` (opening or fetching a remote file) says something about the object
    itself: it is not there, too short, not a packed file, or replaced while read; not that the
    store failed to answer (a RemoteError caused by a request that failed otherwise)."""
    if not isinstance(exc, RemoteError) or isinstance(exc, ObjectChangedError):
        return True
    cause = exc.__cause__
    if cause is None:
        return True  # our own checks (a short read)
    return (failure_reason(cause) or "").startswith("not found")  # no such object (or bucket)


def _validate_file(
    path: str,
    deep: bool,
    report: ValidationReport,
    schema: Mapping[str, Any] | None = None,
    source: Any = None,
) -> None:
    try:
        packed = PackedFile(path, verify=True, cache_blocks=1, source=source)
    except ShardpackError as exc:
        report.problems.append(Problem(path, without_path(str(exc), path)))
        return
    except OSError as exc:
        report.problems.append(Problem(path, f"cannot read: {exc}"))
        return
    report.files_checked += 1
    try:
        _check_layout(packed, report)
        checker = _record_checker(packed, schema, report) if deep else None
        content = xxhash.xxh3_128()
        all_blocks_read = True
        for block in range(packed.block_count):
            report.blocks_checked += 1
            try:
                view = packed.view_block(block)
                if deep:
                    records = packed.block_records(block, view)
                    try:
                        view.check_arrays()
                        content.update(record_digests(view))
                    except (ValueError, TypeError) as exc:
                        raise packed.corrupt_error(block, f"bad arrays: {exc}") from None
                    report.records_checked += len(records)
                    _check_no_bytes(packed, block, records)
                    if checker is not None:
                        _check_records(packed, block, records, checker, report)
            except CorruptBlockError as exc:
                all_blocks_read = False
                report.problems.append(
                    Problem(
                        path,
                        exc.reason,
                        block=exc.block,
                        first_record=exc.first_record,
                        last_record=(exc.first_record or 0) + (exc.record_count or 0) - 1,
                        offset=exc.offset,
                    )
                )
        if deep and all_blocks_read:
            expected = packed.metadata.content_hash
            actual = "xxh3_128:" + content.hexdigest()
            if expected is not None and expected != actual:
                report.problems.append(
                    Problem(
                        path,
                        f"content hash mismatch (expected {expected}, found {actual}): "
                        "records are not the ones written (blocks moved or replaced?)",
                    )
                )
        if report.schema_failures > MAX_SCHEMA_PROBLEMS:
            report.problems.append(
                Problem(
                    path,
                    f"... {report.schema_failures - MAX_SCHEMA_PROBLEMS} more records violate the "
                    f"schema ({report.schema_failures} in all)",
                )
            )
    finally:
        packed.close()


def _check_layout(packed: PackedFile, report: ValidationReport) -> None:
    """Header fields the reader tolerates, record counts, and the zero padding between parts:
    together with the checksums, this leaves no byte of the file unchecked."""
    path, trailer, index = packed.path, packed.trailer, packed.index
    problems = report.problems
    with _SourceReader(packed) as file:  # the bytes as the reader sees them, local or remote
        _magic, major, minor, reserved = HEADER.unpack(file.read(HEADER_SIZE))
        if (major, minor) != (trailer.major, trailer.minor) or reserved != 0:
            problems.append(
                Problem(
                    path,
                    f"header says version {major}.{minor} (reserved {reserved}), trailer says "
                    f"{trailer.major}.{trailer.minor}: damaged header",
                    offset=0,
                )
            )
        # the metadata's format_version is the header's version (FORMAT.md); the reader only
        # looks at the major, so a patched minor would pass every other check
        stated = packed.metadata.format_version
        if stated != f"{trailer.major}.{trailer.minor}":
            problems.append(
                Problem(
                    path,
                    f"metadata says format_version {stated!r}, trailer says "
                    f"{trailer.major}.{trailer.minor}: version edited or damaged",
                )
            )
        meta_count = packed.metadata.record_count
        if meta_count != trailer.record_count:
            problems.append(
                Problem(
                    path, f"metadata counts {meta_count} records, trailer {trailer.record_count}"
                )
            )
        # (start, end, alignment) of each gap the writer filled with zeros
        ends = [HEADER_SIZE] + [int(e["offset"] + e["stored_size"]) for e in index]
        starts = [int(e["offset"]) for e in index] + [trailer.index_offset]
        aligns = [BLOCK_ALIGN] * len(index) + [INDEX_ALIGN]
        for number, (gap_start, gap_end, alignment) in enumerate(
            zip(ends, starts, aligns, strict=True)
        ):
            where = f"before block {number}" if number < len(index) else "before the index"
            if gap_end != align(gap_start, alignment):
                problems.append(Problem(path, f"unexpected gap {where}", offset=gap_start))
                continue
            file.seek(gap_start)
            if file.read(gap_end - gap_start).strip(b"\0"):
                problems.append(Problem(path, f"non-zero padding {where}", offset=gap_start))


class _SourceReader:
    """``seek``/``read`` over a packed file's byte source (a local map or remote ranges)."""

    def __init__(self, packed: PackedFile) -> None:
        self._source = packed.source
        self._position = 0

    def __enter__(self) -> _SourceReader:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def seek(self, position: int) -> None:
        self._position = position

    def read(self, length: int) -> bytes:
        data = bytes(self._source.read(self._position, length))
        self._position += length
        return data


def _check_no_bytes(packed: PackedFile, block: int, records: list[Any]) -> None:
    for j, record in enumerate(records):
        if holds_bytes(record):
            first = int(packed.index[block]["first_record"])
            raise packed.corrupt_error(block, f"record {first + j} {BYTES_IN_RECORD}")


def _record_checker(
    packed: PackedFile, schema: Mapping[str, Any] | None, report: ValidationReport
) -> RecordChecker | None:
    from ..ingest.schema_check import RecordChecker, check_schema  # jsonschema: deep checks only

    if schema is None:
        schema = packed.metadata.schema
        if schema is None:
            return None
        try:
            check_schema(schema, where="stored schema")
        except OptionError as exc:
            report.problems.append(Problem(packed.path, str(exc)))
            return None
    report.schema_checked = True
    return RecordChecker(schema)


def _check_records(
    packed: PackedFile,
    block: int,
    records: list[Any],
    checker: RecordChecker,
    report: ValidationReport,
) -> None:
    first = int(packed.index[block]["first_record"])
    offset = int(packed.index[block]["offset"])
    for j, record in enumerate(records):
        error = checker.first_error(record)
        if error is None:
            continue
        report.schema_failures += 1
        if report.schema_failures <= MAX_SCHEMA_PROBLEMS:
            message = error.message
            message = message if len(message) <= 200 else message[:197] + "..."
            report.problems.append(
                Problem(
                    packed.path,
                    f"record {first + j} violates the schema at {error.json_path}: {message}",
                    block=block,
                    first_record=first + j,
                    last_record=first + j,
                    offset=offset,
                )
            )


def without_path(message: str, path: str) -> str:
    return message.removeprefix(f"{path}: ")
