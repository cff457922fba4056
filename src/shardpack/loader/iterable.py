"""The iterable training dataset: one source or a weighted mixture, optionally filtered, read
in a shuffled order split over ranks and workers, by records or by token-budget batches.
Resuming lives in ``resuming``, the order in ``plan``/``sampling``, batches in ``batching``."""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
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
from .batching import Batching, BatchPlan, SequencePacking
from .index import Predicate, build_index
from .mixture import apportion, check_weights
from .plan import EpochPlan, SourceIndex
from .reading import EpochReader, Slab, first_use_blocks
from .resuming import Resumable
from .sampling import DEFAULT_WINDOW_BLOCKS, EpochOrder, Partition
from .source import (
    BlockMap,
    DataHandle,
    RecordFinisher,
    Source,
    check_columns,
    distributed_rank_world,
    require_known_columns,
)
from .state import WorkerMark

# Below this share of a block's records wanted by one reader, decode records one by one
# (through the file's block cache) instead of decoding the whole block.
WHOLE_BLOCK_SHARE = 0.25
SLAB_RECORDS = 4096  # positions mapped to records at a time (vectorised)
SLAB_BATCHES = 128
MAX_CACHE_BLOCKS = 64
PERSISTENT_WORKERS_REPEAT = (
    "a DataLoader worker iterates this shuffled dataset a second time: with "
    "persistent_workers=True the workers keep their own copies, so set_epoch() in the main "
    "process never reaches them and every epoch repeats the first one's order; leave "
    "persistent_workers out (workers then start afresh each epoch)"
)


@dataclass
class Progress:
    """The running (or last) iteration of this process: its epoch, partition and count."""

    epoch: int
    partition: Partition
    yielded: int


