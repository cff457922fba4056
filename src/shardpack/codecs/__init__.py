"""Block codecs: one small class per codec, looked up by id through a registry.

A codec turns a block's raw bytes into stored bytes and back. Its id and settings are recorded
in the packed file (``Codec.to_dict``), so a reader rebuilds exactly the codec the writer used
(``get_codec``). Adding a codec means one module with a ``Codec`` subclass registered with
``register_codec`` and a test that subclasses the shared codec test suite.
"""

from __future__ import annotations

from .base import Codec, available_codecs, get_codec, register_codec
from .lz4 import LZ4Codec
from .none import NoCompression
from .zstd import ZstdCodec

__all__ = [
    "Codec",
    "LZ4Codec",
    "NoCompression",
    "ZstdCodec",
    "available_codecs",
    "get_codec",
    "register_codec",
]
