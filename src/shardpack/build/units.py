"""Work units: reading one unit's lines and turning them into compressed blocks.

A unit is parsed, encoded and compressed into whole blocks on its own; blocks never span units,
and unit boundaries depend only on the input (``planning``), so one process or many produce
byte-identical files. Memory per worker is bounded by one unit plus its compressed blocks.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from ..codecs import Codec, get_codec
from ..errors import InputError, OptionError, SchemaError, ShardpackError
from ..format.block import BlockBuilder, block_cuts
from ..format.bounds import MAX_BLOCK_RAW_BYTES, describe_size
from ..format.decode import to_jsonable
from ..format.layout import BLOCK_SHUFFLED, checksum
from ..format.records import RecordEncoder, RecordLimitError
from ..ingest.columnar import read_records
from ..ingest.jsonl import LineReader, line_range, read_values, split_lines
from ..ingest.rejects import ON_ERROR_CHOICES, Rejection
from ..ingest.schema_infer import SchemaInferrer
from ..stats import StatsCollector
from ..stats.columns import Column
from ..storage.streams import read_range
from .options import EncodeOptions
from .planning import UnitSpec

if TYPE_CHECKING:
    from ..ingest.schema_check import RecordChecker

_UNPARSED = object()  # stands for a line still to be read (LineReader.value)


@dataclass
class Unit:
    """Consecutive input lines of one source, numbered (from 1 when the driver did not count
    the lines before them: then the driver adds the offset); or, with ``records``, records made
    in Python (numbered as written), which are not JSON text."""

    source: str
    line_numbers: list[int]
    lines: list[bytes]
    records: list[Any] | None = None
    input_bytes: int | None = None  # of records read from a file (else: the lines' bytes)


@dataclass
class EncodedBlock:
    stored: bytes
    raw_size: int
    record_count: int
    checksum: int
    flags: int = 0


@dataclass
class EncodedUnit:
    """What one unit turned into: blocks ready to write, plus per-record digests and field facts."""

    blocks: list[EncodedBlock]
    record_digests: np.ndarray  # uint64, one per record, in order
    array_dtypes: dict[str, dict[str, int]]
    lossy_fields: dict[str, str]
    input_bytes: int
    rejects: list[Rejection] = field(default_factory=list)
    inferred: SchemaInferrer | None = None  # the unit's records' shape, when no schema is given
    stats: StatsCollector = field(default_factory=StatsCollector)
    # where the unit's lines were, how many, who encoded them, and the first bad line (fail mode)
    spec: UnitSpec | None = None
    start: int = 0
    end: int = 0
    lines: int = 0
    failure: ShardpackError | None = None
    worker: str = ""

    @property
    def records(self) -> int:
        return len(self.record_digests)


def read_unit(
    spec: UnitSpec, storage_options: dict[str, Any] | None = None
) -> tuple[Unit, int, int, int]:
    """The unit's non-blank lines, its byte range ``[start, end)`` and its line count (blank
    lines included). Plain files are read here, at the unit's own byte range; a Parquet / Arrow
    unit's pieces too (its range and count: its bytes' share and its rows)."""
    if spec.part is not None:
        part = spec.part
        records = read_records(spec.location, part.kind, spec.source, part.pieces, part.skip,
                               part.rows, storage_options)  # fmt: skip
        first = spec.first_line or 1
        numbers = list(range(first, first + len(records)))
        unit = Unit(spec.source, numbers, [], records=records, input_bytes=spec.end - spec.start)
        return unit, spec.start, spec.end, len(records)
    if spec.records is not None:
        first = spec.first_line or 1
        numbers = list(range(first, first + len(spec.records)))
        return Unit(spec.source, numbers, [], records=spec.records), 0, 0, len(spec.records)
    if spec.data is not None:
        start, end, data = spec.start, spec.end, spec.data
    elif spec.exact:
        start, end = spec.start, spec.end
        data = read_range(spec.location, start, end - start, storage_options)
    else:

        def read(offset: int, length: int) -> bytes:
            return read_range(spec.location, offset, length, storage_options)

        start, end, data = line_range(read, spec.size, spec.start, spec.end)
    batch, count = split_lines(data, spec.first_line or 1, at_input_start=start == 0)
    numbers = batch.numbers if batch is not None else []
    lines = batch.lines if batch is not None else []
    return Unit(spec.source, numbers, lines), start, end, count


def encode_spec(
    encoder: UnitEncoder, spec: UnitSpec, storage_options: dict[str, Any] | None = None
) -> EncodedUnit:
    """Read and encode one unit; an input or schema error in fail mode becomes ``failure``
    (the driver knows the line numbers before the unit and raises it with the real line)."""
    unit, start, end, count = read_unit(spec, storage_options)
    try:
        encoded = encoder.encode(unit)
    except (InputError, SchemaError) as exc:
        encoded = EncodedUnit([], np.zeros(0, np.uint64), {}, {}, 0, failure=exc)
    encoded.spec, encoded.start, encoded.end, encoded.lines = spec, start, end, count
    encoded.worker = worker_name()
    return encoded


UNITS_PER_GROUP = 8


def unit_groups(specs: Iterable[UnitSpec]) -> Iterator[list[UnitSpec]]:
    """Consecutive units of one shard with the same ``index // UNITS_PER_GROUP``: what a worker
    takes at a time, and summarises together (the groups depend on unit numbers only, so any
    worker count, a resumed pack and Dask all sum the same statistics in the same order)."""
    group: list[UnitSpec] = []
    for spec in specs:
        if group and (
            spec.index // UNITS_PER_GROUP != group[0].index // UNITS_PER_GROUP
            or spec.shard != group[0].shard
        ):
            yield group
            group = []
        group.append(spec)
    if group:
        yield group


def encode_group(
    encoder: UnitEncoder, specs: list[UnitSpec], storage_options: dict[str, Any] | None = None
) -> list[EncodedUnit]:
    """Encode a group of units; their statistics and inferred schema are merged here, into the
    group's last unit, so that the driver merges one summary per group, not per unit."""
    encoded = [encode_spec(encoder, spec, storage_options) for spec in specs]
    stats, inferred = encoded[0].stats, encoded[0].inferred
    for unit in encoded[1:]:  # in input order
        stats.merge(unit.stats)
        if inferred is not None and unit.inferred is not None:
            inferred.merge(unit.inferred)
    for unit in encoded[:-1]:
        unit.stats, unit.inferred = StatsCollector(), None
    encoded[-1].stats, encoded[-1].inferred = stats, inferred
    return encoded


