"""Map-style packed records (``ds[i]``) and a sampler giving them in block-then-window order."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "shardpack.torch needs PyTorch: pip install 'shardpack[torch]' (or any torch build)"
    ) from exc

from ..storage.remote_options import RemoteOptions
from .iterable import SLAB_RECORDS
from .sampling import DEFAULT_WINDOW_BLOCKS, EpochOrder, Partition
from .source import RecordSource, Source, distributed_rank_world


class PackedDataset(torch.utils.data.Dataset):
    """Map-style packed records: ``ds[i]`` with optional ``columns`` and ``transform``.

    Random access costs a block read per record unless neighbours share a cached block; use
    ``BlockShuffleSampler`` (or ``PackedIterableDataset``) for fast shuffled epochs.
    """

    def __init__(
        self,
        source: Source,
        *,
        columns: Sequence[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        verify: bool = True,
        cache_blocks: int = 16,
        storage_options: dict[str, Any] | None = None,
        remote: RemoteOptions | None = None,
    ) -> None:
        self._records = RecordSource(
            source,
            columns=columns,
            transform=transform,
            verify=verify,
            cache_blocks=cache_blocks,
            storage_options=storage_options,
            remote=remote,
        )

    def __len__(self) -> int:
        return len(self._records.dataset)

    def __getitem__(self, index: int) -> Any:
        ds = self._records.dataset
        record = ds[index]  # validates the index (type, range, negative)
        i = int(index)
        return self._records.finish(record, i + len(ds) if i < 0 else i)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        # DataLoader hands over a batch of indices at once: visit them in file order so that
        # records sharing a block are read together while it is in the block cache
        out: list[Any] = [None] * len(indices)
        for n in sorted(range(len(indices)), key=lambda n: int(indices[n])):
            out[n] = self[indices[n]]
        return out

    def block_counts(self) -> np.ndarray:
        return self._records.block_counts()

    def close(self) -> None:
        self._records.close()


class BlockShuffleSampler(torch.utils.data.Sampler[int]):
    """Indices of a ``PackedDataset`` in block-then-window shuffled order, split over ranks.

    The map-style counterpart of ``PackedIterableDataset``'s order: the same (seed, epoch) gives
    the same indices. It keeps no state: torchdata's StatefulDataLoader resumes it by replaying
    the (deterministic) order and skipping what was consumed; call ``set_epoch`` first.
    """

    def __init__(
        self,
        dataset: PackedDataset,
        *,
        shuffle: bool = True,
        seed: int = 0,
        window_blocks: int = DEFAULT_WINDOW_BLOCKS,
        rank: int | None = None,
        world_size: int | None = None,
        uneven: str = "pad",
    ) -> None:
        self._counts = dataset.block_counts()
        self.shuffle, self.seed, self.window_blocks, self.uneven = (
            shuffle,
            seed,
            window_blocks,
            uneven,
        )
        if rank is None or world_size is None:
            rank, world_size = distributed_rank_world()
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._part()  # validate options early

    def _order(self) -> EpochOrder:
        return EpochOrder(
            self._counts,
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.shuffle,
            window_blocks=self.window_blocks,
        )

    def _part(self) -> Partition:
        return Partition(
            total=int(self._counts.sum()),
            rank=self.rank,
            world_size=self.world_size,
            uneven=self.uneven,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._part().rank_length

    def __iter__(self) -> Iterator[int]:
        order, part = self._order(), self._part()
        for first in range(0, len(part), SLAB_RECORDS):
            ks = np.arange(first, min(first + SLAB_RECORDS, len(part)))
            yield from order.records_at(part.positions(ks)).tolist()
