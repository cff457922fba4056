"""Run every peer benchmark (HF datasets, MDS, litdata, Parquet, ArrayRecord) on the same inputs.

Each peer runs in its own virtual environment (.bench/venvs/<peer>, made by
benchmarks/peers/setup_envs.sh) as a subprocess; this script imports no peer and needs only the
standard library. A peer that fails to install or run gets an error row and the others carry on.

    python3 benchmarks/run_peers.py --setup --kd .bench/kd_mix.jsonl \
        --text /work/shared/data/gsm8k_train.jsonl --repeats 3 --pack-rounds 5 \
        --text-pack-rounds 15 --json-out .bench/peers.json

``--pack-rounds N`` (``--text-pack-rounds`` for the text set) then packs again with every peer
and variant in turn, N rounds (the order reversed every other round), so that a slow phase of a
noisy machine hits all of them alike: pack times of a 4 MB file move by ±20% from run to run,
more than the gaps between peers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "benchmarks" / "peers"
VENVS = ROOT / ".bench" / "venvs"
PEERS = ["shardpack", "hf_datasets", "mosaic_mds", "litdata", "parquet", "array_record"]
# shardpack runs in the project's own environment (make venv); the peers each in their own
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"

Row = dict[str, Any]


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory and OS of this machine."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def setup_envs(peers: list[str]) -> dict[str, str]:
    """Run setup_envs.sh; return the peers it could not install, with its message."""
    proc = subprocess.run(
        ["bash", str(PEERS_DIR / "setup_envs.sh"), *peers], capture_output=True, text=True
    )
    sys.stderr.write(proc.stdout + proc.stderr)
    return {
        peer: f"setup_envs.sh could not install {peer}"
        for peer in peers
        if f"[{peer}] FAILED" in proc.stderr
    }


def peer_python(peer: str) -> Path:
    return PROJECT_PYTHON if peer == "shardpack" else VENVS / peer / "bin" / "python"


def run_peer(peer: str, dataset: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one peer's runner in its venv; on failure return an error result instead."""
    python = peer_python(peer)
    if not python.exists():
        return {"peer": peer, "error": f"no venv at {python.parent.parent} (run with --setup)"}
    cmd = [
        str(python),
        str(PEERS_DIR / f"{peer}_bench.py"),
        "--input",
        str(path),
        "--workdir",
        str(args.workdir / dataset / peer),
        "--repeats",
        str(args.repeats),
    ]
    sys.stderr.write(f"[{dataset}/{peer}] {shlex.join(cmd)}\n")
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"peer": peer, "error": f"timed out after {args.timeout:.0f} s"}
    sys.stderr.write(f"[{dataset}/{peer}] done in {time.perf_counter() - start:.0f} s\n")
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
        return {"peer": peer, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pack_once(peer: str, variant: str, path: Path, packed: Path, timeout: float) -> float:
    """Seconds of one pack by the runner's own pack phase, in a fresh process."""
    cmd = [str(peer_python(peer)), str(PEERS_DIR / f"{peer}_bench.py"), "--child", "pack"]
    cmd += ["--input", str(path), "--packed", str(packed), "--variant", variant]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def pack_rounds(
    dataset: str, path: Path, results: list[dict[str, Any]], rounds: int, args: argparse.Namespace
) -> list[Row]:
    """Pack times of every peer variant that ran, interleaved over ``rounds`` rounds."""
    entries = [
        (result["peer"], row["variant"])
        for result in results
        for row in result.get("rows", [])
        if "error" not in row
    ]
    times: dict[tuple[str, str], list[float]] = {entry: [] for entry in entries}
    for round_number in range(rounds):
        order = entries if round_number % 2 == 0 else entries[::-1]
        sys.stderr.write(f"[{dataset}] pack round {round_number + 1}/{rounds}\n")
        for peer, variant in order:
            packed = args.workdir / dataset / peer / variant / "pack-rounds"
            times[peer, variant].append(pack_once(peer, variant, path, packed, args.timeout))
    rows = []
    for (peer, variant), seconds in times.items():
        quartiles = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else seconds * 3
        rows.append(
            {
                "peer": peer,
                "variant": variant,
                "pack_s": statistics.median(seconds),
                "q1_s": quartiles[0],
                "q3_s": quartiles[-1],
                "all_s": [round(x, 4) for x in seconds],
            }
        )
    return rows


def pack_rounds_markdown(report: dict[str, Any]) -> str:
    """Median pack times of the interleaved rounds, against shardpack's same variant."""
    lines = [
        "| data | peer | variant | pack s (median) | q1-q3 s | shardpack same variant = 1 |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, block in report["datasets"].items():
        rows = block.get("pack_rounds") or []
        ours = {r["variant"]: r["pack_s"] for r in rows if r["peer"] == "shardpack"}
        for row in sorted(rows, key=lambda r: r["pack_s"]):
            base = ours.get(row["variant"])
            ratio = f"{row['pack_s'] / base:.2f}" if base else "-"
            lines.append(
                f"| {dataset} | {row['peer']} | {row['variant']} | {row['pack_s']:.3f} | "
                f"{row['q1_s']:.3f}-{row['q3_s']:.3f} | {ratio} |"
            )
    return "\n".join(lines)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def one_line(message: str, limit: int = 220) -> str:
    """An error message fit for one markdown cell: its last line(s), no pipes or newlines."""
    text = " / ".join(line.strip() for line in message.splitlines() if line.strip())
    return text[-limit:].replace("|", "/")


def table_rows(dataset: str, input_bytes: int, results: list[dict[str, Any]]) -> list[str]:
    """Markdown rows of one dataset's results (one per peer variant, or per failed peer)."""
    lines = []
    for result in results:
        rows = result.get("rows") or [{"peer": result["peer"], "variant": "-", **result}]
        for row in rows:
            if "error" in row:
                lines.append(
                    f"| {dataset} | {row['peer']} | {row.get('variant', '-')} | "
                    f"error: {one_line(row['error'])} |" + " |" * 9
                )
                continue
            size = row["size_bytes"]
            lines.append(
                "| "
                + " | ".join(
                    [
                        dataset,
                        row["peer"],
                        row["variant"],
                        fmt(row["pack_s"]),
                        fmt(size / 1e6, 1),
                        fmt(input_bytes / size, 2),
                        fmt(row["scan_s"], 3),
                        fmt(row["random_p50_us"], 0),
                        fmt(row["random_p99_us"], 0),
                        fmt(row["loader_batches_per_s"], 0),
                        fmt(row["scan_peak_rss_mb"], 0),
                        fmt(row["rss_before_scan_mb"], 0),
                        str(row["records"]),
                    ]
                )
                + " |"
            )
    return lines


def markdown(report: dict[str, Any]) -> str:
    header = (
        "| data | peer | variant | pack s | size MB | JSONL/size | scan s | rand p50 µs "
        "| rand p99 µs | DL batch/s | scan peak RSS MB | RSS before scan MB | records |"
    )
    lines = [header, "|" + "---|" * 13]
    for dataset, block in report["datasets"].items():
        lines += table_rows(dataset, block["input_bytes"], block["results"])
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kd", type=Path, help="KD mix JSONL (numeric arrays)")
    parser.add_argument("--text", type=Path, help="text-only JSONL")
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=PEERS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "peers-work")
    parser.add_argument("--json-out", type=Path, help="write the combined JSON here")
    parser.add_argument("--setup", action="store_true", help="run setup_envs.sh first")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per peer run")
    parser.add_argument(
        "--pack-rounds",
        type=int,
        default=0,
        help="then pack with all peers in turn this many rounds (interleaved medians)",
    )
    parser.add_argument(
        "--text-pack-rounds", type=int, help="rounds for the text set (default: --pack-rounds)"
    )
    args = parser.parse_args(argv)
    if not (args.kd or args.text):
        parser.error("give --kd and/or --text")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir = args.workdir.resolve()
    peer_envs = [p for p in args.peers if p != "shardpack"]
    setup_errors = setup_envs(peer_envs) if args.setup and peer_envs else {}
    inputs = {name: path for name, path in (("kd", args.kd), ("text", args.text)) if path}
    report: dict[str, Any] = {
        "machine": machine_info(),
        "command": shlex.join([sys.executable, *sys.argv]),
        "repeats": args.repeats,
        "datasets": {},
    }
    for dataset, path in inputs.items():
        results = [
            {"peer": peer, "error": setup_errors[peer]}
            if peer in setup_errors
            else run_peer(peer, dataset, path.resolve(), args)
            for peer in args.peers
        ]
        report["datasets"][dataset] = {
            "input": str(path),
            "input_bytes": path.stat().st_size,
            "results": results,
        }
        rounds = args.pack_rounds
        if dataset == "text" and args.text_pack_rounds is not None:
            rounds = args.text_pack_rounds
        if rounds:
            block = report["datasets"][dataset]
            block["pack_round_count"] = rounds
            block["pack_rounds"] = pack_rounds(dataset, path.resolve(), results, rounds, args)
        if args.json_out:
            args.json_out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    if any(block.get("pack_rounds") for block in report["datasets"].values()):
        print()
        print(pack_rounds_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
