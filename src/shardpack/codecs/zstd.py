"""Zstandard block compression, optionally with a dictionary trained on the first blocks.

Small blocks compress poorly on their own; a dictionary trained while packing and stored in the
file's metadata recovers most of the ratio of large blocks at small-block random-access cost.
"""

from __future__ import annotations

import base64
import struct
import threading
from collections.abc import Sequence
from typing import Any

import zstandard

from .._machine import usable_cores
from ..errors import CodecError, OptionError
from .base import Codec, register_codec
from .native import NativeReadAhead

DEFAULT_LEVEL = 3


def _batch_threads() -> int:
    """Threads that decompress one batch of frames on a Python worker (``read_ahead`` without
    the C module): up to 4, leaving a core to the thread that decodes the records and one to
    the rest of the machine (on 2 cores, one)."""
    return max(1, min(4, usable_cores() - 2))


BATCH_THREADS = _batch_threads()
# native read-ahead: decompressing a zstd block takes longer than building its records (GSM8K:
# ~4 ms against ~2 ms), so a thread a core shares it, the scanning thread's core included (it
# takes blocks when it would otherwise wait). On 2 cores one pool thread measured 10-20% faster
# than two (three threads on two cores).
NATIVE_THREADS = max(1, min(8, usable_cores() - 1))


@register_codec
class ZstdCodec(NativeReadAhead, Codec):
    codec_id = "zstd"
    batch_releases_gil = True  # multi_decompress_to_buffer decodes a whole batch without the GIL
    # with the C module (NativeReadAhead) batches go to native threads: no worker thread

    def __init__(self, level: int = DEFAULT_LEVEL, dictionary: bytes | None = None) -> None:
        if not -7 <= level <= 22:
            raise OptionError(f"zstd level must be -7 to 22, got {level}")
        self.level = level
        self.dictionary = dictionary
        self._compressor: zstandard.ZstdCompressor | None = None
        self._decompressor: zstandard.ZstdDecompressor | None = None
        self._batch = threading.local()  # decompressors are not shared between threads

    def _dict(self) -> zstandard.ZstdCompressionDict | None:
        return None if self.dictionary is None else zstandard.ZstdCompressionDict(self.dictionary)

    def encode(self, raw: bytes | memoryview) -> bytes:
        if self._compressor is None:
            # no content size or checksum in the frame: the block index carries both
            self._compressor = zstandard.ZstdCompressor(
                level=self.level,
                dict_data=self._dict(),
                write_content_size=True,
                write_checksum=False,
                write_dict_id=False,
            )
        return self._compressor.compress(raw)

    def decode(self, stored: bytes | memoryview, raw_size: int) -> bytes:
        try:
            if self._decompressor is None:  # a damaged dictionary fails here
                self._decompressor = zstandard.ZstdDecompressor(dict_data=self._dict())
            # the decompressor allocates what the frame header claims, not max_output_size: a
            # forged header claiming a terabyte must be refused before it is believed
            declared = zstandard.frame_content_size(stored)
            if declared != raw_size:
                found = "no size" if declared < 0 else f"{declared} bytes"
                raise CodecError(f"zstd frame declares {found}, the block index {raw_size} bytes")
            raw = self._decompressor.decompress(stored, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            raise CodecError(f"zstd decompression failed: {exc}") from exc
        if len(raw) != raw_size:
            raise CodecError(f"zstd block decompressed to {len(raw)} bytes, expected {raw_size}")
        return raw

    def decode_batch(
        self, stored: Sequence[bytes | memoryview], raw_sizes: Sequence[int]
    ) -> list[Any]:
        """Several frames in one call that releases the GIL from start to end.

        Output sizes come from the block index (bounded by the file's checked maximum), never
        from the frames' own headers; a frame that decodes to another size is refused."""
        decompressor = getattr(self._batch, "decompressor", None)
        if decompressor is None:
            decompressor = self._batch.decompressor = zstandard.ZstdDecompressor(
                dict_data=self._dict()
            )
        count = len(stored)
        sizes = struct.pack(f"<{count}Q", *raw_sizes)
        try:
            decoded = decompressor.multi_decompress_to_buffer(
                list(stored), decompressed_sizes=sizes, threads=BATCH_THREADS
            )
        except (zstandard.ZstdError, ValueError) as exc:
            raise CodecError(f"zstd decompression failed: {exc}") from exc
        blocks = [decoded[i] for i in range(count)]
        for block, raw_size in zip(blocks, raw_sizes, strict=True):
            if len(block) != raw_size:
                raise CodecError(
                    f"zstd block decompressed to {len(block)} bytes, expected {raw_size}"
                )
        return blocks

    def native_threads(self) -> int:
        return NATIVE_THREADS

    def native_dictionary(self) -> bytes | None:
        return self.dictionary

    def train(self, samples: Sequence[bytes], dict_size: int = 16 * 1024) -> None:
        """Train a dictionary from sample blocks (needs a handful of samples to be worth it)."""
        if len(samples) < 8:
            return
        try:
            trained = zstandard.train_dictionary(dict_size, list(samples), level=self.level)
        except zstandard.ZstdError:
            return  # too little or too uniform data: packing without a dictionary is fine
        self.dictionary = trained.as_bytes()
        self._compressor = self._decompressor = None

    def to_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {"id": self.codec_id, "level": self.level}
        if self.dictionary is not None:
            config["dictionary"] = base64.b64encode(self.dictionary).decode("ascii")
        return config

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Codec:
        level = config.get("level")
        dictionary = config.get("dictionary")
        try:
            raw_dict = None if dictionary is None else base64.b64decode(dictionary, validate=True)
        except ValueError as exc:
            raise CodecError(
                f"zstd dictionary in file metadata is not valid base64: {exc}"
            ) from exc
        if raw_dict is not None:
            try:  # load it now: a damaged dictionary is the file's fault, not every block's
                zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(raw_dict))
            except zstandard.ZstdError as exc:
                raise CodecError(f"zstd dictionary in file metadata is unusable: {exc}") from None
        return cls(DEFAULT_LEVEL if level is None else int(level), raw_dict)
