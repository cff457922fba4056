"""Rendering results for people: ``info`` tables, the ``bench`` table and plot."""

from __future__ import annotations

import os
from typing import Any


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
    _render_provenance(console, meta.get("provenance"))
    _render_fields(console, meta.get("stats"))
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


def _render_provenance(console: Any, provenance: dict[str, Any] | None) -> None:
    if not provenance:
        return
    from rich.table import Table

    table = Table(title="provenance", title_justify="left", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for source in provenance.get("inputs", []):
        line = f"{source.get('size', 0):,} bytes, {source.get('lines', 0):,} lines"
        if source.get("sha256"):
            line += f", sha256 {source['sha256'][:16]}…"
        git = source.get("git")
        if git:
            line += f", git {git['commit'][:10]}{' (dirty)' if git.get('dirty') else ''}"
        table.add_row(f"input {source.get('path')}", line)
    table.add_row("created", str(provenance.get("created", "")))
    versions = provenance.get("versions", {})
    table.add_row("built with", ", ".join(f"{k} {v}" for k, v in versions.items()))
    options = provenance.get("options", {})
    if options:
        table.add_row("options", ", ".join(f"{k}={v}" for k, v in options.items()))
    for key, value in provenance.get("meta", {}).items():
        table.add_row(f"meta {key}", str(value))
    console.print(table)


def _render_fields(console: Any, stats: dict[str, Any] | None) -> None:
    if not stats or not stats.get("fields"):
        return
    from rich.table import Table

    table = Table(title=f"fields ({stats.get('records', 0):,} records)", title_justify="left")
    for column in ("field", "present", "nulls", "types", "length min / mean / p95 / max", "values"):
        table.add_column(column, justify="left" if column in ("field", "types") else "right")
    for path, field in stats["fields"].items():
        lengths = field.get("string_length") or field.get("array_length")
        length_text = ""
        if lengths and lengths.get("count"):
            length_text = " / ".join(
                (
                    f"{lengths['min']:,}",
                    f"{lengths['mean']:,.1f}",
                    f"{lengths['p95']:,}",
                    f"{lengths['max']:,}",
                )
            )
        values = field.get("number") or field.get("array_values")
        value_text = f"{values['min']:.4g} … {values['max']:.4g}" if values else ""
        types = ", ".join(f"{k} {v:,}" for k, v in field.get("types", {}).items())
        if field.get("array_dtypes"):
            types += " (" + ", ".join(field["array_dtypes"]) + ")"
        table.add_row(
            path, f"{field['present']:,}", f"{field['nulls']:,}", types, length_text, value_text
        )
    console.print(table)
    token_field = stats.get("token_field")
    if token_field and token_field in stats["fields"]:
        lengths = stats["fields"][token_field].get("array_length", {})
        console.print(_token_histogram(token_field, lengths))


def _token_histogram(field: str, lengths: dict[str, Any], rows: int = 10, width: int = 40) -> str:
    """A terminal bar chart of a token field's length distribution."""
    buckets = lengths.get("histogram") or []
    if not buckets:
        return ""
    low, high = buckets[0][0], buckets[-1][1]
    step = max(1, -(-(high - low + 1) // rows))
    counts = [0] * rows
    for lo, hi, n in buckets:
        counts[min(rows - 1, ((lo + hi) // 2 - low) // step)] += n
    peak = max(counts) or 1
    lines = [
        f"{field} length: total {lengths.get('total', 0):,} tokens, "
        f"p50 {lengths.get('p50')}, p95 {lengths.get('p95')}, max {lengths.get('max')}"
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
    from rich.console import Console
    from rich.table import Table

    console = Console()
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
        (
            "scan vs ceiling",
            f"{ceilings['ceiling_scan_seconds']:.3f} s to read+check+decompress = "
            f"{ceilings['ceiling_scan_seconds'] / scan:.0%} of the full scan",
        ),
    ]
    if "json" in result["jsonl"] and result["jsonl"]["json"].get("peak_rss_mb"):
        lines.append(
            ("peak RSS, json.loads scan", _fmt(result["jsonl"]["json"]["peak_rss_mb"], " MB", 0))
        )
    for key, value in lines:
        details.add_row(key, value)
    console.print(details)


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
