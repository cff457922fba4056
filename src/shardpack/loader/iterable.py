"""The iterable training dataset: shuffled by blocks then windows, split over ranks and workers,
resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

try:
    import torch
    from torch.utils.data import get_worker_info
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "shardpack.torch needs PyTorch: pip install 'shardpack[torch]' (or any torch build)"
    ) from exc

from ..errors import OptionError
from ..storage.remote_options import RemoteOptions
from .sampling import DEFAULT_WINDOW_BLOCKS, EpochOrder, Partition
from .source import BlockMap, RecordSource, Source, distributed_rank_world

STATE_KIND = "shardpack.PackedIterableDataset"
STATE_VERSION = 1
# Below this share of a block's records wanted by one reader, decode records one by one
# (through the file's block cache) instead of decoding the whole block.
WHOLE_BLOCK_SHARE = 0.25
SLAB_RECORDS = 4096  # positions mapped to records at a time (vectorised)
MAX_CACHE_BLOCKS = 64


class PackedIterableDataset(torch.utils.data.IterableDataset):
    """Packed records for training: shuffled by blocks then windows, split over ranks and workers.

    ``set_epoch(e)`` before each epoch; the order is a function of (seed, epoch) alone. Pass the
    DataLoader's batch size as ``batch_size`` (``make_loader`` does) so that workers take turns
    by whole batches: the loader then yields the same batches for any ``num_workers``.
    ``state_dict()`` / ``load_state_dict()`` resume mid-epoch (see docs/LOADER.md).
    """

    def __init__(
        self,
        source: Source,
        *,
        shuffle: bool = True,
        seed: int = 0,
        window_blocks: int = DEFAULT_WINDOW_BLOCKS,
        rank: int | None = None,
        world_size: int | None = None,
        uneven: str = "pad",
        batch_size: int = 1,
        columns: Sequence[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        verify: bool = True,
        storage_options: dict[str, Any] | None = None,
        remote: RemoteOptions | None = None,
    ) -> None:
        super().__init__()
        self._records = RecordSource(
            source,
            columns=columns,
            transform=transform,
            verify=verify,
            cache_blocks=min(max(window_blocks + 1, 8), MAX_CACHE_BLOCKS),
            storage_options=storage_options,
            remote=remote,
        )
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.window_blocks = window_blocks
        if (rank is None) != (world_size is None):
            raise OptionError("give both rank and world_size, or neither")
        self.rank = rank
        self.world_size = world_size
        self.uneven = uneven
        self.batch_size = batch_size
        self.epoch = 0
        self._resume: dict[str, Any] | None = None  # a loaded state, applied by the next iter
        self._progress: dict[str, Any] | None = None  # the running (or last) iteration
        self._order: EpochOrder | None = None
        self._order_for_epoch(0)  # validate options early
        Partition(total=0, chunk=batch_size, uneven=uneven)

    # -- configuration ------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its order follows from seed and epoch); forgets other epochs' state."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise OptionError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)
        if self._resume is not None and self._resume["epoch"] != self.epoch:
            self._resume = None
        if self._progress is not None and self._progress["epoch"] != self.epoch:
            self._progress = None

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        return distributed_rank_world()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # fix rank/world size in the parent: a worker started by "spawn" has no process group
        if self.rank is None:
            state["rank"], state["world_size"] = distributed_rank_world()
        state["_order"] = None
        return state

    def _order_for_epoch(self, epoch: int) -> EpochOrder:
        order = self._order
        if order is None or order.epoch != epoch:
            counts = self._records.block_counts()
            order = EpochOrder(
                counts,
                seed=self.seed,
                epoch=epoch,
                shuffle=self.shuffle,
                window_blocks=self.window_blocks,
            )
            self._order = order
        return order

    def _partition(self, start: int, *, workers: bool) -> Partition:
        rank, world = self._rank_world()
        info = get_worker_info() if workers else None
        return Partition(
            total=self._order_for_epoch(self.epoch).total,
            start=start,
            rank=rank,
            world_size=world,
            worker=info.id if info is not None else 0,
            num_workers=info.num_workers if info is not None else 1,
            chunk=self.batch_size,
            uneven=self.uneven,
        )

    def _start_of_next_iter(self, part: Partition) -> tuple[int, int]:
        """(epoch start position, records of this consumer to skip) for the next iteration."""
        resume = self._resume
        if resume is None or resume["epoch"] != self.epoch:
            return 0, 0
        if resume["in_worker"] and _layout(resume) == _layout_of(part, resume["start"]):
            return resume["start"], resume["yielded"]  # the same consumer carries on exactly
        return resume["position"], 0

    def __len__(self) -> int:
        """Records this rank reads in the current epoch (from a loaded resume point, if any)."""
        part = self._partition(0, workers=False)
        start, _ = self._start_of_next_iter(part)
        return Partition(**{**_fields(part), "start": start}).rank_length

    # -- iteration ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        part = self._partition(0, workers=True)
        start, skip = self._start_of_next_iter(part)
        part = Partition(**{**_fields(part), "start": start})
        self._resume = None
        progress = {"epoch": self.epoch, "partition": part, "yielded": skip}
        self._progress = progress
        return self._generate(self._order_for_epoch(self.epoch), part, progress)

    def _generate(
        self, order: EpochOrder, part: Partition, progress: dict[str, Any]
    ) -> Iterator[Any]:
        records = self._records
        blocks = BlockMap(records.files)
        # remote data: the blocks of the windows this reader will visit, fetched ahead in order
        records.read_ahead(_block_plan(order, part, blocks, progress["yielded"]))
        share = 1.0 / (part.world_size * part.num_workers)
        whole_blocks = share >= WHOLE_BLOCK_SHARE
        decoded: dict[int, list[Any]] = {}  # whole blocks of the current window
        window = -1
        k, length = progress["yielded"], len(part)
        while k < length:
            ks = np.arange(k, min(k + SLAB_RECORDS, length))
            positions = part.positions(ks)
            ids = order.records_at(positions)
            windows = order.windows_at(positions)
            block_ids = order.block_of(ids)
            file_ids = blocks.block_file[block_ids]
            local_blocks = block_ids - blocks.file_first_block[file_ids]
            # index inside the block (whole-block path) or inside the file (record path)
            slots = (
                ids - order.block_first[block_ids]
                if whole_blocks
                else (ids - blocks.file_first_record[file_ids])
            )
            files = blocks.files
            for record_id, win, block, f, local_block, slot in zip(
                ids.tolist(),
                windows.tolist(),
                block_ids.tolist(),
                file_ids.tolist(),
                local_blocks.tolist(),
                slots.tolist(),
                strict=True,
            ):
                if win != window:  # a block is needed only while its window is current
                    decoded.clear()
                    window = win
                if whole_blocks:
                    values = decoded.get(block)
                    if values is None:
                        values = decoded[block] = files[f].block_records(local_block)
                    record = values[slot]
                else:
                    record = files[f].record(slot)
                progress["yielded"] += 1
                yield records.finish(record, record_id)
            k = int(ks[-1]) + 1

    # -- resume -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where this dataset's iteration stands: load it into a fresh dataset to carry on.

        In the process that iterates (main process, or a DataLoader worker under torchdata's
        StatefulDataLoader) it counts records handed out so far this epoch.
        """
        if self._progress is not None:
            return self._state(self._progress["partition"], self._progress["yielded"], True)
        if self._resume is not None:
            return dict(self._resume)
        return self._state(self._partition(0, workers=False), 0, False)

    def state_after(self, records: int) -> dict[str, Any]:
        """The state of this rank once its loop has received ``records`` records this epoch.

        For a plain DataLoader with workers, where the datasets that iterate live in the
        workers: the training loop counts what it consumed (steps x batch size) and saves this.
        Counting starts where this epoch's iteration started (a loaded resume point included).
        """
        part = self._partition(0, workers=False)
        start, _ = self._start_of_next_iter(part)
        part = Partition(**{**_fields(part), "start": start})
        if records < 0 or records > part.rank_length:
            raise OptionError(f"records must be in [0, {part.rank_length}], got {records}")
        return self._state(part, records, False)

    def _state(self, part: Partition, yielded: int, live: bool) -> dict[str, Any]:
        order = self._order_for_epoch(self.epoch)
        return {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "seed": order.seed,
            "shuffle": order.shuffle,
            "window_blocks": order.window_blocks,
            "total": order.total,
            "blocks": len(order.block_counts),
            **_layout_of(part, part.start),
            "yielded": int(yielded),
            "position": part.consumed_after(yielded),
            # a worker's own count is exact only for that same worker; anyone else uses position
            "in_worker": bool(live and get_worker_info() is not None),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state``: the next iteration carries on right after its last record."""
        if not isinstance(state, Mapping) or state.get("kind") != STATE_KIND:
            raise OptionError("not a PackedIterableDataset state")
        if state.get("version") != STATE_VERSION:
            raise OptionError(f"unsupported loader state version {state.get('version')!r}")
        order = self._order_for_epoch(self.epoch)
        expected = {
            "seed": order.seed,
            "shuffle": order.shuffle,
            "window_blocks": order.window_blocks,
            "total": order.total,
            "blocks": len(order.block_counts),
        }
        for key, value in expected.items():
            if state.get(key) != value:
                raise OptionError(
                    f"state does not match this dataset: {key} is {state.get(key)!r} in the "
                    f"state, {value!r} here (same data and shuffle options are needed to resume)"
                )
        resume = dict(state)
        if get_worker_info() is None:
            resume["in_worker"] = False  # loaded in the parent: every worker uses the position
        self.set_epoch(int(state["epoch"]))
        self._resume = resume
        self._progress = None

    def close(self) -> None:
        self._records.close()


def _block_plan(
    order: EpochOrder, part: Partition, blocks: BlockMap, first: int
) -> Iterator[tuple[int, int]]:
    """(file, block) in the order a reader of ``part`` first needs them, from its record
    ``first`` on. Runs in the read-ahead thread, on its own copy of the order."""
    order = EpochOrder(
        order.block_counts,
        seed=order.seed,
        epoch=order.epoch,
        shuffle=order.shuffle,
        window_blocks=order.window_blocks,
    )
    seen: set[int] = set()
    for start in range(first, len(part), SLAB_RECORDS):
        ks = np.arange(start, min(start + SLAB_RECORDS, len(part)))
        needed = order.block_of(order.records_at(part.positions(ks)))
        _, firsts = np.unique(needed, return_index=True)
        for block in needed[np.sort(firsts)].tolist():
            if block not in seen:  # a block belongs to one window: seen once per epoch
                seen.add(block)
                f = int(blocks.block_file[block])
                yield f, block - int(blocks.file_first_block[f])


def _layout_of(part: Partition, start: int) -> dict[str, Any]:
    return {
        "start": int(start),
        "rank": part.rank,
        "world_size": part.world_size,
        "worker": part.worker,
        "num_workers": part.num_workers,
        "chunk": part.chunk,
        "uneven": part.uneven,
    }


def _layout(state: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("start", "rank", "world_size", "worker", "num_workers", "chunk", "uneven")
    return {key: state.get(key) for key in keys}


def _fields(part: Partition) -> dict[str, Any]:
    return {name: getattr(part, name) for name in Partition.__dataclass_fields__}


def resume_state_from_loader(loader_state: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset state (world-size and worker-count independent) inside a loader's state.

    Takes a torchdata ``StatefulDataLoader.state_dict()`` and returns the furthest position any
    worker reported, as a state any ``PackedIterableDataset`` over the same data can load, with
    a different world size or number of workers.
    """
    found = [s for s in _find_states(loader_state)]
    if not found:
        raise OptionError("no PackedIterableDataset state inside this loader state")
    best = max(found, key=lambda s: s["position"])
    return {**best, "start": best["position"], "yielded": 0, "in_worker": False}


def _find_states(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, Mapping):
        if value.get("kind") == STATE_KIND:
            yield dict(value)
            return
        for item in value.values():
            yield from _find_states(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _find_states(item)
