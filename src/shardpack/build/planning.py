"""Planning: inputs -> work units, in order, as a stream (nothing is read twice, and stdin or a
huge file starts packing while it is still being read).

A unit is about ``unit_bytes`` of one input. Its lines are the lines that *start* in its byte
range ``[k * unit_bytes, (k + 1) * unit_bytes)``: a plain file is cut without reading it (each
worker finds its own first and last line, see ``ingest.jsonl.line_range``), and a stream
(stdin, gzip, zstd) read by the driver is cut at exactly the same places. Units only depend on
the input bytes, so any number of workers, and any machine, packs the same bytes.

A Parquet or Arrow IPC input is planned from its footer: a unit is a run of whole row groups
(record batches) of about ``unit_bytes`` (the file's bytes shared out by rows), cut inside a
piece only where a shard of ``records_per_shard`` ends; workers read their own pieces.

Shards are runs of consecutive units: ``units_per_shard`` of them for a target shard size, or,
with ``records_per_shard``, cut at exact record counts, which needs the records counted: then
the driver reads each input once and cuts units at shard boundaries too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..ingest.columnar import JSONL, PARQUET, columnar_kind, piece_rows
from ..storage.streams import InputDigest, open_any_input
from .inputs import InputFile

READ_BYTES = 8 << 20  # driver reads of a stream
# bytes.isspace(): a line of only these is blank and holds no record
_NOT_SPACE = np.ones(256, dtype=bool)
_NOT_SPACE[[9, 10, 11, 12, 13, 32]] = False
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class UnitSpec:
    """One work unit, small enough to send to any worker: where its lines are."""

    index: int  # position in the pack, counting every unit of every input
    input: int  # which input (position in the list)
    source: str  # the input's name as given (for messages)
    location: str  # where to read it
    size: int  # of the input, in bytes (as read: decompressed for streams)
    start: int
    end: int
    exact: bool = False  # [start, end) are line boundaries (else: lines starting in it)
    data: bytes | None = None  # the lines, when the driver read them (streams)
    first_line: int | None = None  # when the driver counted lines
    shard: int = 0
    records: list[Any] | None = None  # records made in Python (``Writer``): no lines at all
    part: ColumnarPart | None = None  # rows of a Parquet / Arrow input (start, end: their bytes)


@dataclass(frozen=True)
class ColumnarPart:
    """Rows of a Parquet or Arrow IPC input: ``rows`` rows from the first piece's ``skip``-th
    on, in the consecutive pieces (row groups, record batches) ``pieces``."""

    kind: str
    pieces: tuple[int, ...]
    skip: int
    rows: int


def plan_units(
    files: Sequence[InputFile],
    *,
    unit_bytes: int,
    records_per_shard: int | None = None,
    digests: dict[int, InputDigest] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[UnitSpec]:
    """Every unit of every input, in order. Streams, and every input under ``records_per_shard``,
    are read here (hashed into ``digests[i]`` on the way); plain files are not read at all."""
    index = 0
    counter = _RecordCounter(records_per_shard) if records_per_shard else None
    for number, file in enumerate(files):
        reads = (counter is not None or file.stream) and file.kind == JSONL
        digest = (
            digests.setdefault(number, InputDigest()) if digests is not None and reads else None
        )
        if file.kind != JSONL:
            before = counter.records if counter is not None else 0
            pieces = columnar_units(file, unit_bytes, records_per_shard, before, storage_options)
            if counter is not None:
                pieces = counter.count(pieces)
        elif counter is not None:
            pieces = counter.units(file, unit_bytes, digest, storage_options)
        elif file.stream:
            pieces = _stream_units(file, unit_bytes, digest, storage_options)
        else:
            pieces = _range_units(file, unit_bytes)
        for piece in pieces:
            yield dataclasses.replace(piece, index=index, input=number)
            index += 1


def assign_shards(units: Iterator[UnitSpec], units_per_shard: int | None) -> Iterator[UnitSpec]:
    """Shard numbers for a target shard size: ``units_per_shard`` consecutive units each."""
    if units_per_shard is None:
        yield from units
        return
    for unit in units:
        yield dataclasses.replace(unit, shard=unit.index // units_per_shard)


def columnar_units(
    file: InputFile,
    unit_bytes: int,
    records_per_shard: int | None,
    records_before: int,
    storage_options: dict[str, Any] | None,
) -> Iterator[UnitSpec]:
    """The units of a Parquet or Arrow IPC file: whole pieces up to ``unit_bytes``, cut where a
    shard of ``records_per_shard`` ends (``records_before``: records of the inputs before)."""
    counts = piece_rows(file.location, file.kind, storage_options)
    total, size = sum(counts), file.size or 0
    per_shard = records_per_shard or 0

    def share(row: int) -> int:  # the file's bytes shared out by rows: the shares add up
        return size * row // total if total else 0

    def unit(pieces: list[int], skip: int, start: int, stop: int) -> UnitSpec:
        part = ColumnarPart(file.kind, tuple(pieces), skip, stop - start)
        shard = (records_before + start) // per_shard if per_shard else 0
        return UnitSpec(0, 0, file.path, file.location, size, share(start), share(stop), True,
                        first_line=start + 1, shard=shard, part=part)  # fmt: skip

    pieces: list[int] = []
    skip = first = row = 0
    for number, count in enumerate(counts):
        position, row = row, row + count
        while position < row:
            stop = row
            if per_shard:
                boundary = ((records_before + position) // per_shard + 1) * per_shard
                stop = min(row, boundary - records_before)
            if not pieces:
                skip, first = position - (row - count), position
            if not pieces or pieces[-1] != number:
                pieces.append(number)
            position = stop
            at_shard_end = per_shard and (records_before + stop) % per_shard == 0
            if at_shard_end or (stop == row and share(stop) - share(first) >= unit_bytes):
                yield unit(pieces, skip, first, stop)
                pieces = []
    if pieces:
        yield unit(pieces, skip, first, row)


def _range_units(file: InputFile, unit_bytes: int) -> Iterator[UnitSpec]:
    size = file.size or 0
    for start in range(0, size, unit_bytes):
        end = min(start + unit_bytes, size)
        yield UnitSpec(0, 0, file.path, file.location, size, start, end)


def _stream_units(
    file: InputFile,
    unit_bytes: int,
    digest: InputDigest | None,
    storage_options: dict[str, Any] | None,
) -> Iterator[UnitSpec]:
    """A stream cut where ``line_range`` would cut the same bytes stored as a plain file."""
    buffer, base, position, k, total = b"", 0, 0, 0, 0
    with open_any_input(file.location, storage_options, digest) as stream:
        done = False
        while not done:
            chunk = stream.read(READ_BYTES)
            if total == 0:
                _refuse_columnar_stream(file, chunk)
            done = not chunk
            total += len(chunk)
            buffer = buffer + chunk if buffer else chunk
            while True:
                limit = (k + 1) * unit_bytes
                if position >= limit:  # no line starts in unit k (a long line runs through)
                    yield _data_unit(file, k, k * unit_bytes, k * unit_bytes, b"", 0)
                    k += 1
                    continue
                found = (
                    buffer.find(b"\n", limit - 1 - base) if limit - 1 - base < len(buffer) else -1
                )
                if found < 0:
                    if not done:
                        break  # the unit's last line is not complete yet
                    if position >= base + len(buffer):
                        break
                    found = len(buffer) - 1  # the input ends inside the last line
                stop = base + found + 1
                data = buffer[position - base : stop - base]
                yield _data_unit(file, k, position, stop, data, total if done else 0)
                k += 1
                buffer, base, position = buffer[stop - base :], stop, stop
    for empty in range(k, -(-total // unit_bytes)):  # as many units as a plain file has
        yield _data_unit(file, empty, empty * unit_bytes, empty * unit_bytes, b"", total)


def _refuse_columnar_stream(file: InputFile, head: bytes) -> None:
    """Parquet and Arrow IPC are read by pieces from their footer, which a stream (stdin, gzip,
    zstd) cannot offer: say so, instead of an invalid UTF-8 error on the magic's line."""
    kind = columnar_kind(head)
    if kind is None:
        return
    what = "Parquet" if kind == PARQUET else "Arrow IPC"
    if file.path == "-":
        reason = f"{what} data on stdin is not supported: give the file's path"
    else:
        reason = f"{what} data compressed with gzip or zstd is not supported: decompress it"
    raise InputError(reason, path=file.path)


