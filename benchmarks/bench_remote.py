"""Remote reading with 20 ms on every request: open time, full-scan and shuffled-epoch MB/s and
request counts, next to "download every object, then read locally" (what MosaicML Streaming and
litdata do before reading).

A synthetic knowledge-distillation mix is packed once into WORKDIR (zstd, shards of
--shard-size) and uploaded to a real S3-compatible server (moto) that runs in its own process
behind a latency middleware (benchmarks/s3_latency.py). Every scenario runs in a fresh Python
process whose S3 client is warmed up first (on another object), so times are of requests, not
of imports; scenarios are interleaved over --rounds rounds and medians reported. MB/s are bytes
of the packed dataset per second of the whole task (download + read for the baselines).

    python benchmarks/bench_remote.py [--jsonl-mb 600] [--shard-size 16M] [--latency-ms 20]
                                      [--rounds 3] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import s3_latency  # noqa: E402

BUCKET = "data"
SCENARIOS = [
    "range_cost",
    "open",
    "random",
    "scan",
    "download_scan",
    "shuffle",
    "shuffle_cache",
    "shuffle_cache_epoch2",
    "shuffle_2workers_cache",
    "download_shuffle",
]


# -- preparation (once per workdir) -------------------------------------------------------------


def prepare(workdir: Path, jsonl_mb: int, shard_size: str) -> Path:
    import gen_kd_mix

    from shardpack import ShardedPacker

    workdir.mkdir(parents=True, exist_ok=True)
    params = {"jsonl_mb": jsonl_mb, "shard_size": shard_size}
    folder, stamp = workdir / "ds", workdir / "params.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params and folder.exists():
        return folder
    source = workdir / "kd.jsonl"
    gen_kd_mix.generate(source, target_bytes=jsonl_mb << 20, seed=0, top_k=8, vocab_size=32_000)
    shutil.rmtree(folder, ignore_errors=True)
    ShardedPacker(workers=1).pack([source], folder, shard_size=shard_size)
    (workdir / "warm").mkdir(exist_ok=True)
    ShardedPacker(workers=1).pack(
        [HERE.parent / "data" / "gsm8k_sample.jsonl"], workdir / "warm", shard_size="64M"
    )
    stamp.write_text(json.dumps(params))
    return folder


def upload(endpoint: str, workdir: Path) -> None:
    client = s3_latency.boto_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    for name in ("ds", "warm"):
        for path in sorted((workdir / name).iterdir()):
            client.upload_file(str(path), BUCKET, f"{name}/{path.name}")


def server_log(endpoint: str, reset: bool = False) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{endpoint}/_latency/{'reset' if reset else 'log'}", method="POST" if reset else "GET"
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


# -- scenarios (each in its own process) --------------------------------------------------------


def run_scenario(
    name: str, endpoint: str, workdir: Path, settings: dict[str, int]
) -> dict[str, Any]:
    import numpy as np

    import shardpack
    from shardpack.storage.fetch import Fetcher, ObjectPin
    from shardpack.storage.remote_options import RemoteOptions

    options = s3_latency.storage_options(endpoint)
    url = f"s3://{BUCKET}/ds"
    size = sum(p.stat().st_size for p in (workdir / "ds").iterdir())
    cache = Path(tempfile.mkdtemp(prefix="bench-remote-cache-", dir=workdir))
    remote = RemoteOptions(storage_options=options, **settings)
    cached = RemoteOptions(storage_options=options, cache_dir=str(cache), **settings)
    # warm the S3 clients up on another object (botocore's start-up, connections opened):
    # time the requests, not the client's first minute
    warm = f"{BUCKET}/warm/manifest.json"
    with shardpack.open(f"s3://{BUCKET}/warm", remote=remote) as dataset:
        sum(1 for _ in dataset)
    Fetcher(remote).fetch_many(f"s3://{warm}", [(0, 16)] * remote.concurrency, ObjectPin(warm))
    if name.startswith("download_"):
        import s3fs

        fs = s3fs.S3FileSystem(**options)
        fs.cat_ranges([warm] * 32, [0] * 32, [16] * 32)
    if "shuffle" in name:
        import shardpack.torch  # torch's import is not part of an epoch
    if name == "shuffle_cache_epoch2":  # the first epoch fills the cache, untimed
        epoch(url, cached)
    server_log(endpoint, reset=True)
    out: dict[str, Any] = {}
    start = time.perf_counter()
    if name == "range_cost":  # moto reads a whole object for any range of it: what that costs
        fetcher = Fetcher(remote)
        for key in ("warm/manifest.json", "ds/shard-00000.packed"):
            pin, t = ObjectPin(key), time.perf_counter()
            for _ in range(20):
                fetcher.fetch(f"s3://{BUCKET}/{key}", 0, 16, pin)
            out["small_object_ms" if key.startswith("warm") else "shard_ms"] = (
                1000 * (time.perf_counter() - t) / 20
            )
        start = time.perf_counter()
    elif name == "open":
        ds = shardpack.open(url, remote=remote)
        out["open_s"] = time.perf_counter() - start
        out["open_requests"] = server_log(endpoint)["requests"]
        ds[0]
        out["first_record_s"] = time.perf_counter() - start
    elif name == "random":
        ds = shardpack.open(url, remote=remote)
        rng = np.random.default_rng(0)
        assert ds.files  # opened side by side: measure records, not shard opens
        server_log(endpoint, reset=True)
        times = []
        for i in rng.integers(0, len(ds), 100).tolist():
            t = time.perf_counter()
            ds[i]
            times.append(time.perf_counter() - t)
        out["p50_ms"] = 1000 * statistics.median(times)
        out["requests_per_record"] = server_log(endpoint)["requests"] / len(times)
        start = time.perf_counter()
    elif name == "scan":
        with shardpack.open(url, remote=remote) as ds:
            out["records"] = sum(1 for _ in ds)
    elif name in ("shuffle", "shuffle_cache", "shuffle_cache_epoch2"):
        out["records"] = epoch(url, remote if name == "shuffle" else cached)
    elif name == "shuffle_2workers_cache":
        out["records"] = epoch(url, cached, workers=2)
    elif name.startswith("download_"):
        local = download(options, url, workdir)
        out["download_s"] = time.perf_counter() - start
        if name == "download_scan":
            with shardpack.open(local) as ds:
                out["records"] = sum(1 for _ in ds)
        else:
            out["records"] = epoch(str(local), None)
        shutil.rmtree(local)
    out["seconds"] = time.perf_counter() - start
    out["mb_per_s"] = size / out["seconds"] / 1e6
    out.update({f"server_{k}": v for k, v in server_log(endpoint).items()})
    shutil.rmtree(cache, ignore_errors=True)
    return out


def epoch(url: str, remote: Any, workers: int = 0) -> int:
    import torch

    from shardpack.torch import PackedIterableDataset

    dataset = PackedIterableDataset(url, shuffle=True, seed=0, remote=remote)
    if not workers:
        return sum(1 for _ in dataset)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, collate_fn=lambda r: 1
    )
    return sum(1 for _ in loader)


def download(options: dict[str, Any], url: str, workdir: Path) -> Path:
    """Every object of the dataset to a local folder, side by side (s3fs's ``get``)."""
    import s3fs

    fs = s3fs.S3FileSystem(**options)  # the instance warmed up before the clock started
    local = Path(tempfile.mkdtemp(prefix="bench-remote-dl-", dir=workdir))
    fs.get(url.removeprefix("s3://") + "/", str(local) + "/", recursive=True)
    return local


# -- driver -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jsonl-mb", type=int, default=600)
    parser.add_argument("--shard-size", default="16M")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--bandwidth-mb-s",
        type=float,
        default=0.0,
        help="pace each response body of the server (S3: about 100 MB/s per connection); 0: no cap",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench-remote"
    )
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=SCENARIOS)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=BYTES",
        help="a RemoteOptions setting for shardpack's scenarios, e.g. request_bytes=16777216",
    )
    parser.add_argument(
        "--server-cpus",
        help="CPUs for the S3 server, e.g. 0 (as a real object store, it then takes none of the "
        "reader's cores); --client-cpus gives the reader's, e.g. 1",
    )
    parser.add_argument("--client-cpus")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = {k: int(v) for k, v in (item.split("=", 1) for item in args.set)}
    if args.scenario:  # one measurement, in this fresh process
        print(json.dumps(run_scenario(args.scenario, args.endpoint, args.workdir, settings)))
        return 0

    folder = prepare(args.workdir, args.jsonl_mb, args.shard_size)
    server = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "s3_latency.py"),
            f"--latency-ms={args.latency_ms}",
            f"--bandwidth-mb-s={args.bandwidth_mb_s}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=_pinned(args.server_cpus),
    )
    try:
        assert server.stdout is not None
        endpoint = server.stdout.readline().strip()
        upload(endpoint, args.workdir)
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in args.only}
        for _ in range(args.rounds):
            for name in args.only:
                command = [sys.executable, __file__, "--scenario", name, "--endpoint", endpoint]
                command += ["--workdir", str(args.workdir)]
                command += [f"--set={item}" for item in args.set]
                done = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    check=False,
                    preexec_fn=_pinned(args.client_cpus),
                )
                if done.returncode:
                    raise SystemExit(f"{name} failed:\n{done.stderr}")
                results[name].append(json.loads(done.stdout.splitlines()[-1]))
    finally:
        server.terminate()
    report = {
        "dataset": {
            "bytes": sum(p.stat().st_size for p in folder.iterdir()),
            "shards": sum(1 for p in folder.glob("*.packed")),
            "jsonl_mb": args.jsonl_mb,
        },
        "latency_ms": args.latency_ms,
        "bandwidth_mb_s": args.bandwidth_mb_s,
        "rounds": args.rounds,
        "settings": settings,
        "server_cpus": args.server_cpus,
        "client_cpus": args.client_cpus,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "medians": {name: _medians(runs) for name, runs in results.items()},
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _table(report)
    return 0


def _pinned(cpus: str | None) -> Callable[[], None] | None:
    """A child's start-up hook that keeps it on ``cpus`` ("0", "1-3", "0,2"), or None."""
    if not cpus:
        return None
    chosen: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        chosen.update(range(int(first), int(last or first) + 1))
    return lambda: os.sched_setaffinity(0, chosen)


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _table(report: dict[str, Any]) -> None:
    data = report["dataset"]
    print(
        f"{data['bytes'] / 1e6:.0f} MB packed in {data['shards']} shards, "
        f"{report['latency_ms']:g} ms per request, medians of {report['rounds']} rounds"
    )
    print(f"{'scenario':<24}{'seconds':>9}{'MB/s':>8}{'requests':>10}{'MB sent':>9}  other")
    for name, m in report["medians"].items():
        other = {k: round(v, 3) for k, v in m.items() if k.endswith(("_s", "_ms", "_record"))}
        print(
            f"{name:<24}{m['seconds']:>9.2f}{m['mb_per_s']:>8.1f}{m['server_requests']:>10.0f}"
            f"{m['server_bytes_sent'] / 1e6:>9.1f}  {other}"
        )


if __name__ == "__main__":
    sys.exit(main())
