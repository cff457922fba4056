"""The C module's signatures (format/_speedups.c); absent at run time where it was not built."""

from collections.abc import Callable
from typing import Any

def decode(buffer: Any, begin: int, end: int, hook: Callable[[int, bytes], Any], /) -> Any: ...
def nativize(payload: bytes, /) -> bytes: ...
def decode_block(
    raw: Any,
    count: int,
    hook: Callable[[int, bytes], Any],
    wanted: frozenset[str] | set[str] | None = None,
    /,
) -> list[Any] | None: ...
def decode_block_columns(
    raw: Any, count: int, hook: Callable[[int, bytes], Any], /
) -> tuple[tuple[str, ...], list[list[Any]]] | None: ...
def index_fits(
    index: Any,
    data_end: int,
    record_count: int,
    max_raw_size: int,
    header_size: int,
    raw_cap: int,
    records_cap: int,
    block_fixed: int,
    min_record_bytes: int,
    known_flags: int,
    /,
) -> bool: ...
