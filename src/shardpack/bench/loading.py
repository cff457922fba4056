"""Loading measurements on a user's own packed dataset, and on its original JSONL for comparison.

Every figure is a median over repeats. Peak memory is measured in a fresh subprocess so one
measurement does not inherit the memory of another. ``shardpack bench`` and the scripts under
``benchmarks/`` are thin layers over these functions.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from ..codecs import get_codec
from ..dataset.dataset import open_dataset
from ..format.block import BlockView, unshuffle_block
from ..format.layout import BLOCK_SHUFFLED, checksum
from ..format.metadata import FileMetadata
from ..packfile.reader import PackedFile
from ..stats import token_field

Loads = Callable[[bytes], Any]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Measure decode loops without collector pauses triggered by many small dicts."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def count_tokens(path: str, field_name: str | None, metadata: FileMetadata | None = None) -> int:
    """Total length of ``field_name`` over all records: from the packed statistics when the file
    has them (no extra pass), else by reading every record."""
    if field_name is None:
        return 0
    stats = metadata.stats if metadata is not None else None
    recorded = stats.fields.get(field_name) if stats is not None else None
    if recorded is not None and recorded.array_length is not None:
        return recorded.array_length.total or 0
    total = 0
    with open_dataset(path) as ds:
        for record in ds:
            value = record.get(field_name) if isinstance(record, dict) else None
            if value is not None:
                total += len(value)
    return total


def scan_packed(path: str, *, verify: bool = True, read_ahead: bool = False) -> int:
    """Read every record once, in order; returns the record count."""
    count = 0
    with open_dataset(path, verify=verify, read_ahead=read_ahead) as ds, gc_paused():
        for batch in ds.iter_batches(1024):
            count += len(batch)
    return count


def scan_jsonl(path: str, loads: Loads) -> int:
    """Parse every line of a JSONL file with ``loads``; returns the line count."""
    count = 0
    with open(path, "rb") as stream, gc_paused():
        for line in stream:
            if line.strip():
                loads(line)
                count += 1
    return count


def random_access_latencies(path: str, samples: int = 2000, seed: int = 0) -> np.ndarray:
    """Seconds per ``ds[i]`` for uniformly random i (cold block cache per call: cache of 1)."""
    with open_dataset(path, cache_blocks=1) as ds, gc_paused():
        rng = np.random.default_rng(seed)
        indices = rng.integers(0, len(ds), samples).tolist()
        latencies = np.empty(samples)
        clock = time.perf_counter
        for k, i in enumerate(indices):
            started = clock()
            ds[i]
            latencies[k] = clock() - started
    return latencies


def time_to_first_batch(path: str, batch_size: int) -> float:
    started = time.perf_counter()
    with open_dataset(path) as ds:
        next(ds.iter_batches(batch_size), None)
    return time.perf_counter() - started


def open_seconds(path: str, repeats: int) -> float:
    def run() -> None:
        open_dataset(path).close()

    return median_seconds(run, repeats)


def machine_ceilings(path: str, repeats: int = 3) -> dict[str, float]:
    """What this machine can do on this file's bytes, to judge how close a scan gets.

    - ``read_mb_s``: reading every stored block (page cache, pread);
    - ``decompress_mb_s``: the codec alone on every stored block (MB of raw output per second);
    - ``memcpy_mb_s``: copying a buffer the size of the raw data;
    - ``ceiling_scan_seconds``: read + checksum + decompress of all blocks, no decoding: the
      fastest any scan of this file could be in this process.
    """
    with PackedFile(path) as packed:
        entries = [
            (int(e["offset"]), int(e["stored_size"]), int(e["raw_size"])) for e in packed.index
        ]
        codec = get_codec(packed.codec.to_dict())
        source = packed.source
        stored = [source.read(offset, size) for offset, size, _ in entries]
        raw_total = sum(raw for _, _, raw in entries)
        stored_total = sum(size for _, size, _ in entries)

        def read_all() -> None:
            for offset, size, _ in entries:
                source.read(offset, size)

        def decompress_all() -> None:
            for data, (_, _, raw) in zip(stored, entries, strict=True):
                codec.decode(data, raw)

        def read_check_decompress() -> None:
            for offset, size, raw in entries:
                data = source.read(offset, size)
                checksum(data)
                codec.decode(data, raw)

        read_s = median_seconds(read_all, repeats)
        decompress_s = median_seconds(decompress_all, repeats)
        ceiling_s = median_seconds(read_check_decompress, repeats)
    buffer = np.ones(max(raw_total, 1), dtype=np.uint8)
    copy_s = median_seconds(lambda: buffer.copy(), repeats)
    return {
        "read_mb_s": stored_total / 1e6 / read_s,
        "decompress_mb_s": raw_total / 1e6 / decompress_s,
        "memcpy_mb_s": raw_total / 1e6 / copy_s,
        "ceiling_scan_seconds": ceiling_s,
    }


def time_breakdown(path: str) -> dict[str, float]:
    """Seconds spent reading, checksumming, decompressing and decoding, over one full pass."""
    spent = {"read": 0.0, "checksum": 0.0, "decompress": 0.0, "unshuffle": 0.0, "decode": 0.0}
    clock = time.perf_counter
    with open_dataset(path) as ds, gc_paused():
        for packed in ds.files:
            codec = get_codec(packed.codec.to_dict())
            for block in range(packed.block_count):
                entry = packed.index[block]
                t0 = clock()
                stored = packed.source.read(int(entry["offset"]), int(entry["stored_size"]))
                t1 = clock()
                checksum(stored)
                t2 = clock()
                raw = codec.decode(stored, int(entry["raw_size"]))
                t3 = clock()
                if int(entry["flags"]) & BLOCK_SHUFFLED:
                    raw = unshuffle_block(raw)
                t4 = clock()
                packed.block_records(block, BlockView(raw, int(entry["record_count"])))
                t5 = clock()
                spent["read"] += t1 - t0
                spent["checksum"] += t2 - t1
                spent["decompress"] += t3 - t2
                spent["unshuffle"] += t4 - t3
                spent["decode"] += t5 - t4
    return spent


def peak_rss_kb() -> int:
    """This process's peak resident set in KiB.

    Linux's VmHWM is reset by exec, unlike ``ru_maxrss``, which a child started by fork/vfork
    inherits from its parent's peak and would over-report.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


