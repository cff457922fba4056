"""The training loader on mixed data: filters, weighted mixtures, token-budget batches, sequence
packing, with real DataLoader workers (and their resume rules)."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from shardpack import DatasetPacker, ShardedPacker  # noqa: E402
from shardpack.errors import OptionError  # noqa: E402
from shardpack.loader.mixture import apportion  # noqa: E402
from shardpack.torch import (  # noqa: E402
    PackedIterableDataset,
    make_loader,
    resume_state_from_loader,
)

from .conftest import write_jsonl  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")

N_A, N_B = 600, 151


def _records(n: int, first: int, rng_seed: int) -> list[dict[str, Any]]:
    """Records of two kinds: with token ids (a per-token top-k table beside) or text only."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for i in range(first, first + n):
        if i % 3 == 0:
            out.append({"id": i, "text": "t" * int(rng.integers(1, 50))})
        else:
            length = int(rng.integers(1, 120))
            out.append(
                {
                    "id": i,
                    "input_ids": rng.integers(0, 1000, length).tolist(),
                    "topk": rng.integers(0, 1000, (length, 2)).tolist(),
                }
            )
    return out


@pytest.fixture(scope="module")
def source_a(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("a")
    out = folder / "a.packed"
    DatasetPacker().pack(write_jsonl(folder / "a.jsonl", _records(N_A, 0, 1)), out, block_size="4K")
    return str(out)


@pytest.fixture(scope="module")
def source_b(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A sharded dataset folder (ids from 10,000)."""
    folder = tmp_path_factory.mktemp("b")
    src = write_jsonl(folder / "b.jsonl", _records(N_B, 10_000, 2))
    ShardedPacker(block_size="4K").pack(src, folder / "b", records_per_shard=60)
    return str(folder / "b") + os.sep


def ids(items: Any) -> list[int]:
    return [int(r["id"]) for r in items]


def batch_ids(batches: Any) -> list[int]:
    return [int(i) for b in batches for i in b["id"]]


def has_tokens(record: Any) -> bool:
    return "input_ids" in record


# -- filter ---------------------------------------------------------------------------------


def test_filter_reads_the_kept_records_once_per_epoch(source_a: str) -> None:
    kept = [i for i in range(N_A) if i % 3]
    ds = PackedIterableDataset(source_a, seed=3, filter=has_tokens)
    assert len(ds) == len(kept)
    first = ids(ds)
    assert sorted(first) == kept
    ds.set_epoch(1)
    second = ids(ds)
    assert sorted(second) == kept and second != first
    again = PackedIterableDataset(source_a, seed=3, filter=lambda r: "input_ids" in r)
    again.set_epoch(1)
    assert ids(again) == second  # a function of (data, filter result, seed, epoch)


@pytest.mark.parametrize("uneven", ["pad", "drop", "none"])
def test_filter_splits_over_ranks_and_workers(source_a: str, uneven: str) -> None:
    kept = {i for i in range(N_A) if i % 3}  # 400 records over 3 ranks: 133 r 1
    per_rank = []
    for rank in range(3):
        ds = PackedIterableDataset(
            source_a, seed=5, filter=has_tokens, rank=rank, world_size=3, uneven=uneven
        )
        got = batch_ids(make_loader(ds, 8, num_workers=2, stateful=False))
        assert got == batch_ids(make_loader(ds, 8, num_workers=0, stateful=False))
        per_rank.append(got)
    lengths = [len(g) for g in per_rank]
    flat = [i for g in per_rank for i in g]
    if uneven == "pad":
        assert lengths == [134] * 3 and set(flat) == kept
    elif uneven == "drop":
        assert lengths == [133] * 3 and len(set(flat)) == 399 and set(flat) <= kept
    else:
        assert lengths == [134, 133, 133] and sorted(flat) == sorted(kept)


def test_filter_resumes_and_refuses_a_state_of_another_filter(source_a: str) -> None:
    ds = PackedIterableDataset(source_a, seed=2, filter=has_tokens)
    full = ids(ds)
    it = iter(ds)
    taken = [next(it)["id"] for _ in range(150)]
    state = ds.state_dict()
    assert state["kept"] is not None and state["yielded"] == 150
    fresh = PackedIterableDataset(source_a, seed=2, filter=has_tokens)
    fresh.load_state_dict(state)
    assert taken + ids(fresh) == full
    other = PackedIterableDataset(source_a, seed=2, filter=lambda r: r["id"] % 3 != 1)
    with pytest.raises(OptionError, match="kept"):
        other.load_state_dict(state)
    unfiltered = PackedIterableDataset(source_a, seed=2)
    with pytest.raises(OptionError, match="state does not match"):
        unfiltered.load_state_dict(state)


class CountingFilter:
    """A picklable filter that counts its calls (in this process)."""

    calls = 0

    def __init__(self, modulo: int) -> None:
        self.modulo = modulo

    def __call__(self, record: Any) -> bool:
        CountingFilter.calls += 1
        return record["id"] % self.modulo == 0


def test_index_cache_skips_the_pre_pass_and_follows_the_filter(
    source_a: str, tmp_path: Path
) -> None:
    cache = tmp_path / "index"
    CountingFilter.calls = 0
    first = PackedIterableDataset(source_a, filter=CountingFilter(5), index_cache=cache)
    assert len(first) == N_A // 5 and CountingFilter.calls == N_A
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob("*.tmp"))
    again = PackedIterableDataset(source_a, filter=CountingFilter(5), index_cache=cache)
    assert ids(again) == ids(first) and CountingFilter.calls == N_A  # read from the cache
    other = PackedIterableDataset(source_a, filter=CountingFilter(7), index_cache=cache)
    assert len(other) == -(-N_A // 7) and CountingFilter.calls == 2 * N_A  # another filter
    assert len(list(cache.glob("*.npz"))) == 2
    (next(cache.glob("*.npz"))).write_bytes(b"garbage")
    with pytest.raises(OptionError, match=r"index cache .* unreadable"):
        for modulo in (5, 7):
            len(PackedIterableDataset(source_a, filter=CountingFilter(modulo), index_cache=cache))


def test_bad_filters_are_refused(source_a: str) -> None:
    with pytest.raises(OptionError, match="filter must be a callable"):
        PackedIterableDataset(source_a, filter="input_ids")  # type: ignore[arg-type]

    def broken(record: Any) -> bool:
        return record["input_ids"] is not None  # text records have no input_ids

    with pytest.raises(KeyError):
        len(PackedIterableDataset(source_a, filter=broken))
    nothing = PackedIterableDataset(source_a, filter=lambda r: False)
    with pytest.raises(OptionError, match="no records to read"):
        len(nothing)


def test_a_lambda_filter_runs_once_in_the_parent_and_workers_get_its_result(
    source_a: str,
) -> None:
    ds = PackedIterableDataset(source_a, seed=1, filter=lambda r: r["id"] % 4 == 1)
    loader = make_loader(ds, 8, num_workers=2, stateful=False)
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned worker receives
    assert sorted(ids(clone)) == list(range(1, N_A, 4))
    assert sorted(batch_ids(loader)) == list(range(1, N_A, 4))


# -- records without some fields ------------------------------------------------------------


def test_mixed_records_batch_with_presence_masks(source_a: str) -> None:
    ds = PackedIterableDataset(source_a, seed=0, columns=["id", "input_ids", "topk"])
    seen = []
    for batch in make_loader(ds, 8, num_workers=2, stateful=False):
        seen += [int(i) for i in batch["id"]]
        present = batch.get("input_ids_present")
        if present is not None:
            assert batch["input_ids"].shape[0] == 8 and batch["topk"].shape[2] == 2
            assert (batch["input_ids"][~present] == 0).all()
            assert (batch["id"][~present] % 3 == 0).all() and (batch["id"][present] % 3).all()
    assert sorted(seen) == list(range(N_A))


def test_columns_keep_the_fields_a_record_has(source_a: str) -> None:
    records = list(PackedIterableDataset(source_a, shuffle=False, columns=["id", "input_ids"]))
    assert list(records[0]) == ["id"] and list(records[1]) == ["id", "input_ids"]


# -- weighted mixtures ----------------------------------------------------------------------


def test_mixture_proportions_hold_over_the_epoch_and_its_prefixes(
    source_a: str, source_b: str
) -> None:
    ds = PackedIterableDataset([source_a, source_b], weights=[0.7, 0.3], num_samples=5000, seed=1)
    got = ids(ds)
    assert len(got) == len(ds) == 5000
    from_b = np.array([i >= 10_000 for i in got])
    assert from_b.sum() == 1500
    for first in range(0, 5000 - 200, 25):  # any stretch of 200 keeps the weights within 2%
        assert abs(from_b[first : first + 200].mean() - 0.3) <= 0.02
    counts = collections.Counter(got)
    assert {counts[i] for i in range(10_000, 10_000 + N_B)} <= {9, 10}  # b repeated ~9.9x
    assert {counts[i] for i in range(N_A)} == {5, 6}  # a repeated ~5.8x
    again = PackedIterableDataset([source_a, source_b], weights=[7, 3], num_samples=5000, seed=1)
    assert ids(again) == got
    again.set_epoch(1)
    assert ids(again) != got


def test_default_mixture_epoch_is_the_sources_total_and_subsampling_carries_on(
    source_a: str, source_b: str
) -> None:
    ds = PackedIterableDataset([source_a, source_b], weights=[0.5, 0.5], seed=4)
    assert len(ds) == N_A + N_B
    assert apportion(N_A + N_B, [0.5, 0.5]).tolist() == [376, 375]
    a_seen: list[int] = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        got = ids(ds)
        a_seen += [i for i in got if i < 10_000]
        assert sum(i < 10_000 for i in got) == 376
    # a gives 376 of its 600 records per epoch and carries on where it stopped: no record of
    # a comes twice before every record of a came once
    assert sorted(a_seen[:N_A]) == list(range(N_A))


def test_mixture_with_filter_workers_and_resume_on_another_world_size(
    source_a: str, source_b: str
) -> None:
    def dataset(rank: int, world: int) -> PackedIterableDataset:
        return PackedIterableDataset(
            [source_a, source_b],
            weights=[0.6, 0.4],
            num_samples=900,
            filter=has_tokens,
            seed=8,
            rank=rank,
            world_size=world,
            uneven="none",
            columns=["id"],
        )

    whole = ids(dataset(0, 1))
    seen: list[int] = []
    states = []
    for rank in range(2):
        loader = make_loader(dataset(rank, 2), 8, num_workers=2)
        for n, batch in enumerate(loader):
            seen += [int(i) for i in batch["id"]]
            if n == 9:
                break
        states.append(resume_state_from_loader(loader.state_dict()))
    assert states[0]["position"] == states[1]["position"] == 160
    rest: list[int] = []
    for rank in range(3):
        ds = dataset(rank, 3)
        ds.load_state_dict(states[0])
        rest += batch_ids(make_loader(ds, 8, num_workers=2, stateful=False))
    assert sorted(seen + rest) == sorted(whole)
    assert all(i % 3 for i in whole)


def test_bad_mixtures_are_refused(source_a: str, source_b: str) -> None:
    for weights, match in [
        ([1.0], "1 given for 2 sources"),
        ([1.0, 0.0], "positive"),
        ([1.0, float("nan")], "positive"),
        ([1.0, "x"], "must be a number"),
    ]:
        with pytest.raises(OptionError, match=match):
            PackedIterableDataset([source_a, source_b], weights=weights)
    with pytest.raises(OptionError, match="list of sources"):
        PackedIterableDataset(source_a, weights=[1.0])
    with pytest.raises(OptionError, match="num_samples"):
        PackedIterableDataset(source_a, num_samples=0)


# -- token budgets --------------------------------------------------------------------------


def _lengths(batch: dict[str, Any]) -> list[int]:
    return batch["input_ids_lengths"].tolist()


def test_token_budget_batches_stay_under_the_budget_and_read_each_record_once(
    source_a: str,
) -> None:
    from shardpack.torch import PadCollate

    ds = PackedIterableDataset(source_a, seed=6, filter=has_tokens)
    collate = PadCollate(with_lengths=True)
    loader = make_loader(ds, max_tokens=512, num_workers=2, collate_fn=collate, stateful=False)
    batches = list(loader)
    assert len(batches) == len(ds)
    for batch in batches:
        assert batch["input_ids"].numel() <= 512
    got = batch_ids(batches)
    assert sorted(got) == [i for i in range(N_A) if i % 3]
    inline = make_loader(ds, max_tokens=512, num_workers=0, collate_fn=collate, stateful=False)
    assert batch_ids(inline) == got
    real = sum(sum(_lengths(b)) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    assert padded / real < 1.1  # sorted by length inside the window: little padding


def test_token_budget_ranks_take_the_same_number_of_steps(source_a: str) -> None:
    steps, seen = [], []
    for rank in range(3):
        ds = PackedIterableDataset(source_a, seed=6, filter=has_tokens, rank=rank, world_size=3)
        batches = list(make_loader(ds, max_tokens=512, num_workers=2, stateful=False))
        steps.append(len(batches))
        seen += batch_ids(batches)
    assert len(set(steps)) == 1
    assert set(seen) == {i for i in range(N_A) if i % 3}


def test_an_oversize_record_is_alone_with_a_warning_or_truncated(source_a: str) -> None:
    ds = PackedIterableDataset(source_a, seed=0, filter=has_tokens)
    with pytest.warns(UserWarning, match="longer than max_tokens=100"):
        batches = list(make_loader(ds, max_tokens=100, stateful=False))
    for batch in batches:
        assert batch["input_ids"].numel() <= 100 or batch["input_ids"].shape[0] == 1
    cut = PackedIterableDataset(source_a, seed=0, filter=has_tokens)
    loader = make_loader(cut, max_tokens=100, oversize="truncate", stateful=False)
    for batch in loader:
        assert batch["input_ids"].numel() <= 100
        assert batch["topk"].shape[:2] == batch["input_ids"].shape  # cut with the tokens
    with pytest.raises(OptionError, match="oversize must be one of"):
        make_loader(cut, max_tokens=100, oversize="drop")


def test_token_budget_resumes_from_steps_with_a_plain_loader(source_a: str) -> None:
    def loader(ds: PackedIterableDataset) -> Any:
        return make_loader(ds, max_tokens=512, num_workers=2, stateful=False)

    ds = PackedIterableDataset(source_a, seed=9, filter=has_tokens)
    ds.set_epoch(2)
    full = batch_ids(loader(ds))
    taken: list[int] = []
    for step, batch in enumerate(loader(ds), start=1):
        taken += [int(i) for i in batch["id"]]
        if step == 7:
            break
    state = ds.state_at_step(step)
    assert state["batching"]["max_tokens"] == 512 and state["position"] == 7
    fresh = PackedIterableDataset(source_a, seed=9, filter=has_tokens)
    with pytest.raises(OptionError, match="batching"):
        fresh.load_state_dict(state)  # records, not batches: refused
    resumed = loader(fresh)  # make_loader sets the budget first
    fresh.load_state_dict(state)
    assert taken + batch_ids(resumed) == full


def test_token_budget_resumes_with_a_stateful_loader_on_another_world_size(
    source_a: str,
) -> None:
    def dataset(rank: int, world: int) -> PackedIterableDataset:
        return PackedIterableDataset(
            source_a, seed=3, filter=has_tokens, rank=rank, world_size=world, uneven="none"
        )

    every = batch_ids(make_loader(dataset(0, 1), max_tokens=400))
    seen: list[int] = []
    states = []
    for rank in range(2):
        loader = make_loader(dataset(rank, 2), max_tokens=400, num_workers=2)
        for n, batch in enumerate(loader):
            seen += [int(i) for i in batch["id"]]
            if n == 4:
                break
        states.append(resume_state_from_loader(loader.state_dict()))
    assert states[0]["position"] == 10
    rest: list[int] = []
    for rank in range(3):
        ds = dataset(rank, 3)
        loader = make_loader(ds, max_tokens=400, stateful=False)
        ds.load_state_dict(states[0])
        rest += batch_ids(loader)
    assert sorted(seen + rest) == sorted(every)


# -- sequence packing -----------------------------------------------------------------------


def test_sequence_packing_fills_sequences_with_whole_records(source_a: str) -> None:
    ds = PackedIterableDataset(source_a, seed=2, filter=has_tokens)
    reference = {r["id"]: r for r in PackedIterableDataset(source_a, shuffle=False)}
    seen: list[int] = []
    sequences = 0
    for batch in make_loader(ds, 4, seq_len=256, num_workers=2, stateful=False):
        assert batch["input_ids"].shape[1] == 256 and batch["topk"].shape[1:] == (256, 2)
        for row in range(batch["input_ids"].shape[0]):
            sequences += 1
            segments = batch["segment_ids"][row]
            for n, record_id in enumerate(batch["id"][row], start=1):
                where = segments == n
                want = reference[record_id]["input_ids"]
                assert batch["input_ids"][row][where].tolist() == want.tolist()
                assert batch["position_ids"][row][where].tolist() == list(range(len(want)))
                seen.append(int(record_id))
    assert sorted(seen) == [i for i in range(N_A) if i % 3]
    total = sum(len(reference[i]["input_ids"]) for i in seen)
    assert total / (sequences * 256) > 0.9  # best-fit decreasing leaves little room unused


# -- workers really run; resume cannot silently restart -------------------------------------


def with_worker(record: Any) -> Any:
    info = torch.utils.data.get_worker_info()
    return {**record, "worker": -1 if info is None else info.id, "pid": os.getpid()}


def test_make_loader_really_starts_workers(source_a: str) -> None:
    ds = PackedIterableDataset(source_a, seed=0, columns=["id"], transform=with_worker)
    batches = list(make_loader(ds, 8, num_workers=2, stateful=False))
    workers = {int(w) for b in batches for w in b["worker"]}
    pids = {int(p) for b in batches for p in b["pid"]}
    assert workers == {0, 1} and os.getpid() not in pids and len(pids) == 2
    # batches alternate between the workers, in turns of one batch
    assert [int(b["worker"][0]) for b in batches[:4]] == [0, 1, 0, 1]


def test_state_dict_after_worker_iteration_raises_and_points_to_the_loader(
    source_a: str,
) -> None:
    ds = PackedIterableDataset(source_a, seed=0, columns=["id"])
    loader = make_loader(ds, 8, num_workers=2, stateful=False)
    for n, _ in enumerate(loader):
        if n == 3:
            break
    with pytest.raises(OptionError, match=r"loader\.state_dict\(\).*state_at_step"):
        ds.state_dict()
    state = ds.state_at_step(4)  # what works: the loop's own count
    assert state["position"] == 32
    ds.load_state_dict(state)
    assert ds.state_dict()["position"] == 32  # a loaded state is known here again
    list(make_loader(ds, 8, num_workers=0, stateful=False))
    assert ds.state_dict()["yielded"] == N_A - 32  # iterated here: exact


@pytest.mark.slow
def test_spawned_workers_get_the_filter_result_and_report_to_the_parent(source_a: str) -> None:
    """Under "spawn" (macOS, Windows, CUDA setups) the dataset is pickled into each worker: a
    lambda filter cannot pickle, so workers get its result; the worker mark still reaches the
    parent, which then refuses its own state."""
    ds = PackedIterableDataset(source_a, seed=1, filter=lambda r: r["id"] % 4 == 1, columns=["id"])
    loader = make_loader(ds, 8, num_workers=2, multiprocessing_context="spawn", stateful=False)
    assert sorted(batch_ids(loader)) == list(range(1, N_A, 4))
    with pytest.raises(OptionError, match=r"loader\.state_dict\(\)"):
        ds.state_dict()


def test_make_loader_refuses_conflicting_batch_options(source_a: str) -> None:
    ds = PackedIterableDataset(source_a, columns=["id", "input_ids"])
    for options, match in [
        ({"batch_size": 8, "max_tokens": 100}, "leave batch_size out"),
        ({"max_tokens": 100, "seq_len": 64, "batch_size": 2}, "not both"),
        ({"seq_len": 64}, "seq_len needs batch_size"),
        ({}, "batch_size must be a positive integer"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"max_tokens": 100, "token_field": "tokens"}, "not among columns"),
    ]:
        with pytest.raises(OptionError, match=match):
            make_loader(ds, **options)
    with pytest.raises(OptionError, match="takes a PackedIterableDataset"):
        make_loader([1, 2, 3], 8)  # type: ignore[arg-type]
