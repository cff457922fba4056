"""Rendering results for people: ``info`` tables, the ``bench`` table and plot."""

from __future__ import annotations

import os
from typing import Any

from ..format.metadata import DatasetMetadata, DatasetStats, LengthSummary, Provenance
from .output import stdout_console

SMALL_SCAN_SECONDS = 0.005  # below it, parts timed apart do not add up to the whole


def render_info(facts: dict[str, Any], meta: DatasetMetadata) -> None:
    """Print a dataset's ``describe`` facts and metadata as tables."""
    from rich.table import Table

    console = stdout_console()
    codec = meta.codec
    codec_text = codec.get("id", "?") + (f" level {codec['level']}" if "level" in codec else "")
    if "dictionary" in codec:
        codec_text += " + dictionary"
    summary = Table(show_header=False, box=None)
    summary.add_column(style="bold")
    summary.add_column()
    size = f"{facts['file_bytes']:,} bytes"
    if facts["ratio"]:
        size += f" ({facts['ratio']:.3f} of {meta.input_bytes:,} input bytes)"
    rows = [
        ("file", ", ".join(facts["paths"])),
        ("format", f"shardpack {meta.format_version}"),
        ("records", f"{facts['records']:,}"),
        ("blocks", f"{facts['blocks']:,} (block size {meta.block_size:,} bytes)"),
        ("codec", codec_text),
        ("size", size),
        ("content hash", meta.content_hash),
        ("created by", meta.created_by),
    ]
    if meta.shards is not None:
        rows.insert(1, ("shards", f"{meta.shards:,}"))
    for key, value in rows:
        summary.add_row(key, str(value))
    console.print(summary)
    _render_provenance(console, meta.provenance)
    _render_fields(console, meta.stats)
    if meta.arrays:
        table = Table(title="numeric arrays", title_justify="left")
        table.add_column("field")
        table.add_column("dtype")
        table.add_column("stored as")
        for path, field in meta.arrays.items():
            stored = ", ".join(f"{name} ×{count:,}" for name, count in field.stored.items())
            lossy = " (lossy)" if path in meta.lossy else ""
            table.add_row(path, field.dtype + lossy, stored)
        console.print(table)


