"""The format's absolute resource bounds: caps that writers never exceed and readers check before
they allocate, so any file, however crafted, costs a reader a known amount of memory. Pure, no
I/O; the numbers are part of format 1.0 (docs/FORMAT.md, "Bounds").

A block's raw size and record count are claims of the (checksummed, but forgeable) index:
readers hold them to these caps and to the raw block's own layout before a decompressor or a
loader sizes anything by them.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

Sizes = TypeVar("Sizes", int, "np.ndarray[Any, Any]")  # one size, or an index column of them

# One raw (decompressed) block: what one block read may allocate. The largest single record a
# pack accepts is this minus the block's fixed overhead (a 100 MB text line packs).
MAX_BLOCK_RAW_BYTES = 256 << 20
# Records of one block: writers close a block at this count whatever its size (64 KiB blocks
# of the smallest records hold ~7,000).
MAX_BLOCK_RECORDS = 1 << 16
# Records per byte of the whole file: loaders size per-record arrays (epoch orders, offsets) by
# the record count, so a small file must not claim billions of records. Packed files measure
# at most ~16 (1-byte records in 2 KiB zstd blocks sharing a trained dictionary); blocks of
# anything else stay below 2.
MAX_RECORDS_PER_FILE_BYTE = 64
# The footer, read whole at open: the block index (48 bytes per block) and the metadata.
MAX_BLOCKS = 1 << 22  # a 192 MiB index: 128 GiB of 32 KiB blocks in one file; shard beyond
MAX_METADATA_BYTES = 64 << 20
# Containers nested in one record (lists, objects): packing refuses deeper records with their
# line, so readers, statistics and exports never recurse deeper than this.
MAX_NESTING_DEPTH = 128

# A raw block of n records holds an 8-byte header, two (n + 1)-entry u32 tables, a 5-byte msgpack
# array header and n payloads of at least one byte each.
BLOCK_FIXED_BYTES = 8 + 8 + 5
MIN_RECORD_BYTES = 8 + 1


def min_raw_size(records: Sizes) -> Sizes:
    """The smallest raw block that can hold ``records`` records."""
    return BLOCK_FIXED_BYTES + MIN_RECORD_BYTES * records


def raw_block_size(records: int, payload_bytes: int, arena_bytes: int) -> int:
    """The raw size of a block of ``records`` payloads and an arena, as ``BlockBuilder`` lays
    it out (the arena starts 64-aligned)."""
    region_end = BLOCK_FIXED_BYTES + 8 * records + payload_bytes
    return (region_end + 63) // 64 * 64 + arena_bytes


def max_stored_size(raw_size: Sizes) -> Sizes:
    """The most bytes a block of ``raw_size`` may store: above every codec's worst-case expansion
    (lz4: n/255 + 16, zstd: n/256 + 64, none: 0)."""
    most: Sizes = raw_size + raw_size // 128 + 1024
    return most


def records_allowed(file_size: int) -> int:
    """The most records a file of ``file_size`` bytes may claim."""
    return MAX_RECORDS_PER_FILE_BYTE * file_size


def describe_size(size: int) -> str:
    """``268435456`` -> ``'256 MiB'``, for messages about the caps."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"
