"""Benchmark Lightning ``litdata`` (optimize + StreamingDataset) as a peer of shardpack.

Packs with ``litdata.optimize`` (64 MB chunks, one worker so that every peer packs on one core)
over byte ranges of the JSONL file; each sample is a dict of str and numpy arrays, which litdata
serializes with its own per-type serializers (numpy arrays keep dtype and shape, so
``input_ids`` is int32 [len], the top-k fields int32/float32 [len][k]). Reads with
``litdata.StreamingDataset`` on the local folder. Variants: ``zstd`` (litdata's default zstd level,
4, in its default batch framing) and ``none``.

    python litdata_bench.py --input kd.jsonl --workdir /tmp/lit --repeats 3
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")

import litdata
from common import Field, Loader, Peer, Record, Schema, convert, main

LINES_PER_INPUT = 256
CHUNK_BYTES = "64MB"
COMPRESSION = {"zstd": "zstd", "none": None}


def line_ranges(path: Path, lines: int) -> list[tuple[str, int, int]]:
    """Split a JSONL file into (path, start, end) byte ranges of ``lines`` lines each."""
    ranges = []
    start = end = count = 0
    with open(path, "rb") as f:
        for line in f:
            end += len(line)
            count += 1
            if count == lines:
                ranges.append((str(path), start, end))
                start, count = end, 0
    if count:
        ranges.append((str(path), start, end))
    return ranges


def records_in_range(
    span: tuple[str, int, int], fields: tuple[tuple[str, str, int], ...]
) -> Iterator[Record]:
    """The ``optimize`` function: yield typed records of one byte range."""
    path, start, end = span
    schema = [Field(*f) for f in fields]
    with open(path, "rb") as f:
        f.seek(start)
        for line in f.read(end - start).splitlines():
            if line.strip():
                yield convert(json.loads(line), schema)


def pack(path: Path, out_dir: Path, variant: str, schema: Schema) -> None:
    fields = tuple((f.name, f.kind, f.width) for f in schema)
    litdata.optimize(
        fn=functools.partial(records_in_range, fields=fields),
        inputs=line_ranges(path, LINES_PER_INPUT),
        output_dir=str(out_dir),
        chunk_bytes=CHUNK_BYTES,
        compression=COMPRESSION[variant],
        num_workers=1,
        reorder_files=False,
        verbose=False,
    )


def open_dataset(out_dir: Path, shuffle: bool = False) -> litdata.StreamingDataset:
    return litdata.StreamingDataset(str(out_dir), shuffle=shuffle)


def scan(out_dir: Path, variant: str, schema: Schema) -> Iterator[Record]:
    yield from open_dataset(out_dir)


def open_random(out_dir: Path, variant: str, schema: Schema) -> tuple[int, Callable[[int], Record]]:
    ds = open_dataset(out_dir)
    return len(ds), ds.__getitem__


def loader(out_dir: Path, variant: str, schema: Schema) -> Loader:
    mode = "StreamingDataset(shuffle=True) (iterable; litdata's chunk-then-item shuffle)"
    return Loader(
        open_dataset(out_dir, shuffle=True),
        mode,
        shuffle=False,
        loader_cls=litdata.StreamingDataLoader,
    )


def stores(variant: str, schema: Schema) -> str:
    kinds = ", ".join(f"{f.name}: {f'numpy {f.dtype}' if f.is_array else 'str'}" for f in schema)
    return f"litdata chunks ({CHUNK_BYTES}), compression={COMPRESSION[variant]}; {kinds}"


PEER = Peer(
    name="litdata",
    distributions=["litdata", "zstd"],
    variants=list(COMPRESSION),
    pack=pack,
    scan=scan,
    open_random=open_random,
    loader=loader,
    stores=stores,
    notes=["optimize(num_workers=1): litdata would use every core by default."],
)

if __name__ == "__main__":
    raise SystemExit(main(PEER))
