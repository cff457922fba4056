"""Does the loader keep a GPU fed? A real DataLoader into a training-step stub, on the mixed KD mix.

Part 1 (feed): tokens/s and CPU per token at 0/2/4/8 workers, shardpack's PackedIterableDataset
(make_loader) next to what users write today: a map-style dataset over JSONL lines parsed with
orjson, shuffled by a RandomSampler. Both batch with the same PadCollate, both read the
distillation fields (input_ids, top-k ids and log-probs, loss mask; text records batch with
presence masks). An epoch repeats the mix ``--repeat`` times so worker start-up does not
dominate. ``--collate per-field`` sends every field as its own tensor (the loader before
TensorBatch) to show the per-batch ceiling in the parent process. ``--device cuda`` feeds a GPU:
pinned batches, one host-to-device copy per batch (``TensorBatch.to``; per tensor for the JSONL
loader's plain dicts), and a KD step's reads on the GPU, synchronised every batch.

Part 2 (padding): real vs padded tokens for fixed-size batches, token-budget batches and packed
sequences over the distill records of the same mix (plans only, no training step).

Part 3 (projection): a scan decoding only input_ids vs a full scan, where the reader can skip
fields (``open_dataset(..., columns=)``).

    python benchmarks/bench_training_feed.py --kd-mb 200 --repeat 4 [--workers 0 2 4 8]
                                             [--device cuda] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

import shardpack
from shardpack import DatasetPacker
from shardpack.torch import PackedIterableDataset, PadCollate, make_loader

HERE = Path(__file__).resolve().parent
COLUMNS = ["input_ids", "teacher_topk_ids", "teacher_topk_logprobs", "loss_mask"]
DTYPES = {
    "input_ids": np.int32,
    "teacher_topk_ids": np.int32,
    "teacher_topk_logprobs": np.float32,
    "loss_mask": np.bool_,
}


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_kd_mix", HERE / "gen_kd_mix.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class JsonlMapDataset(torch.utils.data.Dataset):
    """The usual hand-written loader: line offsets found once, ``ds[i]`` seeks, orjson parses,
    numeric lists become numpy arrays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        offsets, at = [], 0
        with open(path, "rb") as lines:
            for line in lines:
                offsets.append(at)
                at += len(line)
        self.offsets = np.array(offsets, dtype=np.int64)
        self._file: Any = None
        self._pid = 0

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._file is None or self._pid != os.getpid():  # a forked worker: its own file
            self._file = open(self.path, "rb")  # noqa: SIM115 - one per process, kept open
            self._pid = os.getpid()
        self._file.seek(int(self.offsets[i]))
        record = orjson.loads(self._file.readline())
        return {k: np.asarray(record[k], dtype=DTYPES[k]) for k in COLUMNS if k in record}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_file": None}


class PerFieldCollate(PadCollate):
    """PadCollate's batch with every tensor in its own storage (how batches travelled before)."""

    def __call__(self, records: Any) -> Any:
        return _split(super().__call__(records))


def _split(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _split(v) for k, v in tree.items()}
    return tree.clone() if isinstance(tree, torch.Tensor) else tree


def to_device(batch: Any, device: str) -> Any:
    """The batch on ``device``: one copy of a TensorBatch's buffer, or one per tensor."""
    if device == "cpu":
        return batch
    if hasattr(batch, "to"):
        return batch.to(device, non_blocking=True)
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def train_step(batch: dict[str, Any]) -> int:
    """The stub: touch what a KD step reads; returns the batch's real tokens (on a GPU, the
    int() waits for the copy and the kernels, as a step's loss.item() would)."""
    tokens = batch.get("input_ids_lengths")
    if tokens is None:
        return 0
    logprobs = batch.get("teacher_topk_logprobs")
    if logprobs is not None:
        logprobs[:, :1].float().sum()
        if logprobs.device.type != "cpu":  # the KD loss's teacher term: every log-prob read
            torch.logsumexp(logprobs.float(), dim=-1).sum()
    return int(tokens.sum())


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _main_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def feed(loader: Any, device: str = "cpu") -> dict[str, float]:
    batches = tokens = 0
    cpu, main, started = _cpu(), _main_cpu(), time.perf_counter()
    for batch in loader:
        tokens += train_step(to_device(batch, device))
        batches += 1
    seconds = time.perf_counter() - started
    cpu, main = _cpu() - cpu, _main_cpu() - main
    return {
        "batches": batches,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds),
        "cpu_s_per_m_tokens": round(cpu / tokens * 1e6, 2),
        "main_cpu_us_per_batch": round(main / batches * 1e6),
    }


