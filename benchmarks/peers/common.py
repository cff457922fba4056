"""Shared harness for the peer benchmarks: JSONL decoding, timing phases and the CLI.

Each ``<peer>_bench.py`` runner describes its format with a :class:`Peer` (how to pack a JSONL
file, how to read it back) and calls :func:`main`. The harness runs every phase (pack, full scan,
random access, DataLoader) in a fresh child process of the same interpreter, so that timings and
peak RSS of one phase are not polluted by another, and prints one JSON object on stdout.

This module imports only the standard library and NumPy at import time; torch is imported by the
DataLoader phase only. Peer libraries are imported by the runners, never here.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Record = dict[str, Any]

# Field kinds understood by every runner. Numeric lists become int32/float32 arrays;
# nested lists of equal-width rows become 2-D arrays [len][width]; anything else is JSON text.
STR, I32, F32, I32_2D, F32_2D, JSON = "str", "i32", "f32", "i32_2d", "f32_2d", "json"
NUMPY_DTYPES = {I32: np.int32, F32: np.float32, I32_2D: np.int32, F32_2D: np.float32}

RANDOM_SAMPLES = 1000
BATCH_SIZE = 8
RANDOM_SEED = 1234


@dataclass(frozen=True)
class Field:
    """One column of the dataset: its name, kind and (for 2-D kinds) the row width."""

    name: str
    kind: str
    width: int = 0

    @property
    def is_array(self) -> bool:
        return self.kind in NUMPY_DTYPES

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(NUMPY_DTYPES[self.kind])


Schema = list[Field]


def _kind_of(value: Any) -> tuple[str, int]:
    """Infer a field kind (and 2-D width) from one JSON value."""
    if isinstance(value, str):
        return STR, 0
    if isinstance(value, list) and value:
        first = value[0]
        if isinstance(first, list) and first and isinstance(first[0], (int, float)):
            kind = I32_2D if isinstance(first[0], int) else F32_2D
            return kind, len(first)
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            return (I32 if isinstance(first, int) else F32), 0
    return JSON, 0


def infer_schema(path: Path) -> Schema:
    """Infer the schema from the first line of a JSONL file."""
    with open(path, "rb") as f:
        first = json.loads(f.readline())
    return [Field(name, *_kind_of(value)) for name, value in first.items()]


def convert(raw: Record, schema: Schema) -> Record:
    """Turn one parsed JSON object into typed values: numpy arrays, str, or JSON text."""
    out: Record = {}
    for f in schema:
        value = raw[f.name]
        if f.is_array:
            arr = np.asarray(value, dtype=f.dtype)
            out[f.name] = arr.reshape(-1, f.width) if f.width else arr
        elif f.kind == STR:
            out[f.name] = value
        else:
            out[f.name] = json.dumps(value)
    return out


def iter_records(path: Path, schema: Schema) -> Iterator[Record]:
    """Stream typed records from a JSONL file."""
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                yield convert(json.loads(line), schema)


def iter_batches(path: Path, schema: Schema, size: int) -> Iterator[list[Record]]:
    """Stream typed records in lists of at most ``size``."""
    batch: list[Record] = []
    for record in iter_records(path, schema):
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def materialize(record: Record, schema: Schema) -> int:
    """Force every field into numpy arrays / str as a training loader would; count elements."""
    count = 0
    for f in schema:
        value = record[f.name]
        if f.is_array:
            arr = np.asarray(value, dtype=f.dtype)
            if f.width:
                arr = arr.reshape(-1, f.width)
            count += arr.size
        else:
            count += len(value if isinstance(value, str) else str(value))
    return count


def describe_read(record: Record) -> dict[str, str]:
    """Python/numpy types a reader hands back, before any conversion by the harness."""
    out = {}
    for name, value in record.items():
        if isinstance(value, np.ndarray):
            out[name] = f"ndarray[{value.dtype}]{list(value.shape)}"
        else:
            out[name] = type(value).__name__
    return out


def collate(batch: list[Record]) -> dict[str, Any]:
    """Pad arrays of a batch to the longest one and stack them as torch tensors; keep text."""
    import torch

    out: dict[str, Any] = {}
    for name in batch[0]:
        values = [r[name] for r in batch]
        if isinstance(values[0], np.ndarray):
            arrays = [np.asarray(v) for v in values]
            longest = max(a.shape[0] for a in arrays)
            padded = np.zeros((len(arrays), longest, *arrays[0].shape[1:]), arrays[0].dtype)
            for i, a in enumerate(arrays):
                padded[i, : a.shape[0]] = a
            out[name] = torch.from_numpy(padded)
        else:
            out[name] = values
    return out


@dataclass
class Loader:
    """A dataset for torch's DataLoader, and a sentence saying how it is fed."""

    dataset: Any
    mode: str
    shuffle: bool = True
    loader_cls: Any = None


