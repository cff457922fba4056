"""Epoch order and rank/worker partitioning (shardpack.loader.sampling) and batch padding (collate)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardpack.errors import OptionError
from shardpack.loader.collate import Collater, pad_arrays
from shardpack.loader.sampling import EpochOrder, Partition

COUNTS = [7, 3, 12, 1, 9, 9, 4, 11, 2, 6] * 3  # 30 blocks of uneven sizes


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch() -> None:
    order = EpochOrder(COUNTS, seed=5, epoch=0, window_blocks=4).all_records()
    assert sorted(order.tolist()) == list(range(sum(COUNTS)))
    again = EpochOrder(COUNTS, seed=5, epoch=0, window_blocks=4).all_records()
    assert np.array_equal(order, again)
    assert not np.array_equal(
        order, EpochOrder(COUNTS, seed=5, epoch=1, window_blocks=4).all_records()
    )
    assert not np.array_equal(
        order, EpochOrder(COUNTS, seed=6, epoch=0, window_blocks=4).all_records()
    )


def test_unshuffled_order_is_file_order() -> None:
    order = EpochOrder(COUNTS, shuffle=False, window_blocks=3).all_records()
    assert order.tolist() == list(range(sum(COUNTS)))


def test_each_window_holds_exactly_its_blocks_records() -> None:
    order = EpochOrder(COUNTS, seed=1, window_blocks=4)
    records = order.all_records()
    for w in range(order.window_count):
        span = records[order.window_starts[w] : order.window_starts[w + 1]]
        blocks = set(order.block_of(span).tolist())
        assert blocks == set(order.window_blocks_of(w).tolist())
    # the blocks themselves are permuted, not left in file order
    assert order.block_order.tolist() != sorted(order.block_order.tolist())


def test_window_of_one_block_keeps_blocks_contiguous() -> None:
    order = EpochOrder(COUNTS, seed=2, window_blocks=1)
    blocks = order.block_of(order.all_records())
    changes = int(np.count_nonzero(np.diff(blocks))) + 1
    assert changes == len(COUNTS)  # each block read in one go


def test_bad_options_are_refused() -> None:
    with pytest.raises(OptionError):
        EpochOrder(COUNTS, window_blocks=0)
    with pytest.raises(OptionError):
        EpochOrder(COUNTS, seed=-1)
    with pytest.raises(OptionError):
        Partition(total=10, rank=2, world_size=2)
    with pytest.raises(OptionError):
        Partition(total=10, uneven="wrap")
    with pytest.raises(OptionError):
        Partition(total=10, chunk=0)
    with pytest.raises(OptionError):
        Partition(total=10, worker=2, num_workers=2)
    with pytest.raises(OptionError):
        Partition(total=10, num_workers=0)


def _consumer_positions(total: int, start: int, world: int, workers: int, chunk: int, uneven: str):
    out = {}
    for rank in range(world):
        for worker in range(workers):
            part = Partition(total, start, rank, world, worker, workers, chunk, uneven)
            out[rank, worker] = part.positions(np.arange(len(part))).tolist()
    return out


@settings(max_examples=150, deadline=None)
@given(
    total=st.integers(0, 60),
    start_frac=st.floats(0, 1),
    world=st.integers(1, 5),
    workers=st.integers(1, 4),
    chunk=st.integers(1, 7),
)
def test_ranks_and_workers_cover_every_position_exactly_once(
    total: int, start_frac: float, world: int, workers: int, chunk: int
) -> None:
    start = int(total * start_frac)
    remaining = list(range(start, total))
    # exactly once
    got = _consumer_positions(total, start, world, workers, chunk, "none")
    flat = sorted(p for ps in got.values() for p in ps)
    assert flat == remaining
    # pad: equal shares per rank, all covered, fewer than world_size extras
    got = _consumer_positions(total, start, world, workers, chunk, "pad")
    per_rank = [sum(len(got[r, w]) for w in range(workers)) for r in range(world)]
    assert len(set(per_rank)) == 1
    flat = [p for ps in got.values() for p in ps]
    assert set(flat) >= set(remaining) and len(flat) - len(remaining) < world
    # drop: equal shares, disjoint, fewer than world_size missing
    got = _consumer_positions(total, start, world, workers, chunk, "drop")
    per_rank = [sum(len(got[r, w]) for w in range(workers)) for r in range(world)]
    assert len(set(per_rank)) == 1
    flat = [p for ps in got.values() for p in ps]
    assert len(flat) == len(set(flat)) and set(flat) <= set(remaining)
    assert len(remaining) - len(flat) < world


@settings(max_examples=100, deadline=None)
@given(total=st.integers(0, 80), workers=st.integers(1, 4), chunk=st.integers(1, 6))
def test_workers_taking_turns_by_chunk_rebuild_the_rank_stream(
    total: int, workers: int, chunk: int
) -> None:
    """A DataLoader collects one batch from each worker in turn: the result is worker-blind."""
    rank_stream = Partition(total, 0, 1, 3).positions(np.arange(len(Partition(total, 0, 1, 3))))
    streams = [
        Partition(total, 0, 1, 3, w, workers, chunk)
        .positions(np.arange(len(Partition(total, 0, 1, 3, w, workers, chunk))))
        .tolist()
        for w in range(workers)
    ]
    batches = [[s[i : i + chunk] for i in range(0, len(s), chunk)] for s in streams]
    merged = []
    for turn in range(max((len(b) for b in batches), default=0)):
        for b in batches:
            if turn < len(b):
                merged.extend(b[turn])
    assert merged == rank_stream.tolist()


def test_consumed_prefix_lets_a_new_world_size_carry_on() -> None:
    total, k = 103, 9
    old = [Partition(total, 0, r, 4) for r in range(4)]
    seen = [p for part in old for p in part.positions(np.arange(k)).tolist()]
    positions = {part.consumed_after(k) for part in old}
    assert positions == {4 * k}  # every rank agrees on the consumed prefix
    (start,) = positions
    new = [Partition(total, start, r, 3, uneven="none") for r in range(3)]
    rest = [p for part in new for p in part.positions(np.arange(len(part))).tolist()]
    assert sorted(seen + rest) == list(range(total))


def test_pad_arrays_right_left_and_multiple() -> None:
    a, b = np.array([1, 2, 3], np.int32), np.array([4], np.int32)
    right = pad_arrays([a, b], pad_value=-1)
    assert right.tolist() == [[1, 2, 3], [4, -1, -1]] and right.dtype == np.int32
    left = pad_arrays([a, b], pad_value=0, side="left", multiple_of=4)
    assert left.tolist() == [[0, 1, 2, 3], [0, 0, 0, 4]]
    two_d = pad_arrays([np.ones((2, 3), np.float32), np.ones((1, 2), np.float32)])
    assert two_d.shape == (2, 2, 3) and two_d[1].tolist() == [[1, 1, 0], [0, 0, 0]]
    assert right.flags.writeable


def test_collater_batches_fields_by_kind() -> None:
    records = [
        {"ids": np.array([1, 2], np.int32), "w": 0.5, "n": 1, "ok": True, "t": "a", "m": {"x": []}},
        {"ids": [], "w": 1, "n": 2, "ok": False, "t": "b", "m": {"x": np.array([7], np.int64)}},
    ]
    batch = Collater(pad_values={"ids": 9}, with_lengths=True)(records)
    assert batch["ids"].tolist() == [[1, 2], [9, 9]]
    assert batch["ids_lengths"].tolist() == [2, 0]
    assert batch["w"].dtype == np.float64 and batch["w"].tolist() == [0.5, 1.0]
    assert batch["n"].dtype == np.int64 and batch["ok"].dtype == np.bool_
    assert batch["t"] == ["a", "b"]
    assert batch["m"]["x"].tolist() == [[0], [7]]
    assert batch["m"]["x_lengths"].tolist() == [0, 1]


def test_collater_refuses_records_with_different_fields_when_asked() -> None:
    with pytest.raises(OptionError, match="record 1 of the batch differs"):
        Collater(missing="error")([{"a": 1}, {"b": 1}])
    with pytest.raises(OptionError, match="record 1 of the batch differs at m"):
        Collater()([{"m": {"a": 1}}, {"m": 3}])  # an object and a number: no way to batch them
    with pytest.raises(OptionError):
        Collater(side="middle")
    with pytest.raises(OptionError, match="missing must be one of"):
        Collater(missing="ignore")


def test_collater_masks_fields_some_records_lack() -> None:
    chat = {"id": 1, "text": "hi", "n": 3}
    distill = {
        "id": 2,
        "input_ids": np.array([5, 6, 7], np.int32),
        "topk": np.array([[1, 2], [3, 4], [5, 6]], np.int32),
        "meta": {"t": 0.5, "who": "teacher"},
        "ok": True,
    }
    batch = Collater(pad_values={"input_ids": -1}, with_lengths=True)([chat, distill, chat])
    assert list(batch) == [
        "id",
        "text",
        "text_present",
        "n",
        "n_present",
        "input_ids",
        "input_ids_present",
        "input_ids_lengths",
        "topk",
        "topk_present",
        "topk_lengths",
        "meta",
        "meta_present",
        "ok",
        "ok_present",
    ]
    assert batch["input_ids"].tolist() == [[-1, -1, -1], [5, 6, 7], [-1, -1, -1]]
    assert batch["input_ids"].dtype == np.int32
    assert batch["input_ids_present"].tolist() == [False, True, False]
    assert batch["input_ids_lengths"].tolist() == [0, 3, 0]
    assert batch["topk"].shape == (3, 3, 2) and batch["topk"][1].tolist() == [
        [1, 2],
        [3, 4],
        [5, 6],
    ]
    assert batch["text"] == ["hi", None, "hi"] and batch["n"].tolist() == [3, 0, 3]
    assert batch["meta"]["t"].tolist() == [0.0, 0.5, 0.0]
    assert batch["meta"]["t_present"].tolist() == [False, True, False]
    assert batch["meta"]["who"] == [None, "teacher", None]
    assert batch["ok"].tolist() == [False, True, False]
    same = Collater()([distill, distill])
    assert not any(key.endswith("_present") for key in same)  # masks only where a field is missing


def test_collater_lists_fields_some_records_lack_when_asked() -> None:
    a = {"x": np.array([1, 2]), "y": 1}
    b = {"y": 2}
    batch = Collater(missing="list")([a, b])
    assert batch["x"][0].tolist() == [1, 2] and batch["x"][1] is None
    assert batch["y"].tolist() == [1, 2] and "x_present" not in batch


# -- mixtures and batch plans (pure numpy) ---------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    samples=st.lists(st.integers(0, 3000), min_size=1, max_size=5),
    seed=st.integers(0, 2**32 - 1),
    shuffle=st.booleans(),
    chunk=st.integers(1, 5000),
)
def test_mixture_order_gives_each_source_its_samples_once(
    samples: list[int], seed: int, shuffle: bool, chunk: int
) -> None:
    from shardpack.loader.mixture import MixtureOrder

    if not sum(samples):
        return
    order = MixtureOrder(samples, seed=seed, shuffle=shuffle, chunk=chunk)
    source, index = order.sources_at(np.arange(order.total))
    for s, n in enumerate(samples):
        assert sorted(index[source == s].tolist()) == list(range(n))
        # every prefix ending on a chunk boundary holds the source's share within one sample
        for bound in range(0, order.total, order.chunk):
            assert abs((source[:bound] == s).sum() - bound * n / order.total) < 1 + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 700), min_size=1, max_size=400),
    budget=st.integers(1, 2000),
    window=st.integers(1, 100),
    truncate=st.booleans(),
)
def test_token_budget_plan_reads_each_position_once_within_the_budget(
    lengths: list[int], budget: int, window: int, truncate: bool
) -> None:
    import warnings

    from shardpack.loader.batching import BatchPlan, TokenBudget

    spec = TokenBudget(budget, sort_window=window, oversize="truncate" if truncate else "alone")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = BatchPlan(np.array(lengths), spec, seed=1, epoch=0, shuffle=True)
    seen = np.concatenate([plan.positions(b) for b in range(len(plan))])
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in range(len(plan)):
        got = np.maximum(np.array(lengths)[plan.positions(b)], 1)
        if truncate:
            got = np.minimum(got, budget)
        assert len(got) * got.max() <= budget or len(got) == 1
        spans = set((plan.positions(b) // window).tolist())
        assert len(spans) == 1  # a batch never mixes sort windows


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=300),
    seq_len=st.integers(1, 400),
    per_batch=st.integers(1, 6),
)
def test_packing_plan_fills_sequences_without_overflow(
    lengths: list[int], seq_len: int, per_batch: int
) -> None:
    from shardpack.loader.batching import BatchPlan, SequencePacking

    plan = BatchPlan(
        np.array(lengths),
        SequencePacking(seq_len, per_batch, sort_window=50),
        seed=0,
        epoch=2,
        shuffle=True,
    )
    seen = []
    for b in range(len(plan)):
        rows, positions = plan.rows(b), plan.positions(b)
        assert rows.max() < per_batch
        for row in set(rows.tolist()):
            assert np.minimum(np.array(lengths)[positions[rows == row]], seq_len).sum() <= seq_len
        seen += positions.tolist()
    assert sorted(seen) == list(range(len(lengths)))
