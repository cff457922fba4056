"""A packed dataset as one sequence of records, over one or several packed files.

``shardpack.open(path)`` is the entry point: ``len(ds)``, ``ds[i]`` (negative indices, slices),
iteration in order and ``ds.iter_batches(n)``. A global index maps to (file, record) by binary
search over cumulative record counts. ``shardpack.open(path, columns=[...])`` reads only those
top-level fields of object records: the others are skipped while decoding, never built.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import closing
from itertools import chain
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from ..errors import ManifestError, OptionError
from ..format.metadata import DatasetMetadata, DatasetStats
from ..format.strings import BlockColumns
from ..packfile.reader import DEFAULT_CACHE_BLOCKS, PackedFile
from ..storage.urls import is_remote, is_url
from .columns import column_batches, cut_batches
from .identity import check_pinned
from .manifest import Manifest, combined_content_hash
from .shards import ShardSlots

if TYPE_CHECKING:
    from ..storage.remote import RemoteReader, RemoteStats
    from ..storage.remote_options import RemoteOptions

PathLike = str | os.PathLike[str]
_HASH = re.compile(r"^xxh3_128:[0-9a-f]{32}$")


class Dataset:
    """Random access and iteration over the records of packed files."""

    def __init__(
        self,
        files: Sequence[PackedFile] | ShardSlots,
        manifests: Sequence[Any] = (),
        columns: Sequence[str] | None = None,
        remote: RemoteReader | None = None,
    ) -> None:
        self._slots = files if isinstance(files, ShardSlots) else ShardSlots.of_files(files)
        self.manifests = list(manifests)  # of the sharded datasets among the inputs
        # top-level fields to read (None: all), in the order asked; records keep their own order
        self.columns: tuple[str, ...] | None = _check_columns(columns)
        self._starts = np.concatenate(([0], np.cumsum(self._slots.counts, dtype=np.int64)))
        self._length = int(self._starts[-1])
        self._metadata: DatasetMetadata | None = None
        self._remote = remote  # the caches and read-ahead of its remote files

    @property
    def files(self) -> list[PackedFile]:
        """Every packed file, opened (remote shards not opened yet are opened side by side)."""
        return self._slots.all()

    def file(self, i: int) -> PackedFile:
        """Packed file ``i``, opened on first use."""
        return self._slots.files[i] or self._slots.open(i)

    def __len__(self) -> int:
        return self._length

    def _locate(self, i: int) -> tuple[PackedFile, int]:
        files = self._slots.files
        if len(files) == 1:
            return files[0] or self._slots.open(0), i
        f = int(np.searchsorted(self._starts, i, side="right")) - 1
        return files[f] or self._slots.open(f), i - int(self._starts[f])

    def __getitem__(self, key: int | slice) -> Any:
        if type(key) is int:  # the common case, checked first: random access is per call
            i = key
        elif isinstance(key, slice):
            return [self[i] for i in range(*key.indices(self._length))]
        else:
            try:
                i = int(key)  # accepts numpy integers; refuses floats below
            except TypeError:
                raise TypeError(
                    f"indices must be integers or slices, not {type(key).__name__}"
                ) from None
            if i != key or isinstance(key, bool):
                raise TypeError(f"indices must be integers or slices, not {type(key).__name__}")
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"record {key} out of range for a dataset of {self._length}")
        packed, local = self._locate(i)
        return packed.record(local, self.columns)

    def __iter__(self) -> Iterator[Any]:
        return chain.from_iterable(self._iter_blocks())

    def _iter_blocks(self) -> Iterator[list[Any]]:
        """Each block's records, file after file (remote: fetched ahead, each shard in one
        request where it fits the read-ahead window, see ``ShardSlots.scan``)."""
        with closing(self._slots.scan(self._remote)) as files:  # a scan left early ends too
            for packed in files:
                yield from packed.iter_block_records(columns=self.columns)

    def _iter_block_columns(self) -> Iterator[list[Any] | BlockColumns]:
        """``_iter_blocks``, a block as columns where the C decoder can make them."""
        with closing(self._slots.scan(self._remote)) as files:
            for packed in files:
                yield from packed.iter_block_columns(columns=self.columns)

    def prefetch(self, blocks: Iterable[tuple[int, int]]) -> None:
        """Remote data: fetch these blocks, ``(file number, block number)`` in the order they
        will be read, ahead of their reads (up to ``RemoteOptions.readahead_bytes`` ahead).
        Replaces the previous plan. Local data needs none: a no-op."""
        if self._remote is not None:
            self._remote.read_ahead(self._planned(blocks))

    def _planned(self, blocks: Iterable[tuple[int, int]]) -> Iterator[tuple[Any, int]]:
        from ..storage.ranges import RangeSource

        for f, block in blocks:
            source = self.file(f).source
            if isinstance(source, RangeSource):
                yield source, block

    @property
    def is_remote(self) -> bool:
        """Whether some of its files are read from remote storage."""
        return self._remote is not None

    def remote_stats(self) -> RemoteStats | None:
        """Requests, bytes and cache hits of this dataset's remote reads in this process."""
        return self._remote.stats() if self._remote is not None else None

    def iter_batches(
        self, batch_size: int, *, drop_last: bool = False, as_columns: bool = False
    ) -> Iterator[Any]:
        """Records in order, ``batch_size`` at a time (the last batch may be short): lists of
        records, or with ``as_columns`` one dict per batch of each field's values (see
        ``batch_columns``)."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if as_columns:
            return column_batches(self._iter_block_columns(), batch_size, drop_last)
        return self._record_batches(batch_size, drop_last)

    def _record_batches(self, batch_size: int, drop_last: bool) -> Iterator[list[Any]]:
        # whole blocks are sliced into batches: no Python step per record
        pending: list[Any] = []
        for values in self._iter_blocks():
            pending += values
            batches, pending = cut_batches(pending, batch_size)
            yield from batches
        if pending and not drop_last:
            yield pending

    def to_arrow(self) -> Any:
        """The records as a ``pyarrow.Table``: one column per field, arrays as (nested) lists of
        their dtype; what Arrow cannot hold as it is raises (docs/ARROW.md)."""
        from .arrow_export import to_arrow

        return to_arrow(self)

    def to_pandas(self) -> Any:
        """The records as a ``pandas.DataFrame`` (through ``to_arrow``)."""
        from .arrow_export import to_pandas

        return to_pandas(self)

    def to_hf(self) -> Any:
        """The records as a Hugging Face ``datasets.Dataset`` (through ``to_arrow``)."""
        from .arrow_export import to_hf

        return to_hf(self)

    @property
    def metadata(self) -> DatasetMetadata:
        """The dataset's metadata: of its only file, or from the manifest of a sharded dataset
        (dataset-wide statistics, schema, provenance, content hash); else of its first file."""
        if self._metadata is None:
            if len(self.manifests) == 1 and len(self._slots) == len(self.manifests[0].shards):
                self._metadata = _manifest_metadata(self.manifests[0], self.files)
            elif not len(self._slots):
                raise ManifestError("the dataset holds no files")
            else:
                first = msgspec.structs.asdict(self.file(0).metadata)
                self._metadata = DatasetMetadata(**first)
        return self._metadata

    @property
    def content_hash(self) -> str:
        """What this dataset's records hash to, as its footers and manifest claim: a single
        file's own content hash, else the hash over its files' hashes in order (a sharded
        dataset's manifest hash; for several inputs, the hash ``merge`` would give them)."""
        if len(self._slots) == 1 and not self.manifests:
            return self.file(0).metadata.content_hash
        if len(self.manifests) == 1 and len(self._slots) == len(self.manifests[0].shards):
            return str(self.manifests[0].content_hash)  # each shard is checked as it opens
        return combined_content_hash(f.metadata.content_hash for f in self.files)

    def scanned_files(self) -> closing[Generator[PackedFile, None, None]]:
        """Each file in order, read as a full scan reads it: remote shards fetched ahead, whole
        where they fit the read-ahead window, not one request per block. Use it with ``with``:
        leaving stops the fetching."""
        return closing(self._slots.scan(self._remote))

    def verify_content_hash(self, expected_hash: str, where: str) -> None:
        """FormatError naming ``where`` unless the records hash to ``expected_hash``: the claim
        first (no block read), then every block read once, as a full scan reads it."""
        with self.scanned_files() as files:
            check_pinned(files, self.content_hash, expected_hash, where)

    @property
    def stats(self) -> DatasetStats:
        return self.metadata.stats or DatasetStats()

    @property
    def paths(self) -> list[str]:
        return list(self._slots.paths)

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
        self._slots.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Dataset(records={self._length}, files={len(self._slots)})"


def _check_columns(columns: Sequence[str] | None) -> tuple[str, ...] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise OptionError(f"columns must be a list of field names, got {columns!r}")
    return tuple(dict.fromkeys(columns))


def _manifest_metadata(manifest: Manifest, files: Sequence[PackedFile]) -> DatasetMetadata:
    """A sharded dataset's metadata in the shape of one file's, for ``info`` and ``ds.stats``."""
    first = files[0].metadata
    schema = manifest.schema
    return DatasetMetadata(
        format="shardpack",
        format_version=first.format_version,
        created_by=first.created_by,
        shards=len(manifest.shards),
        codec=first.codec,
        block_size=first.block_size,
        shuffle=first.shuffle,
        record_count=manifest.records,
        block_count=sum(f.block_count for f in files),
        max_block_raw_size=max(f.metadata.max_block_raw_size for f in files),
        stored_bytes=sum(f.metadata.stored_bytes for f in files),
        input_bytes=manifest.stats.input_bytes,
        arrays=schema.arrays,
        lossy=schema.lossy,
        schema=schema.json_schema,
        schema_source="user" if schema.json_schema is not None else None,
        content_hash=manifest.content_hash,
        stats=manifest.stats,
        provenance=manifest.provenance,
    )


def open_dataset(
    path: PathLike | Sequence[PathLike],
    *,
    verify: bool = True,
    cache_blocks: int = DEFAULT_CACHE_BLOCKS,
    storage_options: dict[str, Any] | None = None,
    block_cache_bytes: int = 0,
    columns: Sequence[str] | None = None,
    read_ahead: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    remote: RemoteOptions | None = None,
    expected_hash: str | None = None,
) -> Dataset:
    """Open packed data: a file, a sharded dataset folder (or its manifest.json), an fsspec URL
    of either, a glob of these (``"kd/*.packed"``, ``"s3://bucket/kd-*/"``: sorted, as ``pack``
    expands its inputs), or a list of these, read as one dataset.

    ``columns``: read only these top-level fields of (object) records; the other fields are
    skipped while decoding, and a record without one of them simply lacks it.
    ``verify=False`` skips block checksums on read (faster, but damage goes unnoticed).
    ``read_ahead=True``: full scans read, check and decompress the next blocks on native threads
    (lz4: one; zstd: one a core, up to 8) while this thread builds records; faster when cores
    are free, slower when none is.
    Remote data (docs/REMOTE.md) is read by byte ranges with the settings of ``remote`` (a
    ``RemoteOptions``: concurrency, how far to fetch ahead, timeouts, retries, caches);
    ``storage_options`` (for fsspec), ``cache_dir`` (a disk cache shared by the machine's
    processes) and ``block_cache_bytes`` (a per-process memory cache) set the common ones
    directly. A remote sharded dataset opens with one request, its manifest; each shard opens
    on first use. Every shard of a sharded dataset is checked against its manifest entry
    (content hash, size, record count) when it opens. ``expected_hash`` pins the dataset's
    content hash (``Dataset.content_hash``, as ``shardpack info`` shows it): open reads every
    block once to check that the records hash to it, and refuses other data with a FormatError.
    """
    columns = _check_columns(columns)
    if isinstance(path, (str, os.PathLike)):
        local = _plain_local_file(path)
        if local is not None:
            packed = PackedFile(
                local, verify=verify, cache_blocks=cache_blocks, read_ahead=read_ahead
            )
            return _pinned(Dataset([packed], (), columns), expected_hash, os.fspath(path))

    from ..storage.globs import expand_globs
    from ..storage.remote import RemoteReader
    from ..storage.remote_options import resolve_remote
    from .shards import open_shards

    items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    options = resolve_remote(
        remote,
        storage_options=storage_options,
        cache_dir=cache_dir,
        memory_cache_bytes=block_cache_bytes,
    ).for_urls(items)
    paths = expand_globs(items, options.storage_options or None, folders=True, what="dataset")
    reader = RemoteReader(options) if any(is_remote(os.fspath(p)) for p in paths) else None
    slots, manifests = open_shards(
        paths,
        options.storage_options or None,
        reader,
        lambda where, source: PackedFile(
            where, verify=verify, cache_blocks=cache_blocks, source=source, read_ahead=read_ahead
        ),
    )
    label = os.fspath(path) if isinstance(path, (str, os.PathLike)) else "the datasets given"
    return _pinned(Dataset(slots, manifests, columns, reader), expected_hash, label)


def _pinned(dataset: Dataset, expected_hash: str | None, where: str) -> Dataset:
    """``dataset``, once its records are checked to hash to ``expected_hash`` (if given)."""
    if expected_hash is None:
        return dataset
    if not isinstance(expected_hash, str) or not _HASH.match(expected_hash):
        dataset.close()
        raise OptionError(
            f"expected_hash must look like 'xxh3_128:' and 32 hex digits, got {expected_hash!r}"
        )
    try:
        dataset.verify_content_hash(expected_hash, where)
    except BaseException:
        dataset.close()
        raise
    return dataset


def _plain_local_file(path: PathLike) -> str | None:
    """``path`` if it is an existing local file that ``locate`` would open as one packed file
    (not a URL, folder or ``manifest.json``), else None. Opening the common case directly skips
    importing the sharded-dataset modules (locate, manifest, storage): 5-10 ms on a first open."""
    text = os.fspath(path)
    if is_url(text) or text.endswith(".json") or not os.path.isfile(text):
        return None
    return text
