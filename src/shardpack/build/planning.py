"""Shard planning: inputs (paths, URLs, globs) -> shard tasks, each "these input byte ranges become
this shard". Planning reads the inputs once to find line boundaries; the plan depends only on the
inputs and the options, so every engine (local processes, Dask) packs exactly the same shards.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from ..errors import InputError, OptionError
from ..format.metadata import SourceSlice
from ..ingest.jsonl import LineBatch, iter_line_batches, iter_lines
from ..storage.streams import InputDigest, open_any_input
from ..storage.urls import is_url, url_to_fs
from .units import (
    UNIT_INPUT_BYTES,
    EncodeOptions,
    Unit,
    UnitEncoder,
    split_unit_batches,
    split_units,
    unit_cuts,
)

SAMPLE_INPUT_BYTES = 4 << 20  # input sampled to estimate packed size per input byte


@dataclass(frozen=True)
class InputSlice:
    """Lines of one input: bytes [start, end) of its decompressed content, from line first_line."""

    path: str
    start: int
    end: int
    first_line: int

    def source_slice(self) -> SourceSlice:
        """As provenance records it."""
        return SourceSlice(self.path, self.start, self.end, self.first_line)


@dataclass(frozen=True)
class ShardTask:
    """The unit of work of a sharded pack: these input slices, in order, become shard ``name``."""

    index: int
    name: str
    slices: tuple[InputSlice, ...]
    records: int
    input_bytes: int
    # per slice, its work units as sub-slices: cut exactly where ``split_units`` cuts, so a
    # worker can read and encode a unit itself and the bytes stay those of a sequential pack
    units: tuple[tuple[InputSlice, ...], ...] = ()


def expand_inputs(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Paths and URLs with globs (``*``, ``?``, ``[..]``, ``**``) expanded, each sorted, in order.

    A glob that matches nothing is an error (a typo must not silently pack less data).
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise OptionError("no input given")
    result: list[str] = []
    for item in items:
        text = os.fspath(item)
        if not glob.has_magic(text) or text == "-":
            result.append(text)
            continue
        if is_url(text):
            fs, pattern = url_to_fs(text, storage_options)
            matches = [fs.unstrip_protocol(p) for p in sorted(fs.glob(pattern)) if fs.isfile(p)]
        else:
            matches = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        if not matches:
            raise OptionError(f"no input matches {text!r}")
        result.extend(matches)
    return result


def iter_slice_batches(
    item: InputSlice, storage_options: dict[str, Any] | None = None
) -> Iterator[LineBatch]:
    """The non-blank lines of one slice, numbered as in the whole input."""
    with open_any_input(item.path, storage_options) as stream:
        _skip(stream, item.start, item.path)
        limit = item.end - item.start
        yield from iter_line_batches(stream, item.path, item.first_line, limit=limit)


def slice_units(
    slices: Sequence[InputSlice], storage_options: dict[str, Any] | None = None
) -> Iterator[Unit]:
    """The work units of a shard: each slice split exactly as a single-file pack splits it."""
    for item in slices:
        batches = iter_slice_batches(item, storage_options)
        yield from split_unit_batches(batches, item.path, UNIT_INPUT_BYTES)


def plan_shards(
    inputs: Sequence[str],
    *,
    shard_input_bytes: int | None = None,
    records_per_shard: int | None = None,
    storage_options: dict[str, Any] | None = None,
    digests: Mapping[str, InputDigest] | None = None,
    unit_bytes: int | None = None,
) -> list[ShardTask]:
    """Cut the inputs, in order, into shards at line boundaries.

    A shard closes once it holds ``records_per_shard`` records or ``shard_input_bytes`` bytes of
    input, whichever comes first; a shard may span the end of one input and the start of the next.
    """
    if shard_input_bytes is None and records_per_shard is None:
        raise OptionError("a sharded pack needs a shard size or a record count per shard")
    if records_per_shard is not None and records_per_shard <= 0:
        raise OptionError(f"records per shard must be positive, got {records_per_shard}")
    from ..dataset.manifest import shard_name

    unit_bytes = unit_bytes or UNIT_INPUT_BYTES

    tasks: list[ShardTask] = []
    slices: list[InputSlice] = []
    units: list[tuple[InputSlice, ...]] = []
    records = size = 0

    def close_shard() -> None:
        nonlocal slices, units, records, size
        if records:
            name = shard_name(len(tasks))
            tasks.append(ShardTask(len(tasks), name, tuple(slices), records, size, tuple(units)))
        slices, units, records, size = [], [], 0, 0

    for path in inputs:
        if path == "-":
            raise OptionError("a sharded pack cannot read stdin (it plans over the inputs first)")
        digest = digests.get(path) if digests else None
        with open_any_input(path, storage_options, digest) as stream:
            offset, start, first_line, slice_records = 0, 0, 1, 0
            slice_units_: list[InputSlice] = []
            unit_start, unit_first, unit_size = 0, 1, 0
            for number, offset, unit_length, raw_length in scan_records(stream, path, digest):
                slice_records += 1
                records += 1
                size += raw_length
                unit_size += unit_length
                if unit_size >= unit_bytes:
                    slice_units_.append(InputSlice(path, unit_start, offset, unit_first))
                    unit_start, unit_first, unit_size = offset, number + 1, 0
                full = (records_per_shard is not None and records >= records_per_shard) or (
                    shard_input_bytes is not None and size >= shard_input_bytes
                )
                if full:
                    if unit_size:
                        slice_units_.append(InputSlice(path, unit_start, offset, unit_first))
                    slices.append(InputSlice(path, start, offset, first_line))
                    units.append(tuple(slice_units_))
                    close_shard()
                    start, first_line, slice_records = offset, number + 1, 0
                    slice_units_ = []
                    unit_start, unit_first, unit_size = offset, number + 1, 0
            if slice_records:
                if unit_size:
                    slice_units_.append(InputSlice(path, unit_start, offset, unit_first))
                slices.append(InputSlice(path, start, offset, first_line))
                units.append(tuple(slice_units_))
    close_shard()
    return tasks


def scan_records(
    stream: IO[bytes], path: str, digest: InputDigest | None = None
) -> Iterator[tuple[int, int, int, int]]:
    """(line number, byte offset after the line, unit length, raw length) of each record line.

    The lines are ``iter_line_batches``' (blank lines skipped); the unit length is what
    ``split_units`` counts (the line without its ending, plus 1), so units planned from a scan
    cut exactly where a sequential read cuts.
    """
    for batch in iter_line_batches(stream, path, digest=digest):
        unit_lengths = [len(line) + 1 for line in batch.lines]
        yield from zip(
            batch.numbers, batch.ends.tolist(), unit_lengths, batch.raw_sizes.tolist(), strict=True
        )


def iter_unit_slices(
    path: str,
    *,
    unit_bytes: int | None = None,
    digest: InputDigest | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[InputSlice]:
    """The work units of one whole input as byte ranges, yielded while the input is scanned (so
    workers start on the first unit while the rest is still being read)."""
    unit_bytes = unit_bytes or UNIT_INPUT_BYTES
    with open_any_input(path, storage_options, digest) as stream:
        start, first, open_size, end = 0, 1, 0, 0
        for batch in iter_line_batches(stream, path, digest=digest):
            cuts, open_size = unit_cuts(batch.lines, open_size, unit_bytes)
            for i in cuts:
                cut = int(batch.ends[i])
                yield InputSlice(path, start, cut, first)
                start, first = cut, batch.numbers[i] + 1
            end = int(batch.ends[-1])
        if open_size:
            yield InputSlice(path, start, end, first)


def read_unit(item: InputSlice, storage_options: dict[str, Any] | None = None) -> Unit:
    """One planned unit, read from its input by whoever encodes it."""
    numbers: list[int] = []
    lines: list[bytes] = []
    for batch in iter_slice_batches(item, storage_options):
        numbers += batch.numbers
        lines += batch.lines
    return Unit(item.path, numbers, lines)


def estimate_packed_ratio(
    inputs: Sequence[str], options: EncodeOptions, storage_options: dict[str, Any] | None = None
) -> float:
    """Packed bytes per input byte, measured by encoding the first few MiB of the inputs."""
    encoder = UnitEncoder(options)
    lines: list[tuple[int, bytes]] = []
    taken = 0
    for path in inputs:
        with open_any_input(path, storage_options) as stream:
            for number, line in iter_lines(stream, path):
                lines.append((number, line))
                taken += len(line) + 1
                if taken >= SAMPLE_INPUT_BYTES:
                    break
        if taken >= SAMPLE_INPUT_BYTES:
            break
    if not taken:
        return 1.0
    stored = 0
    for unit in split_units(lines, "sample", UNIT_INPUT_BYTES):
        stored += sum(len(block.stored) for block in encoder.encode(unit).blocks)
    return max(stored / taken, 1e-3)


def _skip(stream: IO[bytes], count: int, path: str) -> None:
    if count == 0:
        return
    try:
        if stream.seekable():
            stream.seek(count)
            return
    except (OSError, ValueError):
        pass
    # compressed inputs cannot seek: read past the bytes before the slice
    while count > 0:
        chunk = stream.read(min(count, 8 << 20))
        if not chunk:
            raise InputError("input is shorter than planned (changed during the pack?)", path=path)
        count -= len(chunk)