def _render_provenance(console: Any, provenance: Provenance | None) -> None:
    if provenance is None:
        return
    from rich.table import Table

    table = Table(title="provenance", title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for source in provenance.inputs:
        line = f"{source.size or 0:,} bytes, {source.lines or 0:,} lines"
        if source.sha256:
            line += f", sha256 {source.sha256[:16]}…"
        git = source.git
        if git is not None:
            line += f", git {git.commit[:10]}{' (dirty)' if git.dirty else ''}"
        table.add_row(f"input {source.path}", line)
    for merged in provenance.merged_from or []:
        table.add_row(f"merged from {merged.path}", f"{merged.shards or 0} shards")
    table.add_row("created", str(provenance.created or ""))
    table.add_row("built with", ", ".join(f"{k} {v}" for k, v in provenance.versions.items()))
    if provenance.options is not None:
        options = provenance.options.to_dict()
        table.add_row("options", ", ".join(f"{k}={v}" for k, v in options.items()))
    for key, value in provenance.meta.items():
        table.add_row(f"meta {key}", str(value))
    console.print(table)


def _render_fields(console: Any, stats: DatasetStats | None) -> None:
    if stats is None or not stats.fields:
        return
    from rich.table import Table

    table = Table(title=f"fields ({stats.records:,} records)", title_justify="left")
    for column in ("field", "present", "nulls", "types", "length min / mean / p95 / max", "values"):
        table.add_column(column, justify="left" if column in ("field", "types") else "right")
    for path, field in stats.fields.items():
        lengths = field.string_length or field.array_length
        length_text = ""
        if lengths is not None and lengths.count:
            length_text = " / ".join(
                (
                    f"{lengths.min or 0:,}",
                    f"{lengths.mean or 0:,.1f}",
                    f"{lengths.p95 or 0:,}",
                    f"{lengths.max or 0:,}",
                )
            )
        values = field.number or field.array_values
        value_text = ""
        if values is not None and values.min is not None and values.max is not None:
            value_text = f"{values.min:.4g} … {values.max:.4g}"
        types = ", ".join(f"{k} {v:,}" for k, v in field.types.items())
        if field.array_dtypes:
            types += " (" + ", ".join(field.array_dtypes) + ")"
        table.add_row(
            path, f"{field.present:,}", f"{field.nulls:,}", types, length_text, value_text
        )
    console.print(table)
    token = stats.token_field
    if token and token in stats.fields:
        lengths = stats.fields[token].array_length
        if lengths is not None:
            console.print(_token_histogram(token, lengths))


def _token_histogram(field: str, lengths: LengthSummary, rows: int = 10, width: int = 40) -> str:
    """A terminal bar chart of a token field's length distribution."""
    buckets = lengths.histogram or []
    if not buckets:
        return ""
    low, high = buckets[0][0], buckets[-1][1]
    step = max(1, -(-(high - low + 1) // rows))
    counts = [0] * rows
    for lo, hi, n in buckets:
        counts[min(rows - 1, ((lo + hi) // 2 - low) // step)] += n
    peak = max(counts) or 1
    lines = [
        f"{field} length: total {lengths.total or 0:,} tokens, "
        f"p50 {lengths.p50}, p95 {lengths.p95}, max {lengths.max}"
    ]
    for i, n in enumerate(counts):
        start = low + i * step
        bar = "█" * round(n / peak * width)
        lines.append(f"  {start:>7,}-{start + step - 1:<7,} {bar} {n:,}")
    return "\n".join(lines)


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.{digits}f}" if value >= 0.1 or value == 0 else f"{value:.2g}"
    else:
        text = f"{value:,}"
    return f"{text}{unit}"


def render_bench(result: dict[str, Any]) -> None:
    """Print ``benchmark_loading`` results as tables: packed vs JSONL side by side."""
    from rich.table import Table

    console = stdout_console()
    packed = result["packed"]
    console.print(
        f"[bold]{result['dataset']}[/]: {result['records']:,} records, "
        f"{result['json_bytes'] / 1e6:,.1f} MB of JSON, "
        f"{result['packed_bytes'] / 1e6:,.1f} MB packed, "
        f"{result['tokens']:,} tokens ({result['token_field'] or 'no token field'}), "
        f"medians of {result['repeats']} runs"
    )
    table = Table(title="full scan", title_justify="left")
    for column in ("reader", "seconds", "records/s", "JSON MB/s", "tokens/s", "shardpack ×"):
        table.add_column(column, justify="right" if column != "reader" else "left")
    scan = packed["scan_seconds"]
    rows = [("shardpack", packed)] + [
        (f"{name}.loads per line", r) for name, r in result["jsonl"].items()
    ]
    for name, rates in rows:
        table.add_row(
            name,
            _fmt(rates["scan_seconds"], " s", 3),
            _fmt(rates["records_per_s"], "", 0),
            _fmt(rates["json_mb_per_s"], "", 0),
            _fmt(rates["tokens_per_s"], "", 0),
            _fmt(rates["scan_seconds"] / scan, "x", 1) if name != "shardpack" else "1.0x",
        )
    console.print(table)
    details = Table(show_header=False, box=None, title="shardpack details", title_justify="left")
    breakdown = packed["breakdown_seconds"]
    ceilings = packed["ceilings"]
    total = sum(breakdown.values()) or 1.0
    lines = [
        ("open", _fmt(packed["open_seconds"] * 1e3, " ms", 2)),
        ("time to first batch", _fmt(packed["first_batch_seconds"] * 1e3, " ms", 2)),
        ("scan without checksums", _fmt(packed["scan_unverified_seconds"], " s", 3)),
        ("scan with read_ahead=True", _read_ahead(packed["scan_read_ahead_seconds"], scan)),
        (
            "random access p50 / p99",
            f"{packed['random_access_p50_us']:.0f} / {packed['random_access_p99_us']:.0f} µs",
        ),
        (
            f"DataLoader batches/s (batch {result['batch_size']}, "
            f"{packed['dataloader_workers']} workers)",
            _fmt(packed["dataloader_batches_per_s"], "", 0),
        ),
        ("peak RSS, scan", _fmt(packed["peak_rss_mb"], " MB", 0)),
        ("where time goes", ", ".join(f"{k} {v / total:.0%}" for k, v in breakdown.items())),
        (
            "machine ceilings",
            f"read {ceilings['read_mb_s']:,.0f} MB/s, decompress {ceilings['decompress_mb_s']:,.0f}"
            f" MB/s, memcpy {ceilings['memcpy_mb_s']:,.0f} MB/s",
        ),
        ("scan vs ceiling", _ceiling_share(ceilings["ceiling_scan_seconds"], scan)),
    ]
    if "json" in result["jsonl"] and result["jsonl"]["json"].get("peak_rss_mb"):
        lines.append(
            ("peak RSS, json.loads scan", _fmt(result["jsonl"]["json"]["peak_rss_mb"], " MB", 0))
        )
    for key, value in lines:
        details.add_row(key, value)
    console.print(details)


def _read_ahead(seconds: float, scan: float) -> str:
    """The read-ahead scan's time, and how it compares with the scan above."""
    if not seconds or not scan:
        return _fmt(seconds, " s", 3)
    return f"{_fmt(seconds, ' s', 3)} ({scan / seconds:.1f}x the scan above)"


def plot_bench(result: dict[str, Any], path: str) -> None:
    """A bar chart of full-scan throughput (JSON MB/s) for shardpack and the JSONL parsers."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from ..errors import OptionError

        raise OptionError("--plot needs matplotlib: pip install 'shardpack[plot]'") from exc
    names = ["shardpack"] + [f"{name}.loads" for name in result["jsonl"]]
    values = [result["packed"]["json_mb_per_s"]] + [
        r["json_mb_per_s"] for r in result["jsonl"].values()
    ]
    fig, ax = plt.subplots(figsize=(6, 3))
    bars = ax.barh(names[::-1], values[::-1], color=["#999999"] * (len(names) - 1) + ["#2a6ebb"])
    ax.bar_label(bars, fmt="%.0f MB/s", padding=3)
    ax.set_xlabel("full scan, MB of JSON per second (higher is better)")
    ax.set_title(f"{os.path.basename(result['dataset'])}: {result['records']:,} records")
    ax.set_xlim(0, max(values) * 1.25)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ceiling_share(ceiling: float, scan: float) -> str:
    """Read+check+decompress as a share of the full scan. Both are timed apart, so on a scan of a
    few milliseconds their noise can put the part above the whole: that says too small to tell,
    not a share."""
    share = ceiling / scan if scan > 0 else float("inf")
    spent = f"{ceiling * 1e3:.2f} ms" if ceiling < 1 else f"{ceiling:.3f} s"
    if share > 1 or scan < SMALL_SCAN_SECONDS:
        return f"{spent} to read+check+decompress (the scan is too short to tell a share)"
    return f"{spent} to read+check+decompress = {share:.0%} of the full scan"
