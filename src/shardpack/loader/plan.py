"""One epoch of a training dataset as positions -> (source, record): filters, repeats and
mixtures over ``EpochOrder``. Pure numpy: a function of the sources' indexes, seed and epoch.

Each source is an endless stream of its own epochs (stream position ``q`` reads position
``q % n`` of the source's epoch ``q // n``, over the ``n`` records its filter keeps). Epoch ``e``
of the dataset takes stream positions ``[e * s, (e + 1) * s)`` of a source that gives ``s``
samples per epoch: a source repeated (``s > n``) goes round whole passes, a subsampled one
(``s < n``) carries on next epoch where this one stopped, so every record comes in turn.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from ..errors import OptionError
from .mixture import MixtureOrder
from .sampling import DEFAULT_WINDOW_BLOCKS, EpochOrder, groups


@dataclass(frozen=True, eq=False)
class SourceIndex:
    """What the loader knows of one source before reading it: records per block, the records a
    filter keeps (sorted ids; ``None`` keeps all) and tokens per record (for token budgets)."""

    block_counts: np.ndarray
    kept: np.ndarray | None = None
    lengths: np.ndarray | None = None

    @property
    def records(self) -> int:
        return int(self.block_counts.sum())

    @property
    def size(self) -> int:
        """Records one pass over the source reads (those the filter keeps)."""
        return self.records if self.kept is None else len(self.kept)

    def kept_counts(self) -> np.ndarray:
        """Kept records per block."""
        if self.kept is None:
            return self.block_counts
        firsts = np.concatenate(([0], np.cumsum(self.block_counts)))[:-1]
        blocks = np.searchsorted(firsts, self.kept, side="right") - 1
        return np.bincount(blocks, minlength=len(self.block_counts)).astype(np.int64)

    @functools.cached_property
    def digest(self) -> str | None:
        """A short digest of the kept ids (state files check it), ``None`` without a filter."""
        if self.kept is None:
            return None
        return xxhash.xxh64(np.ascontiguousarray(self.kept, dtype="<i8").tobytes()).hexdigest()


class SourceStream:
    """A source's records as an endless stream of its shuffled epochs."""

    def __init__(
        self,
        index: SourceIndex,
        *,
        key: Sequence[int],
        seed: int,
        shuffle: bool,
        window_blocks: int,
    ) -> None:
        self.index = index
        self.size = index.size
        self.key, self.seed, self.shuffle, self.window_blocks = (
            tuple(key),
            seed,
            shuffle,
            window_blocks,
        )
        self._counts = index.kept_counts()
        self._orders: dict[int, EpochOrder] = {}

    def order(self, epoch: int) -> EpochOrder:
        order = self._orders.get(epoch)
        if order is None:
            if len(self._orders) >= 2:  # a reader crosses at most one pass boundary at a time
                self._orders.pop(next(iter(self._orders)))
            order = self._orders[epoch] = EpochOrder(
                self._counts,
                seed=self.seed,
                epoch=epoch,
                shuffle=self.shuffle,
                window_blocks=self.window_blocks,
                key=self.key,
            )
        return order

    def records_at(self, stream_positions: np.ndarray) -> np.ndarray:
        """Record ids (in the source) at the given stream positions."""
        passes, positions = np.divmod(stream_positions, self.size)
        ids = np.empty_like(stream_positions)
        for epoch, where in groups(passes):
            ids[where] = self.order(epoch).records_at(positions[where])
        kept = self.index.kept
        return ids if kept is None else kept[ids]


class EpochPlan:
    """Epoch ``epoch`` of one source or a weighted mixture: ``total`` positions, each read from
    ``(source, record)`` (``locate``). ``samples[s]``: positions of source ``s``."""

    def __init__(
        self,
        indexes: Sequence[SourceIndex],
        *,
        samples: Sequence[int],
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        window_blocks: int = DEFAULT_WINDOW_BLOCKS,
    ) -> None:
        if len(samples) != len(indexes):
            raise OptionError(f"{len(samples)} sample counts for {len(indexes)} sources")
        for n, (index, count) in enumerate(zip(indexes, samples, strict=True)):
            if count and not index.size:
                where = f"source {n}" if len(indexes) > 1 else "the dataset"
                raise OptionError(f"{where} has no records to read (does the filter keep any?)")
        self.samples = np.asarray(samples, dtype=np.int64)
        self.total = int(self.samples.sum())
        self.epoch = epoch
        several = len(indexes) > 1
        self.streams = [
            SourceStream(
                index,
                key=(n,) if several else (),  # one source keeps the plain dataset's order
                seed=seed,
                shuffle=shuffle,
                window_blocks=window_blocks,
            )
            for n, index in enumerate(indexes)
        ]
        self.mixture = (
            MixtureOrder(self.samples, seed=seed, epoch=epoch, shuffle=shuffle) if several else None
        )

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, record id in that source) of each epoch position."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.total):
            raise IndexError(f"epoch positions must lie in [0, {self.total})")
        if self.mixture is None:
            source = np.zeros_like(positions)
            index = positions
        else:
            source, index = self.mixture.sources_at(positions)
        records = np.empty_like(positions)
        for s, where in groups(source):
            stream = self.epoch * int(self.samples[s]) + index[where]
            records[where] = self.streams[s].records_at(stream)
        return source, records

    def lengths_at(self, positions: np.ndarray) -> np.ndarray:
        """Tokens of the record at each position (the sources' ``lengths``)."""
        source, records = self.locate(positions)
        out = np.zeros(len(positions), dtype=np.int64)
        for s, where in groups(source):
            lengths = self.streams[s].index.lengths
            if lengths is None:
                raise OptionError("token lengths are needed but were not indexed")
            out[where] = lengths[records[where]]
        return out