_PEAK_SCRIPT = """
import sys
from shardpack.bench.loading import peak_rss_kb, scan_packed, scan_jsonl
kind, path = sys.argv[1], sys.argv[2]
if kind == "packed":
    scan_packed(path)
else:
    import json
    scan_jsonl(path, json.loads)
print(peak_rss_kb())
"""


def peak_rss_mb(kind: str, path: str) -> float | None:
    """Peak resident memory (MB) of a fresh process scanning ``path`` (``packed`` or ``jsonl``)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PEAK_SCRIPT, kind, path],
            capture_output=True,
            text=True,
            timeout=3600,
            check=True,
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return int(proc.stdout.strip().splitlines()[-1]) / 1024


def dataloader_batches_per_second(path: str, batch_size: int, num_workers: int) -> float | None:
    """Batches/s through a real torch DataLoader over the packed data, or None without torch."""
    try:
        from ..loader.torch import PackedIterableDataset, PadCollate, make_loader
    except ImportError:
        return None
    # padded tensors when records share their fields (a training batch), else plain lists
    for collate in (PadCollate(), _records_as_list):
        dataset = PackedIterableDataset(path, shuffle=True, seed=0)
        loader = make_loader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate,
            stateful=False,
        )
        started = time.perf_counter()
        try:
            batches = sum(1 for _ in loader)
        except (ValueError, TypeError):
            continue
        return batches / (time.perf_counter() - started)
    return None


def _records_as_list(batch: list[Any]) -> list[Any]:
    return batch


@dataclass
class LoadingReport:
    """Everything ``shardpack bench`` measures, JSON-ready through ``to_dict``."""

    dataset: str
    records: int
    json_bytes: int
    packed_bytes: int
    tokens: int
    token_field: str | None
    batch_size: int
    repeats: int
    packed: dict[str, Any] = field(default_factory=dict)
    jsonl: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "records": self.records,
            "json_bytes": self.json_bytes,
            "packed_bytes": self.packed_bytes,
            "tokens": self.tokens,
            "token_field": self.token_field,
            "batch_size": self.batch_size,
            "repeats": self.repeats,
            "packed": self.packed,
            "jsonl": self.jsonl,
            "ratios": self.ratios,
        }


def _rates(seconds: float, records: int, json_bytes: int, tokens: int) -> dict[str, float]:
    return {
        "scan_seconds": seconds,
        "records_per_s": records / seconds if seconds else 0.0,
        "json_mb_per_s": json_bytes / 1e6 / seconds if seconds else 0.0,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
    }


def benchmark_loading(
    path: str,
    *,
    batch_size: int = 8,
    jsonl: str | None = None,
    repeats: int = 5,
    random_samples: int = 2000,
    num_workers: int = 0,
    measure_memory: bool = True,
) -> LoadingReport:
    """Measure loading ``path``; with ``jsonl``, the same file parsed per line, side by side."""
    with PackedFile(path) as packed:
        metadata = packed.metadata
        records = packed.record_count
        packed_bytes = packed.size
    json_bytes = os.path.getsize(jsonl) if jsonl else metadata.input_bytes
    tokens_in = token_field(metadata.arrays)
    tokens = count_tokens(path, tokens_in, metadata)
    report = LoadingReport(
        dataset=path,
        records=records,
        json_bytes=json_bytes,
        packed_bytes=packed_bytes,
        tokens=tokens,
        token_field=tokens_in,
        batch_size=batch_size,
        repeats=repeats,
    )
    scan = median_seconds(lambda: scan_packed(path), repeats)
    latencies = random_access_latencies(path, random_samples)
    report.packed = {
        "open_seconds": open_seconds(path, repeats),
        "first_batch_seconds": time_to_first_batch(path, batch_size),
        **_rates(scan, records, json_bytes, tokens),
        "scan_unverified_seconds": median_seconds(lambda: scan_packed(path, verify=False), repeats),
        # what open(..., read_ahead=True) gives on this machine, now (a free core, or none)
        "scan_read_ahead_seconds": median_seconds(
            lambda: scan_packed(path, read_ahead=True), repeats
        ),
        "random_access_p50_us": float(np.percentile(latencies, 50) * 1e6),
        "random_access_p99_us": float(np.percentile(latencies, 99) * 1e6),
        "dataloader_batches_per_s": dataloader_batches_per_second(path, batch_size, num_workers),
        "dataloader_workers": num_workers,
        "breakdown_seconds": time_breakdown(path),
        "ceilings": machine_ceilings(path, repeats),
        "peak_rss_mb": peak_rss_mb("packed", path) if measure_memory else None,
    }
    if jsonl:
        for name, loads in _jsonl_parsers().items():
            seconds = median_seconds(partial(scan_jsonl, jsonl, loads), repeats)
            report.jsonl[name] = _rates(seconds, records, json_bytes, tokens)
            report.ratios[f"scan_speedup_vs_{name}"] = seconds / scan
        if measure_memory:
            report.jsonl["json"]["peak_rss_mb"] = peak_rss_mb("jsonl", jsonl)
    return report


def _jsonl_parsers() -> dict[str, Loads]:
    parsers: dict[str, Loads] = {"json": json.loads}
    try:
        import orjson

        parsers["orjson"] = orjson.loads
    except ImportError:
        pass
    return parsers
