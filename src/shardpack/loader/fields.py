"""Decoding only some fields of each record, where this version's reader can skip the others
(``PackedFile.record`` / ``block_records(..., columns=)``); else records are decoded whole and
the loader keeps the fields it wants afterwards."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from ..packfile.reader import PackedFile

# field projection in the reader (decode only the fields asked for), where this version has it:
# PackedFile.record / block_records(..., columns=)
READER_PROJECTS = "columns" in inspect.signature(PackedFile.block_records).parameters


def read_block(packed: PackedFile, block: int, columns: Sequence[str] | None) -> list[Any]:
    """The records of ``block``, decoding only ``columns`` where the reader can."""
    if columns is not None and READER_PROJECTS:
        return packed.block_records(block, columns=columns)  # type: ignore[call-arg,unused-ignore]
    return packed.block_records(block)


def read_record(packed: PackedFile, i: int, columns: Sequence[str] | None) -> Any:
    """Record ``i`` of ``packed``, decoding only ``columns`` where the reader can."""
    if columns is not None and READER_PROJECTS:
        return packed.record(i, columns=columns)  # type: ignore[call-arg,unused-ignore]
    return packed.record(i)
