"""Writing from the teacher loop: KD records made of numpy arrays, written three ways, one run.

    python benchmarks/bench_writer.py --records 2000 --rounds 3 [--json-out writer.json]

The records are the KD mix's distill records (``gen_kd_mix.py --mix uniform``: id, source,
prompt, response, ``input_ids`` [len], ``teacher_topk_ids`` and ``teacher_topk_logprobs``
[len][k], meta) as a teacher's inference loop holds them: token ids int32, log-probs float32
numpy arrays. Made once in memory, then each round times, in turn:

- ``shardpack.Writer`` (lz4 and zstd; ``write_many``, one process: the caller's thread);
- ``json.dumps`` of each record with ``.tolist()`` arrays, one line each, to a JSONL file (what
  scripts do today);
- MosaicML Streaming's ``MDSWriter`` (columns ``str`` / ``ndarray:int32`` / ``ndarray:float32``
  / ``json``; no compression and zstd), in its own virtual environment
  (``bash benchmarks/peers/setup_envs.sh mosaic_mds``), through this same script run there
  with ``--part mds``: it makes the same records from the same seed.

Each row reports records/s (the best of the rounds, after one untimed write: the machine is
shared), the median, and the bytes written. A write ends when its output is complete on disk
(``close`` returned; fsynced where the writer does).
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
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MDS_PYTHON = ROOT / ".bench" / "venvs" / "mosaic_mds" / "bin" / "python"
sys.path.insert(0, str(HERE))


def kd_records(count: int, seed: int, top_k: int) -> list[dict[str, Any]]:
    """``count`` distill records of the KD mix, numeric fields as numpy int32 / float32."""
    import gen_kd_mix

    rng = np.random.default_rng(seed)
    records = []
    for index in range(count):
        record = gen_kd_mix.make_record(rng, index, top_k, 151_936)
        record["input_ids"] = np.asarray(record["input_ids"], np.int32)
        record["teacher_topk_ids"] = np.asarray(record["teacher_topk_ids"], np.int32)
        record["teacher_topk_logprobs"] = np.asarray(record["teacher_topk_logprobs"], np.float32)
        records.append(record)
    return records


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- the writers ---------------------------------------------------------------------------------


def write_shardpack(records: list[dict[str, Any]], out: Path, compression: str) -> None:
    import shardpack

    with shardpack.Writer(out / "kd.packed", compression=compression) as writer:
        writer.write_many(records)


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def write_jsonl(records: list[dict[str, Any]], out: Path) -> None:
    with open(out / "kd.jsonl", "w", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


MDS_COLUMNS = {
    "id": "str",
    "source": "str",
    "prompt": "str",
    "response": "str",
    "input_ids": "ndarray:int32",
    "teacher_topk_ids": "ndarray:int32",
    "teacher_topk_logprobs": "ndarray:float32",
    "meta": "json",
}


def write_mds(records: list[dict[str, Any]], out: Path, compression: str | None) -> None:
    sys.modules.setdefault("streaming.vision", types.ModuleType("streaming.vision"))  # see peers
    from streaming import MDSWriter

    with MDSWriter(out=str(out / "mds"), columns=MDS_COLUMNS, compression=compression) as writer:
        for record in records:
            writer.write(record)


# -- timing --------------------------------------------------------------------------------------


def time_writes(
    name: str, write: Callable[[Path], None], records: int, rounds: int
) -> dict[str, Any]:
    seconds, size = [], 0
    for warm in [True] + [False] * rounds:  # one untimed write first: imports, caches
        folder = Path(tempfile.mkdtemp(prefix="bench-writer-"))
        try:
            started = time.perf_counter()
            write(folder)
            if not warm:
                seconds.append(time.perf_counter() - started)
            size = tree_bytes(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    best, median = min(seconds), statistics.median(seconds)
    return {
        "writer": name,
        "records_per_s": round(records / best),
        "records_per_s_median": round(records / median),
        "seconds_best": round(best, 4),
        "bytes": size,
    }


def run_mds(args: argparse.Namespace) -> list[dict[str, Any]]:
    records = kd_records(args.records, args.seed, args.top_k)
    return [
        time_writes(
            f"MDSWriter ({label})",
            lambda o, c=c: write_mds(records, o, c),
            len(records),
            args.rounds,
        )
        for label, c in (("no compression", None), ("zstd", "zstd"))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--part", choices=["all", "mds"], default="all", help=argparse.SUPPRESS)
    parser.add_argument("--no-mds", action="store_true", help="skip MosaicML's MDSWriter")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if args.part == "mds":  # in MosaicML's venv: the MDS rows only, as JSON
        print(json.dumps(run_mds(args)))
        return 0

    records = kd_records(args.records, args.seed, args.top_k)
    array_bytes = sum(v.nbytes for r in records for v in r.values() if isinstance(v, np.ndarray))
    rows = [
        time_writes(
            f"shardpack.Writer ({c})",
            lambda o, c=c: write_shardpack(records, o, c),
            len(records),
            args.rounds,
        )
        for c in ("lz4", "zstd")
    ]
    rows.append(time_writes("json.dumps(.tolist()) to JSONL", lambda o: write_jsonl(records, o),
                            len(records), args.rounds))  # fmt: skip
    if not args.no_mds:
        if not MDS_PYTHON.exists():
            print(f"no {MDS_PYTHON}: run bash benchmarks/peers/setup_envs.sh mosaic_mds",
                  file=sys.stderr)  # fmt: skip
            return 1
        command = [str(MDS_PYTHON), __file__, "--part", "mds", "--records", str(args.records),
                   "--rounds", str(args.rounds), "--seed", str(args.seed),
                   "--top-k", str(args.top_k)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    report = {
        "records": len(records),
        "array_mb": round(array_bytes / 1e6, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    print(f"{len(records)} KD records, {report['array_mb']} MB of arrays; best of {args.rounds}")
    print(f"{'writer':34} {'records/s':>10} {'median':>10} {'bytes':>14}")
    for row in rows:
        print(f"{row['writer']:34} {row['records_per_s']:>10,} {row['records_per_s_median']:>10,} "
              f"{row['bytes']:>14,}")  # fmt: skip
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
