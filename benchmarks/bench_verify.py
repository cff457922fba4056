"""Cost of the reader's block checksum verification: full scans with ``verify`` on and off.

python benchmarks/bench_verify.py PACKED [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time

import shardpack


def scan(path: str, verify: bool) -> float:
    gc.collect()
    started = time.perf_counter()
    with shardpack.open(path, verify=verify) as ds:
        for _ in ds:
            pass
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    scan(args.packed, True)  # warm the page cache
    best = {}
    for verify in (True, False):
        best[verify] = min(scan(args.packed, verify) for _ in range(args.repeats))
    with shardpack.open(args.packed) as ds:
        stored = ds.metadata.stored_bytes
    result = {
        "file": args.packed,
        "stored_bytes": stored,
        "scan_s_verify": round(best[True], 4),
        "scan_s_no_verify": round(best[False], 4),
        "verify_overhead": round(best[True] / best[False] - 1, 4),
        "checksum_gb_s": round(stored / 1e9 / max(best[True] - best[False], 1e-9), 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
