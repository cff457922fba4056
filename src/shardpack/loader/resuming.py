"""Resuming the iterable dataset mid-epoch: ``state_dict`` / ``load_state_dict`` and the
states a training loop can take itself (``state_at_step``), for any world size or worker count.

A consumer's state counts what it handed out; ``position`` is the epoch prefix consumed once
every rank has taken as many, which any other split of the epoch can resume from.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec

try:
    from torch.utils.data import get_worker_info
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "shardpack.torch needs PyTorch: pip install 'shardpack[torch]' (or any torch build)"
    ) from exc

from ..errors import OptionError
from .batching import SequencePacking, TokenBudget
from .sampling import Partition
from .state import (
    STATE_VERSION,
    BatchingState,
    LoaderState,
    check_identity,
    decode_state,
)

WORKERS_ITERATED = (
    "this dataset was iterated in DataLoader worker processes, so its copy in this process "
    "does not know how far they got (its state would restart the epoch). Save the loader's "
    "state instead: loader.state_dict() with torchdata's StatefulDataLoader (what make_loader "
    "returns when torchdata is installed), or ds.state_at_step(steps) with the steps your "
    "training loop took this epoch; see docs/LOADER.md, 'Resume'"
)


class Resumable:
    """The resume half of ``PackedIterableDataset`` (mixed into it)."""

    epoch: int
    seed: int
    shuffle: bool
    window_blocks: int
    batch_size: int
    batching: Any
    _mark: Any
    _progress: Any

    def _init_resume(self) -> None:
        self._resume: LoaderState | None = None  # a loaded state, applied by the next iter
        self._progress = None  # the running (or last) iteration in this process

    def _forget_other_epochs(self) -> None:
        if self._resume is not None and self._resume.epoch != self.epoch:
            self._resume = None
        if self._progress is not None and self._progress.epoch != self.epoch:
            self._progress = None

    def _begin_iteration(self) -> None:
        self._resume = None

    def _start_of_next_iter(self, part: Partition) -> tuple[int, int]:
        """(epoch start, units of this consumer to skip) for the next iteration."""
        resume = self._resume
        if resume is None or resume.epoch != self.epoch:
            return 0, 0
        if resume.in_worker and resume.layout == _layout(part, resume.start):
            return resume.start, resume.yielded  # the same consumer carries on exactly
        return resume.position, 0

    # -- what the dataset must provide ---------------------------------------------------------

    def _partition(self, start: int, *, workers: bool) -> Partition:
        raise NotImplementedError

    def _epoch_plan(self, epoch: int) -> Any:
        raise NotImplementedError

    def _units(self, epoch: int) -> int:
        raise NotImplementedError

    # -- states -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where this dataset's iteration stands: load it into a fresh dataset to carry on.

        In the process that iterates (main process, or a DataLoader worker under torchdata's
        StatefulDataLoader) it counts what was handed out so far this epoch. In a process whose
        DataLoader workers did the iterating it raises ``OptionError`` (use the loader's state).
        """
        if self._mark and get_worker_info() is None:
            raise OptionError(WORKERS_ITERATED)
        if self._progress is not None:
            return self._state(self._progress.partition, self._progress.yielded, True)
        if self._resume is not None:
            return self._resume.to_dict()
        return self._state(self._partition(0, workers=False), 0, False)

    def state_after(self, records: int) -> dict[str, Any]:
        """The state of this rank once its loop has received ``records`` records (batches, when
        the dataset makes batches) this epoch, counted from where this epoch's iteration
        started (a loaded resume point included)."""
        part = self._partition(0, workers=False)
        start, _ = self._start_of_next_iter(part)
        part = replace(part, start=start)
        if isinstance(records, bool) or not isinstance(records, int):
            raise OptionError(f"records must be an integer, got {records!r}")
        if records < 0 or records > part.rank_length:
            raise OptionError(f"records must be in [0, {part.rank_length}], got {records}")
        return self._state(part, records, False)

    def state_at_step(self, steps: int) -> dict[str, Any]:
        """The state of this rank after ``steps`` batches of this epoch (counted from where its
        iteration started): what a loop over a plain DataLoader with workers checkpoints."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise OptionError(f"steps must be a non-negative integer, got {steps!r}")
        part = self._partition(0, workers=False)
        start, _ = self._start_of_next_iter(part)
        length = replace(part, start=start).rank_length
        units = steps if self.batching is not None else steps * self.batch_size
        return self.state_after(min(units, length))

    def _identity(self, epoch: int) -> dict[str, Any]:
        # StatefulDataLoader asks workers for their state after every batch: keep it cheap
        plan = self._epoch_plan(epoch)
        cached = getattr(self, "_identity_cache", None)
        if cached is not None and cached[0] is plan and cached[1] == self.batching:
            return dict(cached[2])
        identity = self._compute_identity(epoch)
        self._identity_cache = (plan, self.batching, identity)  # holds the plan: no id reuse
        return dict(identity)

    def _compute_identity(self, epoch: int) -> dict[str, Any]:
        plan = self._epoch_plan(epoch)
        return {
            "seed": self.seed,
            "shuffle": self.shuffle,
            "window_blocks": self.window_blocks,
            "total": plan.total,
            "blocks": sum(len(s.index.block_counts) for s in plan.streams),
            "samples": plan.samples.tolist(),
            "kept": _kept(plan),
            "batching": _batching_state(self.batching),
            "units": self._units(epoch) if self.batching is not None else None,
        }

    def _state(self, part: Partition, yielded: int, live: bool) -> dict[str, Any]:
        identity = self._identity(self.epoch)
        state = LoaderState(
            kind="shardpack.PackedIterableDataset",
            version=STATE_VERSION,
            epoch=self.epoch,
            seed=identity["seed"],
            shuffle=identity["shuffle"],
            window_blocks=identity["window_blocks"],
            total=identity["total"],
            blocks=identity["blocks"],
            start=part.start,
            rank=part.rank,
            world_size=part.world_size,
            worker=part.worker,
            num_workers=part.num_workers,
            chunk=part.chunk,
            uneven=part.uneven,  # type: ignore[arg-type]
            yielded=int(yielded),
            position=part.consumed_after(yielded),
            # a worker's own count is exact only for that same worker; anyone else uses position
            in_worker=bool(live and get_worker_info() is not None),
            samples=identity["samples"],
            kept=identity["kept"],
            batching=msgspec.convert(identity["batching"], BatchingState | None),
            units=identity["units"],
        )
        return state.to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state``: the next iteration carries on right after its last unit."""
        loaded = decode_state(state)
        check_identity(loaded, self._identity(loaded.epoch))
        units = self._units(loaded.epoch)
        if loaded.start > units or loaded.position > units:
            raise OptionError(
                f"state position {loaded.position} lies outside the epoch of {units} units"
            )
        if get_worker_info() is None:
            # loaded in the parent: every worker uses the position
            loaded = msgspec.structs.replace(loaded, in_worker=False)
        self.set_epoch(loaded.epoch)  # type: ignore[attr-defined]
        self._resume = loaded
        self._progress = None
        self._mark.set(False)


def _layout(part: Partition, start: int) -> tuple[int, ...]:
    return (start, part.rank, part.world_size, part.worker, part.num_workers, part.chunk)


def _kept(plan: Any) -> list[str | None] | None:
    digests = [s.index.digest for s in plan.streams]
    return None if all(d is None for d in digests) else digests


def _batching_state(batching: Any) -> dict[str, Any] | None:
    if isinstance(batching, TokenBudget):
        return {
            "mode": "tokens",
            "token_field": batching.token_field,
            "sort_window": batching.sort_window,
            "max_tokens": batching.max_tokens,
            "oversize": batching.oversize,
            "pad_to_multiple_of": batching.pad_to_multiple_of,
            "seq_len": None,
            "batch_size": None,
        }
    if isinstance(batching, SequencePacking):
        return {
            "mode": "packing",
            "token_field": batching.token_field,
            "sort_window": batching.sort_window,
            "max_tokens": None,
            "oversize": None,
            "pad_to_multiple_of": None,
            "seq_len": batching.seq_len,
            "batch_size": batching.batch_size,
        }
    return None
