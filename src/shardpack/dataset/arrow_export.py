"""A packed dataset as Arrow, pandas or Hugging Face data, and as Parquet or Arrow IPC files.

Two passes over the records: the first infers one Arrow type per field (``arrow_table``), the
second builds record batches of that schema, so a Parquet file of any size is written with the
memory of one batch. Files are written beside their path, fsynced and renamed into place, as
JSONL is. pyarrow, pandas and datasets are imported here only, when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import OptionError, SchemaError
from ..storage.atomic import atomic_file, refuse_inputs_as_output
from .arrow_table import Inference, arrow_schema, record_batches

BATCH_RECORDS = 1024  # records per Arrow record batch (and Parquet row group)
PARQUET_SUFFIXES = (".parquet", ".pq")
ARROW_SUFFIXES = (".arrow", ".feather", ".ipc")


def require(module: str, extra: str) -> Any:
    """``module`` imported, or an OptionError that says which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OptionError(f"this needs {module} (pip install 'shardpack[{extra}]')") from None


def infer_schema(records: Iterable[Any], source: str = "records") -> Any:
    """The Arrow schema of ``records`` (a SchemaError names a record that does not fit)."""
    require("pyarrow", "arrow")
    return arrow_schema(Inference(source).add_all(records))


def iter_batches(
    scan: Callable[[], Iterator[list[Any]]], source: str = "records"
) -> tuple[Any, Iterator[Any]]:
    """The schema of the records ``scan()`` yields (lists of them), and their record batches
    (``scan`` is called twice: once to infer the schema, once to build the batches)."""
    require("pyarrow", "arrow")
    inference = Inference(source)
    for records in scan():
        inference.add_all(records)
    schema = arrow_schema(inference)
    return schema, record_batches(scan(), schema, source)


def dataset_scan(dataset: Any) -> Callable[[], Iterator[list[Any]]]:
    return lambda: dataset.iter_batches(BATCH_RECORDS)


def to_arrow(dataset: Any) -> Any:
    """The dataset's records as one ``pyarrow.Table``."""
    pa = require("pyarrow", "arrow")
    schema, batches = iter_batches(dataset_scan(dataset), _name(dataset))
    return pa.Table.from_batches(list(batches), schema=schema)


def to_pandas(dataset: Any) -> Any:
    """The dataset's records as a ``pandas.DataFrame`` (through Arrow: arrays are numpy
    arrays, integer columns with nulls keep Python ints rather than turning into floats)."""
    require("pandas", "pandas")
    return to_arrow(dataset).to_pandas(integer_object_nulls=True)


def to_hf(dataset: Any) -> Any:
    """The dataset's records as a ``datasets.Dataset`` (in memory, from the Arrow table)."""
    hf = require("datasets", "hf")
    return hf.Dataset(hf.table.InMemoryTable(to_arrow(dataset)))


def write_table_file(
    dataset: Any,
    output: str,
    progress: Callable[[int], None] | None = None,
    *,
    sources: Sequence[str] = (),
    compression: str = "zstd",
) -> int:
    """Write the records to ``output`` as Parquet (``.parquet``/``.pq``) or Arrow IPC
    (``.arrow``/``.feather``/``.ipc``), atomically; returns the record count."""
    pa = require("pyarrow", "arrow")
    refuse_inputs_as_output(output, sources, "unpack output")
    schema, batches = iter_batches(dataset_scan(dataset), _name(dataset))
    parquet = output.lower().endswith(PARQUET_SUFFIXES)
    if parquet:
        _check_parquet_schema(schema, _name(dataset))
    count = 0
    with atomic_file(Path(output)) as stream:
        sink = pa.PythonFile(stream, mode="w")
        if parquet:
            import pyarrow.parquet as pq

            writer: Any = pq.ParquetWriter(sink, schema, compression=compression)
        else:
            options = pa.ipc.IpcWriteOptions(compression=compression)
            writer = pa.ipc.new_file(sink, schema, options=options)
        with writer:
            for batch in batches:
                writer.write_batch(batch)
                count += batch.num_rows
                if progress is not None:
                    progress(count)
    return count


def is_table_path(output: str) -> bool:
    """Whether ``output`` names a Parquet or Arrow IPC file (by its extension)."""
    return output.lower().endswith(PARQUET_SUFFIXES + ARROW_SUFFIXES)


def _check_parquet_schema(schema: Any, source: str) -> None:
    """Parquet cannot store an object with no fields (``{}`` in every record)."""
    import pyarrow as pa

    def empty_struct(kind: Any) -> bool:
        if pa.types.is_struct(kind):
            return kind.num_fields == 0 or any(empty_struct(f.type) for f in kind)
        if pa.types.is_list(kind):
            return empty_struct(kind.value_type)
        return False

    for field in schema:
        if empty_struct(field.type):
            raise SchemaError(
                "holds only empty objects ({}), which Parquet cannot store (an Arrow IPC "
                "file .arrow can)",
                path=source,
                json_path=f"$.{field.name}",
            )


def _name(dataset: Any) -> str:
    paths = getattr(dataset, "paths", None)
    return str(paths[0]) if paths and len(paths) == 1 else "dataset"