class PackedIterableDataset(Resumable, torch.utils.data.IterableDataset):
    """Packed records for training: shuffled by blocks then windows, split over ranks and workers.

    ``source``: a path or URL (file or sharded folder), a list of them or an open Dataset (read
    as one); with ``weights``, a list of such sources mixed in these proportions
    (``storage_options`` go to fsspec for URLs). ``num_samples``: positions per epoch
    (default: every kept record of every source once); sources are repeated or subsampled to
    their share. ``filter``: keep only the records for which it returns true (a pre-pass reads
    every record once; ``index_cache`` stores its result in a folder for later runs).

    ``set_epoch(e)`` before each epoch; the order is a function of (seed, epoch) alone. Pass the
    DataLoader's batch size as ``batch_size`` (``make_loader`` does) so that workers take turns
    by whole batches: the loader then yields the same batches for any ``num_workers``.
    ``state_dict()`` / ``load_state_dict()`` resume mid-epoch (see docs/LOADER.md).
    """

    def __init__(
        self,
        source: Source | Sequence[Source],
        *,
        weights: Sequence[float] | None = None,
        num_samples: int | None = None,
        filter: Predicate | None = None,
        index_cache: str | os.PathLike[str] | None = None,
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
        EpochOrder([], seed=seed, window_blocks=window_blocks)  # validate options early
        Partition(total=0, chunk=batch_size, uneven=uneven)
        if (rank is None) != (world_size is None):
            raise OptionError("give both rank and world_size, or neither")
        if filter is not None and not callable(filter):
            raise OptionError(f"filter must be a callable (record -> bool), got {filter!r}")
        if num_samples is not None and (
            isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
        ):
            raise OptionError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.columns = check_columns(columns)
        if weights is None:
            sources: list[Any] = [source]
            self.weights: list[float] | None = None
        else:
            if isinstance(source, (str, os.PathLike)) or not isinstance(source, Sequence):
                raise OptionError("weights= needs a list of sources, one per weight")
            sources = list(source)
            self.weights = check_weights(weights, len(sources))
        cache_blocks = min(max(window_blocks + 1, 8), MAX_CACHE_BLOCKS)
        self._handles = [
            DataHandle(
                s,
                verify=verify,
                cache_blocks=cache_blocks,
                storage_options=storage_options,
                remote=remote,
            )
            for s in sources
        ]
        for handle in self._handles:
            handle.files  # noqa: B018 - open now: a bad path fails here, not in a worker
        require_known_columns(self._handles, self.columns)
        self.filter = filter
        self.index_cache = index_cache
        self.num_samples = num_samples
        self.transform = transform
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.window_blocks = window_blocks
        self.rank = rank
        self.world_size = world_size
        self.uneven = uneven
        self.batch_size = batch_size
        self.batching: Batching | None = None
        self.epoch = 0
        self._indexes: list[SourceIndex] | None = None
        self._plans: dict[int, EpochPlan] = {}
        self._batch_plans: dict[int, BatchPlan] = {}
        self._init_resume()
        self._mark = WorkerMark()
        self._worker_iterated: int | None = None  # pid of the worker process that iterated
        if filter is None:
            self._epoch_plan(0)  # block counts read now: a bad source fails here

    # -- configuration ------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its order follows from seed and epoch); forgets other epochs' state.

        When the dataset makes token-budget batches, the epoch's batch plan is computed here,
        in the parent process, so DataLoader workers inherit it."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise OptionError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)
        self._forget_other_epochs()
        if self.batching is not None and get_worker_info() is None:
            self._batch_plan(self.epoch)

    def use_batching(self, batching: Batching | None) -> None:
        """Make batches in the dataset (token budgets, sequence packing) or, with None, single
        records (the DataLoader batches them). ``make_loader`` calls this."""
        if (
            batching is not None
            and self.columns is not None
            and batching.token_field not in self.columns
        ):
            raise OptionError(
                f"token_field {batching.token_field!r} is not among columns={self.columns}"
            )
        if batching != self.batching:
            self.batching = batching
            self._batch_plans.clear()
            indexes = self._indexes
            if batching is not None and indexes and any(i.lengths is None for i in indexes):
                self._indexes = None  # token counts needed: index again
                self._plans.clear()

    def prepare(self) -> None:
        """Run the pre-pass (filter, token counts) and plan this epoch now, in this process:
        DataLoader workers then inherit the result instead of each computing it."""
        self._epoch_plan(self.epoch)
        if self.batching is not None:
            self._batch_plan(self.epoch)

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        return distributed_rank_world()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # fix rank/world size in the parent: a worker started by "spawn" has no process group
        if self.rank is None:
            state["rank"], state["world_size"] = distributed_rank_world()
        state["_plans"] = {}
        state["_identity_cache"] = None
        if self._indexes is not None and self.filter is not None:
            try:  # the filter has run: workers need only its result (a lambda cannot pickle)
                pickle.dumps(self.filter)
            except Exception:
                state["filter"] = _Applied()
        return state

    # -- the epoch ----------------------------------------------------------------------------

    def _source_indexes(self) -> list[SourceIndex]:
        if self._indexes is None:
            token_field = self.batching.token_field if self.batching is not None else None
            self._indexes = [self._index_of(h, token_field) for h in self._handles]
        return self._indexes

    def _index_of(self, handle: DataHandle, token_field: str | None) -> SourceIndex:
        if isinstance(self.filter, _Applied):
            raise OptionError("the filter cannot be re-run here: it did not pickle")
        return build_index(
            handle.files, predicate=self.filter, token_field=token_field, cache_dir=self.index_cache
        )

    def samples(self) -> list[int]:
        """Positions of each source in an epoch."""
        sizes = [index.size for index in self._source_indexes()]
        if self.filter is not None and 0 in sizes:
            where = f"source {sizes.index(0)}" if len(sizes) > 1 else "the dataset"
            raise OptionError(f"the filter keeps no record of {where}: no records to read")
        if self.weights is None:
            return [self.num_samples if self.num_samples is not None else sizes[0]]
        total = self.num_samples if self.num_samples is not None else sum(sizes)
        return [int(n) for n in apportion(total, self.weights)]

    def _epoch_plan(self, epoch: int) -> EpochPlan:
        plan = self._plans.get(epoch)
        if plan is None:
            if len(self._plans) >= 2:
                self._plans.pop(next(iter(self._plans)))
            plan = self._plans[epoch] = EpochPlan(
                self._source_indexes(),
                samples=self.samples(),
                seed=self.seed,
                epoch=epoch,
                shuffle=self.shuffle,
                window_blocks=self.window_blocks,
            )
        return plan

    def _batch_plan(self, epoch: int) -> BatchPlan:
        if self.batching is None:
            raise OptionError("this dataset yields records, not batches")
        batches = self._batch_plans.get(epoch)
        if batches is None:
            plan = self._epoch_plan(epoch)
            self._batch_plans.clear()  # one epoch at a time: it holds every position
            batches = self._batch_plans[epoch] = BatchPlan(
                plan.lengths_at(np.arange(plan.total)),
                self.batching,
                seed=self.seed,
                epoch=epoch,
                shuffle=self.shuffle,
            )
        return batches

    def _units(self, epoch: int) -> int:
        """Records (or batches, when batching) in the epoch."""
        if self.batching is None:
            return self._epoch_plan(epoch).total
        return len(self._batch_plan(epoch))

    def _partition(self, start: int, *, workers: bool) -> Partition:
        rank, world = self._rank_world()
        info = get_worker_info() if workers else None
        return Partition(
            total=self._units(self.epoch),
            start=start,
            rank=rank,
            world_size=world,
            worker=info.id if info is not None else 0,
            num_workers=info.num_workers if info is not None else 1,
            chunk=self.batch_size if self.batching is None else 1,
            uneven=self.uneven,
        )

    def __len__(self) -> int:
        """Records (batches, when batching) this rank reads in the current epoch, from a loaded
        resume point if any."""
        part = self._partition(0, workers=False)
        start, _ = self._start_of_next_iter(part)
        return replace(part, start=start).rank_length

    # -- iteration ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        # tell the parent process who iterates: its own state_dict() is useless after workers
        in_worker = get_worker_info() is not None
        self._mark.set(in_worker)
        if in_worker:
            self._check_fresh_worker()
        part = self._partition(0, workers=True)
        start, skip = self._start_of_next_iter(part)
        part = replace(part, start=start)
        self._begin_iteration()
        progress = Progress(self.epoch, part, skip)
        self._progress = progress
        return self._generate(part, progress)

    def _check_fresh_worker(self) -> None:
        # A worker's copy iterated twice can only be a persistent worker's: its epoch is the
        # one it was started with, whatever the main process set since.
        if self._worker_iterated == os.getpid() and self.shuffle:
            warnings.warn(PERSISTENT_WORKERS_REPEAT, RuntimeWarning, stacklevel=3)
        self._worker_iterated = os.getpid()

    def _generate(self, part: Partition, progress: Progress) -> Iterator[Any]:
        plan = self._epoch_plan(progress.epoch)
        batching = self.batching
        share = 1.0 / (part.world_size * part.num_workers)
        reader = EpochReader(
            [h.files for h in self._handles],
            RecordFinisher(
                columns=self.columns,
                transform=self.transform,
                token_field=batching.token_field if batching is not None else None,
                truncate_to=batching.truncate_to if batching is not None else None,
            ),
            whole_blocks=share >= WHOLE_BLOCK_SHARE,
            columns=self.columns,
        )
        self._prefetch(part, progress)
        return reader.read(self._slabs(plan, part, progress), progress)

    def _slabs(self, plan: EpochPlan, part: Partition, progress: Progress) -> Iterator[Slab]:
        if self.batching is None:
            return self._record_slabs(plan, part, progress.yielded)
        batches = self._batch_plan(progress.epoch)
        return self._batch_slabs(plan, batches, part, progress.yielded)

    def _prefetch(self, part: Partition, progress: Progress) -> None:
        """Remote sources: fetch the blocks this reader will need, in the order it first needs
        them. Each plan runs in its source's read-ahead thread, on its own EpochPlan."""
        indexes, samples = self._source_indexes(), self.samples()
        for s, handle in enumerate(self._handles):
            if not handle.dataset.is_remote:
                continue
            plan = EpochPlan(
                indexes,
                samples=samples,
                seed=self.seed,
                epoch=progress.epoch,
                shuffle=self.shuffle,
                window_blocks=self.window_blocks,
            )
            slabs = self._slabs(plan, part, progress)
            handle.prefetch(first_use_blocks(slabs, s, BlockMap(handle.files)))

    @staticmethod
    def _record_slabs(plan: EpochPlan, part: Partition, first: int) -> Iterator[Slab]:
        for k in range(first, len(part), SLAB_RECORDS):
            ks = np.arange(k, min(k + SLAB_RECORDS, len(part)))
            yield Slab(*plan.locate(part.positions(ks)))

    @staticmethod
    def _batch_slabs(
        plan: EpochPlan, batches: BatchPlan, part: Partition, first: int
    ) -> Iterator[Slab]:
        packing = isinstance(batches.spec, SequencePacking)
        for k in range(first, len(part), SLAB_BATCHES):
            units = part.positions(np.arange(k, min(k + SLAB_BATCHES, len(part)))).tolist()
            positions = [batches.positions(b) for b in units]
            sources, records = plan.locate(np.concatenate(positions))
            rows = np.concatenate([batches.rows(b) for b in units]) if packing else None
            sizes = np.array([len(p) for p in positions], dtype=np.int64)
            yield Slab(sources, records, batched=True, sizes=sizes, rows=rows)

    def close(self) -> None:
        for handle in self._handles:
            handle.close()


class _Applied:
    """Stands for a filter that already ran in the parent and could not be pickled."""

    def __call__(self, record: Any) -> bool:  # pragma: no cover - never called
        raise OptionError("the filter cannot be re-run here: it did not pickle")