def _data_unit(file: InputFile, k: int, start: int, end: int, data: bytes, size: int) -> UnitSpec:
    return UnitSpec(0, k, file.path, file.location, size, start, end, True, data)


class _RecordCounter:
    """Cuts units at exact record counts for ``records_per_shard``, across inputs: a unit ends
    where ``line_range`` would end it, or before the record that starts a new shard."""

    def __init__(self, records_per_shard: int) -> None:
        self.per_shard = records_per_shard
        self.records = 0  # records so far, in every input

    def count(self, units: Iterator[UnitSpec]) -> Iterator[UnitSpec]:
        """Units planned elsewhere (Parquet, Arrow), their rows counted as records."""
        for unit in units:
            self.records += unit.part.rows if unit.part is not None else 0
            yield unit

    def units(
        self,
        file: InputFile,
        unit_bytes: int,
        digest: InputDigest | None,
        storage_options: dict[str, Any] | None,
    ) -> Iterator[UnitSpec]:
        buffer, base, scanned, lines_before = b"", 0, 0, 0
        unit_start, unit_line, last_key = 0, 1, 0
        shard = self.records // self.per_shard
        with open_any_input(file.location, storage_options, digest) as stream:
            done = False
            while not done:
                chunk = stream.read(READ_BYTES)
                if scanned == 0 and not buffer:
                    _refuse_columnar_stream(file, chunk)
                done = not chunk
                buffer = buffer + chunk if buffer else chunk
                view = np.frombuffer(buffer, np.uint8)[scanned - base :]
                ends = np.flatnonzero(view == 10) + 1
                if done and len(view) and (not len(ends) or ends[-1] < len(view)):
                    ends = np.append(ends, len(view))  # a last line without its line end
                if not len(ends):
                    continue
                starts = np.concatenate(([0], ends[:-1]))
                keep = _record_lines(view, starts, ends, at_input_start=scanned == 0)
                before = self.records + np.cumsum(keep) - keep  # records before each line
                keys = (scanned + starts) // unit_bytes
                new_shard = keep & (before % self.per_shard == 0) & (before > 0)
                previous = np.concatenate(([last_key], keys[:-1]))
                for i in np.flatnonzero(new_shard | (keys != previous)).tolist():
                    position = scanned + int(starts[i])
                    if position > unit_start:
                        yield self._unit(file, buffer, base, unit_start, position, unit_line, shard)
                    unit_start, unit_line = position, lines_before + i + 1
                    if new_shard[i]:
                        shard = int(before[i]) // self.per_shard
                self.records += int(keep.sum())
                lines_before += len(ends)
                last_key = int(keys[-1])
                scanned += int(ends[-1])
                # streams travel as data: keep the open unit's bytes; files are read by workers
                keep_from = unit_start if file.stream else scanned
                buffer, base = buffer[keep_from - base :], keep_from
            if scanned > unit_start:
                yield self._unit(file, buffer, base, unit_start, scanned, unit_line, shard)

    def _unit(
        self,
        file: InputFile,
        buffer: bytes,
        base: int,
        start: int,
        end: int,
        first_line: int,
        shard: int,
    ) -> UnitSpec:
        data = buffer[start - base : end - base] if file.stream else None
        return UnitSpec(
            0,
            0,
            file.path,
            file.location,
            file.size or 0,
            start,
            end,
            True,
            data,
            first_line,
            shard,
        )


def _record_lines(
    view: np.ndarray, starts: np.ndarray, ends: np.ndarray, at_input_start: bool
) -> np.ndarray:
    """Which lines hold a record (are not blank), vectorised: a line is blank when all its
    bytes are whitespace; a BOM before the input's first line does not count."""
    keep = np.logical_or.reduceat(_NOT_SPACE[view[: int(ends[-1])]], starts)
    if at_input_start and view[:3].tobytes() == _BOM:
        keep[0] = bool(view[3 : int(ends[0])].tobytes().strip())
    return keep
