"""The C module's signatures (format/_speedups.c); absent at run time where it was not built."""

from collections.abc import Callable
from typing import Any

def decode(buffer: Any, begin: int, end: int, hook: Callable[[int, bytes], Any], /) -> Any: ...
def nativize(payload: bytes, /) -> bytes: ...
def decode_block(
    raw: Any, count: int, hook: Callable[[int, bytes], Any], /
) -> list[Any] | None: ...
