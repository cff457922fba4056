"""Column-wise views of a batch of decoded records, for the passes that summarise them.

Statistics and schema inference look at every value of every record. Walking each record in
Python costs a few microseconds per record, as much as parsing it; walking a batch column by
column leaves the per-value work to C (``map``, ``Counter``, ``itemgetter``), so on short text
records the two passes together cost a fraction of that.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Any


def group_by_type(values: list[Any]) -> dict[type, list[Any]]:
    """``values`` split by exact type, in order of first appearance (one pass in C if uniform)."""
    kinds = set(map(type, values))
    if len(kinds) == 1:
        return {kinds.pop(): values}
    groups: dict[type, list[Any]] = {}
    for value in values:
        kind = type(value)
        group = groups.get(kind)
        if group is None:
            group = groups[kind] = []
        group.append(value)
    return groups


def object_columns(objects: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """For each key (in order of first appearance), the values it holds across ``objects``."""
    if not objects:
        return {}
    keys = list(objects[0])
    # The common case, one record shape: if every object has each of the first object's keys
    # (no KeyError) and no more (the key counts add up), all have exactly those keys.
    if sum(map(len, objects)) == len(objects) * len(keys):
        try:
            return {key: list(map(itemgetter(key), objects)) for key in keys}
        except KeyError:
            pass
    columns: dict[str, list[Any]] = {}
    for obj in objects:
        for key, value in obj.items():
            column = columns.get(key)
            if column is None:
                column = columns[key] = []
            column.append(value)
    return columns


def list_items(lists: list[list[Any]]) -> list[Any]:
    """The items of every list, concatenated."""
    return list(chain.from_iterable(lists))


class Column:
    """The values one field path holds across a batch of records (one per record that has
    it), split by type, into object fields and into list items once, for every pass."""

    __slots__ = ("_fields", "_groups", "_items", "values")

    def __init__(self, values: list[Any]) -> None:
        self.values = values
        self._groups: dict[type, list[Any]] | None = None
        self._fields: dict[str, Column] | None = None
        self._items: Column | None = None

    def __len__(self) -> int:
        return len(self.values)

    @property
    def groups(self) -> dict[type, list[Any]]:
        """The values by exact type, in order of first appearance."""
        if self._groups is None:
            self._groups = group_by_type(self.values)
        return self._groups

    @property
    def fields(self) -> dict[str, Column]:
        """For each key of the object values, the column of what it holds."""
        if self._fields is None:
            objects = self.groups.get(dict, [])
            self._fields = {key: Column(found) for key, found in object_columns(objects).items()}
        return self._fields

    @property
    def items(self) -> Column:
        """The items of all list values, as one column."""
        if self._items is None:
            self._items = Column(list_items(self.groups.get(list, [])))
        return self._items


class BatchedPass:
    """A pass over records that folds them in a batch at a time.

    ``add`` only keeps the record until ``BATCH_RECORDS`` are waiting (or ``drain`` is called);
    ``add_many`` folds a whole batch at once, ``add_column`` a batch several passes share.
    Subclasses implement ``_fold``.
    """

    BATCH_RECORDS = 4096

    def __init__(self) -> None:
        self.records = 0
        self._pending: list[Any] = []

    def add(self, record: Any) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.BATCH_RECORDS:
            self.drain()

    def add_many(self, records: list[Any]) -> None:
        """Fold in a batch of records (the cheap way), after any waiting ones."""
        self.add_column(Column(records))

    def add_column(self, records: Column) -> None:
        """Fold in a batch of records already in a Column (shared with other passes)."""
        self.drain()
        if len(records):
            self.records += len(records)
            self._fold(records)

    def drain(self) -> None:
        """Fold in the waiting records; afterwards no record is referenced any more."""
        pending = self._pending
        if pending:
            self._pending = []
            self.records += len(pending)
            self._fold(Column(pending))

    def _fold(self, records: Column) -> None:
        raise NotImplementedError
