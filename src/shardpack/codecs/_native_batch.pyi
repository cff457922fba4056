"""The C module's signatures (codecs/_native_batch.c); absent at run time where it was not
built."""

from typing import Any

LZ4: int
ZSTD: int
MAX_THREADS: int

class Pending:
    def result(self) -> list[bytes] | None: ...
    def wait_block(self, index: int, /) -> bytes | None: ...
    def stop(self) -> None: ...

def start(
    codec: int,
    stored: list[Any],
    raw_sizes: list[int],
    out: Any,
    threads: int,
    dictionary: bytes | None,
    /,
) -> Pending: ...
def read(
    codec: int,
    fd: int,
    offset: int,
    stored: Any,
    starts: list[int],
    stored_sizes: list[int],
    raw_sizes: list[int],
    checksums: list[int] | None,
    out: Any,
    threads: int,
    dictionary: bytes | None,
    /,
) -> Pending: ...
