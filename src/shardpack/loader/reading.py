"""Reading one consumer's share of an epoch: epoch positions (or batches of them) -> records,
each needed block decompressed once while it is needed and dropped after its last use.

Slabs of a few thousand records are located at a time (vectorised); the next slab is located
before the current one is read, so a block still needed by the next slab stays decoded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..packfile.reader import PackedFile
from .source import BlockMap, RecordFinisher

_SOURCE_STRIDE = 1 << 40  # block keys: source * stride + block


@dataclass(frozen=True)
class Slab:
    """Records to read, in order (``sources``, ``records``); ``batched``: grouped into batches
    of ``sizes`` records, ``rows`` placing each record in its batch's rows (packing)."""

    sources: np.ndarray
    records: np.ndarray
    batched: bool = False
    sizes: np.ndarray | None = None
    rows: np.ndarray | None = None


class EpochReader:
    """Records of several sources by (source, record id): decoding whole blocks (kept until
    their last use) when this reader wants a good share of each block, else one record at a
    time through each file's block cache."""

    def __init__(
        self,
        files: Sequence[list[PackedFile]],
        finisher: RecordFinisher,
        *,
        whole_blocks: bool,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.maps = [BlockMap(f) for f in files]
        self.finisher = finisher
        self.whole_blocks = whole_blocks
        self.columns = columns  # decoded (where the reader can skip fields), then kept

    def _where(self, slab: Slab) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(block key, file, block in file, slot) per record; the slot is in the block when
        reading whole blocks, else in the file."""
        n = len(slab.records)
        keys, files, local, slots = (np.empty(n, dtype=np.int64) for _ in range(4))
        for s in np.unique(slab.sources).tolist():
            mask = slab.sources == s
            bmap = self.maps[s]
            ids = slab.records[mask]
            blocks = bmap.block_of(ids)
            f = bmap.block_file[blocks]
            keys[mask] = s * _SOURCE_STRIDE + blocks
            files[mask] = f
            local[mask] = blocks - bmap.file_first_block[f]
            first = bmap.block_first[blocks] if self.whole_blocks else bmap.file_first_record[f]
            slots[mask] = ids - first
        return keys, files, local, slots

    def read(self, slabs: Iterator[Slab], progress: Any) -> Iterator[Any]:
        """Units in order: a record, or a list of records (a list of rows of records when the
        slab has ``rows``). ``progress.yielded`` counts units handed out."""
        decoded: dict[int, list[Any]] = {}
        current = next(slabs, None)
        ahead_keys = np.zeros(0, dtype=np.int64)
        ahead = next(slabs, None) if current is not None else None
        where = self._where(current) if current is not None else None
        while current is not None and where is not None:
            ahead_where = self._where(ahead) if ahead is not None else None
            ahead_keys = ahead_where[0] if ahead_where is not None else np.zeros(0, np.int64)
            keys = where[0]
            # a block is dropped after its last use in this slab, unless the next slab needs it
            last = np.zeros(len(keys), dtype=bool)
            _, first_of_reversed = np.unique(keys[::-1], return_index=True)
            last[len(keys) - 1 - first_of_reversed] = True
            drop = last & ~np.isin(keys, ahead_keys)
            records = self._records(current, where, drop, decoded)
            yield from _units(current, records, progress)
            current, where = ahead, ahead_where
            ahead = next(slabs, None) if current is not None else None

    def _records(
        self,
        slab: Slab,
        where: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        drop: np.ndarray,
        decoded: dict[int, list[Any]],
    ) -> Iterator[Any]:
        finish = self.finisher.finish
        maps = self.maps
        for s, record_id, key, f, local, slot, last in zip(
            slab.sources.tolist(),
            slab.records.tolist(),
            *(a.tolist() for a in where),
            drop.tolist(),
            strict=True,
        ):
            packed = maps[s].files[f]
            if self.whole_blocks:
                values = decoded.get(key)
                if values is None:
                    values = decoded[key] = packed.block_records(local, columns=self.columns)
                record = values[slot]
                if last:
                    del decoded[key]
            else:
                record = packed.record(slot, columns=self.columns)
            yield finish(record, record_id)


def _units(slab: Slab, records: Iterator[Any], progress: Any) -> Iterator[Any]:
    if not slab.batched or slab.sizes is None:
        for record in records:
            progress.yielded += 1
            yield record
        return
    offset = 0
    for size in slab.sizes.tolist():
        batch = [next(records) for _ in range(size)]
        if slab.rows is not None:
            rows = slab.rows[offset : offset + size].tolist()
            grouped: list[list[Any]] = [[] for _ in range(max(rows) + 1 if rows else 0)]
            for row, record in zip(rows, batch, strict=True):
                grouped[row].append(record)
            batch = grouped
        offset += size
        progress.yielded += 1
        yield batch


def first_use_blocks(
    slabs: Iterator[Slab], source: int, blocks: BlockMap
) -> Iterator[tuple[int, int]]:
    """(file, block in file) of ``source`` in the order the slabs first need them: the plan a
    remote source fetches ahead (pure numpy, so it runs in the read-ahead thread)."""
    seen: set[int] = set()
    for slab in slabs:
        needed = blocks.block_of(slab.records[slab.sources == source])
        _, firsts = np.unique(needed, return_index=True)
        for block in needed[np.sort(firsts)].tolist():
            if block not in seen:  # a block belongs to one window: needed once an epoch
                seen.add(block)
                f = int(blocks.block_file[block])
                yield f, block - int(blocks.file_first_block[f])
