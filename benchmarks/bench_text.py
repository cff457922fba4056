"""Text-only loading: full scans of packed text against ``orjson.loads`` per line, side by side.

    python benchmarks/bench_text.py --gsm8k ../shared/data/gsm8k_train.jsonl --mix-mb 16 \\
        --kd kd_mix.jsonl --rounds 15 --json-out text.json

For GSM8K and a generated instruction mix (``gen_text_mix.py``), each packed with lz4 and zstd
(default block sizes), every round times, in alternating order (on a machine without
PostgreSQL's message catalogs, which the generator translates from, generate the mix elsewhere
and pass it with ``--mix FILE``):

- ``orjson``: ``orjson.loads`` on every line, the lines already in memory (bytes), results
  dropped one by one, as a scan drops them;
- ``scan``: ``shardpack.open`` + ``for record in ds`` (checksums verified);
- ``batches``: ``iter_batches(1024)``, and ``columns``: the same with ``as_columns=True``;
- ``project``: a scan of one short field (``columns=[...]``);
- ``no C module``: the lz4 scan with the pure-Python fallback a machine without a compiler
  gets (native strings through msgspec's hook, one Python call each);
- ``read-ahead``: the scan with ``read_ahead=True``, the next blocks decompressed on a
  worker thread;
- ``decode only``: the blocks' records decoded from raw blocks already in memory: the floor a
  scan cannot go below (building the Python objects);
- ``none scan``: the scan of the same data packed without compression (``-c none``), on one
  thread: what a text scan costs with nothing to decompress, at about the JSON's size;
- ``marshal per record``: ``marshal.loads`` of each record, dropped one by one as orjson's
  are: CPython's own C reader of these objects (no parsing beyond type tags and lengths), a
  reference for what building the same dicts and strings costs one record per call.

Ratios are orjson's time over the row's, per round, then the median; wall and CPU time (of the
process, all threads) both, as the machine is shared. Records are checked equal
to ``json.loads`` (key order included) before timing. ``--kd`` adds a full scan and a projected
scan of the KD mix. Open costs: a warm ``open()`` in process, and the first ``open()`` of a fresh
process (``import shardpack`` excluded), medians.
"""

from __future__ import annotations

import argparse
import gc
import json
import marshal
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_text_mix
import orjson

import shardpack
from shardpack.format import strings
from shardpack.format.block import BlockView
from shardpack.packfile.reader import PackedFile

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GSM8K = ROOT.parent / "shared" / "data" / "gsm8k_train.jsonl"
FIRST_OPEN = """
import sys, time
import shardpack
started = time.perf_counter()
shardpack.open(sys.argv[1]).close()
print(time.perf_counter() - started)
"""


