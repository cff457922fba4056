"""Facts about an open dataset, JSON-ready: what ``shardpack info`` shows."""

from __future__ import annotations

from typing import Any

from .dataset import Dataset


def describe(ds: Dataset) -> dict[str, Any]:
    """Facts about a dataset, JSON-ready: its files, sizes and the metadata of its first file."""
    meta = ds.metadata
    file_bytes = sum(f.size for f in ds.files)  # works for remote files too
    input_bytes = meta.input_bytes
    if ds.manifests and len(ds.files) > 1:  # a sharded dataset: the first shard is not the whole
        input_bytes = sum(m.stats.input_bytes for m in ds.manifests)
    return {
        "paths": ds.paths,
        "records": len(ds),
        "blocks": sum(f.block_count for f in ds.files),
        "file_bytes": file_bytes,
        "ratio": round(file_bytes / input_bytes, 4) if input_bytes else None,
        "metadata": meta.to_dict(),
    }
