"""PyTorch datasets over packed data: block-friendly shuffling, rank/worker partitioning, resume.

The only module of shardpack that imports torch (``pip install 'shardpack[torch]'``). Datasets
hold paths and options only: files open lazily in whichever process iterates (each DataLoader
worker), so they pickle cheaply. Epoch order and partitioning live in ``shardpack.sampling``.
"""

from __future__ import annotations

import os
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

from ..dataset.dataset import Dataset, open_dataset
from ..errors import OptionError
from ..packfile.reader import PackedFile
from .collate import Collater
from .sampling import DEFAULT_WINDOW_BLOCKS, EpochOrder, Partition

__all__ = [
    "BlockShuffleSampler",
    "PackedDataset",
    "PackedIterableDataset",
    "PadCollate",
    "make_loader",
    "resume_state_from_loader",
]

STATE_KIND = "shardpack.PackedIterableDataset"
STATE_VERSION = 1
# Below this share of a block's records wanted by one reader, decode records one by one
# (through the file's block cache) instead of decoding the whole block.
_WHOLE_BLOCK_SHARE = 0.25
_SLAB_RECORDS = 4096  # positions mapped to records at a time (vectorised)
_MAX_CACHE_BLOCKS = 64

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Dataset


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) of the default torch.distributed group, or (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Records:
    """The picklable part of a dataset: where the data is, which fields, which transform.

    Opens the data on first use in each process and never pickles the open files.
    """

    def __init__(
        self,
        source: Source,
        *,
        columns: Sequence[str] | None,
        transform: Callable[[Any], Any] | None,
        verify: bool,
        cache_blocks: int,
    ) -> None:
        self._dataset: Dataset | None = None
        if isinstance(source, (str, os.PathLike)):
            self.source: str | list[str] = os.fspath(source)
        elif hasattr(source, "files"):
            # an already-open Dataset-like object: reuse it here, reopen its files elsewhere
            self.source = [os.fspath(f.path) for f in source.files]
            verify = all(getattr(f, "verify", verify) for f in source.files) and verify
            self._dataset = source  # type: ignore[assignment]
        else:
            self.source = [os.fspath(p) for p in source]
            if not self.source:
                raise OptionError("no packed files given")
        if columns is not None:
            if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
                raise OptionError(f"columns must be a list of field names, got {columns!r}")
            columns = list(columns)
        self.columns: list[str] | None = columns
        self.transform = transform
        self.verify = verify
        self.cache_blocks = cache_blocks

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_dataset"] = None  # memory maps stay behind; each process reopens from paths
        return state

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = open_dataset(
                self.source, verify=self.verify, cache_blocks=self.cache_blocks
            )
        return self._dataset

    @property
    def files(self) -> list[PackedFile]:
        return self.dataset.files

    def block_counts(self) -> np.ndarray:
        """Records per block over all files, files in order (dataset-wide block numbers)."""
        counts = [np.asarray(f.index["record_count"], dtype=np.int64) for f in self.files]
        return np.concatenate(counts) if counts else np.zeros(0, np.int64)

    def finish(self, record: Any, record_id: int) -> Any:
        """Column selection, then the user's transform."""
        if self.columns is not None:
            if not isinstance(record, dict):
                raise OptionError(
                    f"record {record_id} is a {type(record).__name__}, not an object: "
                    "columns= needs object records"
                )
            try:
                record = {name: record[name] for name in self.columns}
            except KeyError as exc:
                raise OptionError(
                    f"record {record_id} has no field {exc.args[0]!r} (columns={self.columns})"
                ) from None
        return self.transform(record) if self.transform is not None else record

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None


class _BlockMap:
    """Dataset-wide block and record numbers -> (file, block in file, record in file)."""

    def __init__(self, files: list[PackedFile]) -> None:
        self.files = files
        blocks = [f.block_count for f in files]
        records = [len(f) for f in files]
        self.file_first_block = np.concatenate(([0], np.cumsum(blocks))).astype(np.int64)
        self.file_first_record = np.concatenate(([0], np.cumsum(records))).astype(np.int64)
        self.block_file = np.repeat(np.arange(len(files)), blocks)


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
    ) -> None:
        super().__init__()
        self._records = _Records(
            source,
            columns=columns,
            transform=transform,
            verify=verify,
            cache_blocks=min(max(window_blocks + 1, 8), _MAX_CACHE_BLOCKS),
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
        blocks = _BlockMap(records.files)
        share = 1.0 / (part.world_size * part.num_workers)
        whole_blocks = share >= _WHOLE_BLOCK_SHARE
        decoded: dict[int, list[Any]] = {}  # whole blocks of the current window
        window = -1
        k, length = progress["yielded"], len(part)
        while k < length:
            ks = np.arange(k, min(k + _SLAB_RECORDS, length))
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


class PadCollate(Collater):
    """Collate for DataLoader: records -> tensors, variable-length arrays padded per batch.

    Options as ``shardpack.collate.Collater`` (``pad_value``, ``pad_values`` per field,
    ``side``, ``pad_to_multiple_of``, ``with_lengths``). The padded batch is built once in
    numpy and handed to torch without another copy (``torch.from_numpy``).
    """

    def __call__(self, records: Sequence[Any]) -> Any:
        return _to_torch(super().__call__(records))


def _to_torch(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _tensor(value)
    if isinstance(value, dict):
        return {key: _to_torch(item) for key, item in value.items()}
    return value


def _tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: same bits as torch.bfloat16
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16)).view(torch.bfloat16)
    if not array.flags.writeable:  # views into a read-only block: torch wants its own memory
        array = array.copy()
    return torch.from_numpy(array)


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
    ) -> None:
        self._records = _Records(
            source, columns=columns, transform=transform, verify=verify, cache_blocks=cache_blocks
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
        for first in range(0, len(part), _SLAB_RECORDS):
            ks = np.arange(first, min(first + _SLAB_RECORDS, len(part)))
            yield from order.records_at(part.positions(ks)).tolist()


def make_loader(
    dataset: PackedIterableDataset,
    batch_size: int,
    *,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    stateful: bool | None = None,
    **kwargs: Any,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` whose batches do not depend on ``num_workers``.

    Sets the dataset's ``batch_size`` to the loader's, pads with ``PadCollate()`` unless given
    another collate, and returns torchdata's StatefulDataLoader when it is installed (or
    ``stateful=True``), a plain DataLoader otherwise (or ``stateful=False``).
    """
    dataset.batch_size = batch_size
    loader_class: Any = torch.utils.data.DataLoader
    if stateful is not False:
        try:
            from torchdata.stateful_dataloader import StatefulDataLoader
        except ImportError:
            if stateful:
                raise ImportError(
                    "stateful=True needs torchdata: pip install 'shardpack[torch]' torchdata"
                ) from None
        else:
            loader_class = StatefulDataLoader
    return loader_class(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_fn if collate_fn is not None else PadCollate(),
        **kwargs,
    )
