"""Work units: the deterministic split of the input that makes parallel packing reproducible.

Input lines are grouped into units of about ``UNIT_INPUT_BYTES``; a unit is parsed, encoded and
compressed into whole blocks on its own, and blocks never span units. Unit boundaries depend only
on the input, so one process or many produce byte-identical files. Memory per worker is bounded
by one unit plus its compressed blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .block import BlockBuilder
from .codecs import Codec, get_codec
from .encoding import RecordEncoder
from .errors import InputError, OptionError
from .format import checksum
from .jsonl import parse_line

UNIT_INPUT_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class EncodeOptions:
    """Everything that decides the bytes of the blocks (recorded in the file's metadata)."""

    codec: dict[str, Any]
    block_size: int
    dtype_overrides: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Unit:
    """Consecutive input lines of one source."""

    source: str
    line_numbers: list[int]
    lines: list[bytes]


@dataclass
class EncodedBlock:
    stored: bytes
    raw_size: int
    record_count: int
    checksum: int


@dataclass
class EncodedUnit:
    """What one unit turned into: blocks ready to write, plus per-record digests and field facts."""

    blocks: list[EncodedBlock]
    record_digests: np.ndarray  # uint64, one per record, in order
    array_dtypes: dict[str, dict[str, int]]
    lossy_fields: dict[str, str]
    input_bytes: int


def split_units(
    lines: Iterable[tuple[int, bytes]], source: str, unit_bytes: int = UNIT_INPUT_BYTES
) -> Iterator[Unit]:
    """Group (line number, bytes) pairs into units of about ``unit_bytes`` of input."""
    numbers: list[int] = []
    chunk: list[bytes] = []
    size = 0
    for number, line in lines:
        numbers.append(number)
        chunk.append(line)
        size += len(line) + 1
        if size >= unit_bytes:
            yield Unit(source, numbers, chunk)
            numbers, chunk, size = [], [], 0
    if chunk:
        yield Unit(source, numbers, chunk)


class UnitEncoder:
    """Parses, encodes and compresses units into blocks (one instance per process)."""

    def __init__(self, options: EncodeOptions, codec: Codec | None = None) -> None:
        if options.block_size <= 0:
            raise OptionError(f"block size must be positive, got {options.block_size}")
        from .encoding import parse_dtype_overrides

        self.options = options
        self.codec = codec if codec is not None else get_codec(options.codec)
        self.overrides = parse_dtype_overrides(options.dtype_overrides)

    def encode(self, unit: Unit) -> EncodedUnit:
        encoder = RecordEncoder(self.overrides)
        builder = BlockBuilder(encoder)
        blocks: list[EncodedBlock] = []
        digests = np.empty(len(unit.lines), dtype=np.uint64)
        block_size = self.options.block_size
        input_bytes = 0
        for i, (number, line) in enumerate(zip(unit.line_numbers, unit.lines, strict=True)):
            value = parse_line(line, unit.source, number)
            input_bytes += len(line) + 1
            try:
                digests[i] = builder.add(value)
            except OptionError as exc:
                raise InputError(str(exc), path=unit.source, line=number) from None
            if builder.size >= block_size:
                blocks.append(self._seal(builder))
        if len(builder):
            blocks.append(self._seal(builder))
        return EncodedUnit(blocks, digests, encoder.array_dtypes, encoder.lossy_fields, input_bytes)

    def _seal(self, builder: BlockBuilder) -> EncodedBlock:
        count = len(builder)
        raw = builder.build()
        stored = self.codec.encode(raw)
        return EncodedBlock(stored, len(raw), count, checksum(stored))