def interleaved(
    runs: dict[str, Callable[[], Any]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds (this process, all threads) of each run per round; the order
    alternates so drift hits every run alike. On a shared machine CPU time is the steadier
    figure; wall time is what a worker thread (read-ahead) can shorten."""
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            gc.collect()
            gc.disable()
            started, started_cpu = time.perf_counter(), time.process_time()
            runs[name]()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
            gc.enable()
    return wall, cpu


def summarise(
    times: tuple[dict[str, list[float]], dict[str, list[float]]], base: str
) -> dict[str, dict[str, float]]:
    """Per run: median wall and CPU ms, and the medians over rounds of ``base``'s time / the
    run's (wall and CPU)."""
    rows = {}
    for name in times[0]:
        row = {}
        for kind, values in zip(("wall", "cpu"), times, strict=True):
            ratios = [b / v for b, v in zip(values[base], values[name], strict=True)]
            row[f"{kind}_ms"] = statistics.median(values[name]) * 1e3
            row[f"{kind}_vs"] = statistics.median(ratios)
        rows[name] = row
    return rows


def check_equal(path: Path, lines: list[bytes]) -> None:
    """Records equal to json.loads, key order included (dict == ignores order)."""
    with shardpack.open(path) as ds:
        for record, line in zip(ds, lines, strict=True):
            expected = json.loads(line)
            if record != expected or (isinstance(record, dict) and list(record) != list(expected)):
                raise SystemExit(f"{path}: a record differs from json.loads: {line[:80]!r}")


def scan(path: Path, **options: Any) -> Callable[[], None]:
    def run() -> None:
        with shardpack.open(path, **options) as ds:
            for _ in ds:
                pass

    return run


def without_speedups(run: Callable[[], None]) -> Callable[[], None]:
    """``run`` with the C record decoder switched off: what an install without a compiler reads
    at."""

    def wrapped() -> None:
        saved, strings.speedups = strings.speedups, None
        strings._warned_slow = True  # the warning is for users; this run measures that path
        try:
            run()
        finally:
            strings.speedups = saved

    return wrapped


def batches(path: Path, **options: Any) -> Callable[[], None]:
    def run() -> None:
        with shardpack.open(path) as ds:
            for _ in ds.iter_batches(1024, **options):
                pass

    return run


def decode_only(path: Path) -> Callable[[], None]:
    packed = PackedFile(path)
    raws = [
        (packed.read_raw_block(b), int(packed.index[b]["record_count"]))
        for b in range(packed.block_count)
    ]

    def run() -> None:
        for raw, count in raws:
            BlockView(raw, count).records()

    return run


def first_open_ms(path: Path, repeats: int) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    times = [
        float(subprocess.check_output([sys.executable, "-c", FIRST_OPEN, str(path)], env=env))
        for _ in range(repeats)
    ]
    return statistics.median(times) * 1e3


def warm_open_ms(path: Path, repeats: int = 200) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        shardpack.open(path).close()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def bench_text(name: str, jsonl: Path, field: str, workdir: Path, rounds: int) -> dict[str, Any]:
    lines = jsonl.read_bytes().splitlines()

    def orjson_lines() -> None:
        loads = orjson.loads
        for line in lines:
            loads(line)

    marshalled = [marshal.dumps(orjson.loads(line)) for line in lines]

    def marshal_records() -> None:
        loads = marshal.loads
        for record in marshalled:
            loads(record)

    runs: dict[str, Callable[[], Any]] = {
        "orjson": orjson_lines,
        "marshal per record": marshal_records,
    }
    sizes = {}
    # none: no compression, about the JSON's size, nothing to decompress (its scan only)
    for codec in ("lz4", "zstd", "none"):
        out = workdir / f"{name}.{codec}"
        result = shardpack.DatasetPacker().pack(jsonl, out, compression=codec, workers=1)
        sizes[codec] = result.output_bytes / jsonl.stat().st_size
        check_equal(out, lines)
        runs[f"{codec} scan"] = scan(out)
        if codec == "none":
            continue
        runs[f"{codec} scan, read-ahead"] = scan(out, read_ahead=True)
        if codec == "lz4":
            runs["lz4 scan, no C module"] = without_speedups(scan(out))
        runs[f"{codec} batches"] = batches(out)
        runs[f"{codec} columns"] = batches(out, as_columns=True)
        runs[f"{codec} project {field}"] = scan(out, columns=[field])
        runs[f"{codec} decode only"] = decode_only(out)
    rows = summarise(interleaved(runs, rounds), "orjson")
    return {
        "dataset": name,
        "jsonl_bytes": jsonl.stat().st_size,
        "records": len(lines),
        "size_ratio": sizes,
        "rows": rows,
    }


def bench_kd(kd: Path, workdir: Path, rounds: int) -> list[dict[str, Any]]:
    """Full vs projected scans of the KD mix, per codec (ratios to that codec's full scan)."""
    results = []
    for codec in ("lz4", "zstd"):
        out = workdir / f"kd.{codec}"
        shardpack.DatasetPacker().pack(kd, out, compression=codec, workers=1)
        runs: dict[str, Callable[[], Any]] = {
            f"{codec} scan": scan(out),
            f"{codec} project input_ids": scan(out, columns=["input_ids"]),
            f"{codec} project prompt": scan(out, columns=["prompt"]),
        }
        rows = summarise(interleaved(runs, rounds), f"{codec} scan")
        results.append({"dataset": f"kd_mix {codec}", "rows": rows})
    return results


def render(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        base = "orjson" if "orjson" in result["rows"] else next(iter(result["rows"]))
        lines += [
            f"\n{result['dataset']}: "
            + ", ".join(f"{k} {v}" for k, v in result.items() if k in ("jsonl_bytes", "records")),
            f"| run | wall ms | {base} wall / run wall | CPU ms | {base} CPU / run CPU |",
            "|---|---|---|---|---|",
        ]
        for name, row in result["rows"].items():
            lines.append(
                f"| {name} | {row['wall_ms']:.2f} | {row['wall_vs']:.2f}x "
                f"| {row['cpu_ms']:.2f} | {row['cpu_vs']:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", type=Path, default=DEFAULT_GSM8K)
    parser.add_argument("--mix", type=Path, help="an instruction mix (default: generate one)")
    parser.add_argument("--mix-mb", type=float, default=16.0)
    parser.add_argument("--kd", type=Path, help="also a KD mix JSONL: full vs projected scans")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--open-repeats", type=int, default=9)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shardpack-text-") as tmp:
        workdir = Path(tmp)
        mix = args.mix
        if mix is None:
            mix = workdir / "text_mix.jsonl"
            gen_text_mix.generate(mix, int(args.mix_mb * 1e6), seed=0)
        results = [
            bench_text("gsm8k", args.gsm8k, "question", workdir, args.rounds),
            bench_text("text_mix", mix, "language", workdir, args.rounds),
        ]
        if args.kd is not None:
            results += bench_kd(args.kd, workdir, max(3, args.rounds // 3))
        small = workdir / "small.lz4"
        shardpack.DatasetPacker().pack(ROOT / "data" / "gsm8k_sample.jsonl", small)
        opening = {
            "file_bytes": small.stat().st_size,
            "warm_open_ms": warm_open_ms(small),
            "first_open_ms": first_open_ms(small, args.open_repeats),
        }
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join(["python", *sys.argv]),
        "results": results,
        "open": opening,
    }
    print(render(results))
    megabytes, warm, first = (opening[k] for k in ("file_bytes", "warm_open_ms", "first_open_ms"))
    print(
        f"\nopen() of a {megabytes / 1e6:.2f} MB file: warm {warm:.3f} ms, "
        f"a fresh process's first {first:.2f} ms (medians)"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
