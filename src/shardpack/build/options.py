"""Pack options: the codec, its defaults (block size, byte shuffle), sizes and worker counts."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ..codecs import get_codec
from ..errors import OptionError
from .units import (
    EncodeOptions,
)

DEFAULT_BLOCK_SIZE = 64 * 1024
# lz4 is the speed codec: half-size blocks halve what a random read decompresses (p50 52 -> 36
# µs on the KD mix) for +0.3% size there, +2.4% on short text (docs/DECISIONS.md)
DEFAULT_BLOCK_SIZES = {"lz4": 32 * 1024}
DEFAULT_COMPRESSION = "lz4"


ProgressCallback = Callable[[int, int], None]  # (input bytes done, records done)


def default_shuffle(codec_id: str, shuffle: bool | None) -> bool:
    """Byte-plane shuffle is on by default for zstd only (see docs/DECISIONS.md)."""
    return codec_id == "zstd" if shuffle is None else shuffle


def encode_options(
    compression: str,
    *,
    level: int | None = None,
    block_size: int | str | None = None,
    dtypes: Mapping[str, str] | None = None,
    shuffle: bool | None = None,
    schema: Mapping[str, Any] | None = None,
    on_error: str = "fail",
) -> EncodeOptions:
    """The options that decide a pack's bytes, with the codec's defaults filled in (block size,
    byte shuffle); one place for single-file and sharded packs."""
    codec = get_codec(compression, level)
    return EncodeOptions(
        codec=codec.to_dict(),
        block_size=default_block_size(codec.codec_id, block_size),
        dtype_overrides=dict(dtypes or {}),
        schema=schema,
        on_error=on_error,
        shuffle=default_shuffle(codec.codec_id, shuffle),
    )


def default_block_size(codec_id: str, block_size: int | str | None = None) -> int:
    """``block_size`` in bytes, or the codec's default block size when it is None."""
    if block_size is None:
        return DEFAULT_BLOCK_SIZES.get(codec_id, DEFAULT_BLOCK_SIZE)
    return parse_size(block_size)


def parse_size(size: int | str) -> int:
    """Bytes from ``65536``, ``"64K"``, ``"64KiB"``, ``"1M"``, ``"1.5MB"`` (powers of 1024)."""
    if isinstance(size, int):
        value = size
    else:
        text = str(size).strip().upper().removesuffix("IB").removesuffix("B")
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        number = text[:-1] if scale > 1 else text
        try:
            value = int(float(number) * scale)
        except ValueError:
            raise OptionError(f"not a size: {size!r} (use e.g. 65536, 64K, 1M)") from None
    if value <= 0:
        raise OptionError(f"size must be positive, got {size!r}")
    return value


def resolve_workers(workers: int) -> int:
    if workers < 0:
        raise OptionError(f"workers must be >= 0, got {workers}")
    return workers or os.cpu_count() or 1
