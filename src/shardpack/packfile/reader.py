"""Reading one packed file: footer first, then any block on demand, each verified when read.

Opening reads the header, the fixed-size trailer and the footer (index + metadata), nothing
else. Record ``i`` costs one block read, one checksum, one decompression and one decode; a small
LRU cache of decoded blocks serves neighbouring records.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any, cast

import numpy as np

from ..codecs import Codec, get_codec
from ..errors import CodecError, CorruptBlockError, FormatError, OptionError
from ..format.block import BlockView, unshuffle_block
from ..format.decode import ArenaCursor, promote_arrays
from ..format.dtypes import DTYPE_BY_NAME
from ..format.layout import (
    BLOCK_SHUFFLED,
    HEADER_SIZE,
    TRAILER_SIZE,
    Trailer,
    check_header,
    check_index,
    checksum,
    decode_index,
)
from ..format.metadata import FileMetadata, decode_file_metadata, widest_dtypes
from ..format.projection import NotAnObject, Projection
from ..format.strings import BlockColumns, c_block_decoder, c_columns_decoder
from .blockcache import CACHE_MAX_BYTES, DecodedBlocks
from .local import LocalSource
from .scan import iter_raw_batches, reads_ahead

DEFAULT_CACHE_BLOCKS = 8


def _column(index: np.ndarray, name: str) -> memoryview:
    """One index column, as a memoryview whose items are Python ints."""
    column = index[name]
    return column.astype(column.dtype.newbyteorder("="), copy=True).data


class PackedFile:
    """One packed file, opened from its footer."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        verify: bool = True,
        cache_blocks: int = 8,
        source: Any = None,
        read_ahead: bool = False,
        cache_bytes: int = CACHE_MAX_BYTES,
    ) -> None:
        """``source``: anything with ``size``, ``read(offset, length)`` and ``close()`` (e.g. a
        remote byte-range source); by default the local file at ``path`` is memory-mapped.
        ``read_ahead``: full scans decompress the next blocks on other threads while this one
        builds records (lz4 and zstd; see scan.py); it pays only when a core is free.
        The decoded-block cache keeps up to ``cache_blocks`` blocks and ``cache_bytes`` raw
        bytes (the newest block always)."""
        self.path = os.fspath(path)
        self.verify = verify
        self.read_ahead = read_ahead
        self._source = source if source is not None else LocalSource(self.path)
        try:
            self._open()
        except BaseException:
            self._source.close()
            raise
        self._cache = DecodedBlocks(cache_blocks, cache_bytes)

    def _open(self) -> None:
        source, path = self._source, self.path
        if source.size < HEADER_SIZE + TRAILER_SIZE:
            raise FormatError("file too short to be a packed file (truncated?)", path=path)
        check_header(bytes(source.read(0, HEADER_SIZE)), path)
        trailer = Trailer.decode(
            bytes(source.read(source.size - TRAILER_SIZE, TRAILER_SIZE)), source.size, path
        )
        footer = source.read(trailer.index_offset, trailer.index_size + trailer.metadata_size)
        if checksum(footer) != trailer.footer_checksum:
            raise FormatError("footer checksum mismatch (index or metadata damaged)", path=path)
        metadata = decode_file_metadata(footer[trailer.index_size :], path)
        max_raw = metadata.max_block_raw_size
        self.index = decode_index(footer[: trailer.index_size])
        check_index(
            self.index,
            data_end=trailer.index_offset,
            record_count=trailer.record_count,
            max_raw_size=max_raw,
            path=path,
        )
        try:
            self.codec: Codec = get_codec(metadata.codec)
        except (CodecError, ValueError, TypeError) as exc:
            raise FormatError(f"cannot use the file's codec: {exc}", path=path) from None
        self._zero_copy = self.codec.codec_id == "none" and hasattr(source, "view")
        self._read = source.view if self._zero_copy else source.read
        self.trailer = trailer
        self.metadata: FileMetadata = metadata
        self.record_count = trailer.record_count
        self.block_count = len(self.index)
        # index columns as memoryviews of native-order copies: every block read looks up five
        # fields, and a memoryview item is a Python int at a fifth of the cost of int(numpy
        # scalar), while taking no more memory than the index (Python lists would take 6x)
        self._first_records = _column(self.index, "first_record")
        self._offsets = _column(self.index, "offset")
        self._stored_sizes = _column(self.index, "stored_size")
        self._raw_sizes = _column(self.index, "raw_size")
        self._checksums = _column(self.index, "checksum")
        self._counts = _column(self.index, "record_count")
        self._flags = _column(self.index, "flags")
        self._promote = dtype_targets(widest_dtypes(metadata.arrays))
        self._projections: dict[tuple[str, ...], Projection] = {}

    @property
    def size(self) -> int:
        return self._source.size

    @property
    def source(self) -> Any:
        """Where the file's bytes come from (``read(offset, length)``): local or remote."""
        return self._source

    def widen_arrays(self, targets: Mapping[str, np.dtype]) -> None:
        """Also cast these fields' arrays to the given dtypes on read: one dtype per field across
        the files of a dataset (a shard that only saw int32 ids reads them as int64 when another
        shard needed int64)."""
        self._promote = {**self._promote, **targets}

    def __len__(self) -> int:
        return self.record_count

    def block_of(self, i: int) -> int:
        """The block holding record ``i`` (0 <= i < len)."""
        return bisect_right(self._first_records, i) - 1

    def corrupt_error(self, block: int, message: str, **extra: Any) -> CorruptBlockError:
        """The error for a damaged ``block``, naming the file, the block and its records."""
        entry = self.index[block]
        return CorruptBlockError(
            message,
            path=self.path,
            block=block,
            offset=int(entry["offset"]),
            first_record=int(entry["first_record"]),
            record_count=int(entry["record_count"]),
            **extra,
        )

    @property
    def block_offsets(self) -> memoryview:
        """Each block's offset in the file (Python ints, indexed by block number)."""
        return self._offsets

    @property
    def block_stored_sizes(self) -> memoryview:
        return self._stored_sizes

    @property
    def block_checksums(self) -> memoryview:
        return self._checksums

    def local_fd(self) -> int | None:
        """The open descriptor of a local file (a read-ahead thread reads it), else None."""
        fileno = getattr(self._source, "fileno", None)
        return fileno() if fileno is not None else None

    @property
    def block_raw_sizes(self) -> memoryview:
        return self._raw_sizes

    def read_stored(self, offset: int, length: int) -> bytes | memoryview:
        """Stored bytes of the file (a view of the map for uncompressed files)."""
        return self._read(offset, length)

    def read_stored_into(self, offset: int, buffer: memoryview) -> None:
        """Fill ``buffer`` with the file's bytes from ``offset`` on."""
        read_into = getattr(self._source, "read_into", None)
        if read_into is not None:
            read_into(offset, buffer)
        else:
            buffer[:] = self._source.read(offset, len(buffer))

    def check_stored(self, block: int, stored: bytes | memoryview) -> None:
        """Raise CorruptBlockError unless ``stored`` matches ``block``'s checksum."""
        actual = checksum(stored)
        expected = self._checksums[block]
        if actual != expected:
            raise self.corrupt_error(
                block, "checksum mismatch", expected=f"{expected:016x}", actual=f"{actual:016x}"
            )

    def raw_from_stored(
        self, block: int, stored: bytes | memoryview, *, verify: bool | None = None
    ) -> bytes | memoryview:
        """``block``'s raw bytes from its stored bytes: checksum (unless disabled), decompress,
        restore a shuffled arena."""
        if self.verify if verify is None else verify:
            self.check_stored(block, stored)
        try:
            raw = self.codec.decode(stored, self._raw_sizes[block])
        except (CodecError, ValueError) as exc:
            raise self.corrupt_error(block, str(exc)) from None
        return self.unshuffled(block, raw)

    def unshuffled(self, block: int, raw: bytes | memoryview) -> bytes | memoryview:
        """``raw`` with its arena restored when ``block`` was stored shuffled."""
        if not self._flags[block] & BLOCK_SHUFFLED:
            return raw
        try:
            return unshuffle_block(raw)
        except ValueError as exc:
            raise self.corrupt_error(block, str(exc)) from None

    def read_raw_block(self, block: int, *, verify: bool | None = None) -> bytes | memoryview:
        """The decompressed bytes of ``block``, its checksum verified first (unless disabled)."""
        # raw_from_stored inlined: this runs once per block of every scan and random access
        try:
            stored = self._read(self._offsets[block], self._stored_sizes[block])
        except FormatError as exc:  # a file that shrank under us: name the block
            raise self.corrupt_error(block, str(exc).removeprefix(f"{self.path}: ")) from None
        if self.verify if verify is None else verify:
            actual = checksum(stored)
            expected = self._checksums[block]
            if actual != expected:
                raise self.corrupt_error(
                    block, "checksum mismatch", expected=f"{expected:016x}", actual=f"{actual:016x}"
                )
        try:
            raw = self.codec.decode(stored, self._raw_sizes[block])
            if self._flags[block] & BLOCK_SHUFFLED:
                raw = unshuffle_block(raw)
        except (CodecError, ValueError) as exc:
            raise self.corrupt_error(block, str(exc)) from None
        return raw

    def view_block(self, block: int) -> BlockView:
        """Parse a block's tables (uncached)."""
        raw = self.read_raw_block(block)
        try:
            return BlockView(raw, self._counts[block])
        except ValueError as exc:
            raise self.corrupt_error(block, f"bad block layout: {exc}") from None

    def block(self, block: int) -> BlockView:
        """A block's view through the LRU cache."""
        view = self._cache.get_recent(block)
        if view is None:
            view = self.view_block(block)
            self._cache.put(block, view)
        return view

    def projection(self, columns: Sequence[str] | None) -> Projection | None:
        """The decoders for ``columns`` of this file's records (None: every field), cached."""
        if columns is None:
            return None
        key = tuple(columns) if not isinstance(columns, str) else (columns,)
        found = self._projections.get(key)
        if found is None:
            try:
                found = Projection(columns, self.metadata.arrays)
            except TypeError as exc:
                raise OptionError(str(exc)) from None
            self._projections[key] = found
        return found

    def record(self, i: int, columns: Sequence[str] | None = None) -> Any:
        """Record ``i`` of this file (0 <= i < len); only its ``columns`` fields if given."""
        projection = None if columns is None else self.projection(columns)
        block = self.block_of(i)
        view = self.block(block)
        try:
            value = view.record(i - self._first_records[block], projection)
        except NotAnObject as exc:
            raise self._not_an_object(block, exc) from None
        except (ValueError, TypeError, RecursionError) as exc:
            raise self.corrupt_error(block, f"cannot decode record {i}: {exc}") from None
        return promote_arrays(value, self._promote) if self._promote else value

    def block_records(
        self, block: int, view: BlockView | None = None, columns: Sequence[str] | None = None
    ) -> list[Any]:
        """All records of ``block``, decoded in one pass (only their ``columns`` if given)."""
        view = view if view is not None else self.view_block(block)
        return self._decode_block(block, view, self.projection(columns))

    def _decode_block(
        self, block: int, view: BlockView, projection: Projection | None
    ) -> list[Any]:
        try:
            values = view.records(projection)
        except NotAnObject as exc:
            raise self._not_an_object(block, exc) from None
        except (ValueError, TypeError, RecursionError) as exc:
            raise self.corrupt_error(block, f"cannot decode records: {exc}") from None
        if self._promote:
            values = [promote_arrays(value, self._promote) for value in values]
        return values

    def _not_an_object(self, block: int, exc: NotAnObject) -> OptionError:
        record = self._first_records[block] + exc.index
        return OptionError(
            f"{self.path}: record {record} is a {exc.kind}, not an object: "
            "columns= needs object records"
        )

    def iter_block_records(
        self, start_block: int = 0, columns: Sequence[str] | None = None
    ) -> Iterator[list[Any]]:
        """Each block's records from ``start_block`` on, in file order: a full scan, reading
        many blocks per call (see ``scan``)."""
        return cast(Iterator[list[Any]], self._iter_blocks(start_block, columns, as_columns=False))

    def iter_block_columns(
        self, columns: Sequence[str] | None = None
    ) -> Iterator[list[Any] | BlockColumns]:
        """Each block in file order as ``(keys, each key's values)`` where its records are
        objects of one key order (no dict made), else (and always with ``columns``) its records."""
        return self._iter_blocks(0, columns, as_columns=columns is None)

    def _iter_blocks(
        self, start_block: int, columns: Sequence[str] | None, as_columns: bool
    ) -> Iterator[list[Any] | BlockColumns]:
        projection = self.projection(columns)
        if self.read_ahead and reads_ahead(self.codec):
            batches: Iterator[tuple[int, list[Any]]] = iter_raw_batches(self, start_block)
        else:  # one generator less per block
            batches = ((b, [self.read_raw_block(b)]) for b in range(start_block, self.block_count))
        # a text block in one C call, where it is built (a block at a time: a whole batch's
        # records alive at once cost more in cache misses than the calls they would save); with
        # columns=, each record cut to them there, the other values stepped over unbuilt
        decode_block = c_block_decoder() if not self._promote else None
        wanted = frozenset(projection.columns) if projection is not None else None
        decode_columns = c_columns_decoder() if as_columns and decode_block is not None else None
        hook = ArenaCursor(b"", 0, 0).ext_hook  # text blocks hold no arena to hand arrays from
        counts = self._counts
        for first, raws in batches:
            for block, raw in enumerate(raws, first):
                records = None
                if decode_columns is not None:
                    try:
                        found = decode_columns(raw, counts[block], hook)
                    except (ValueError, TypeError, RecursionError):
                        found = None
                    if found is not None:
                        yield found
                        continue
                if decode_block is not None:
                    # a fault: decoded again below, to name it as BlockView does (try, not
                    # contextlib.suppress: that is two Python calls a block)
                    try:
                        records = decode_block(raw, counts[block], hook, wanted)
                    except (ValueError, TypeError, RecursionError):
                        records = None
                if records is None:
                    records = self._block_records(block, raw, projection)
                yield records

    def _block_records(
        self, block: int, raw: bytes | memoryview, projection: Projection | None
    ) -> list[Any]:
        try:
            view = BlockView(raw, self._counts[block])
        except ValueError as exc:
            raise self.corrupt_error(block, f"bad block layout: {exc}") from None
        return self._decode_block(block, view, projection)

    def iter_records(
        self, start_block: int = 0, columns: Sequence[str] | None = None
    ) -> Iterator[Any]:
        """Every record from ``start_block`` on, in file order; each block decoded once."""
        # chain steps through each block's list in C: a generator's ``yield from`` costs a
        # frame resume per record, a tenth of a text scan
        return chain.from_iterable(self.iter_block_records(start_block, columns))

    def close(self) -> None:
        self._cache.clear()
        self._source.close()

    def __enter__(self) -> PackedFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PackedFile({self.path!r}, records={self.record_count}, blocks={self.block_count})"


def dtype_targets(names: Mapping[str, str]) -> dict[str, np.dtype]:
    """``{field: dtype name}`` as numpy dtypes (for ``widen_arrays``)."""
    return {path: DTYPE_BY_NAME[name] for path, name in names.items() if name in DTYPE_BY_NAME}
