"""The bytes on disk of one packed file (format v1): header, block index, trailer. Pure, no I/O.

Layout (all integers little-endian; see docs/FORMAT.md):

    header    16 bytes   MAGIC, u16 major, u16 minor, u32 reserved
    blocks               each compressed on its own, starting at a 64-byte aligned offset
    index     48 bytes per block (BLOCK_ENTRY), at an 8-byte aligned offset
    metadata  UTF-8 JSON object (codec, fields, schema, stats, provenance)
    trailer   64 bytes   offsets and lengths of index and metadata, record count, checksums, MAGIC
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash

from ..errors import CorruptBlockError, FormatError
from .bounds import (
    BLOCK_FIXED_BYTES,
    MAX_BLOCK_RAW_BYTES,
    MAX_BLOCK_RECORDS,
    MAX_BLOCKS,
    MAX_METADATA_BYTES,
    MAX_RECORDS_PER_FILE_BYTE,
    MIN_RECORD_BYTES,
    describe_size,
    max_stored_size,
    min_raw_size,
    records_allowed,
)

try:  # the C module's one-pass check of an index with nothing wrong (check_index)
    from . import _speedups
except ImportError:  # built without a C compiler
    index_fits = None
else:
    index_fits = _speedups.index_fits

MAGIC = b"\x89SHP\r\n\x1a\n"  # PNG-style: catches text-mode transfers and truncated downloads
FORMAT_MAJOR = 1
# The newest minor version, which every pack writes and this shardpack reads with all before it.
# 1.1: the dtypes of Python records; 1.2: native strings (format/strings.py): a reader of 1.0 or
# 1.1 names the first native string it meets as an unknown extension.
FORMAT_MINOR = 2

HEADER = struct.Struct("<8sHHI")
HEADER_SIZE = HEADER.size  # 16
BLOCK_ALIGN = 64  # blocks start 64-aligned so uncompressed blocks map to aligned arrays
INDEX_ALIGN = 8

# One block index entry. The checksum covers the block's bytes as stored (compressed), so a damaged
# block is caught before the decompressor ever sees it.
BLOCK_ENTRY = np.dtype(
    [
        ("offset", "<u8"),
        ("stored_size", "<u8"),
        ("raw_size", "<u8"),
        ("first_record", "<u8"),
        ("record_count", "<u4"),
        ("flags", "<u4"),
        ("checksum", "<u8"),
    ]
)

BLOCK_SHUFFLED = 1  # index flag: the block's arena is stored as 4-byte-word byte planes
KNOWN_BLOCK_FLAGS = BLOCK_SHUFFLED

# Trailer: fixed size at the very end so a reader finds everything with one seek from the end.
TRAILER = struct.Struct("<QQQQQQHHI8s")
TRAILER_SIZE = TRAILER.size  # 64


def checksum(data: bytes | memoryview) -> int:
    """The 64-bit block and footer checksum (xxh3)."""
    return xxhash.xxh3_64_intdigest(data)


def align(offset: int, alignment: int) -> int:
    """The smallest multiple of ``alignment`` that is >= ``offset``."""
    return (offset + alignment - 1) // alignment * alignment


def encode_header(minor: int = FORMAT_MINOR) -> bytes:
    return HEADER.pack(MAGIC, FORMAT_MAJOR, minor, 0)


def check_header(data: bytes, path: str | None = None) -> None:
    """Raise FormatError unless ``data`` starts with a header this reader understands."""
    if len(data) < HEADER_SIZE:
        raise FormatError("file too short to be a packed file", path=path)
    magic, major, _minor, _reserved = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FormatError("not a shardpack file (bad magic at start)", path=path)
    if major != FORMAT_MAJOR:
        raise FormatError(
            f"unsupported format version {major} (this shardpack reads version {FORMAT_MAJOR})",
            path=path,
        )


@dataclass(frozen=True)
class Trailer:
    """Where the index and metadata are, and what protects them."""

    index_offset: int
    index_size: int
    metadata_offset: int
    metadata_size: int
    record_count: int
    footer_checksum: int  # xxh3 over index bytes followed by metadata bytes
    major: int = FORMAT_MAJOR
    minor: int = FORMAT_MINOR

    @property
    def block_count(self) -> int:
        return self.index_size // BLOCK_ENTRY.itemsize

    def encode(self) -> bytes:
        body = TRAILER.pack(
            self.index_offset,
            self.index_size,
            self.metadata_offset,
            self.metadata_size,
            self.record_count,
            self.footer_checksum,
            self.major,
            self.minor,
            0,
            MAGIC,
        )
        # the u32 slot holds the low half of a checksum over the trailer's other fields
        own = checksum(body[:52] + body[56:]) & 0xFFFFFFFF
        return body[:52] + struct.pack("<I", own) + body[56:]

    @classmethod
    def decode(cls, data: bytes, file_size: int, path: str | None = None) -> Trailer:
        """Parse and check a trailer read from the last TRAILER_SIZE bytes of a file."""
        if len(data) != TRAILER_SIZE or file_size < HEADER_SIZE + TRAILER_SIZE:
            raise FormatError("file too short to be a packed file (truncated?)", path=path)
        (idx_off, idx_size, meta_off, meta_size, records, footer_sum, major, minor, own, magic) = (
            TRAILER.unpack(data)
        )
        if magic != MAGIC:
            raise FormatError(
                "no shardpack trailer at end of file (truncated or not a packed file)", path=path
            )
        if own != checksum(data[:52] + data[56:]) & 0xFFFFFFFF:
            raise FormatError("trailer checksum mismatch (damaged end of file)", path=path)
        if major != FORMAT_MAJOR:
            raise FormatError(
                f"unsupported format version {major} (this shardpack reads version {FORMAT_MAJOR})",
                path=path,
            )
        footer_end = file_size - TRAILER_SIZE
        if not (
            idx_off >= HEADER_SIZE
            and idx_off + idx_size == meta_off
            and meta_off + meta_size == footer_end
            and idx_size % BLOCK_ENTRY.itemsize == 0
        ):
            raise FormatError("trailer points outside the file (truncated or damaged)", path=path)
        # the footer is read whole and the record count sizes loaders' arrays: cap both first
        if idx_size > MAX_BLOCKS * BLOCK_ENTRY.itemsize:
            raise FormatError(
                f"index of {idx_size // BLOCK_ENTRY.itemsize} blocks is above the format's cap "
                f"of {MAX_BLOCKS} blocks per file",
                path=path,
            )
        if meta_size > MAX_METADATA_BYTES:
            raise FormatError(
                f"metadata of {meta_size} bytes is above the format's cap of "
                f"{describe_size(MAX_METADATA_BYTES)}",
                path=path,
            )
        if records > records_allowed(file_size):
            raise FormatError(
                f"trailer claims {records} records in a file of {file_size} bytes (at most "
                f"{MAX_RECORDS_PER_FILE_BYTE} per byte)",
                path=path,
            )
        return cls(idx_off, idx_size, meta_off, meta_size, records, footer_sum, major, minor)


def decode_index(data: bytes | memoryview) -> np.ndarray:
    """The block index as a structured array (a copy, so it outlives the buffer)."""
    return np.frombuffer(data, dtype=BLOCK_ENTRY).copy()


def check_index(
    index: np.ndarray, *, data_end: int, record_count: int, max_raw_size: int, path: str | None
) -> None:
    """Raise FormatError unless the index lists non-overlapping blocks covering all records,
    each within the format's bounds (``check_block_bounds``)."""
    if index_fits is not None and index_fits(
        index, data_end, record_count, max_raw_size, *_INDEX_LIMITS
    ):
        # the same checks in one C pass (~25 numpy calls were most of a cold open); where it
        # finds something, the checks below name it
        return
    check_block_bounds(index, path)
    if len(index) == 0:
        if record_count != 0:
            raise FormatError("index has no blocks but the file claims records", path=path)
        return
    if np.any(index["offset"] > data_end) or np.any(index["stored_size"] > data_end):
        # before any sum: offsets near 2**64 would wrap around in int64 and pass the checks
        raise FormatError("inconsistent block index: a block lies outside the data area", path=path)
    offsets = index["offset"].astype(np.int64)
    ends = offsets + index["stored_size"].astype(np.int64)
    counts = index["record_count"].astype(np.int64)
    firsts = index["first_record"].astype(np.int64)
    problems = []
    if offsets[0] < HEADER_SIZE or ends[-1] > data_end:
        problems.append("a block lies outside the data area")
    if np.any(offsets[1:] < ends[:-1]):
        problems.append("blocks overlap or are out of order")
    if np.any(counts == 0):
        problems.append("a block holds no records")
    expected_firsts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    if not np.array_equal(firsts, expected_firsts) or int(counts.sum()) != record_count:
        problems.append("record numbering in the index does not add up")
    if np.any(index["raw_size"] > max_raw_size):
        problems.append("a block claims a raw size above the file's maximum")
    if np.any(index["flags"] & ~np.uint32(KNOWN_BLOCK_FLAGS)):
        problems.append("a block has flags this reader does not know (newer format?)")
    if problems:
        raise FormatError("inconsistent block index: " + "; ".join(problems), path=path)


