"""Integrity checks of packed files, collected into a report instead of stopping at the first.

The default check opens the footer (header, trailer, footer checksum, index consistency) and
verifies every block's checksum and decompression. ``deep`` also decodes every record and checks
record counts and each record's arrays against the block layout.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import CorruptBlockError, FormatError, ShardpackError
from .reader import PackedFile


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
            "problems": [asdict(p) | {"text": str(p)} for p in self.problems],
        }


def validate_path(
    path: str | os.PathLike[str], *, deep: bool = False, source: Any = None
) -> ValidationReport:
    """Validate one packed file; every problem found goes into the report.

    ``source`` reads the file's bytes from elsewhere (e.g. a remote shard); see PackedFile.
    """
    path = os.fspath(path)
    report = ValidationReport(paths=[path], deep=deep)
    _validate_file(path, deep, report, source)
    return report


def _validate_file(path: str, deep: bool, report: ValidationReport, source: Any = None) -> None:
    try:
        packed = PackedFile(path, verify=True, cache_blocks=1, source=source)
    except ShardpackError as exc:
        report.problems.append(Problem(path, _without_path(str(exc), path)))
        return
    except OSError as exc:
        report.problems.append(Problem(path, f"cannot read: {exc}"))
        return
    report.files_checked += 1
    try:
        for block in range(packed.block_count):
            report.blocks_checked += 1
            try:
                view = packed.view_block(block)
                if deep:
                    records = packed.block_records(block, view)
                    try:
                        view.check_arrays()
                    except (ValueError, TypeError) as exc:
                        raise packed._corrupt(block, f"bad arrays: {exc}") from None
                    report.records_checked += len(records)
            except CorruptBlockError as exc:
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
    finally:
        packed.close()


def _without_path(message: str, path: str) -> str:
    return message.removeprefix(f"{path}: ")
