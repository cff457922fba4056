"""Pack speed with 1 vs N worker processes (single file and sharded), medians of alternating runs.

    python benchmarks/bench_parallel.py /path/kd_mix.jsonl --repeats 5 --json
    python benchmarks/bench_parallel.py /path/kd_mix.jsonl --workers 2 4 8 16   # a scaling curve
Checks on the way that every run's output is byte-identical to the one-worker output
(SOURCE_DATE_EPOCH is fixed so that the build time in the metadata does not differ).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from shardpack import DatasetPacker, ShardedPacker
from shardpack._machine import usable_cores


def _digest(path: Path) -> str:
    files = sorted(path.glob("shard-*.packed")) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as stream:
            while chunk := stream.read(8 << 20):  # streamed: keeps the driver's peak memory honest
                digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("input")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[usable_cores()],
        help="compared with 1 (default: the cores this process may use, as a pack does)",
    )
    parser.add_argument("--shard-size", default="32M")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # a fixed build time, so that runs can be compared byte for byte
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1700000000")
    times: dict[str, list[float]] = {}
    digests: dict[str, set[str]] = {"single": set(), "sharded": set()}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for workers in dict.fromkeys([1, *args.workers]):
                out = Path(folder) / f"one-{workers}.packed"
                started = time.perf_counter()
                DatasetPacker(workers=workers).pack(args.input, out, force=True)
                times.setdefault(f"single_w{workers}", []).append(time.perf_counter() - started)
                digests["single"].add(_digest(out))
                out = Path(folder) / f"sharded-{workers}"
                started = time.perf_counter()
                ShardedPacker(workers=workers).pack(
                    args.input, out, shard_size=args.shard_size, force=True
                )
                times.setdefault(f"sharded_w{workers}", []).append(time.perf_counter() - started)
                digests["sharded"].add(_digest(out))
    medians = {key: round(statistics.median(values), 3) for key, values in times.items()}
    report = {
        "input_bytes": os.path.getsize(args.input),
        "cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "repeats": args.repeats,
        "median_seconds": medians,
        "speedup_single": {
            n: round(medians["single_w1"] / medians[f"single_w{n}"], 2) for n in args.workers
        },
        "speedup_sharded": {
            n: round(medians["sharded_w1"] / medians[f"sharded_w{n}"], 2) for n in args.workers
        },
        # peak resident memory: bounded by a unit or two per worker, not by the input size
        "max_rss_mb": {
            "driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "largest_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024,
        },
        "byte_identical": {key: len(values) == 1 for key, values in digests.items()},
        "all_seconds": {key: [round(v, 3) for v in values] for key, values in times.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
