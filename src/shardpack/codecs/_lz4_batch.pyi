"""The C module's signatures (codecs/_lz4_batch.c); absent at run time where it was not built."""

from typing import Any

class Pending:
    def result(self) -> list[bytes] | None: ...

def start(stored: list[Any], raw_sizes: list[int], out: Any = None, /) -> Pending: ...
def read(
    fd: int,
    offset: int,
    stored: Any,
    starts: list[int],
    stored_sizes: list[int],
    raw_sizes: list[int],
    checksums: list[int] | None,
    out: Any,
    /,
) -> Pending: ...
