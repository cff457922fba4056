"""Human-readable and JSON descriptions of packed datasets (``shardpack info``)."""

from __future__ import annotations

from typing import Any

from .dataset import Dataset


def describe(ds: Dataset) -> dict[str, Any]:
    """Facts about a dataset, JSON-ready: its files, sizes and the metadata of its first file."""
    meta = ds.metadata
    file_bytes = sum(f.size for f in ds.files)  # works for remote files too
    input_bytes = meta.get("input_bytes") or 0
    if ds.manifests and len(ds.files) > 1:  # a sharded dataset: the first shard is not the whole
        input_bytes = sum(m.stats.get("input_bytes") or 0 for m in ds.manifests)
    return {
        "paths": ds.paths,
        "records": len(ds),
        "blocks": sum(f.block_count for f in ds.files),
        "file_bytes": file_bytes,
        "ratio": round(file_bytes / input_bytes, 4) if input_bytes else None,
        "metadata": meta,
    }


def render_info(facts: dict[str, Any]) -> None:
    """Print ``describe`` output as tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    meta = facts["metadata"]
    codec = meta.get("codec", {})
    codec_text = codec.get("id", "?") + (f" level {codec['level']}" if "level" in codec else "")
    if "dictionary" in codec:
        codec_text += " + dictionary"
    summary = Table(show_header=False, box=None)
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("file", ", ".join(facts["paths"])),
        ("format", f"shardpack {meta.get('format_version', '?')}"),
        ("records", f"{facts['records']:,}"),
        ("blocks", f"{facts['blocks']:,} (block size {meta.get('block_size', 0):,} bytes)"),
        ("codec", codec_text),
        (
            "size",
            f"{facts['file_bytes']:,} bytes"
            + (
                f" ({facts['ratio']:.3f} of {meta.get('input_bytes', 0):,} input bytes)"
                if facts["ratio"]
                else ""
            ),
        ),
        ("content hash", meta.get("content_hash", "")),
        ("created by", meta.get("created_by", "")),
    ]
    for key, value in rows:
        summary.add_row(key, str(value))
    console.print(summary)
    arrays = meta.get("arrays", {})
    if arrays:
        table = Table(title="numeric arrays", title_justify="left")
        table.add_column("field")
        table.add_column("dtype")
        table.add_column("stored as")
        for path, field in arrays.items():
            stored = ", ".join(
                f"{name} ×{count:,}" for name, count in field.get("stored", {}).items()
            )
            lossy = meta.get("lossy", {}).get(path)
            table.add_row(path, field.get("dtype", "?") + (" (lossy)" if lossy else ""), stored)
        console.print(table)