_INDEX_LIMITS = (
    HEADER_SIZE,
    MAX_BLOCK_RAW_BYTES,
    MAX_BLOCK_RECORDS,
    BLOCK_FIXED_BYTES,
    MIN_RECORD_BYTES,
    KNOWN_BLOCK_FLAGS,
)


def check_block_bounds(index: np.ndarray, path: str | None) -> None:
    """Raise CorruptBlockError naming the first block whose index entry claims more than the
    format allows: a raw size above the cap, more records than the cap or than its raw size can
    hold, or more stored bytes than any codec makes of its raw size. Readers size buffers by
    these claims, so they are held to the caps before any block is read."""
    if len(index) == 0:
        return
    raw, counts = index["raw_size"], index["record_count"].astype(np.int64)
    _refuse_first(index, raw > MAX_BLOCK_RAW_BYTES, path, _above_raw_cap)
    _refuse_first(index, counts > MAX_BLOCK_RECORDS, path, _above_record_cap)
    raw = raw.astype(np.int64)  # at most the cap now: exact in int64
    _refuse_first(index, raw < min_raw_size(counts), path, _too_small_for_records)
    stored_cap = max_stored_size(raw).astype(np.uint64)
    _refuse_first(index, index["stored_size"] > stored_cap, path, _too_many_stored)


