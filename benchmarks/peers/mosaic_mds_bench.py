"""Benchmark MosaicML Streaming (MDS shards) as a peer of shardpack.

Packs with ``MDSWriter`` (64 MiB shard limit, the default) and reads with a local-only
``StreamingDataset``. Stores text as MDS ``str``, the numeric fields as ``ndarray:int32`` /
``ndarray:float32`` (dtype fixed, shape stored per sample, so [len][k] stays 2-D), other JSON
values as JSON text. Variants: ``zstd`` (MDS's default zstd level, 3) and ``none``.

Compressed MDS shards are not read in place: on first access StreamingDataset decompresses each
shard into a raw ``.mds`` file next to it (the local cache) and reads that. Before every read
phase this runner deletes those raw copies, so each measured read pays the decompression, and the
row reports the directory size after reads.

``import streaming`` imports ``streaming.vision``, which needs torchvision; there is no CPU build
of torchvision for this torch, so the runner registers an empty ``streaming.vision`` module first.
The benchmark uses no vision code.

    python mosaic_mds_bench.py --input kd.jsonl --workdir /tmp/mds --repeats 3
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

sys.modules.setdefault("streaming.vision", types.ModuleType("streaming.vision"))

from common import F32, F32_2D, I32, I32_2D, Loader, Peer, Record, Schema, iter_records, main  # noqa: E402
from streaming import MDSWriter, StreamingDataLoader, StreamingDataset  # noqa: E402
from streaming.base.util import clean_stale_shared_memory  # noqa: E402

MDS_TYPES = {
    I32: "ndarray:int32",
    I32_2D: "ndarray:int32",
    F32: "ndarray:float32",
    F32_2D: "ndarray:float32",
}
COMPRESSION = {"zstd": "zstd", "none": None}


def columns(schema: Schema) -> dict[str, str]:
    """MDS column encodings for the schema."""
    return {f.name: MDS_TYPES.get(f.kind, "str") for f in schema}


def pack(path: Path, out_dir: Path, variant: str, schema: Schema) -> None:
    with MDSWriter(
        out=str(out_dir), columns=columns(schema), compression=COMPRESSION[variant]
    ) as w:
        for record in iter_records(path, schema):
            w.write(record)


def open_dataset(out_dir: Path, shuffle: bool = False) -> StreamingDataset:
    clean_stale_shared_memory()
    return StreamingDataset(local=str(out_dir), shuffle=shuffle, batch_size=8)


def scan(out_dir: Path, variant: str, schema: Schema) -> Iterator[Record]:
    yield from open_dataset(out_dir)


def open_random(out_dir: Path, variant: str, schema: Schema) -> tuple[int, Callable[[int], Record]]:
    ds = open_dataset(out_dir)
    return len(ds), ds.__getitem__


def loader(out_dir: Path, variant: str, schema: Schema) -> Loader:
    mode = "StreamingDataset(shuffle=True, batch_size=8) (iterable; MDS's own shuffle)"
    return Loader(
        open_dataset(out_dir, shuffle=True), mode, shuffle=False, loader_cls=StreamingDataLoader
    )


def before_read(out_dir: Path, variant: str) -> None:
    """Drop raw shards decompressed by an earlier read, so each read decompresses again."""
    for zipped in out_dir.glob("*.mds.zstd"):
        zipped.with_suffix("").unlink(missing_ok=True)


def stores(variant: str, schema: Schema) -> str:
    cols = ", ".join(f"{k}: {v}" for k, v in columns(schema).items())
    return f"MDS shards (size_limit 64 MiB), compression={variant}; {cols}"


PEER = Peer(
    name="mosaic_mds",
    distributions=["mosaicml-streaming"],
    variants=list(COMPRESSION),
    pack=pack,
    scan=scan,
    open_random=open_random,
    loader=loader,
    stores=stores,
    before_read=before_read,
    notes=[
        "streaming.vision stubbed out (no CPU torchvision); vision code unused.",
        "zstd shards are decompressed into raw shards on first read; each measured read pays it.",
    ],
)

if __name__ == "__main__":
    raise SystemExit(main(PEER))
