"""Reading JSONL inputs line by line, with exact positions (the byte streams: ``storage.streams``).

Lines are parsed with msgspec (fast, keeps integers beyond 64 bits exact); a line it refuses is
retried with the standard library, which also accepts what Python's ``json.dumps`` writes
(``NaN``, ``Infinity``, unpaired surrogates). A line neither accepts is an ``InputError`` naming
file, line and column. ``read_values`` reads a unit's lines into the values a pack stores, long
numeric lines through simdjson (``typed_lines``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from ..errors import InputError
from ..format.bounds import MAX_NESTING_DEPTH

if TYPE_CHECKING:
    from ..format.records import RecordEncoder
    from .typed_lines import TypedLineReader

BOM = b"\xef\xbb\xbf"
EXCERPT_CHARS = 40

_decode = msgspec.json.decode


PROBE_BYTES = 64 * 1024  # read past a range's end in steps of this, to finish its last line


@dataclass
class LineBatch:
    """Consecutive non-blank lines of an input (without line endings), with their positions."""

    numbers: list[int]  # line numbers, 1-based, as a text editor shows them
    lines: list[bytes]
    ends: np.ndarray  # int64: offset just past each line's ending, from where reading started
    raw_sizes: np.ndarray  # int64: each line's bytes as read (with BOM and line ending)


def _line_batch(
    lines: list[bytes], first: int, has_cr: bool, *, complete: bool
) -> LineBatch | None:
    raw_sizes = np.fromiter(map(len, lines), np.int64, len(lines))
    if complete:
        raw_sizes += 1
    ends = np.cumsum(raw_sizes)
    if has_cr:  # CRLF endings: split at LF left the CR
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    numbers = list(range(first, first + len(lines)))
    if b"" in lines or any(map(bytes.isspace, lines)):
        keep = [i for i, line in enumerate(lines) if line and not line.isspace()]
        if not keep:
            return None
        numbers = [numbers[i] for i in keep]
        lines = [lines[i] for i in keep]
        ends = ends[keep]
        raw_sizes = raw_sizes[keep]
    return LineBatch(numbers, lines, ends, raw_sizes)


def split_lines(data: bytes, first_line: int, at_input_start: bool) -> tuple[LineBatch | None, int]:
    """The non-blank lines of ``data`` (whole lines; the last may lack its ending), numbered from
    ``first_line``, and how many lines ``data`` holds (blank ones included). A BOM before the
    input's first line and CR before LF are dropped; whitespace-only lines are skipped."""
    if not data:
        return None, 0
    lines = data.split(b"\n")
    complete = not lines[-1]
    if complete:
        lines.pop()
    if at_input_start and lines[0].startswith(BOM):
        lines[0] = lines[0][len(BOM) :]
    has_cr = b"\r" in data
    batch = _line_batch(lines, first_line, has_cr, complete=complete)
    return batch, len(lines)


def line_range(
    read: Callable[[int, int], bytes], size: int, start: int, end: int
) -> tuple[int, int, bytes]:
    """The lines that *start* in bytes [start, end) of an input of ``size`` bytes, whole:
    ``(first byte, end byte, bytes)``. ``read(offset, length)`` reads the input.

    This is how an input is cut into work units without reading it first: every line belongs
    to the unit its first byte falls in, so anyone holding (start, end) finds the same lines,
    and consecutive ranges cover every line exactly once.
    """
    base = max(start - 1, 0)
    buffer = bytearray(read(base, min(end + PROBE_BYTES, size) - base))
    if start == 0:
        first = 0
    else:
        # a line starts at `start` if the byte before it ends a line; else after the next LF
        found = buffer.find(b"\n", 0, end - base)
        if found < 0:
            return start, start, b""  # one long line runs through the whole range
        first = base + found + 1
    if first >= end:
        return start, start, b""  # the line that starts after `start` starts after `end`
    # the last line starting before `end` ends at the first LF at or after end - 1
    search = end - 1 - base
    found = buffer.find(b"\n", search)
    while found < 0 and base + len(buffer) < size:
        search = len(buffer)
        buffer += read(base + len(buffer), min(PROBE_BYTES, size - base - len(buffer)))
        found = buffer.find(b"\n", search)
    stop = base + found + 1 if found >= 0 else base + len(buffer)
    return first, stop, bytes(buffer[first - base : stop - base])


