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
from pathlib import Path
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


def seed_records(count: int = 120) -> list[Any]:
    """Deterministic records that use every part of the format: text, int32/float32/float64/bool
    arrays, a 2-D array, big integers, a lone surrogate, nesting, empty lists."""
    records: list[Any] = []
    for i in range(count):
        records.append(
            {
                "id": i,
                "text": "word " * (i % 7),
                "ids": [i, i + 1, i + 2],
                "logp": [0.5 * i, -1.25],
                "wide": [i * 0.1, 2.0**40],
                "mask": [True, False],
                "grid": [[i, 1], [2, 3]],
                "big": 10**20 + i if i % 5 == 0 else i,
                "nested": {"a": [{"b": None}], "s": "\ud800" if i % 11 == 0 else "ok"},
                "empty": [],
            }
        )
    return records


def write_seeds(folder: Path) -> dict[str, Path]:
    """Small real packed files, one per codec path (lz4; zstd with shuffled arenas; zstd with a
    trained dictionary; none) and one of native strings, many blocks each, and a sharded dataset
    folder."""
    from shardpack import pack

    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "seed.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in seed_records()), encoding="utf-8")
    text = folder / "text.jsonl"
    text.write_text(
        "".join(json.dumps({"n": i, "s": f"sentence {i} " * 40}) + "\n" for i in range(400)),
        encoding="utf-8",
    )
    native = folder / "native.jsonl"  # text blocks: the C decoder's native strings (kinds 1, 2, 4)
    native.write_text(
        "".join(
            json.dumps({"n": i, "zh": "中文句子。" * (i % 9), "fr": "café " * (i % 4), "e": "😀中"})
            + "\n"
            for i in range(300)
        ),
        encoding="utf-8",
    )
    seeds = {
        "native": (native, {"compression": "lz4", "block_size": 1024}),
        "lz4": (source, {"compression": "lz4", "block_size": 1024}),
        "zstd": (source, {"compression": "zstd", "block_size": 1024}),
        "dict": (text, {"compression": "zstd", "block_size": 2048, "dictionary": True}),
        "none": (source, {"compression": "none", "block_size": 1024}),
    }
    paths = {}
    for name, (input_path, options) in seeds.items():
        paths[name] = folder / f"{name}.packed"
        pack(input_path, paths[name], workers=1, **options)
    paths["sharded"] = folder / "sharded"
    pack(source, paths["sharded"], records_per_shard=40, workers=1, block_size=2048)
    return paths


def raw_of(parts: PackedParts, block: int) -> bytes:
    """Block ``block`` decompressed (and its arena un-shuffled): the raw block of FORMAT.md."""
    from shardpack.codecs import get_codec
    from shardpack.format.block import unshuffle_block
    from shardpack.format.layout import BLOCK_SHUFFLED

    entry = parts.index[block]
    raw = get_codec(parts.metadata["codec"]).decode(parts.blocks[block], int(entry["raw_size"]))
    if int(entry["flags"]) & BLOCK_SHUFFLED:
        raw = unshuffle_block(raw)
    return bytes(raw)


def set_raw(parts: PackedParts, block: int, raw: bytes) -> None:
    """Store ``raw`` as block ``block`` with the file's codec (unshuffled), its index entry
    and the metadata's maximum raw size made consistent with it."""
    from shardpack.codecs import get_codec

    parts.blocks[block] = get_codec(parts.metadata["codec"]).encode(raw)
    parts.index[block]["raw_size"] = len(raw)
    parts.index[block]["flags"] = 0
    parts.metadata["max_block_raw_size"] = int(parts.index["raw_size"].max())
