"""The identity codec: blocks stored as they are, so a reader can map arrays straight from disk."""

from __future__ import annotations

from typing import Any

from ..errors import CodecError, OptionError
from .base import Codec, register_codec


@register_codec
class NoCompression(Codec):
    codec_id = "none"

    def encode(self, raw: bytes | memoryview) -> bytes:
        return bytes(raw)

    def decode(self, stored: bytes | memoryview, raw_size: int) -> bytes | memoryview:
        if len(stored) != raw_size:
            raise CodecError(f"stored size {len(stored)} differs from raw size {raw_size}")
        return stored  # zero-copy: a view into the file's memory map

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Codec:
        if config.get("level") is not None:
            raise OptionError("compression 'none' takes no level")
        return cls()
