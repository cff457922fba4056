"""Benchmark Google ArrayRecord (``array-record``) as a peer of shardpack.

ArrayRecord stores opaque byte records; it has no schema. Each record here is the typed record
(str fields, numpy int32/float32 arrays, [len][k] arrays kept 2-D) serialized with ``pickle``
protocol 5. Written with ``ArrayRecordWriter`` and ``group_size:1``, the setting that
``ArrayRecordDataSource`` requires for random access (each record is its own compressed chunk).
Full scan uses ``ArrayRecordReader`` sequentially (its default readahead); random access and the
DataLoader use ``ArrayRecordDataSource``. Variants: ``zstd`` (writer default, level 3) and ``none``.

    python array_record_bench.py --input kd.jsonl --workdir /tmp/ar --repeats 3
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from array_record.python.array_record_data_source import ArrayRecordDataSource
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from common import Loader, Peer, Record, Schema, iter_records, main

OPTIONS = {"zstd": "group_size:1,zstd:3", "none": "group_size:1,uncompressed"}
FILE_NAME = "data.array_record"


def pack(path: Path, out_dir: Path, variant: str, schema: Schema) -> None:
    out_dir.mkdir(parents=True)
    writer = ArrayRecordWriter(str(out_dir / FILE_NAME), OPTIONS[variant])
    try:
        for record in iter_records(path, schema):
            writer.write(pickle.dumps(record, protocol=5))
    finally:
        writer.close()


def scan(out_dir: Path, variant: str, schema: Schema) -> Iterator[Record]:
    reader = ArrayRecordReader(str(out_dir / FILE_NAME))
    try:
        for _ in range(reader.num_records()):
            yield pickle.loads(reader.read())
    finally:
        reader.close()


class PickledRecords:
    """Map-style dataset over ArrayRecordDataSource that unpickles records."""

    def __init__(self, out_dir: Path) -> None:
        self.source = ArrayRecordDataSource(str(out_dir / FILE_NAME))

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Record:
        return pickle.loads(self.source[index])

    def __getitems__(self, indices: Sequence[int]) -> list[Record]:
        return [pickle.loads(b) for b in self.source.__getitems__(indices)]


def open_random(out_dir: Path, variant: str, schema: Schema) -> tuple[int, Callable[[int], Record]]:
    ds = PickledRecords(out_dir)
    return len(ds), ds.__getitem__


def loader(out_dir: Path, variant: str, schema: Schema) -> Loader:
    mode = "map-style ArrayRecordDataSource (batched __getitems__), DataLoader shuffle=True"
    return Loader(PickledRecords(out_dir), mode, shuffle=True)


def stores(variant: str, schema: Schema) -> str:
    kinds = ", ".join(f"{f.name}: {f'numpy {f.dtype}' if f.is_array else 'str'}" for f in schema)
    return f"1 ArrayRecord file '{OPTIONS[variant]}', pickled dict per record; {kinds}"


PEER = Peer(
    name="array_record",
    distributions=["array-record"],
    variants=list(OPTIONS),
    pack=pack,
    scan=scan,
    open_random=open_random,
    loader=loader,
    stores=stores,
    notes=["ArrayRecord has no schema; pickle protocol 5 is this runner's choice of encoding."],
)

if __name__ == "__main__":
    raise SystemExit(main(PEER))
