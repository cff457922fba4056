"""Resume states of the iterable dataset: a typed, validated structure (plain dicts outside, as
torch expects), and the mark that tells the parent process its workers did the iterating.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Mapping
from multiprocessing.context import get_spawning_popen
from typing import Annotated, Any, Literal

import msgspec

from ..errors import OptionError

STATE_KIND = "shardpack.PackedIterableDataset"
STATE_VERSION = 2  # 2: samples, kept, batching, units (version 1 states still load)

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class BatchingState(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """How the epoch is cut into batches when the dataset makes the batches itself."""

    mode: Literal["tokens", "packing"]
    token_field: str
    sort_window: Positive
    max_tokens: Positive | None = None
    oversize: Literal["alone", "truncate"] | None = None
    pad_to_multiple_of: Positive | None = None
    seq_len: Positive | None = None
    batch_size: Positive | None = None


class LoaderState(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Where one consumer (rank, worker) of an epoch stands.

    The data and options it was taken with (``seed`` to ``batching``) are checked on load;
    ``start``, ``yielded`` and ``position`` count epoch positions, or batches when the dataset
    makes batches (``batching``; ``units`` batches in the epoch).
    """

    kind: Literal["shardpack.PackedIterableDataset"]
    version: Annotated[int, msgspec.Meta(ge=1, le=STATE_VERSION)]
    epoch: NonNegative
    seed: NonNegative
    shuffle: bool
    window_blocks: Positive
    total: NonNegative
    blocks: NonNegative
    start: NonNegative
    rank: NonNegative
    world_size: Positive
    worker: NonNegative
    num_workers: Positive
    chunk: Positive
    uneven: Literal["pad", "drop", "none"]
    yielded: NonNegative
    position: NonNegative
    in_worker: bool
    samples: list[NonNegative] | None = None
    kept: list[str | None] | None = None
    batching: BatchingState | None = None
    units: NonNegative | None = None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]

    @property
    def layout(self) -> tuple[int, ...]:
        """Who took the state: the same consumer resumes from its own count exactly."""
        return (self.start, self.rank, self.world_size, self.worker, self.num_workers, self.chunk)

    def identity(self) -> dict[str, Any]:
        """The fields that must match the dataset that loads the state."""
        names = ("seed", "shuffle", "window_blocks", "total", "blocks", "samples", "kept")
        out = {name: getattr(self, name) for name in names}
        out["batching"] = None if self.batching is None else msgspec.to_builtins(self.batching)
        out["units"] = self.units
        return out


def decode_state(state: Any) -> LoaderState:
    """A state dict checked field by field (``OptionError`` naming the bad field)."""
    if not isinstance(state, Mapping) or state.get("kind") != STATE_KIND:
        raise OptionError("not a PackedIterableDataset state (its 'kind' is missing or other)")
    try:
        return msgspec.convert(dict(state), LoaderState)
    except msgspec.ValidationError as exc:
        raise OptionError(f"invalid PackedIterableDataset state: {exc}") from None


def check_identity(state: LoaderState, expected: Mapping[str, Any]) -> None:
    found = state.identity()
    if state.version == 1:  # version 1 states predate filters, mixtures and batching
        found = {**found, **{k: expected[k] for k in ("samples", "units")}}
    for key, value in expected.items():
        if found[key] != value:
            raise OptionError(
                f"state does not match this dataset: {key} is {found[key]!r} in the state, "
                f"{value!r} here (the same data, filter, mixture and batching options are "
                "needed to resume)"
            )


def resume_state_from_loader(loader_state: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset state (world-size and worker-count independent) inside a loader's state.

    Takes a torchdata ``StatefulDataLoader.state_dict()`` and returns the furthest position any
    worker reported, as a state any ``PackedIterableDataset`` over the same data can load, with
    a different world size or number of workers.
    """
    found = [decode_state(s) for s in _find_states(loader_state)]
    if not found:
        raise OptionError("no PackedIterableDataset state inside this loader state")
    best = max(found, key=lambda s: s.position)
    return msgspec.structs.replace(
        best, start=best.position, yielded=0, in_worker=False, version=STATE_VERSION
    ).to_dict()


def _find_states(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        if value.get("kind") == STATE_KIND:
            yield value
            return
        for item in value.values():
            yield from _find_states(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _find_states(item)


class WorkerMark:
    """A flag in shared memory that DataLoader workers set when they iterate the dataset.

    The parent's copy of the dataset never sees the workers' progress; this flag lets it refuse
    to report a position it cannot know (``state_dict`` would otherwise say "epoch start").
    Shared by inheritance (fork) or while a worker process is being started (spawn,
    forkserver); a plain pickle (a copy of the dataset elsewhere) gets a fresh flag.
    """

    def __init__(self) -> None:
        self._value: Any = multiprocessing.RawValue("b", 0)

    def set(self, on: bool = True) -> None:
        self._value.value = 1 if on else 0

    def __bool__(self) -> bool:
        return bool(self._value.value)

    def __getstate__(self) -> dict[str, Any]:
        return {"value": self._value if get_spawning_popen() is not None else None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._value = state["value"] if state["value"] is not None else None
        if self._value is None:
            self._value = multiprocessing.RawValue("b", 0)
