"""Batches as columns (``Dataset.iter_batches(as_columns=True)``): one dict per batch of each
field's values.

Text blocks whose records are objects of the same keys in the same order come from the C
decoder as columns already, with no dict made for any record (``PackedFile.iter_block_columns``);
they are cut into batches a column at a time. Any other block (arrays, records of other shapes,
no C module) is made of records, and a batch that holds such records is built from records,
``batch_columns`` below: the batches are the same either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from ..errors import OptionError
from ..format.strings import BlockColumns


def batch_columns(records: list[Any]) -> dict[str, Any]:
    """A batch of object records as one dict of columns: each field (in order of first
    appearance) -> its values, None where a record lacks the field. A column of numpy arrays of
    one shape and dtype is stacked into one array; every other column is a list."""
    if not records:
        return {}
    if set(map(type, records)) != {dict}:
        kinds = sorted({type(r).__name__ for r in records} - {"dict"})
        raise OptionError(f"as_columns needs object records, got {', '.join(kinds)}")
    keys = list(records[0])
    columns: dict[str, Any]
    # one record shape (the common case): every record has the first one's keys and no more
    if sum(map(len, records)) == len(records) * len(keys):
        try:
            columns = {key: list(map(itemgetter(key), records)) for key in keys}
        except KeyError:
            columns = _ragged_columns(records)
    else:
        columns = _ragged_columns(records)
    for key, values in list(columns.items()):
        if type(values[0]) is np.ndarray:
            first = values[0]
            if all(
                type(v) is np.ndarray and v.shape == first.shape and v.dtype == first.dtype
                for v in values
            ):
                columns[key] = np.stack(values)  # type: ignore[assignment]
    return columns


def _ragged_columns(records: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = list(dict.fromkeys(chain.from_iterable(records)))
    return {key: [record.get(key) for record in records] for key in keys}


def cut_batches(records: list[Any], batch_size: int) -> tuple[list[list[Any]], list[Any]]:
    """The full batches of ``batch_size`` at the start of ``records``, and the records after
    (``records`` itself where no batch is full yet: no copy while records wait)."""
    if len(records) < batch_size:
        return [], records
    full = len(records) - len(records) % batch_size
    return [records[i : i + batch_size] for i in range(0, full, batch_size)], records[full:]


def _as_records(keys: tuple[str, ...], columns: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]


def column_batches(
    blocks: Iterable[list[Any] | BlockColumns], batch_size: int, drop_last: bool
) -> Iterator[dict[str, Any]]:
    """``blocks`` (each its records, or its columns) as batches of ``batch_size`` records in
    columns, exactly as ``batch_columns`` makes them from the same records."""
    keys: tuple[str, ...] | None = None  # the columns being cut, while no records are pending
    columns: list[list[Any]] = []
    start = 0  # the first row of ``columns`` not yet in a batch
    records: list[Any] = []  # pending records, while a batch holds some
    for block in blocks:
        if type(block) is tuple and not records and (keys is None or block[0] == keys):
            if keys is None:
                keys, columns = block[0], block[1]
            else:
                if start:
                    columns = [column[start:] for column in columns]
                for column, more in zip(columns, block[1], strict=True):
                    column.extend(more)
            start = 0
            while len(columns[0]) - start >= batch_size:
                yield {
                    key: column[start : start + batch_size]
                    for key, column in zip(keys, columns, strict=True)
                }
                start += batch_size
            continue
        if keys is not None:  # columns pending: they join the records, in order
            records = _as_records(keys, [column[start:] for column in columns])
            keys, columns, start = None, [], 0
        records += _as_records(*block) if type(block) is tuple else block
        batches, records = cut_batches(records, batch_size)
        yield from map(batch_columns, batches)
    if drop_last:
        return
    if keys is not None and start < len(columns[0]):
        yield {key: column[start:] for key, column in zip(keys, columns, strict=True)}
    elif records:
        yield batch_columns(records)
