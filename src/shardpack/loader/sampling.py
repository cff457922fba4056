"""Which record a training loader reads when, and who reads it: epoch order and partitioning.

Pure numpy (no torch), so the order and the rank/worker split are testable on their own; the
PyTorch datasets in ``shardpack.torch`` are thin layers over ``EpochOrder`` and ``Partition``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import OptionError

DEFAULT_WINDOW_BLOCKS = 16
UNEVEN_MODES = ("pad", "drop", "none")

# Seed-sequence tags keep the block permutation and each window's permutation independent streams.
_TAG_BLOCKS = 0
_TAG_WINDOW = 1


def groups(keys: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(key, indices of that key) for each distinct key, keys in increasing order (one sort, not
    one pass over all keys per key)."""
    if len(keys) and keys[0] == keys[-1] and (keys == keys[0]).all():
        return [(int(keys[0]), np.arange(len(keys)))]
    order = np.argsort(keys, kind="stable")
    cuts = np.flatnonzero(np.diff(keys[order])) + 1
    return [(int(keys[part[0]]), part) for part in np.split(order, cuts) if len(part)]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise OptionError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


class EpochOrder:
    """The record order of one epoch: blocks permuted, then records shuffled within windows.

    Position ``p`` (0 <= p < total) of the epoch maps to a dataset-wide record id. The order
    depends only on (block sizes, seed, epoch, shuffle, window_blocks, key), never on ranks or
    workers, so every consumer agrees on it. A window is ``window_blocks`` consecutive blocks of
    the permuted block order; its records are shuffled together, so a reader walking the epoch in
    order needs each block only while its window is current (one decompression per block).
    """

    def __init__(
        self,
        block_counts: Sequence[int] | np.ndarray,
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        window_blocks: int = DEFAULT_WINDOW_BLOCKS,
        key: Sequence[int] = (),
    ) -> None:
        if isinstance(window_blocks, bool) or not isinstance(window_blocks, (int, np.integer)):
            raise OptionError(f"window_blocks must be an integer, got {window_blocks!r}")
        if window_blocks < 1:
            raise OptionError(f"window_blocks must be >= 1, got {window_blocks}")
        self.seed = _check_seed(seed)
        self.epoch = _check_seed(epoch)
        self.shuffle = bool(shuffle)
        self.window_blocks = int(window_blocks)
        # ``key`` prefixes every random stream: sources of a mixture get independent orders
        self.key = tuple(int(k) for k in key)
        counts = np.asarray(block_counts, dtype=np.int64)
        self.block_counts = counts
        self.block_first = np.concatenate(([0], np.cumsum(counts)))[:-1].astype(np.int64)
        self.total = int(counts.sum())
        n_blocks = len(counts)
        if self.shuffle and n_blocks:
            rng = np.random.default_rng([*self.key, self.seed, self.epoch, _TAG_BLOCKS])
            self.block_order = rng.permutation(n_blocks).astype(np.int64)
        else:
            self.block_order = np.arange(n_blocks, dtype=np.int64)
        window_firsts = np.arange(0, n_blocks, self.window_blocks)
        sizes = (
            np.add.reduceat(counts[self.block_order], window_firsts)
            if n_blocks
            else np.zeros(0, np.int64)
        )
        self.window_starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        self._cached: tuple[int, np.ndarray] | None = None

    @property
    def window_count(self) -> int:
        return len(self.window_starts) - 1

    def window_blocks_of(self, window: int) -> np.ndarray:
        """The (dataset-wide) block numbers of ``window``, in epoch order."""
        w = self.window_blocks
        return self.block_order[window * w : (window + 1) * w]

    def window_records(self, window: int) -> np.ndarray:
        """Record ids of ``window`` in epoch order (positions window_starts[w] onwards)."""
        if self._cached is not None and self._cached[0] == window:
            return self._cached[1]
        blocks = self.window_blocks_of(window)
        counts = self.block_counts[blocks]
        # the blocks' record ranges, concatenated in window order (vectorised)
        offsets = np.repeat(self.block_first[blocks] - (np.cumsum(counts) - counts), counts)
        ids: np.ndarray = np.arange(int(counts.sum()), dtype=np.int64) + offsets
        if self.shuffle:
            rng = np.random.default_rng([*self.key, self.seed, self.epoch, _TAG_WINDOW, window])
            ids = np.asarray(rng.permutation(ids), dtype=np.int64)
        self._cached = (window, ids)
        return ids

    def windows_at(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.window_starts, positions, side="right") - 1

    def records_at(self, positions: np.ndarray | Sequence[int]) -> np.ndarray:
        """Record ids at the given epoch positions (any order; cheapest when grouped by window)."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.total):
            raise IndexError(f"epoch positions must lie in [0, {self.total})")
        ids = np.empty_like(positions)
        windows = self.windows_at(positions)
        for window, where in groups(windows):
            ids[where] = self.window_records(window)[positions[where] - self.window_starts[window]]
        return ids

    def all_records(self) -> np.ndarray:
        """The whole epoch order (for tests and small datasets: it is ``total`` integers)."""
        return self.records_at(np.arange(self.total))

    def block_of(self, record_ids: np.ndarray) -> np.ndarray:
        """The dataset-wide block number holding each record id."""
        return np.searchsorted(self.block_first, record_ids, side="right") - 1


@dataclass(frozen=True)
class Partition:
    """The epoch positions one consumer reads, in order: a rank's share, dealt to its workers.

    From ``start`` on, rank ``r`` of ``world_size`` takes positions ``start + r + j * world_size``
    (round robin, so after every rank has taken ``k`` records the epoch's first
    ``start + k * world_size`` positions are consumed, whatever the world size). A rank's stream
    is dealt to its DataLoader workers in turns of ``chunk`` records (the batch size), the order
    in which a DataLoader collects batches from its workers, so the batches a rank sees do not
    depend on the number of workers.

    Uneven splits (``total - start`` not a multiple of ``world_size``): ``pad`` gives every rank
    the longest share, the extra positions wrapping to the start of the epoch (a few records seen
    twice, like torch's DistributedSampler); ``drop`` gives every rank the shortest share (up to
    ``world_size - 1`` records skipped this epoch); ``none`` gives each rank exactly its own
    positions (exactly once, but ranks differ by one record: only for loops that allow that).
    """

    total: int
    start: int = 0
    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1
    chunk: int = 1
    uneven: str = "pad"

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise OptionError(f"need 0 <= rank < world_size, got {self.rank} of {self.world_size}")
        if self.num_workers < 1 or not 0 <= self.worker < self.num_workers:
            raise OptionError(
                f"need 0 <= worker < num_workers, got {self.worker} of {self.num_workers}"
            )
        if self.chunk < 1:
            raise OptionError(f"chunk (batch size) must be >= 1, got {self.chunk}")
        if self.uneven not in UNEVEN_MODES:
            raise OptionError(
                f"uneven must be one of {', '.join(UNEVEN_MODES)}; got {self.uneven!r}"
            )
        if not 0 <= self.start <= self.total:
            raise OptionError(f"start {self.start} outside the epoch of {self.total} records")

    @property
    def rank_length(self) -> int:
        """How many records this rank reads from ``start`` to the end of the epoch."""
        remaining, size = self.total - self.start, self.world_size
        if remaining <= 0:
            return 0
        if self.uneven == "pad":
            return -(-remaining // size)
        if self.uneven == "drop":
            return remaining // size
        return max(0, -(-(remaining - self.rank) // size))

    def count_before(self, j: int) -> int:
        """How many of the rank's first ``j`` records belong to this worker."""
        turn = self.chunk * self.num_workers
        full, rest = divmod(j, turn)
        return full * self.chunk + min(max(rest - self.worker * self.chunk, 0), self.chunk)

    def __len__(self) -> int:
        """How many records this consumer (rank, worker) reads."""
        return self.count_before(self.rank_length)

    def rank_indices(self, k: np.ndarray) -> np.ndarray:
        """Indices into the rank's stream of this worker's records ``k``."""
        k = np.asarray(k, dtype=np.int64)
        turns, within = np.divmod(k, self.chunk)
        return turns * (self.chunk * self.num_workers) + self.worker * self.chunk + within

    def positions(self, k: np.ndarray) -> np.ndarray:
        """Epoch positions of this consumer's records ``k`` (0 <= k < len)."""
        p = self.start + self.rank + self.rank_indices(k) * self.world_size
        if self.total:
            # only "pad" reaches past the end: the extra records wrap to the epoch's start
            p = np.where(p >= self.total, (p - self.total) % self.total, p)
        return p

    def consumed_after(self, k: int) -> int:
        """Epoch positions consumed (a prefix) once this consumer has handed out ``k`` records.

        Exact for a rank read by one consumer, assuming ranks move in lockstep (as in
        data-parallel training); with several workers it is a lower bound (the batch handed out
        last, from whichever worker, has the largest value).
        """
        if k <= 0:
            return self.start
        j = int(self.rank_indices(np.array([k - 1]))[0]) + 1
        return min(self.start + j * self.world_size, self.total)
