"""Benchmark Hugging Face ``datasets`` (Arrow on disk) as a peer of shardpack.

Packs with ``Dataset.from_generator`` (explicit ``Features``) followed by ``save_to_disk``, the
documented way to build and persist a dataset from Python records; reads with ``load_from_disk``
and ``with_format("numpy")``. Stores Arrow IPC files, uncompressed (``save_to_disk`` has no
compression option): text as ``string``, ``input_ids`` as ``List(int32)``, the top-k fields as
``Array2D(shape=(None, k))`` of int32/float32, other JSON values as JSON text.

    python hf_datasets_bench.py --input kd.jsonl --workdir /tmp/hf --repeats 3
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
from common import F32, F32_2D, I32, I32_2D, Field, Loader, Peer, Record, Schema, main
from common import iter_records as iter_typed

datasets.disable_progress_bars()

VALUE_DTYPES = {I32: "int32", F32: "float32", I32_2D: "int32", F32_2D: "float32"}


def feature(f: Field) -> datasets.features.FeatureType:
    """The ``datasets`` feature type of one field."""
    if f.width:
        return datasets.Array2D(shape=(None, f.width), dtype=VALUE_DTYPES[f.kind])
    if f.is_array:
        return datasets.List(datasets.Value(VALUE_DTYPES[f.kind]))
    return datasets.Value("string")


def features(schema: Schema) -> datasets.Features:
    return datasets.Features({f.name: feature(f) for f in schema})


def generate(path: str, fields: tuple[tuple[str, str, int], ...]) -> Iterator[Record]:
    """Generator for ``from_generator``: typed records from the JSONL file.

    ``fields`` is a tuple on purpose: ``from_generator`` treats list-valued ``gen_kwargs`` as
    shards and would split a list of fields across generator calls.
    """
    yield from iter_typed(Path(path), [Field(*f) for f in fields])


def pack(path: Path, out_dir: Path, variant: str, schema: Schema) -> None:
    cache = Path(tempfile.mkdtemp(prefix="hf-cache-", dir=out_dir.parent))
    try:
        ds = datasets.Dataset.from_generator(
            generate,
            features=features(schema),
            gen_kwargs={
                "path": str(path),
                "fields": tuple((f.name, f.kind, f.width) for f in schema),
            },
            cache_dir=str(cache),
        )
        ds.save_to_disk(str(out_dir))
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def open_dataset(out_dir: Path) -> datasets.Dataset:
    return datasets.load_from_disk(str(out_dir)).with_format("numpy")


def scan(out_dir: Path, variant: str, schema: Schema) -> Iterator[Record]:
    yield from open_dataset(out_dir)


def open_random(out_dir: Path, variant: str, schema: Schema) -> tuple[int, Callable[[int], Record]]:
    ds = open_dataset(out_dir)
    return len(ds), ds.__getitem__


def loader(out_dir: Path, variant: str, schema: Schema) -> Loader:
    mode = "map-style Dataset.with_format('numpy'), DataLoader shuffle=True"
    return Loader(open_dataset(out_dir), mode, shuffle=True)


def stores(variant: str, schema: Schema) -> str:
    cols = ", ".join(f"{f.name}: {feature(f)}" for f in schema)
    return f"Arrow IPC shards via save_to_disk, uncompressed; {cols}"


PEER = Peer(
    name="hf_datasets",
    distributions=["datasets", "pyarrow"],
    variants=["none"],
    pack=pack,
    scan=scan,
    open_random=open_random,
    loader=loader,
    stores=stores,
    notes=[
        "Pack time includes from_generator's own Arrow cache write plus save_to_disk's copy.",
        "load_from_disk memory-maps the Arrow files: mapped pages count in RSS once touched.",
    ],
)

if __name__ == "__main__":
    raise SystemExit(main(PEER))