@dataclass
class Peer:
    """What a runner provides. Readers get the packed directory and the variant name.

    - ``pack(input, out_dir, variant, schema)`` writes the packed dataset into ``out_dir``.
    - ``scan(out_dir, variant, schema)`` yields every record in storage order.
    - ``open_random(out_dir, variant, schema)`` returns ``(length, getitem)``.
    - ``loader(out_dir, variant, schema)`` returns a :class:`Loader`.
    - ``stores(variant, schema)`` says what is stored, with which dtypes and compression.
    - ``before_read(out_dir, variant)`` resets any read-side cache before each read phase.
    """

    name: str
    distributions: list[str]
    variants: list[str]
    pack: Callable[[Path, Path, str, Schema], None]
    scan: Callable[[Path, str, Schema], Iterable[Record]]
    open_random: Callable[[Path, str, Schema], tuple[int, Callable[[int], Record]]]
    loader: Callable[[Path, str, Schema], Loader]
    stores: Callable[[str, Schema], str]
    before_read: Callable[[Path, str], None] = lambda out_dir, variant: None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- measurement


def rss_mb() -> float:
    """Current resident set size of this process in MB (from /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def child_pack(peer: Peer, args: argparse.Namespace, schema: Schema) -> Record:
    out_dir = Path(args.packed)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    peer.pack(Path(args.input), out_dir, args.variant, schema)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "size_bytes": dir_bytes(out_dir), "peak_rss_mb": peak_rss_mb()}


def child_scan(peer: Peer, args: argparse.Namespace, schema: Schema) -> Record:
    base_rss = rss_mb()
    start = time.perf_counter()
    records = elements = 0
    first: dict[str, str] = {}
    for record in peer.scan(Path(args.packed), args.variant, schema):
        if not first:
            first = describe_read(record)
        elements += materialize(record, schema)
        records += 1
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "records": records,
        "elements": elements,
        "read_types": first,
        "rss_before_scan_mb": base_rss,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_random(peer: Peer, args: argparse.Namespace, schema: Schema) -> Record:
    start = time.perf_counter()
    length, getitem = peer.open_random(Path(args.packed), args.variant, schema)
    open_seconds = time.perf_counter() - start
    rng = random.Random(RANDOM_SEED + args.repeat)
    latencies = []
    for index in (rng.randrange(length) for _ in range(RANDOM_SAMPLES)):
        t0 = time.perf_counter()
        materialize(getitem(index), schema)
        latencies.append((time.perf_counter() - t0) * 1e6)
    return {
        "open_seconds": open_seconds,
        "p50_us": percentile(latencies, 50),
        "p99_us": percentile(latencies, 99),
        "samples": len(latencies),
    }


def child_loader(peer: Peer, args: argparse.Namespace, schema: Schema) -> Record:
    import torch
    from torch.utils.data import DataLoader

    torch.manual_seed(RANDOM_SEED + args.repeat)
    spec = peer.loader(Path(args.packed), args.variant, schema)
    cls = spec.loader_cls or DataLoader
    kwargs: dict[str, Any] = {"batch_size": BATCH_SIZE, "num_workers": 0, "collate_fn": collate}
    if spec.shuffle:
        kwargs["shuffle"] = True
    loader = cls(spec.dataset, **kwargs)
    start = time.perf_counter()
    batches = records = 0
    for batch in loader:
        batches += 1
        records += len(batch[schema[0].name])
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "batches": batches,
        "records": records,
        "batches_per_s": batches / seconds,
        "mode": f"{cls.__module__}.{cls.__name__}(batch_size={BATCH_SIZE}, num_workers=0); "
        + spec.mode,
    }


CHILD_PHASES = {
    "pack": child_pack,
    "scan": child_scan,
    "random": child_random,
    "loader": child_loader,
}


# ----------------------------------------------------------------------------- orchestration


def run_child(
    script: str, phase: str, args: argparse.Namespace, variant: str, repeat: int
) -> Record:
    """Run one phase in a fresh interpreter and return its JSON answer."""
    cmd = [
        sys.executable,
        script,
        "--child",
        phase,
        "--input",
        str(args.input),
        "--packed",
        str(packed_dir(args, variant)),
        "--variant",
        variant,
        "--repeat",
        str(repeat),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-15:]
        raise RuntimeError(f"{phase} failed (exit {proc.returncode}): " + "\n".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def packed_dir(args: argparse.Namespace, variant: str) -> Path:
    return Path(args.workdir) / variant / "packed"


def versions(peer: Peer) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in [*peer.distributions, "numpy", "torch"]:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def median(rows: list[Record], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def measure_variant(peer: Peer, script: str, args: argparse.Namespace, variant: str) -> Record:
    """Pack ``repeats`` times, then scan / random-access / load ``repeats`` times each."""
    schema = infer_schema(Path(args.input))
    packs = [run_child(script, "pack", args, variant, r) for r in range(args.repeats)]
    out_dir = packed_dir(args, variant)
    reads: dict[str, list[Record]] = {"scan": [], "random": [], "loader": []}
    for repeat in range(args.repeats):
        for phase, results in reads.items():
            peer.before_read(out_dir, variant)
            results.append(run_child(script, phase, args, variant, repeat))
    scans, randoms, loads = reads["scan"], reads["random"], reads["loader"]
    return {
        "peer": peer.name,
        "variant": variant,
        "stores": peer.stores(variant, schema),
        "pack_s": median(packs, "seconds"),
        "pack_s_all": [round(p["seconds"], 3) for p in packs],
        "pack_peak_rss_mb": max(p["peak_rss_mb"] for p in packs),
        "size_bytes": packs[-1]["size_bytes"],
        "size_after_reads_bytes": dir_bytes(out_dir),
        "records": scans[0]["records"],
        "elements": scans[0]["elements"],
        "read_types": scans[0]["read_types"],
        "scan_s": median(scans, "seconds"),
        "scan_s_all": [round(s["seconds"], 3) for s in scans],
        "scan_peak_rss_mb": median(scans, "peak_rss_mb"),
        "rss_before_scan_mb": median(scans, "rss_before_scan_mb"),
        "open_s": median(randoms, "open_seconds"),
        "random_p50_us": median(randoms, "p50_us"),
        "random_p99_us": median(randoms, "p99_us"),
        "loader_batches_per_s": median(loads, "batches_per_s"),
        "loader_batches": loads[0]["batches"],
        "loader_mode": loads[0]["mode"],
    }


def parse_args(peer: Peer, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"Benchmark {peer.name} on a JSONL file.")
    parser.add_argument("--input", type=Path, required=True, help="JSONL file to pack")
    parser.add_argument("--workdir", type=Path, help="where packed outputs go")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per phase (medians)")
    parser.add_argument(
        "--compression",
        nargs="*",
        choices=peer.variants,
        default=peer.variants,
        help="variants to run (default: all)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child phase")
    parser.add_argument("--child", choices=sorted(CHILD_PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--packed", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None and args.workdir is None:
        parser.error("--workdir is required")
    return args


def main(peer: Peer, argv: list[str] | None = None) -> int:
    """CLI entry point of a runner: either one child phase, or the whole benchmark."""
    args = parse_args(peer, argv)
    if args.child:
        schema = infer_schema(Path(args.input))
        print(json.dumps(CHILD_PHASES[args.child](peer, args, schema)))
        return 0
    script = os.path.abspath(sys.argv[0])
    rows = []
    for variant in args.compression:
        try:
            rows.append(measure_variant(peer, script, args, variant))
        except Exception as exc:  # one failing variant must not hide the others
            rows.append({"peer": peer.name, "variant": variant, "error": str(exc)})
    result = {
        "peer": peer.name,
        "versions": versions(peer),
        "input": str(args.input),
        "input_bytes": Path(args.input).stat().st_size,
        "repeats": args.repeats,
        "notes": peer.notes,
        "rows": rows,
    }
    print(json.dumps(result))
    return 0