def _above_raw_cap(entry: Any) -> str:
    cap = describe_size(MAX_BLOCK_RAW_BYTES)
    return f"claims {int(entry['raw_size'])} raw bytes, above the format's cap of {cap}"


def _above_record_cap(entry: Any) -> str:
    count = int(entry["record_count"])
    return f"claims {count} records, above the format's cap of {MAX_BLOCK_RECORDS}"


def _too_small_for_records(entry: Any) -> str:
    count, raw = int(entry["record_count"]), int(entry["raw_size"])
    return f"claims {count} records in {raw} raw bytes, too few to hold them"


def _too_many_stored(entry: Any) -> str:
    stored, raw = int(entry["stored_size"]), int(entry["raw_size"])
    return f"claims {stored} stored bytes for {raw} raw bytes"


def _refuse_first(
    index: np.ndarray, bad: np.ndarray, path: str | None, message: Callable[[Any], str]
) -> None:
    """CorruptBlockError for the first entry of ``index`` where ``bad`` is true, if any."""
    if not bad.any():
        return
    block = int(np.argmax(bad))
    entry = index[block]
    raise CorruptBlockError(
        message(entry),
        path=path,
        block=block,
        offset=int(entry["offset"]),
        first_record=int(entry["first_record"]),
        record_count=int(entry["record_count"]),
    )
