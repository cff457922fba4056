"""Encoding work units on all cores, in order: workers read their own planned units from the
inputs (only byte ranges travel to them), so the driver neither reads nor pickles the input.
Output is byte-identical to encoding the same units one by one in one process.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..ingest.jsonl import iter_line_batches
from ..storage.streams import InputDigest, is_compressed, open_input
from .planning import (
    InputSlice,
    ShardTask,
    iter_unit_slices,
    read_unit,
    slice_units,
)
from .units import (
    UNIT_INPUT_BYTES,
    EncodedUnit,
    EncodeOptions,
    Unit,
    UnitEncoder,
    split_unit_batches,
)

# Units go to workers 8 at a time (~8 MiB of input per task): 1 MiB units one per task cost
# a 2-core KD pack ~10% in futures, pickling and stalls; the worker still encodes them one by
# one, so its memory stays that of one small unit.
UNITS_PER_TASK = 8
_worker_encoder: UnitEncoder | None = None
_worker_storage_options: dict[str, Any] | None = None


def _init_worker(options: EncodeOptions, storage_options: dict[str, Any] | None) -> None:
    global _worker_encoder, _worker_storage_options
    _worker_encoder = UnitEncoder(options)
    _worker_storage_options = storage_options


def _encode_item(item: Unit | InputSlice) -> EncodedUnit:
    """In a worker: read a planned unit (or take one read by the driver) and encode it."""
    if _worker_encoder is None:
        raise RuntimeError("worker not initialised")  # only reachable through misuse
    unit = item if isinstance(item, Unit) else read_unit(item, _worker_storage_options)
    return _worker_encoder.encode(unit)


def encode_items(
    items: Iterable[Unit | InputSlice],
    options: EncodeOptions,
    workers: int,
    storage_options: dict[str, Any] | None,
) -> Iterator[EncodedUnit]:
    """Encoded units in order; in this process or in ``workers`` processes.

    Workers read their own units from the input (only byte ranges travel to them), so the
    driver does not read, copy and pickle all input: that kept a 2-core pack well below 2x.
    """
    if workers <= 1:
        _init_worker(options, storage_options)
        for item in items:
            yield _encode_item(item)
        return
    with cf.ProcessPoolExecutor(
        workers,
        mp_context=_worker_context(),
        initializer=_init_worker,
        initargs=(options, storage_options),
    ) as pool:
        pending: deque[cf.Future[list[EncodedUnit]]] = deque()
        try:
            for batch in _batches(items, UNITS_PER_TASK):
                pending.append(pool.submit(_encode_batch, batch))
                if len(pending) >= 2 * workers:  # bounded memory: a few batches in flight
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _batches(items: Iterable[Unit | InputSlice], size: int) -> Iterator[list[Unit | InputSlice]]:
    """``items`` in consecutive lists of ``size`` (the last may be shorter)."""
    batch: list[Unit | InputSlice] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode_batch(items: list[Unit | InputSlice]) -> list[EncodedUnit]:
    """In a worker: encode consecutive units, one by one."""
    return [_encode_item(item) for item in items]


def _worker_context() -> multiprocessing.context.BaseContext:
    """How worker processes start: forked when that is safe, else from a clean interpreter.

    A forkserver starts a fresh interpreter that imports shardpack and numpy first: ~0.5 s
    before the first unit is encoded, a fifth of a 300 MB pack on 2 cores. Forking takes
    milliseconds, but is only safe while this process runs no other thread (a thread holding a
    lock at the fork would leave it locked in the child forever).
    """
    if sys.platform == "linux" and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if os.name == "posix":
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["shardpack.build.parallel"])  # import once, fork workers
        return context
    return multiprocessing.get_context("spawn")


def planned_items(
    tasks: Sequence[ShardTask],
    storage_options: dict[str, Any] | None = None,
    owners: deque[ShardTask] | None = None,
) -> Iterator[Unit | InputSlice]:
    """The units of ``tasks`` in order: planned byte ranges, or (for gzip/zstd inputs, which
    cannot be entered in the middle cheaply) units read here in one pass. Appends each unit's
    task to ``owners``, so a consumer of the encoded units knows where each belongs."""
    compressed: dict[str, bool] = {}
    for task in tasks:
        planned = task.units or tuple(() for _ in task.slices)
        for item, units in zip(task.slices, planned, strict=True):
            if item.path not in compressed:
                compressed[item.path] = is_compressed(item.path, storage_options)
            if units and not compressed[item.path]:
                for unit_slice in units:
                    if owners is not None:
                        owners.append(task)
                    yield unit_slice
            else:
                for unit in slice_units([item], storage_options):
                    if owners is not None:
                        owners.append(task)
                    yield unit


def encode_inputs(
    inputs: Sequence[str],
    options: EncodeOptions,
    workers: int,
    digests: Mapping[str, InputDigest] | None = None,
    unit_bytes: int | None = None,
) -> Iterator[EncodedUnit]:
    """The encoded units of whole inputs (a single-file pack) on ``workers`` processes.

    This process scans each input once for unit boundaries (filling ``digests``: sha256, size,
    lines) while the workers already encode the units found so far."""

    unit_bytes = unit_bytes or UNIT_INPUT_BYTES

    def items() -> Iterator[Unit | InputSlice]:
        for path in inputs:
            digest = digests.get(path) if digests else None
            if is_compressed(path):
                with open_input(path, digest) as stream:
                    batches = iter_line_batches(stream, path, digest=digest)
                    yield from split_unit_batches(batches, path, unit_bytes)
            else:
                yield from iter_unit_slices(path, unit_bytes=unit_bytes, digest=digest)

    return encode_items(items(), options, workers, None)
