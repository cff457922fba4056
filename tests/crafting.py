"""Packed files taken apart and put back together with every checksum recomputed, as an attacker
can: the crafted corpus, the reader fuzzer and the bounds tests build their hostile files here.

``PackedParts.parse`` splits a real file (docs/FORMAT.md) into header, stored blocks, index,
metadata and trailer fields; ``assemble`` lays them out again (blocks 64-aligned, index
8-aligned), recomputing block checksums, the footer checksum and the trailer's own checksum
unless told to keep a field as set.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shardpack.format.layout import (
    BLOCK_ALIGN,
    BLOCK_ENTRY,
    HEADER_SIZE,
    INDEX_ALIGN,
    MAGIC,
    TRAILER,
    TRAILER_SIZE,
    align,
    checksum,
)


@dataclass
class PackedParts:
    """A packed file as editable parts."""

    header: bytes
    blocks: list[bytes]  # stored bytes, in index order
    index: np.ndarray  # BLOCK_ENTRY records; offsets and checksums are recomputed by assemble
    metadata: dict[str, Any]
    record_count: int
    version: tuple[int, int] = (1, 0)
    metadata_bytes: bytes | None = None  # raw metadata instead of ``metadata`` (not JSON, ...)
    keep: set[str] = field(default_factory=set)  # "offsets", "checksums", "footer", "trailer"

    @classmethod
    def parse(cls, data: bytes) -> PackedParts:
        fields = TRAILER.unpack(data[-TRAILER_SIZE:])
        index_offset, index_size, meta_offset, meta_size, records = fields[:5]
        index = np.frombuffer(
            data[index_offset : index_offset + index_size], dtype=BLOCK_ENTRY
        ).copy()
        blocks = [data[int(e["offset"]) : int(e["offset"]) + int(e["stored_size"])] for e in index]
        metadata = json.loads(data[meta_offset : meta_offset + meta_size])
        return cls(data[:HEADER_SIZE], blocks, index, metadata, records, (fields[6], fields[7]))

    def copy(self) -> PackedParts:
        return PackedParts(
            self.header,
            list(self.blocks),
            self.index.copy(),
            json.loads(json.dumps(self.metadata)),
            self.record_count,
            self.version,
            self.metadata_bytes,
            set(self.keep),
        )

    def assemble(self) -> bytes:
        out = bytearray(self.header)
        index = self.index.copy()
        for number, stored in enumerate(self.blocks):
            start = align(len(out), BLOCK_ALIGN)
            out += b"\0" * (start - len(out)) + stored
            if number < len(index):
                if "offsets" not in self.keep:
                    index[number]["offset"] = start
                    index[number]["stored_size"] = len(stored)
                if "checksums" not in self.keep:
                    index[number]["checksum"] = checksum(stored)
        index_offset = align(len(out), INDEX_ALIGN)
        out += b"\0" * (index_offset - len(out))
        index_bytes = index.tobytes()
        meta = self.metadata_bytes
        if meta is None:
            meta = json.dumps(self.metadata, sort_keys=True, separators=(",", ":")).encode()
        out += index_bytes + meta
        footer_sum = checksum(index_bytes + meta)
        if "footer" in self.keep:
            footer_sum ^= 1
        body = TRAILER.pack(
            index_offset,
            len(index_bytes),
            index_offset + len(index_bytes),
            len(meta),
            self.record_count,
            footer_sum,
            self.version[0],
            self.version[1],
            0,
            MAGIC,
        )
        own = checksum(body[:52] + body[56:]) & 0xFFFFFFFF
        if "trailer" in self.keep:
            own ^= 1
        return bytes(out + body[:52] + struct.pack("<I", own) + body[56:])


def trailer_for(
    file_size: int,
    index_offset: int,
    index_size: int,
    metadata_size: int,
    records: int,
    footer_sum: int = 0,
) -> bytes:
    """A self-consistent trailer (own checksum right) for a file of ``file_size`` bytes."""
    body = TRAILER.pack(
        index_offset,
        index_size,
        index_offset + index_size,
        metadata_size,
        records,
        footer_sum,
        1,
        0,
        0,
        MAGIC,
    )
    own = checksum(body[:52] + body[56:]) & 0xFFFFFFFF
    assert index_offset + index_size + metadata_size + TRAILER_SIZE == file_size
    return body[:52] + struct.pack("<I", own) + body[56:]


def zstd_frame(content_size: int, payload: bytes = b"x") -> bytes:
    """A zstd frame whose header declares ``content_size`` bytes, holding one raw block."""
    descriptor = 0b11_1_0_0_0_00  # 8-byte content size, single segment, no checksum, no dict
    block_header = (1 | (0 << 1) | (len(payload) << 3)).to_bytes(3, "little")  # last, raw
    return (
        (b"\x28\xb5\x2f\xfd" + bytes([descriptor]) + struct.pack("<Q", content_size))
        + block_header
        + payload
    )


def raw_block(payloads: list[bytes], arena: bytes = b"", starts: list[int] | None = None) -> bytes:
    """A raw block of msgpack ``payloads`` laid out as BlockBuilder does (tables may be edited
    afterwards to craft inconsistent ones)."""
    n = len(payloads)
    region_start = 8 + 8 * (n + 1)
    offsets = [5]
    for payload in payloads:
        offsets.append(offsets[-1] + len(payload))
    region_end = region_start + offsets[-1]
    arena_offset = align(region_end, 64)
    starts = starts if starts is not None else [0] * (n + 1)
    return (
        struct.pack("<II", n, arena_offset)
        + struct.pack(f"<{n + 1}I", *offsets)
        + struct.pack(f"<{n + 1}I", *starts)
        + b"\xdd"
        + n.to_bytes(4, "big")
        + b"".join(payloads)
        + b"\0" * (arena_offset - region_end)
        + arena
    )


def zstd_rle_frame(content_size: int, byte: int = 0) -> bytes:
    """A valid zstd frame of ``content_size`` copies of ``byte``: RLE blocks of 128 KiB, four
    bytes each, so a 1 GiB bomb takes 32 KiB."""
    out = bytearray(
        b"\x28\xb5\x2f\xfd" + bytes([0b11_1_0_0_0_00]) + struct.pack("<Q", content_size)
    )
    left = content_size
    while True:
        size = min(left, 128 * 1024)
        left -= size
        out += (int(left == 0) | (1 << 1) | (size << 3)).to_bytes(3, "little") + bytes([byte])
        if left == 0:
            return bytes(out)
