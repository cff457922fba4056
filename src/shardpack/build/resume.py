"""Resuming an interrupted sharded pack: which finished shards of an earlier run of the same
plan still validate and may be kept."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ..dataset.manifest import MANIFEST_NAME, Manifest, ShardEntry
from ..errors import ShardpackError
from ..format.metadata import FileMetadata
from ..storage.folder import Storage
from ..storage.ranges import BytesSource
from ..storage.urls import is_url, url_to_fs
from .planning import (
    ShardTask,
)

PLAN_NAME = "unfinished-pack.json"  # present only while a pack is unfinished; drives resume


@dataclass
class ShardResult:
    """What packing one shard produced: its manifest entry and its footer metadata."""

    index: int
    entry: ShardEntry
    metadata: FileMetadata
    reused: bool = False


def input_identity(path: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """Size and modification stamp of an input: a changed input invalidates finished shards."""
    if is_url(path):
        fs, fs_path = url_to_fs(path, storage_options)
        info = fs.info(fs_path)
        stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
        return {"path": path, "bytes": int(info.get("size") or 0), "stamp": str(stamp)}
    stat = os.stat(path)
    return {"path": path, "bytes": stat.st_size, "stamp": str(stat.st_mtime_ns)}


def reusable_shards(
    storage: Storage, tasks: list[ShardTask], fingerprint: dict[str, Any]
) -> dict[int, ShardResult]:
    """Finished shards of an earlier run of the same plan that still validate."""
    previous = None
    if storage.exists(PLAN_NAME):
        try:
            previous = json.loads(storage.read_bytes(PLAN_NAME)).get("fingerprint")
        except (ValueError, AttributeError):
            previous = None
    elif storage.exists(MANIFEST_NAME):
        try:
            manifest = Manifest.from_json(storage.read_bytes(MANIFEST_NAME))
            previous = manifest.provenance.fingerprint
        except ShardpackError:
            previous = None
    if previous != json.loads(json.dumps(fingerprint)):
        return {}
    reusable = {}
    for task in tasks:
        if storage.exists(task.name):
            result = check_shard(storage, task)
            if result is not None:
                reusable[task.index] = result
    return reusable


def check_shard(storage: Storage, task: ShardTask) -> ShardResult | None:
    """The shard file for ``task`` if it validates (every block) and holds exactly its slices."""
    from ..dataset.validate_file import validate_path
    from ..packfile.reader import PackedFile

    name = task.name
    try:
        if storage.is_remote:
            data = storage.read_bytes(name)
            source: Any = BytesSource(data, storage.location(name))
            from ..storage.folder import bytes_hash

            digest = bytes_hash(data)
        else:
            source, digest = None, None
        report = validate_path(storage.location(name), source=source)
        if not report.ok:
            return None
        if source is not None:
            source = BytesSource(data, storage.location(name))
        packed = PackedFile(storage.location(name), source=source)
        try:
            metadata, size = packed.metadata, packed.size
        finally:
            packed.close()
        if digest is None:
            digest = storage.hash_file(name)
    except (ShardpackError, OSError):
        return None
    planned = [item.source_slice() for item in task.slices]
    if metadata.inputs != planned or metadata.record_count != task.records:
        return None
    entry = ShardEntry(
        file=name,
        records=metadata.record_count,
        blocks=metadata.block_count,
        size=size,
        file_hash=digest,
        content_hash=metadata.content_hash,
        inputs=planned,
    )
    return ShardResult(task.index, entry, metadata, reused=True)
