"""How much of a parallel pack's CPU the driver process spends, thread by thread.

A pack on N cores can be at most (all CPU) / (the busiest serial lane's CPU) times faster than
one core; the driver's threads are the serial lanes (the main thread plans, collects and writes;
a second thread hashes the inputs for provenance). Their share of the whole pack's CPU, measured
on any machine, says how far the pack can scale on a bigger one.

    python benchmarks/bench_driver.py kd_mix.jsonl --workers 2 [--shard-size 16M] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil

import shardpack


def measure(source: str, workers: int, shard_size: str | None) -> dict[str, object]:
    me = psutil.Process()
    seen: dict[int, float] = {}
    workers_seen: dict[int, float] = {}
    names: dict[int, str] = {}
    stop = threading.Event()
    sampler = threading.get_native_id

    def sample() -> None:
        own = sampler()
        while not stop.is_set():
            for thread in me.threads():
                if thread.id != own:
                    seen[thread.id] = max(
                        seen.get(thread.id, 0.0), thread.user_time + thread.system_time
                    )
            for child in me.children(recursive=True):
                try:
                    times = child.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                workers_seen[child.pid] = max(
                    workers_seen.get(child.pid, 0.0), times.user + times.system
                )
            for thread in threading.enumerate():
                if thread.native_id is not None:
                    names[thread.native_id] = thread.name
            time.sleep(0.01)

    # CPU a thread used before this pack (imports, earlier runs) is not the pack's
    before = {thread.id: thread.user_time + thread.system_time for thread in me.threads()}
    watcher = threading.Thread(target=sample, name="sampler", daemon=True)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / ("ds" if shard_size else "out.packed")
        watcher.start()
        started = time.perf_counter()
        result = shardpack.pack(source, out, workers=workers, shard_size=shard_size, force=True)
        wall = time.perf_counter() - started
        stop.set()
        watcher.join()
    children = sum(workers_seen.values())
    main_id = threading.main_thread().native_id
    threads = {
        ("main" if tid == main_id else names.get(tid, f"thread {tid}")): round(
            cpu - before.get(tid, 0.0), 3
        )
        for tid, cpu in seen.items()
        if cpu - before.get(tid, 0.0) > 0.001
    }
    driver = sum(threads.values())
    total = driver + children
    return {
        "input_bytes": os.path.getsize(source),
        "records": result.record_count,
        "workers": workers,
        "sharded": bool(shard_size),
        "wall_seconds": round(wall, 3),
        "cpu_seconds": {"driver_threads": threads, "workers": round(children, 3)},
        "share_of_pack_cpu": {name: round(cpu / total, 4) for name, cpu in threads.items()},
        "busiest_driver_thread": max(threads, key=lambda name: threads[name]),
        "scaling_limit": round(total / max(threads.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs = [measure(args.input, args.workers, args.shard_size) for _ in range(args.repeats)]
    runs.sort(key=lambda run: run["wall_seconds"])  # type: ignore[arg-type,return-value]
    median = runs[len(runs) // 2]
    if args.json:
        print(json.dumps({"median_run": median, "runs": runs}, indent=2))
        return
    print(
        f"{median['input_bytes']:,} bytes, {median['workers']} workers, "
        f"{'sharded' if median['sharded'] else 'one file'}: {median['wall_seconds']} s"
    )
    for name, share in median["share_of_pack_cpu"].items():  # type: ignore[union-attr]
        print(f"  {name:>20}: {share:.1%} of the pack's CPU")
    print(f"  the busiest driver thread caps a pack at {median['scaling_limit']}x one core's speed")


if __name__ == "__main__":
    main()
