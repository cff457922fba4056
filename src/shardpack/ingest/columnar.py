"""Parquet and Arrow IPC (Feather v2) inputs: what a file is (by its magic bytes, not its name),
its pieces (Parquet row groups, Arrow record batches) with their row counts and sizes, and the
rows of some pieces as records (``arrow_values``).

The driver reads a file's footer only (``piece_rows``); a worker reads the pieces of its own unit
(``read_records``), from a local path or through an fsspec file object. pyarrow is an optional
extra (``pip install 'shardpack[arrow]'``), imported only when such a file is packed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import InputError, OptionError
from ..storage.urls import is_remote, reason_of, url_to_fs

PARQUET = "parquet"
ARROW = "arrow"
JSONL = "jsonl"
PARQUET_MAGIC = b"PAR1"
ARROW_MAGIC = b"ARROW1"
HEAD_BYTES = 6  # enough for every magic number sniffed here


def columnar_kind(head: bytes) -> str | None:
    """``"parquet"`` or ``"arrow"`` when a file's first bytes say so, else None (JSONL)."""
    if head.startswith(PARQUET_MAGIC):
        return PARQUET
    if head.startswith(ARROW_MAGIC):
        return ARROW
    return None


def require_pyarrow(what: str) -> Any:
    """The pyarrow module, or an OptionError that says what to install."""
    try:
        import pyarrow
    except ImportError:
        raise OptionError(f"{what} needs pyarrow (pip install 'shardpack[arrow]')") from None
    return pyarrow


def piece_rows(
    location: str, kind: str, storage_options: dict[str, Any] | None = None
) -> list[int]:
    """The row count of each piece of a Parquet or Arrow IPC file, in order: row groups from
    the Parquet footer; record batches of an Arrow IPC file, whose row counts are in the
    batches themselves (a local file is memory-mapped, so that costs no read)."""
    with _opened(location, kind, storage_options) as reader:
        if kind == PARQUET:
            meta = reader.metadata
            return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        return [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]


def read_records(
    location: str,
    kind: str,
    source: str,
    pieces: Sequence[int],
    skip: int = 0,
    rows: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The records of ``pieces`` (row groups or batches, in order): ``rows`` of them after the
    first ``skip`` (a unit cut at a shard boundary takes part of a piece)."""
    with _opened(location, kind, storage_options) as reader:
        try:
            if kind == PARQUET:
                table = reader.read_row_groups(list(pieces), use_threads=False)
            else:
                import pyarrow as pa

                batches = [reader.get_batch(i) for i in pieces]
                table = pa.Table.from_batches(batches, schema=reader.schema)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {kind} data: {reason_of(exc)}", path=source) from exc
        if skip or rows is not None:
            table = table.slice(skip, rows)
        from .arrow_values import table_records  # imported with pyarrow, when needed

        return table_records(table, source)


@contextmanager
def _opened(location: str, kind: str, storage_options: dict[str, Any] | None) -> Iterator[Any]:
    """A ``ParquetFile`` or ``RecordBatchFileReader`` on a local path or a URL."""
    pa = require_pyarrow(f"{location}: a {kind} input")
    handle: Any = None
    try:
        if is_remote(location):
            fs, fs_path = url_to_fs(location, storage_options)
            handle = fs.open(fs_path, "rb")
        else:
            path = location.removeprefix("file://")
            handle = pa.memory_map(path) if kind == ARROW else pa.OSFile(path, "rb")
        if kind == PARQUET:
            import pyarrow.parquet as pq

            reader: Any = pq.ParquetFile(handle)
        else:
            reader = pa.ipc.open_file(handle)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        if handle is not None:
            handle.close()
        raise InputError(f"cannot open {kind} input: {reason_of(exc)}", path=location) from exc
    try:
        yield reader
    finally:
        handle.close()
