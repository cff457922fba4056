"""``shardpack merge A B --output C``: one dataset from several, shards kept byte for byte.

Shards are hard-linked (local), copied server-side (same object store) or copied as bytes, never
decoded or re-encoded; their hashes carry over into C's manifest. Schemas must be compatible.
Every source is read once to verify it before anything is written: a hard link or a server-side
copy would carry damage over unseen, and the manifest would vouch for it.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from .._version import __version__
from ..errors import FormatError, ManifestError, OptionError
from ..format.metadata import DatasetStats, FileMetadata, MergedSource, Provenance, Spread
from ..packfile.reader import PackedFile
from ..stats import merge_stats
from ..storage.folder import open_storage
from ..storage.output_lock import output_lock
from ..storage.urls import is_remote
from .identity import check_shard
from .locate import PackedLocation, locate
from .manifest import (
    MANIFEST_NAME,
    DatasetSchema,
    Manifest,
    ShardEntry,
    merge_schemas,
    schema_of,
    shard_name,
)

if TYPE_CHECKING:
    from ..storage.remote import RemoteReader
    from ..storage.remote_options import RemoteOptions


def merge_datasets(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
    remote: RemoteOptions | None = None,
) -> Manifest:
    """Merge packed datasets (folders, manifests or single packed files; paths or URLs) into the
    new dataset folder ``output``, in the order given. Returns the new manifest. ``remote``: the
    settings remote data is read with (timeouts and retries; see ``RemoteOptions``)."""
    if len(inputs) < 1:
        raise OptionError("merge needs at least one input dataset")
    out = os.fspath(output)
    reader = None
    if any(is_remote(os.fspath(where)) for where in [*inputs, out]):
        from ..storage.remote import RemoteReader
        from ..storage.remote_options import resolve_remote

        settings = resolve_remote(remote, storage_options=storage_options)
        settings = settings.for_urls([*inputs, out])
        storage_options = settings.storage_options or None
        if any(is_remote(os.fspath(where)) for where in inputs):
            reader = RemoteReader(settings)
    try:
        with output_lock(out, storage_options):
            return _merge_locked(inputs, out, storage_options, reader)
    finally:
        if reader is not None:
            reader.close()


def _merge_locked(
    inputs: Sequence[str | os.PathLike[str]],
    out: str,
    storage_options: dict[str, Any] | None,
    reader: RemoteReader | None,
) -> Manifest:
    target = open_storage(out, storage_options)
    if target.list_names():
        raise OptionError(f"output {out} exists and is not empty; merge writes a new dataset")

    parts: list[tuple[PackedLocation, ShardEntry, bool]] = []  # (source, entry, from a manifest)
    schemas: list[tuple[str, DatasetSchema]] = []
    origins: list[MergedSource] = []
    all_stats: list[DatasetStats] = []
    for item in inputs:
        label = os.fspath(item)
        located = locate(label, storage_options)
        if located.manifest is not None:
            manifest = located.manifest
            listed = [(e.file, e.content_hash) for e in manifest.shards]
            for number, (where, entry) in enumerate(
                zip(located.locations, manifest.shards, strict=True)
            ):
                # each shard is the one its entry names (a footer read), before anything is copied
                with PackedFile(where.path, source=where.source(reader)) as packed:
                    check_shard(packed, where, entry_number=number, listed=listed)
                parts.append((where, entry, True))
            schemas.append((label, manifest.schema))
            all_stats.append(manifest.stats)
            origins.append(
                MergedSource(
                    path=label, shards=len(manifest.shards), content_hash=manifest.content_hash
                )
            )
        else:
            where = located.locations[0]
            entry, metadata = _single_file_entry(where.path, where.source(reader), storage_options)
            parts.append((where, entry, False))
            schemas.append((label, schema_of(metadata)))
            all_stats.append(metadata.stats or DatasetStats(input_bytes=metadata.input_bytes))
            origins.append(MergedSource(path=label, shards=1, content_hash=entry.content_hash))
    schema = merge_schemas(schemas)  # a clear error before anything is written
    for where, entry, listed_in_manifest in parts:  # then the reads, still before any write
        _verify_source(where, entry, listed_in_manifest, reader)

    entries: list[ShardEntry] = []
    try:
        for number, (where, entry, _) in enumerate(parts):
            name = shard_name(number)
            target.copy_in(where.path, name, storage_options)
            size = target.size(name)
            if size != entry.size:
                raise ManifestError(
                    f"{where.path}: copied {size} bytes but the manifest lists {entry.size}"
                )
            entries.append(msgspec.structs.replace(entry, file=name))
    except BaseException:
        # a failed copy leaves no shards behind: the folder stays empty, so a re-run may start
        for number in range(len(entries) + 1):
            target.remove(shard_name(number))
        raise
    records = [e.records for e in entries]
    sizes = [e.size for e in entries]
    stats = merge_stats(all_stats)
    stats.shards = len(entries)
    stats.stored_bytes = sum(sizes)
    stats.ratio = round(sum(sizes) / stats.input_bytes, 4) if stats.input_bytes else None
    stats.records_per_shard = Spread(min=min(records, default=0), max=max(records, default=0))
    stats.bytes_per_shard = Spread(min=min(sizes, default=0), max=max(sizes, default=0))
    provenance = Provenance(
        tool=f"shardpack {__version__}",
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        merged_from=origins,
    )
    manifest = Manifest.create(entries, schema=schema, stats=stats, provenance=provenance)
    target.write_bytes(MANIFEST_NAME, manifest.to_json())
    return manifest


def _verify_source(
    where: PackedLocation, entry: ShardEntry, listed_in_manifest: bool, reader: RemoteReader | None
) -> None:
    """FormatError naming the source shard unless its bytes are the ones it was packed with.

    A dataset's shard: the xxh3_128 of the whole file equals its manifest entry's file_hash
    (one read; the manifest's totals were checked when it was read). A single packed file has
    no such record: it gets ``validate``'s default check (footer, padding, every block's
    checksum and decompression)."""
    if listed_in_manifest and where.storage is not None and where.name is not None:
        found = where.storage.hash_file(where.name)
        if found != entry.file_hash:
            raise FormatError(
                f"file hash {found} differs from the manifest's {entry.file_hash} (shard "
                "damaged or replaced): nothing merged",
                path=where.path,
            )
        return
    from .validate_file import validate_path

    report = validate_path(where.path, source=where.source(reader))
    if not report.ok:
        extra = len(report.problems) - 1
        more = f" (and {extra} more problems)" if extra else ""
        raise FormatError(f"{report.problems[0]}{more}: nothing merged")


def _single_file_entry(
    path: str, source: Any, storage_options: dict[str, Any] | None
) -> tuple[ShardEntry, FileMetadata]:
    """A manifest entry for a packed file that is not part of a sharded dataset."""
    import xxhash

    from ..storage.folder import file_hash
    from ..storage.urls import is_url, url_to_fs

    packed = PackedFile(path, source=source)
    try:
        metadata, size = packed.metadata, packed.size
        footer_offset = packed.trailer.index_offset
    finally:
        packed.close()
    if is_url(path) and not path.startswith("file://"):
        fs, fs_path = url_to_fs(path, storage_options)
        digest = xxhash.xxh3_128()
        with fs.open(fs_path, "rb") as file:
            while chunk := file.read(8 << 20):
                digest.update(chunk)
        hashed = "xxh3_128:" + digest.hexdigest()
    else:
        hashed = file_hash(path.removeprefix("file://"))
    entry = ShardEntry(
        file=shard_name(0),
        records=metadata.record_count,
        blocks=metadata.block_count,
        size=size,
        file_hash=hashed,
        content_hash=metadata.content_hash,
        inputs=metadata.inputs,
        footer_offset=footer_offset,
    )
    return entry, metadata