def bench_feed(
    jsonl: Path,
    packed: Path,
    workers: list[int],
    batch: int,
    repeat: int,
    per_field: bool,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    rows = []
    collate = PerFieldCollate(with_lengths=True) if per_field else PadCollate(with_lengths=True)
    records = len(shardpack.open(packed))
    samples = records * repeat
    jsonl_ds = JsonlMapDataset(jsonl)
    pin = device != "cpu"
    for n in workers:
        sampler = torch.utils.data.RandomSampler(
            jsonl_ds, num_samples=samples, generator=torch.Generator().manual_seed(0)
        )
        loaders = {
            "jsonl + orjson, map-style": torch.utils.data.DataLoader(
                jsonl_ds,
                batch_size=batch,
                sampler=sampler,
                num_workers=n,
                collate_fn=collate,
                pin_memory=pin,
            ),
            "shardpack": make_loader(
                PackedIterableDataset(packed, seed=0, num_samples=samples, columns=COLUMNS),
                batch,
                num_workers=n,
                collate_fn=collate,
                stateful=False,
                pin_memory=pin,
            ),
        }
        for name, loader in loaders.items():
            rows.append({"source": name, "workers": n, **feed(loader, device)})
    return rows


def bench_padding(packed: Path, batch: int, max_tokens: int, seq_len: int) -> list[dict[str, Any]]:
    """Real vs padded tokens over the distill records, one epoch, per way of batching."""

    def distill(record: Any) -> bool:
        return "input_ids" in record

    rows = []
    ways: list[tuple[str, dict[str, Any]]] = [
        (f"fixed {batch} records, shuffled", {"batch_size": batch}),
        (f"token budget {max_tokens}", {"max_tokens": max_tokens}),
        (
            f"packed sequences of {seq_len}, {batch} per batch",
            {"batch_size": batch, "seq_len": seq_len},
        ),
    ]
    for name, options in ways:
        ds = PackedIterableDataset(packed, seed=0, filter=distill, columns=["input_ids"])
        real = padded = batches = 0
        started = time.perf_counter()
        packing = "seq_len" in options
        if not packing:
            options["collate_fn"] = PadCollate(with_lengths=True)
        for out in make_loader(ds, stateful=False, **options):
            padded += out["input_ids"].numel()
            if packing:
                real += int((out["segment_ids"] > 0).sum())
            else:
                real += int(out["input_ids_lengths"].sum())
            batches += 1
        rows.append(
            {
                "batching": name,
                "batches": batches,
                "real_tokens": real,
                "padded_tokens": padded,
                "padding_waste_pct": round(100 * (padded - real) / padded, 1),
                "mean_tokens_per_batch": round(padded / batches),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
    return rows


def bench_projection(packed: Path, repeats: int = 3) -> list[dict[str, Any]] | None:
    from shardpack.dataset.dataset import open_dataset

    if "columns" not in inspect.signature(open_dataset).parameters:
        return None
    rows = []
    for name, columns in (("full records", None), ("input_ids only", ["input_ids"])):
        best = float("inf")
        for _ in range(repeats):
            options = {} if columns is None else {"columns": columns}
            ds = open_dataset(str(packed), **options)
            started = time.perf_counter()
            count = sum(1 for _ in ds)
            best = min(best, time.perf_counter() - started)
        rows.append({"scan": name, "records": count, "seconds": round(best, 3)})
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
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
    parser.add_argument("--kd-mb", type=float, default=200.0, help="size of the KD mix (MB)")
    parser.add_argument("--repeat", type=int, default=4, help="passes over the mix per epoch")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4, 8])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=4096, help="token budget (part 2)")
    parser.add_argument("--seq-len", type=int, default=1024, help="packed length (part 2)")
    parser.add_argument("--collate", choices=["buffer", "per-field"], default="buffer")
    parser.add_argument("--parts", nargs="+", default=["feed", "padding", "projection"])
    parser.add_argument("--device", default="cpu", help="feed this device (e.g. cuda)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        jsonl, packed = Path(tmp) / "kd_mix.jsonl", Path(tmp) / "kd_mix.packed"
        _generator().generate(jsonl, int(args.kd_mb * 1e6), seed=0, top_k=20, vocab_size=151_936)
        DatasetPacker().pack(jsonl, packed, compression="lz4")
        results["records"] = len(shardpack.open(packed))
        if "feed" in args.parts:
            results["feed"] = bench_feed(
                jsonl,
                packed,
                args.workers,
                args.batch_size,
                args.repeat,
                args.collate == "per-field",
                args.device,
            )
        if "padding" in args.parts:
            results["padding"] = bench_padding(
                packed, args.batch_size, args.max_tokens, args.seq_len
            )
        if "projection" in args.parts:
            results["projection"] = bench_projection(packed)
    results["versions"] = {
        "python": platform.python_version(),
        "shardpack": shardpack.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "orjson": orjson.__version__,
    }
    if args.device != "cpu":
        results["device"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else ""
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    print(f"KD mix: {results['records']} records, {args.kd_mb:g} MB JSONL")
    for part in ("feed", "padding", "projection"):
        if results.get(part):
            print(f"\n{part}\n{_table(results[part])}")
        elif part in args.parts:
            print(f"\n{part}: not measured (this version's reader cannot skip fields)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