def worker_name() -> str:
    """Who encodes: this process, and the Dask worker it serves, if any."""
    name = f"pid {os.getpid()}"
    distributed = sys.modules.get("distributed")  # imported on Dask workers only: never here
    if distributed is None:
        return name
    try:
        return f"{distributed.get_worker().address} {name}"
    except ValueError:  # not inside a Dask task
        return name


class UnitEncoder:
    """Parses, encodes and compresses units into blocks (one instance per process)."""

    def __init__(self, options: EncodeOptions, codec: Codec | None = None) -> None:
        if options.block_size <= 0:
            raise OptionError(f"block size must be positive, got {options.block_size}")
        if options.block_size > MAX_BLOCK_RAW_BYTES:  # bounds: blocks stay under the cap
            raise OptionError(
                f"block size {options.block_size} is above the format's block cap of "
                f"{describe_size(MAX_BLOCK_RAW_BYTES)}"
            )
        from ..format.records import parse_dtype_overrides

        self.options = options
        self.codec = codec if codec is not None else get_codec(options.codec)
        self.overrides = parse_dtype_overrides(options.dtype_overrides)
        if options.on_error not in ON_ERROR_CHOICES:
            raise OptionError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}")
        self.checker: RecordChecker | None = None
        if options.schema is not None:
            from ..ingest.schema_check import (
                RecordChecker,  # jsonschema: only for packs with a schema
            )

            self.checker = RecordChecker(options.schema)

    def encode(self, unit: Unit) -> EncodedUnit:
        if unit.records is not None:
            return self._encode_checked(unit, unit.records, native=True)
        if self.checker is not None or self.overrides:
            return self._encode_checked(unit, None)
        encoder = RecordEncoder(native_strings=self.options.native_strings)
        try:
            values = read_values(unit.lines, encoder)
            if values is not None:
                return self._encode_valid(unit, encoder, values)
        except RecordLimitError:  # bounds: a record too deep or too large, found by line
            pass
        return self._encode_checked(unit, None)

    def _encode_valid(self, unit: Unit, encoder: RecordEncoder, values: list[Any]) -> EncodedUnit:
        """The common case: every line parsed, no schema to check, no lossy dtypes to apply.

        Records are encoded and hashed with ``map`` (no Python step per record) when none holds
        an array; blocks are then cut where adding records one by one cuts them.
        """
        payloads = None if encoder.array_dtypes else encoder.encode_all(values)
        if payloads is None:
            blocks, digests = self._blocks_of_values(encoder, values)
        else:
            blocks, digests = self._blocks_of_payloads(encoder, payloads)
        return self._encoded_unit(unit, encoder, values, blocks, digests, [], infer=True)

    def _blocks_of_values(
        self, encoder: RecordEncoder, values: list[Any]
    ) -> tuple[list[EncodedBlock], np.ndarray]:
        builder = BlockBuilder(encoder)
        blocks: list[EncodedBlock] = []
        digests = np.empty(len(values), dtype=np.uint64)
        block_size = self.options.block_size
        for i, value in enumerate(values):
            digests[i] = builder.add(value, converted=True)
            while builder.full(block_size):  # bounds: also at the record and raw-size caps
                blocks.append(self._seal(builder))
        if len(builder):
            blocks.append(self._seal(builder))
        return blocks, digests

    def _blocks_of_payloads(
        self, encoder: RecordEncoder, payloads: list[bytes]
    ) -> tuple[list[EncodedBlock], np.ndarray]:
        """Blocks of records encoded already, none with arrays."""
        builder = BlockBuilder(encoder)
        blocks: list[EncodedBlock] = []
        sizes = np.fromiter(map(len, payloads), np.int64, len(payloads))
        start = 0
        for end in block_cuts(sizes, self.options.block_size):  # bounds: cuts at the caps too
            builder.add_payloads(payloads[start:end])
            blocks.append(self._seal(builder))
            start = end
        digests = np.fromiter(map(xxhash.xxh3_64_intdigest, payloads), np.uint64, len(payloads))
        return blocks, digests

    def _encode_checked(
        self, unit: Unit, decoded: list[Any] | None, *, native: bool = False
    ) -> EncodedUnit:
        """Record by record: lines to parse carefully, schema checks, ``on_error`` rejects;
        ``native``: the values are Python records (numpy arrays and tensors keep their dtype)."""
        encoder = RecordEncoder(self.overrides, native_strings=self.options.native_strings)
        builder = BlockBuilder(encoder)
        blocks: list[EncodedBlock] = []
        count = len(decoded) if native and decoded is not None else len(unit.lines)
        digests = np.empty(count, dtype=np.uint64)
        block_size = self.options.block_size
        convert = encoder.convert_record if native else encoder.convert
        reader = LineReader(encoder)
        lines: list[Any] = [b""] * count if native else unit.lines
        kept = 0
        rejects: list[Rejection] = []
        checker = self.checker
        kept_values: list[Any] = []  # summarised column-wise once the unit is encoded
        if decoded is None:  # JSONL lines, each read in the loop (and maybe an error message)
            decoded = [_UNPARSED] * len(unit.lines)
        for number, line, value in zip(unit.line_numbers, lines, decoded, strict=True):
            # a rejected record must not count in the fields' dtype statistics
            seen = {path: dict(counts) for path, counts in encoder.array_dtypes.items()}
            try:
                # typed arrays, as statistics describe them; a schema checks the record as it
                # will be stored before it joins a block
                if value is _UNPARSED:
                    value = reader.value(line, unit.source, number)
                else:
                    value = convert(value)
                if checker is not None:
                    checker.check(value, path=unit.source, line=number)
                digests[kept] = builder.add(value, converted=True)
            except (InputError, SchemaError, OptionError) as exc:
                encoder.array_dtypes = seen
                if self.options.on_error != "skip":
                    if isinstance(exc, OptionError):
                        raise InputError(str(exc), path=unit.source, line=number) from None
                    raise
                if native:
                    line = json.dumps(value, default=to_jsonable).encode("utf-8", "replace")
                rejects.append(Rejection.from_error(exc, unit.source, number, line))
                continue
            kept += 1
            kept_values.append(value)
            while builder.full(block_size):  # bounds: also at the record and raw-size caps
                blocks.append(self._seal(builder))
        if len(builder):
            blocks.append(self._seal(builder))
        return self._encoded_unit(
            unit, encoder, kept_values, blocks, digests[:kept], rejects, infer=checker is None
        )

    def _encoded_unit(
        self,
        unit: Unit,
        encoder: RecordEncoder,
        values: list[Any],
        blocks: list[EncodedBlock],
        digests: np.ndarray,
        rejects: list[Rejection],
        *,
        infer: bool,
    ) -> EncodedUnit:
        """The unit's blocks with its records' statistics (and inferred shape)."""
        records = Column(values)  # split by field once, for both passes
        stats = StatsCollector()
        stats.add_column(records)
        stats.flush()
        inferred = None
        if infer:
            inferred = SchemaInferrer()
            inferred.add_column(records)
        return EncodedUnit(
            blocks,
            digests,
            encoder.array_dtypes,
            encoder.lossy_fields,
            sum(map(len, unit.lines)) + len(unit.lines)
            if unit.input_bytes is None
            else unit.input_bytes,
            rejects,
            inferred,
            stats,
        )

    def _seal(self, builder: BlockBuilder) -> EncodedBlock:
        count = len(builder)
        shuffle = self.options.shuffle
        raw = builder.build(shuffle=shuffle)
        stored = self.codec.encode(raw)
        return EncodedBlock(
            stored, len(raw), count, checksum(stored), BLOCK_SHUFFLED if shuffle else 0
        )
