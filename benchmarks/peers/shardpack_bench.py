"""shardpack itself, measured by the same harness as its peers (same phases, same collate).

Packs the original JSONL losslessly in one process (``workers=1``): numeric lists become typed
arrays (int32/float32 here, chosen by shardpack), everything else stays JSON values. Reads use
``shardpack.open`` (checksums verified); the DataLoader uses ``shardpack.loader.torch``'s iterable
dataset with its block-then-window shuffle. Variants: lz4, zstd (level 3, byte-shuffled arrays,
the defaults) and none.

    python shardpack_bench.py --input kd.jsonl --workdir /tmp/sp --repeats 3
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from common import Loader, Peer, Record, Schema, main

import shardpack
from shardpack.build.options import default_block_size

FILE_NAME = "data.packed"
VARIANTS = ["lz4", "zstd", "none"]


def pack(path: Path, out_dir: Path, variant: str, schema: Schema) -> None:
    out_dir.mkdir(parents=True)
    shardpack.DatasetPacker().pack(path, out_dir / FILE_NAME, compression=variant, workers=1)


def scan(out_dir: Path, variant: str, schema: Schema) -> Iterator[Record]:
    with shardpack.open(out_dir / FILE_NAME) as ds:
        yield from ds


def open_random(out_dir: Path, variant: str, schema: Schema) -> tuple[int, Callable[[int], Record]]:
    ds = shardpack.open(out_dir / FILE_NAME)
    return len(ds), ds.__getitem__


def loader(out_dir: Path, variant: str, schema: Schema) -> Loader:
    from shardpack.loader.torch import PackedIterableDataset

    dataset = PackedIterableDataset(str(out_dir / FILE_NAME), shuffle=True, seed=0, batch_size=8)
    mode = "shardpack.loader.torch.PackedIterableDataset(shuffle=True): block-then-window shuffle"
    return Loader(dataset, mode, shuffle=False)


def stores(variant: str, schema: Schema) -> str:
    extra = ", byte-shuffled arrays" if variant == "zstd" else ""
    return (
        f"1 packed file, {variant} blocks of {default_block_size(variant) // 1024} KiB{extra}; "
        "lossless JSON values, numeric lists "
        "as narrowest exact dtype (int32 ids, float32 log-probs), meta as an object"
    )


PEER = Peer(
    name="shardpack",
    distributions=["shardpack", "numpy", "msgspec", "lz4", "zstandard"],
    variants=VARIANTS,
    pack=pack,
    scan=scan,
    open_random=open_random,
    loader=loader,
    stores=stores,
    notes=["pack in one process (workers=1); `--workers 0` uses every core"],
)

if __name__ == "__main__":
    raise SystemExit(main(PEER))
