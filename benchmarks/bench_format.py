"""Format benchmark: pack speed, size, full scan and random access, side by side with JSONL parsing.

Runs on a generated KD mix and on a real text-only dataset, for each codec, in one process run:

    python benchmarks/bench_format.py --kd-mb 300 --text data/gsm8k_sample.jsonl --json-out out.json

Full scans read every record (numeric fields as numpy arrays, checksums verified); JSONL scans
call ``json.loads`` / ``orjson.loads`` on every line. Medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_kd_mix

import shardpack
from shardpack.bench.loading import (
    median_seconds,
    random_access_latencies,
    scan_jsonl,
    scan_packed,
)


def bench_dataset(name: str, jsonl: Path, workdir: Path, codecs: list[str], repeats: int) -> dict:
    import orjson

    size = jsonl.stat().st_size
    result: dict[str, Any] = {"dataset": name, "jsonl_bytes": size, "codecs": {}}
    json_s = median_seconds(lambda: scan_jsonl(str(jsonl), json.loads), repeats)
    orjson_s = median_seconds(lambda: scan_jsonl(str(jsonl), orjson.loads), repeats)
    result["json_scan_s"], result["orjson_scan_s"] = json_s, orjson_s
    for codec in codecs:
        out = workdir / f"{name}.{codec}.packed"
        started = time.perf_counter()
        packed = shardpack.DatasetPacker().pack(jsonl, out, compression=codec, workers=1)
        pack_s = time.perf_counter() - started
        scan_s = median_seconds(lambda out=out: scan_packed(str(out)), repeats)
        latencies = random_access_latencies(str(out), samples=2000)
        result["codecs"][codec] = {
            "pack_s": pack_s,
            "pack_mb_s": size / 1e6 / pack_s,
            "size_ratio": packed.output_bytes / size,
            "scan_s": scan_s,
            "vs_json": json_s / scan_s,
            "vs_orjson": orjson_s / scan_s,
            "random_p50_us": float(np.percentile(latencies, 50) * 1e6),
            "random_p99_us": float(np.percentile(latencies, 99) * 1e6),
        }
    return result


def stats_overhead(jsonl: Path, workdir: Path, repeats: int) -> dict[str, float]:
    """Pack time with statistics vs with the statistics pass switched off (A/B, medians).

    Also the same for both metadata passes (statistics and schema inference) switched off.
    Runs alternate, and so does which of a pair goes first: a pack right after another one is
    slower here (the previous output is still being written back), which biased a plain "all
    with, then all without" comparison by 10-20%.
    """
    from shardpack.ingest.schema_infer import SchemaInferrer
    from shardpack.stats import StatsCollector

    out = workdir / "stats-ab.packed"
    observe, infer = StatsCollector.add_column, SchemaInferrer.add_column
    variants = ["with", "without_stats", "without_stats_or_schema"]
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for i in range(2 * max(1, repeats)):
            for name in variants if i % 2 else variants[::-1]:
                StatsCollector.add_column = observe if name == "with" else _skip  # type: ignore[method-assign]
                SchemaInferrer.add_column = _skip if name.endswith("schema") else infer  # type: ignore[method-assign]
                started = time.perf_counter()
                shardpack.DatasetPacker().pack(jsonl, out, compression="lz4", force=True, workers=1)
                times[name].append(time.perf_counter() - started)
    finally:
        StatsCollector.add_column = observe  # type: ignore[method-assign]
        SchemaInferrer.add_column = infer  # type: ignore[method-assign]
    with_s = statistics.median(times["with"])
    without_s = statistics.median(times["without_stats"])
    bare_s = statistics.median(times["without_stats_or_schema"])
    return {
        "with_stats_s": with_s,
        "without_stats_s": without_s,
        "overhead": with_s / without_s - 1,
        "without_stats_or_schema_s": bare_s,
        "overhead_stats_and_schema": with_s / bare_s - 1,
    }


def _skip(self: object, values: object) -> None:
    """Stands in for a metadata pass in the runs without it."""


def render(results: list[dict]) -> str:
    lines = [
        "| dataset | codec | pack MB/s | size / JSONL | full scan | vs json.loads | vs orjson "
        "| random p50 / p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for codec, r in result["codecs"].items():
            lines.append(
                f"| {result['dataset']} | {codec} | {r['pack_mb_s']:.0f} | {r['size_ratio']:.3f} "
                f"| {r['scan_s'] * 1e3:.1f} ms | {r['vs_json']:.1f}x | {r['vs_orjson']:.1f}x "
                f"| {r['random_p50_us']:.0f} / {r['random_p99_us']:.0f} µs |"
            )
        lines.append(
            f"| {result['dataset']} | (JSONL, {result['jsonl_bytes'] / 1e6:.1f} MB) | | | "
            f"json.loads {result['json_scan_s'] * 1e3:.0f} ms, "
            f"orjson {result['orjson_scan_s'] * 1e3:.0f} ms | | | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kd-mb", type=float, default=300.0, help="size of the generated KD mix")
    parser.add_argument("--kd", type=Path, help="use this KD JSONL instead of generating one")
    parser.add_argument("--text", type=Path, default=Path("data/gsm8k_sample.jsonl"))
    parser.add_argument("--codecs", default="lz4,zstd,none")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--overhead-only", action="store_true", help="only the statistics A/B (pack with/without)"
    )
    args = parser.parse_args(argv)
    codecs = args.codecs.split(",")
    with tempfile.TemporaryDirectory(prefix="shardpack-bench-") as tmp:
        workdir = Path(tmp)
        kd = args.kd
        if kd is None:
            kd = workdir / "kd_mix.jsonl"
            gen_kd_mix.generate(
                kd, int(args.kd_mb * 1e6), seed=0, top_k=20, vocab_size=151_936, mix="uniform"
            )
        results = []
        if not args.overhead_only:
            results = [
                bench_dataset("kd_mix", kd, workdir, codecs, args.repeats),
                bench_dataset("text", args.text, workdir, codecs, args.repeats),
            ]
        overhead = {
            "kd_mix": stats_overhead(kd, workdir, args.repeats),
            # a 70 ms pack swings by ±20% here: a few runs cannot resolve a few percent
            "text": stats_overhead(args.text, workdir, max(args.repeats, 15)),
        }
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "shardpack": shardpack.__version__,
        "command": " ".join(["python", *sys.argv]),
        "results": results,
        "stats_overhead": overhead,
    }
    if results:
        print(render(results))
    for name, o in overhead.items():
        print(
            f"statistics pass, {name}: pack {o['with_stats_s']:.3f} s with, "
            f"{o['without_stats_s']:.3f} s without ({o['overhead']:+.1%}); "
            f"{o['without_stats_or_schema_s']:.3f} s without statistics or schema inference "
            f"({o['overhead_stats_and_schema']:+.1%})"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
