"""Comparing two packed datasets: counts, schema, statistics and content hash."""

from __future__ import annotations

from typing import Any

from .dataset import Dataset


def _content_hash(ds: Dataset) -> str | None:
    return ds.metadata.get("content_hash")


def diff_datasets(a: Dataset, b: Dataset) -> dict[str, Any]:
    """What differs between two datasets; ``same_content`` is decided by the content hash."""
    meta_a, meta_b = a.metadata, b.metadata
    differences: list[dict[str, Any]] = []

    def compare(what: str, left: Any, right: Any) -> None:
        if left != right:
            differences.append({"what": what, "a": left, "b": right})

    compare("records", len(a), len(b))
    compare("content_hash", _content_hash(a), _content_hash(b))
    compare("schema", meta_a.get("schema"), meta_b.get("schema"))
    compare(
        "array dtypes",
        {k: v.get("dtype") for k, v in meta_a.get("arrays", {}).items()},
        {k: v.get("dtype") for k, v in meta_b.get("arrays", {}).items()},
    )
    compare("lossy fields", meta_a.get("lossy", {}), meta_b.get("lossy", {}))
    fields_a = meta_a.get("stats", {}).get("fields", {})
    fields_b = meta_b.get("stats", {}).get("fields", {})
    for path in sorted(set(fields_a) | set(fields_b)):
        left, right = fields_a.get(path), fields_b.get(path)
        if left is None or right is None:
            compare(f"field {path}", "present" if left else None, "present" if right else None)
            continue
        compare(f"field {path} count", left.get("present"), right.get("present"))
        compare(f"field {path} types", left.get("types"), right.get("types"))
    # codec and block size never change content: reported, but not a difference in content
    packing = {
        "codec": [meta_a.get("codec"), meta_b.get("codec")],
        "block_size": [meta_a.get("block_size"), meta_b.get("block_size")],
    }
    same = _content_hash(a) is not None and _content_hash(a) == _content_hash(b)
    return {
        "a": a.paths,
        "b": b.paths,
        "same_content": same,
        "differences": differences,
        "packing": packing,
    }
