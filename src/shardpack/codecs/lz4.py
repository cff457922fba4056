"""LZ4 block compression: the fastest to decode, the default for training reads.

Read-ahead (``open(..., read_ahead=True)``) decompresses the next batch of blocks on a native
thread (``native.py``) while the scan turns this batch into records. Without the C module lz4
has no read-ahead.
"""

from __future__ import annotations

from typing import Any

import lz4.block

from ..errors import CodecError, OptionError
from .base import Codec, register_codec
from .native import NativeReadAhead


@register_codec
class LZ4Codec(NativeReadAhead, Codec):
    """LZ4 block format (no frame: the raw size lives in the block index).

    ``level`` 0 is LZ4's fast mode; 1-12 select LZ4-HC, slower to pack, same decode speed.
    """

    codec_id = "lz4"

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

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.codec_id, "level": self.level}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Codec:
        level = config.get("level")
        return cls(0 if level is None else int(level))
