"""Packed records back to JSONL that ``json.loads`` reads to the same values."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..format.decode import to_jsonable
from ..storage.atomic import atomic_file, refuse_inputs_as_output


def dumps_record(record: Any) -> str:
    """One JSON line; keeps NaN/Infinity and unpaired surrogates as Python's json writes them."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=to_jsonable)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate: only an escape can carry it
        text = json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=to_jsonable)
    return text


def write_jsonl(
    records: Iterable[Any],
    output: str,
    progress: Callable[[int], None] | None = None,
    *,
    sources: Sequence[str] = (),
) -> int:
    """Write records as JSONL to ``output`` ('-' is stdout), atomically and durably for files.

    ``sources``: the files the records are read from; ``output`` may not be one of them."""
    if output == "-":
        return _write_lines(records, sys.stdout, progress)
    refuse_inputs_as_output(output, sources, "unpack output")
    with atomic_file(Path(output), "w", encoding="utf-8", newline="\n") as stream:
        return _write_lines(records, stream, progress)


def _write_lines(
    records: Iterable[Any], stream: Any, progress: Callable[[int], None] | None
) -> int:
    count = 0
    for record in records:
        stream.write(dumps_record(record))
        stream.write("\n")
        count += 1
        if progress is not None and count % 1024 == 0:
            progress(count)
    return count
