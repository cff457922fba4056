"""Training-input throughput: a DataLoader over packed data vs the same pipeline over JSONL.

Part 1: batches/s and tokens/s at batch size 8 (padding collate, 0 and 2 workers) reading a
synthetic knowledge-distillation mix packed, or as JSONL parsed with json.loads. Part 2: the
shuffle window (blocks shuffled together) vs randomness vs speed, on text records.

    python benchmarks/bench_loader.py --kd-mb 60 [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import shardpack
from shardpack import DatasetPacker
from shardpack.loader.sampling import EpochOrder
from shardpack.torch import PackedIterableDataset, PadCollate, make_loader

HERE = Path(__file__).resolve().parent
GSM8K = HERE.parent / "data" / "gsm8k_sample.jsonl"
BATCH = 8
NUMERIC = ("input_ids", "teacher_topk_ids", "teacher_topk_logprobs")


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_kd_mix", HERE / "gen_kd_mix.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class JsonlDataset(torch.utils.data.IterableDataset):
    """The baseline: read JSONL lines, json.loads, numeric lists to arrays; lines dealt to workers
    in turns of one batch, like the packed dataset, so both pipelines do the same work."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns = path, columns

    def __iter__(self) -> Any:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        with open(self.path, "rb") as lines:
            for n, line in enumerate(lines):
                if (n // BATCH) % workers != worker:
                    continue
                record = json.loads(line)
                out = {}
                for name in self.columns:
                    value = record[name]
                    out[name] = np.asarray(value) if name in NUMERIC else value
                yield out


def _run_loader(loader: Any) -> tuple[int, int, float]:
    batches = tokens = 0
    started = time.perf_counter()
    for batch in loader:
        batches += 1
        tokens += int(batch["input_ids_lengths"].sum())
    return batches, tokens, time.perf_counter() - started


def bench_throughput(kd_jsonl: Path, packed: Path, workers_list: list[int]) -> list[dict]:
    rows = []
    for columns in (["input_ids"], list(NUMERIC)):
        for workers in workers_list:
            collate = PadCollate(with_lengths=True)
            cases = {
                "jsonl + json.loads": torch.utils.data.DataLoader(
                    JsonlDataset(kd_jsonl, columns),
                    batch_size=BATCH,
                    num_workers=workers,
                    collate_fn=collate,
                ),
                "packed, shuffled": make_loader(
                    PackedIterableDataset(packed, seed=0, columns=columns),
                    BATCH,
                    num_workers=workers,
                    collate_fn=collate,
                    stateful=False,
                ),
            }
            for name, loader in cases.items():
                _run_loader(loader)  # warm the page cache and worker start-up paths
                batches, tokens, seconds = _run_loader(loader)
                rows.append(
                    {
                        "source": name,
                        "columns": "+".join(columns),
                        "workers": workers,
                        "batches": batches,
                        "seconds": round(seconds, 3),
                        "batches_per_s": round(batches / seconds, 1),
                        "tokens_per_s": round(tokens / seconds),
                    }
                )
    return rows


def _randomness(order: EpochOrder) -> dict[str, float]:
    records = order.all_records()
    blocks = order.block_of(records)
    same_block = float(np.mean(blocks[1:] == blocks[:-1]))
    usable = len(blocks) // BATCH * BATCH
    per_batch = blocks[:usable].reshape(-1, BATCH)
    distinct = float(np.mean([len(set(row)) for row in per_batch.tolist()]))
    # rank correlation of epoch position with file position: 1 = file order, ~0 = no trace of it
    ranks = np.argsort(np.argsort(records))
    corr = float(np.corrcoef(np.arange(len(records)), ranks)[0, 1])
    return {"same_block_neighbours": same_block, "blocks_per_batch": distinct, "order_corr": corr}


def bench_windows(text_packed: Path, windows: list[int]) -> list[dict]:
    rows = []
    blocks = shardpack.open(text_packed).files[0].block_count
    for window in [*windows, blocks]:
        ds = PackedIterableDataset(text_packed, seed=0, window_blocks=window)
        for _ in ds:  # warm-up
            pass
        started = time.perf_counter()
        count = sum(1 for _ in ds)
        seconds = time.perf_counter() - started
        counts = np.concatenate(
            [f.index["record_count"] for f in shardpack.open(text_packed).files]
        )
        order = EpochOrder(counts, seed=0, window_blocks=window)
        rows.append(
            {
                "window_blocks": window if window < blocks else f"{window} (all)",
                "records_per_s": round(count / seconds),
                **{k: round(v, 3) for k, v in _randomness(order).items()},
            }
        )
    started = time.perf_counter()
    ds = shardpack.open(text_packed)
    for i in np.random.default_rng(0).permutation(len(ds)).tolist():
        ds[i]
    seconds = time.perf_counter() - started
    rows.append({"window_blocks": "random ds[i]", "records_per_s": round(len(ds) / seconds)})
    return rows


def _table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    widths = [max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
    lines += [
        "  ".join(str(r.get(k, "")).ljust(w) for k, w in zip(keys, widths, strict=True))
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kd-mb", type=float, default=60.0, help="size of the KD mix (MB)")
    parser.add_argument("--text-copies", type=int, default=20, help="gsm8k sample repeats")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        kd_jsonl = folder / "kd.jsonl"
        _generator().generate(
            kd_jsonl, int(args.kd_mb * 1e6), seed=0, top_k=20, vocab_size=151_936, mix="uniform"
        )
        packed = folder / "kd.packed"
        DatasetPacker().pack(kd_jsonl, packed)
        text_jsonl = folder / "text.jsonl"
        text_jsonl.write_bytes(GSM8K.read_bytes() * args.text_copies)
        text_packed = folder / "text.packed"
        DatasetPacker().pack(text_jsonl, text_packed)
        results = {
            "throughput": bench_throughput(kd_jsonl, packed, args.workers),
            "windows": bench_windows(text_packed, args.windows),
            "kd_records": len(shardpack.open(packed)),
            "kd_jsonl_bytes": kd_jsonl.stat().st_size,
            "text_records": len(shardpack.open(text_packed)),
            "versions": {
                "python": platform.python_version(),
                "shardpack": shardpack.__version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
            },
        }
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(f"DataLoader, batch size {BATCH}, {results['kd_records']} KD records")
        print(_table(results["throughput"]))
        print(f"\nShuffle window on {results['text_records']} text records (one process)")
        print(_table(results["windows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
