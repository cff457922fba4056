"""The driver's account of a pack, in unit order: each input's line numbers (workers number the
lines of a unit from 1 when the lines before it were not counted yet), rejected lines, the
first bad line under ``on_error="fail"``, records and bytes done, progress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..errors import InputError, SchemaError, ShardpackError
from ..ingest.rejects import RejectsWriter
from .inputs import InputFile
from .options import ProgressCallback
from .sink import ShardResult
from .units import EncodedUnit


class Ledger:
    """Counts what the units report, in order, and turns unit-relative line numbers into the
    input's own."""

    def __init__(
        self,
        files: Sequence[InputFile],
        rejects: RejectsWriter | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.files = files
        self.lines = [0] * len(files)  # lines seen so far, per input
        self.rejects = rejects
        self.progress = progress
        self.records = 0
        self.input_bytes = 0
        self.rejected = 0
        self._cursor = 0  # the input the pack is in

    def add(self, encoded: EncodedUnit) -> None:
        """Account for one unit (in order); raises its failure with the input's line number."""
        spec = encoded.spec
        if spec is None:
            raise ValueError("a unit without its spec")
        offset = 0 if spec.first_line is not None else self.lines[spec.input]
        self.lines[spec.input] += encoded.lines
        self._cursor = spec.input
        if encoded.failure is not None:
            raise relocated(encoded.failure, offset)
        if encoded.rejects:
            shifted = [dataclasses.replace(r, line=r.line + offset) for r in encoded.rejects]
            if self.rejects is not None:
                self.rejects.write(shifted)
            self.rejected += len(shifted)
        self.records += encoded.records
        self.input_bytes += encoded.input_bytes
        if self.progress is not None:
            self.progress(self.input_bytes, self.records)

    def add_reused(self, shard: ShardResult) -> None:
        """A shard kept from an interrupted run: its lines count, its units are not read again."""
        for piece in shard.metadata.inputs:
            while (
                self._cursor < len(self.files) - 1 and self.files[self._cursor].path != piece.path
            ):
                self._cursor += 1
            self.lines[self._cursor] += piece.lines or 0
        self.records += shard.metadata.record_count
        self.input_bytes += shard.metadata.input_bytes

    def check_not_empty(self, allow_empty: bool) -> None:
        """An empty dataset is almost always a mistake (wrong file, every line rejected). The
        rejects file is kept even then: it says why, and a stale one must not linger."""
        if self.records == 0 and not allow_empty:
            where = ", ".join(f.path for f in self.files)
            if self.rejects is not None:
                self.rejects.commit()  # an abort after this leaves it in place
                self.rejects = None
            if self.rejected:
                raise InputError(
                    f"all {self.rejected} input lines were rejected; nothing packed", path=where
                )
            raise InputError(
                "input holds no records (pass allow_empty=True to pack it anyway)", path=where
            )


def relocated(error: ShardpackError, offset: int) -> ShardpackError:
    """``error`` with its line number counted from the input's start, not the unit's."""
    if offset == 0:
        return error
    if isinstance(error, InputError) and error.line is not None:
        return InputError(
            error.reason,
            path=error.path,
            line=error.line + offset,
            column=error.column,
            excerpt=error.excerpt,
        )
    if isinstance(error, SchemaError) and error.line is not None:
        return SchemaError(
            error.reason, path=error.path, line=error.line + offset, json_path=error.json_path
        )
    return error