MIN_TYPED_LINE = 1024  # shorter lines hold too few numbers to repay simdjson's set-up
NUMBERS_PER_CONTAINER = 4  # fewer commas than this per list or object: mostly text
SAMPLE_BYTES = 4096


def read_values(lines: list[bytes], encoder: RecordEncoder) -> list[Any] | None:
    """Every line's value as ``encoder.convert(json.loads(line))`` gives it (dtype statistics
    recorded in line order), or None if some line is not JSON that msgspec reads (the caller
    parses the lines one by one, to locate the error or accept what only ``json`` accepts).

    Long lines with many numbers per list or object go through ``typed_lines.TypedLineReader``
    (5x faster on a KD record); text (few numbers, many small objects: there msgspec's one
    C-level pass is 2-3x faster) and any line the reader declines go through msgspec and
    ``convert``. Which path reads a line changes the speed, never the values."""
    try:
        if max(map(len, lines), default=0) < MIN_TYPED_LINE:
            return encoder.convert_all(list(map(_decode, lines)))
        reader = LineReader(encoder)
        values = []
        for line in lines:
            value = reader.typed(line)
            if value is None:
                value = encoder.convert(_decode(line))
            values.append(value)
        return values
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None


class LineReader:
    """A unit's lines one at a time, as the values a pack stores (numeric lists as typed arrays,
    dtype statistics recorded in ``encoder``): for packs that check each record (a schema, lossy
    dtypes, ``on_error``) or whose unit holds a line ``read_values`` could not take."""

    def __init__(self, encoder: RecordEncoder) -> None:
        self.encoder = encoder
        self._typed: TypedLineReader | None = None

    def typed(self, line: bytes) -> Any:
        """The line's value through ``typed_lines`` if it looks numeric and the reader takes
        it, else None (nothing recorded)."""
        if not _mostly_numbers(line):
            return None
        if self._typed is None:
            from .typed_lines import TypedLineReader  # simdjson: imported by packs with long lines

            self._typed = TypedLineReader(self.encoder)
        return self._typed.read(line)

    def value(self, line: bytes, path: str, number: int) -> Any:
        """The line's value, or an ``InputError`` with its line and column (``parse_line``)."""
        value = self.typed(line)
        if value is None:
            value = self.encoder.convert(parse_line(line, path, number))
        return value


def _mostly_numbers(line: bytes) -> bool:
    """Whether a line looks numeric, from a sample of its middle (a KD record's text comes
    first, its arrays after; counting a long line whole costs a fifth of reading it typed)."""
    size = len(line)
    if size < MIN_TYPED_LINE:
        return False
    middle = size // 2
    sample = line[max(0, middle - SAMPLE_BYTES // 2) : middle + SAMPLE_BYTES // 2]
    containers = sample.count(b"[") + sample.count(b"{")
    return sample.count(b",") >= NUMBERS_PER_CONTAINER * containers + 16


def parse_line(data: bytes, path: str, line: int) -> Any:
    """The JSON value of one line, or an InputError with its line and column."""
    try:
        return _decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        pass  # msgspec raises a bare UnicodeDecodeError on invalid UTF-8: located below
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"invalid UTF-8 ({exc.reason})",
            path=path,
            line=line,
            column=exc.start + 1,
            excerpt=_excerpt(data.decode("utf-8", "replace"), exc.start),
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON: {exc.msg}",
            path=path,
            line=line,
            column=exc.colno,
            excerpt=_excerpt(text, exc.pos),
        ) from None
    except RecursionError:
        raise InputError(
            f"JSON nested deeper than {MAX_NESTING_DEPTH} levels (the format's limit)",
            path=path,
            line=line,
        ) from None
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        reason = str(exc).split(";")[0]
        raise InputError(f"cannot read JSON: {reason}", path=path, line=line) from None


def _excerpt(text: str, position: int) -> str:
    start = max(0, position - EXCERPT_CHARS // 2)
    return text[start : start + EXCERPT_CHARS]
