"""Writes one packed file: blocks, then index, metadata and trailer, under a temporary name.

The file only appears at its final path, complete, after ``finish()``: data is written to a
temporary file in the same folder, fsynced, then renamed over the destination. A crash at any
moment leaves either the old file or nothing, never a partial file that could pass validation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import xxhash

from ..errors import FormatError
from ..format.bounds import (
    MAX_BLOCK_RAW_BYTES,
    MAX_BLOCK_RECORDS,
    MAX_BLOCKS,
    MAX_METADATA_BYTES,
    MAX_RECORDS_PER_FILE_BYTE,
    describe_size,
    records_allowed,
)
from ..format.layout import (
    BLOCK_ALIGN,
    BLOCK_ENTRY,
    FORMAT_MINOR,
    HEADER_SIZE,
    INDEX_ALIGN,
    TRAILER_SIZE,
    Trailer,
    align,
    checksum,
    encode_header,
)
from ..format.metadata import FileMetadata, encode_document
from ..storage.atomic import discard, move_into_place, temp_beside


class SealedBlock(Protocol):
    """A block ready to write (``units.EncodedBlock``): its flags travel with its bytes."""

    stored: bytes
    raw_size: int
    record_count: int
    checksum: int
    flags: int


class PackedFileWriter:
    """Appends compressed blocks to a new packed file and seals it with its footer."""

    def __init__(self, path: str | os.PathLike[str], *, minor: int = FORMAT_MINOR) -> None:
        """``minor``: the format's minor version the file declares (1 for the dtypes of 1.1)."""
        self.path = Path(path)
        fd, self._tmp_path = temp_beside(self.path)
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        # the whole file's hash, computed as it is written: a manifest needs it, and reading a
        # freshly written shard back only to hash it cost a sharded pack's driver ~3% of the CPU
        self._hash = xxhash.xxh3_128()
        self.minor = minor
        self._write(encode_header(minor))
        self._position = HEADER_SIZE
        self.footer_offset: int | None = None  # set by finish()
        self._entries: list[tuple[int, int, int, int, int, int, int]] = []
        self.record_count = 0
        self.max_raw_size = 0
        self.stored_bytes = 0

    def write_block(self, block: SealedBlock) -> None:
        """Append one compressed block, with its checksum and flags, to the file."""
        stored, raw_size, record_count = block.stored, block.raw_size, block.record_count
        block_sum, flags = block.checksum, block.flags
        if len(self._entries) >= MAX_BLOCKS:
            raise FormatError(
                f"a packed file holds at most {MAX_BLOCKS} blocks (the format's footer cap): "
                "pack into shards (--shard-size) or use larger blocks",
                path=os.fspath(self.path),
            )
        if raw_size > MAX_BLOCK_RAW_BYTES or record_count > MAX_BLOCK_RECORDS:
            raise FormatError(  # BlockBuilder never makes one: a caller's bug, caught here
                f"block {len(self._entries)} of {raw_size} bytes and {record_count} records is "
                "above the format's caps",
                path=os.fspath(self.path),
            )
        start = align(self._position, BLOCK_ALIGN)
        if start > self._position:
            self._write(b"\0" * (start - self._position))
        self._write(stored)
        self._position = start + len(stored)
        self._entries.append(
            (start, len(stored), raw_size, self.record_count, record_count, flags, block_sum)
        )
        self.record_count += record_count
        self.max_raw_size = max(self.max_raw_size, raw_size)
        self.stored_bytes += len(stored)

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)

    @property
    def file_hash(self) -> str:
        """xxh3_128 of every byte written (the manifest's ``file_hash`` once finished)."""
        return "xxh3_128:" + self._hash.hexdigest()

    def block_sizes(self) -> tuple[list[int], list[int]]:
        """Raw and stored size of every block written so far."""
        return [e[2] for e in self._entries], [e[1] for e in self._entries]

    @property
    def block_count(self) -> int:
        return len(self._entries)

    def finish(
        self, metadata: FileMetadata, before_commit: Callable[[Path], None] | None = None
    ) -> int:
        """Write index, metadata and trailer, then move the file into place. Returns its size.

        ``before_commit(temporary_path)`` may check the complete file; if it raises, the file
        never reaches its destination.
        """
        index_offset = align(self._position, INDEX_ALIGN)
        self.footer_offset = index_offset  # where the footer starts (manifests record it)
        index = np.array(self._entries, dtype=BLOCK_ENTRY).tobytes()
        meta = encode_document(metadata)
        size = index_offset + len(index) + len(meta) + TRAILER_SIZE
        if len(meta) > MAX_METADATA_BYTES:
            raise FormatError(
                f"metadata of {len(meta)} bytes is above the format's cap of "
                f"{describe_size(MAX_METADATA_BYTES)}",
                path=os.fspath(self.path),
            )
        if self.record_count > records_allowed(size):
            raise FormatError(
                f"{self.record_count} records in {size} bytes are more than the format's "
                f"{MAX_RECORDS_PER_FILE_BYTE} per byte: use larger blocks",
                path=os.fspath(self.path),
            )
        trailer = Trailer(
            index_offset=index_offset,
            index_size=len(index),
            metadata_offset=index_offset + len(index),
            metadata_size=len(meta),
            record_count=self.record_count,
            footer_checksum=checksum(index + meta),
            minor=self.minor,
        )
        self._write(b"\0" * (index_offset - self._position))
        self._write(index)
        self._write(meta)
        self._write(trailer.encode())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if before_commit is not None:
            before_commit(self._tmp_path)
        move_into_place(self._tmp_path, self.path)
        return size

    def abort(self) -> None:
        """Drop the temporary file; the destination is left as it was."""
        discard(self._file, self._tmp_path)

    def __enter__(self) -> PackedFileWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None or not self._file.closed:
            self.abort()
