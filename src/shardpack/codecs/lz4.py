"""LZ4 block compression: the fastest to decode, the default for training reads.

Read-ahead (``open(..., read_ahead=True)``) decompresses the next batch of blocks on a native
thread (``_lz4_batch``, the C module built with the package, LZ4's own C code) while the scan
turns this batch into records. Without the C module lz4 has no read-ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lz4.block

from ..errors import CodecError, OptionError
from .base import Codec, PendingBlocks, register_codec

try:
    from . import _lz4_batch
except ImportError:  # built without a C compiler
    _lz4_batch = None  # type: ignore[assignment]


class _NativeBatch:
    """A batch on its native thread; the C module's errors as CodecError."""

    __slots__ = ("_out", "_pending", "_sizes")

    def __init__(self, pending: Any, out: Any, sizes: Sequence[int]) -> None:
        self._pending = pending
        self._out = out
        self._sizes = sizes

    def result(self) -> list[Any]:
        try:
            blocks: list[Any] | None = self._pending.result()
        except ValueError as exc:  # a block that failed its checksum, its read or LZ4
            raise CodecError(f"lz4 batch failed: {exc}") from None
        if blocks is not None:
            return blocks
        whole, views, start = memoryview(self._out), [], 0
        for size in self._sizes:
            views.append(whole[start : start + size])
            start += size
        return views


@register_codec
class LZ4Codec(Codec):
    """LZ4 block format (no frame: the raw size lives in the block index).

    ``level`` 0 is LZ4's fast mode; 1-12 select LZ4-HC, slower to pack, same decode speed.
    """

    codec_id = "lz4"
    native_batches = native_reads = _lz4_batch is not None

    def __init__(self, level: int = 0) -> None:
        if not 0 <= level <= 12:
            raise OptionError(f"lz4 level must be 0 (fast) to 12 (high compression), got {level}")
        self.level = level

    def encode(self, raw: bytes | memoryview) -> bytes:
        if self.level == 0:
            stored: bytes = lz4.block.compress(raw, mode="default", store_size=False)
        else:
            stored = lz4.block.compress(
                raw, mode="high_compression", compression=self.level, store_size=False
            )
        return stored

    def decode(self, stored: bytes | memoryview, raw_size: int) -> bytes:
        # LZ4 cannot expand more than ~255x: refuse a claimed size it could never produce before
        # allocating it (a forged index could otherwise ask for gigabytes)
        if raw_size > 255 * len(stored) + 64:
            raise CodecError(f"lz4 block of {len(stored)} bytes cannot hold {raw_size} raw bytes")
        try:
            raw: bytes = lz4.block.decompress(stored, uncompressed_size=raw_size)
        except Exception as exc:  # lz4 raises a bare LZ4BlockError / ValueError
            raise CodecError(f"lz4 decompression failed: {exc}") from exc
        if len(raw) != raw_size:
            raise CodecError(f"lz4 block decompressed to {len(raw)} bytes, expected {raw_size}")
        return raw

    def start_batch(
        self, stored: Sequence[bytes | memoryview], raw_sizes: Sequence[int], out: Any = None
    ) -> PendingBlocks:
        return _native(lambda c: c.start(list(stored), list(raw_sizes), out), out, raw_sizes)

    def start_read(
        self,
        fd: int,
        offset: int,
        stored: memoryview,
        starts: list[int],
        stored_sizes: list[int],
        raw_sizes: list[int],
        checksums: list[int] | None,
        out: Any,
    ) -> PendingBlocks:
        return _native(
            lambda c: c.read(fd, offset, stored, starts, stored_sizes, raw_sizes, checksums, out),
            out,
            raw_sizes,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.codec_id, "level": self.level}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Codec:
        level = config.get("level")
        return cls(0 if level is None else int(level))


def _native(start: Callable[[Any], Any], out: Any, raw_sizes: Sequence[int]) -> PendingBlocks:
    """A batch started by ``start(the C module)``; its refusals as CodecError."""
    if _lz4_batch is None:
        raise NotImplementedError("lz4 read-ahead needs the C module, which is not built")
    try:
        pending = start(_lz4_batch)
    except ValueError as exc:  # a size the stored bytes could never hold
        raise CodecError(str(exc)) from None
    return _NativeBatch(pending, out, raw_sizes)
