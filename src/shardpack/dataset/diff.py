"""Comparing two packed datasets: counts, schema, statistics and content hash."""

from __future__ import annotations

from typing import Any

from .dataset import Dataset


def diff_datasets(a: Dataset, b: Dataset) -> dict[str, Any]:
    """What differs between two datasets; ``same_content`` is decided by the content hash."""
    meta_a, meta_b = a.metadata, b.metadata
    differences: list[dict[str, Any]] = []

    def compare(what: str, left: Any, right: Any) -> None:
        if left != right:
            differences.append({"what": what, "a": left, "b": right})

    compare("records", len(a), len(b))
    compare("content_hash", meta_a.content_hash, meta_b.content_hash)
    compare("schema", meta_a.schema, meta_b.schema)
    compare(
        "array dtypes",
        {k: v.dtype for k, v in meta_a.arrays.items()},
        {k: v.dtype for k, v in meta_b.arrays.items()},
    )
    compare("lossy fields", meta_a.lossy, meta_b.lossy)
    fields_a = meta_a.stats.fields if meta_a.stats else {}
    fields_b = meta_b.stats.fields if meta_b.stats else {}
    for path in sorted(set(fields_a) | set(fields_b)):
        left, right = fields_a.get(path), fields_b.get(path)
        if left is None or right is None:
            compare(f"field {path}", "present" if left else None, "present" if right else None)
            continue
        compare(f"field {path} count", left.present, right.present)
        compare(f"field {path} types", left.types, right.types)
    # codec and block size never change content: reported, but not a difference in content
    packing = {
        "codec": [meta_a.codec, meta_b.codec],
        "block_size": [meta_a.block_size, meta_b.block_size],
    }
    same = meta_a.content_hash == meta_b.content_hash
    return {
        "a": a.paths,
        "b": b.paths,
        "same_content": same,
        "differences": differences,
        "packing": packing,
    }
