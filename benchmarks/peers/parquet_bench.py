"""Benchmark Apache Parquet (pyarrow) as a peer of shardpack.

Stores one Parquet file: text as ``string``, ``input_ids`` as ``list<int32>``, the top-k fields as
``list<fixed_size_list<int32|float32, k>>`` and other JSON values as JSON text. Row groups hold
about 1 MiB of uncompressed data, so a random lookup decodes one small row group (Parquet has no
per-row index). Variants: column compression zstd (level 3, as shardpack, MDS, litdata and
ArrayRecord use; pyarrow's own default is level 1), lz4, none.

    python parquet_bench.py --input kd.jsonl --workdir /tmp/pq --repeats 3
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import (
    F32_2D,
    I32,
    I32_2D,
    Field,
    Loader,
    Peer,
    Record,
    Schema,
    iter_batches,
    iter_records,
    main,
)

ROW_GROUP_BYTES = 1 << 20
CODECS = {"zstd": "zstd", "lz4": "lz4", "none": "none"}
LEVELS = {"zstd": 3}  # like the other zstd rows; pyarrow would pick 1
FILE_NAME = "data.parquet"


def arrow_type(f: Field) -> pa.DataType:
    """Arrow type of one field."""
    if f.kind in (I32_2D, F32_2D):
        inner = pa.int32() if f.kind == I32_2D else pa.float32()
        return pa.list_(pa.list_(inner, f.width))
    if f.is_array:
        return pa.list_(pa.int32() if f.kind == I32 else pa.float32())
    return pa.string()


def arrow_schema(schema: Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, arrow_type(f), nullable=False) for f in schema])


def build_column(values: list, f: Field) -> pa.Array:
    """Build one Arrow column from typed values without going through Python lists."""
    if not f.is_array:
        return pa.array(values, pa.string())
    lengths = np.fromiter((len(v) for v in values), np.int32, len(values))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    flat = pa.array(np.concatenate([v.reshape(-1) for v in values]))
    if f.width:
        flat = pa.FixedSizeListArray.from_arrays(flat, f.width)
    return pa.ListArray.from_arrays(offsets, flat)


def build_table(records: list[Record], schema: Schema) -> pa.Table:
    columns = [build_column([r[f.name] for r in records], f) for f in schema]
    return pa.Table.from_arrays(columns, schema=arrow_schema(schema))


def rows_per_group(path: Path, schema: Schema) -> int:
    """Rows per row group so that one group is about ROW_GROUP_BYTES uncompressed."""
    sample = list(itertools.islice(iter_records(path, schema), 64))
    per_row = build_table(sample, schema).nbytes / max(1, len(sample))
    return max(1, int(ROW_GROUP_BYTES // per_row))


def pack(path: Path, out_dir: Path, variant: str, schema: Schema) -> None:
    out_dir.mkdir(parents=True)
    group = rows_per_group(path, schema)
    with pq.ParquetWriter(
        out_dir / FILE_NAME,
        arrow_schema(schema),
        compression=CODECS[variant],
        compression_level=LEVELS.get(variant),
    ) as w:
        for batch in iter_batches(path, schema, group):
            w.write_table(build_table(batch, schema), row_group_size=group)


def column_rows(column: pa.ChunkedArray, f: Field) -> list:
    """Per-row values of one column: numpy views for arrays, str for text."""
    arr = column.combine_chunks()
    if not f.is_array:
        return arr.to_pylist()
    offsets = arr.offsets.to_numpy()
    flat = arr.values.values.to_numpy() if f.width else arr.values.to_numpy()
    if f.width:
        flat = flat.reshape(-1, f.width)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(arr))]


def table_rows(table: pa.Table, schema: Schema) -> list[Record]:
    columns = [column_rows(table.column(f.name), f) for f in schema]
    names = [f.name for f in schema]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def scan(out_dir: Path, variant: str, schema: Schema) -> Iterator[Record]:
    pf = pq.ParquetFile(out_dir / FILE_NAME)
    for group in range(pf.num_row_groups):
        yield from table_rows(pf.read_row_group(group), schema)


class RowGroupIndex:
    """Map-style access: locate the row group of a row, decode that group, return the row."""

    def __init__(self, out_dir: Path, schema: Schema) -> None:
        self.file = pq.ParquetFile(out_dir / FILE_NAME)
        self.schema = schema
        sizes = [self.file.metadata.row_group(g).num_rows for g in range(self.file.num_row_groups)]
        self.starts = list(itertools.accumulate(sizes, initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    def group_rows(self, group: int) -> list[Record]:
        return table_rows(self.file.read_row_group(group), self.schema)

    def __getitem__(self, index: int) -> Record:
        group = bisect.bisect_right(self.starts, index) - 1
        table = self.file.read_row_group(group).slice(index - self.starts[group], 1)
        return table_rows(table, self.schema)[0]


def open_random(out_dir: Path, variant: str, schema: Schema) -> tuple[int, Callable[[int], Record]]:
    index = RowGroupIndex(out_dir, schema)
    return len(index), index.__getitem__


def loader(out_dir: Path, variant: str, schema: Schema) -> Loader:
    """Iterable dataset: row groups in random order, rows shuffled within each group."""
    from torch.utils.data import IterableDataset

    class ShuffledRowGroups(IterableDataset):
        def __init__(self) -> None:
            self.index = RowGroupIndex(out_dir, schema)

        def __iter__(self) -> Iterator[Record]:
            groups = list(range(self.index.file.num_row_groups))
            random.shuffle(groups)
            for group in groups:
                rows = self.index.group_rows(group)
                random.shuffle(rows)
                yield from rows

    mode = "IterableDataset over row groups (~1 MiB) in shuffled order, rows shuffled per group"
    return Loader(ShuffledRowGroups(), mode, shuffle=False)


def stores(variant: str, schema: Schema) -> str:
    cols = ", ".join(f"{f.name}: {arrow_type(f)}" for f in schema)
    level = f" level {LEVELS[variant]}" if variant in LEVELS else ""
    return f"1 Parquet file, row groups ~1 MiB uncompressed, compression={variant}{level}; {cols}"


PEER = Peer(
    name="parquet",
    distributions=["pyarrow"],
    variants=list(CODECS),
    pack=pack,
    scan=scan,
    open_random=open_random,
    loader=loader,
    stores=stores,
    notes=[
        "pyarrow.parquet.ParquetWriter; zstd at level 3 (pyarrow's default: 1); "
        "no dictionary tuning."
    ],
)

if __name__ == "__main__":
    raise SystemExit(main(PEER))
