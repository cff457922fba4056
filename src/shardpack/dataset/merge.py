"""``shardpack merge A B --output C``: one dataset from several, shards kept byte for byte.

Shards are hard-linked (local), copied server-side (same object store) or copied as bytes, never
decoded or re-encoded; their hashes carry over into C's manifest. Schemas must be compatible.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from ..errors import ManifestError, OptionError
from ..packfile.reader import PackedFile
from ..storage.folder import open_storage
from .locate import locate
from .manifest import MANIFEST_NAME, Manifest, ShardEntry, merge_schemas, schema_of, shard_name


def merge_datasets(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    storage_options: dict[str, Any] | None = None,
) -> Manifest:
    """Merge packed datasets (folders, manifests or single packed files; paths or URLs) into the
    new dataset folder ``output``, in the order given. Returns the new manifest."""
    if len(inputs) < 1:
        raise OptionError("merge needs at least one input dataset")
    out = os.fspath(output)
    target = open_storage(out, storage_options)
    if target.list_names():
        raise OptionError(f"output {out} exists and is not empty; merge writes a new dataset")

    parts: list[tuple[str, ShardEntry]] = []  # (source location, entry)
    schemas: list[tuple[str, dict[str, Any]]] = []
    origins: list[dict[str, Any]] = []
    input_bytes = 0
    for item in inputs:
        label = os.fspath(item)
        located = locate(label, storage_options)
        if located.manifest is not None:
            manifest = located.manifest
            for where, entry in zip(located.locations, manifest.shards, strict=True):
                parts.append((where.path, entry))
            schemas.append((label, manifest.schema))
            input_bytes += int(manifest.stats.get("input_bytes") or 0)
            origins.append(
                {
                    "path": label,
                    "shards": len(manifest.shards),
                    "content_hash": manifest.content_hash,
                }
            )
        else:
            where = located.locations[0]
            entry, metadata = _single_file_entry(where.path, where.source(), storage_options)
            parts.append((where.path, entry))
            schemas.append((label, schema_of(metadata)))
            input_bytes += int(metadata.get("input_bytes") or 0)
            origins.append({"path": label, "shards": 1, "content_hash": entry.content_hash})
    schema = merge_schemas(schemas)  # a clear error before anything is written

    entries = []
    for number, (source, entry) in enumerate(parts):
        name = shard_name(number)
        target.copy_in(source, name)
        size = target.size(name)
        if size != entry.bytes:
            raise ManifestError(
                f"{source}: copied {size} bytes but the manifest lists {entry.bytes}"
            )
        entries.append(
            ShardEntry(
                name,
                entry.records,
                entry.blocks,
                entry.bytes,
                entry.file_hash,
                entry.content_hash,
                entry.inputs,
            )
        )
    records = [e.records for e in entries]
    sizes = [e.bytes for e in entries]
    stats = {
        "records": sum(records),
        "shards": len(entries),
        "input_bytes": input_bytes,
        "stored_bytes": sum(sizes),
        "ratio": round(sum(sizes) / input_bytes, 4) if input_bytes else None,
        "records_per_shard": {"min": min(records, default=0), "max": max(records, default=0)},
        "bytes_per_shard": {"min": min(sizes, default=0), "max": max(sizes, default=0)},
    }
    provenance = {
        "created_by": f"shardpack {__version__}",
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "merged_from": origins,
    }
    manifest = Manifest(entries, schema=schema, stats=stats, provenance=provenance)
    target.write_bytes(MANIFEST_NAME, manifest.to_json())
    return manifest


def _single_file_entry(
    path: str, source: Any, storage_options: dict[str, Any] | None
) -> tuple[ShardEntry, dict[str, Any]]:
    """A manifest entry for a packed file that is not part of a sharded dataset."""
    import xxhash

    from ..storage.folder import file_hash
    from ..storage.urls import is_url, url_to_fs

    packed = PackedFile(path, source=source)
    try:
        metadata, size = packed.metadata, packed.size
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
        records=int(metadata["record_count"]),
        blocks=int(metadata["block_count"]),
        bytes=size,
        file_hash=hashed,
        content_hash=str(metadata["content_hash"]),
        inputs=[{"path": p.get("path")} for p in metadata.get("inputs", []) if isinstance(p, dict)],
    )
    return entry, metadata
