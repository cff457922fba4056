"""shardpack.torch with real DataLoader workers, torchdata and separate ranks over gloo."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import shardpack  # noqa: E402
from shardpack import DatasetPacker  # noqa: E402
from shardpack.errors import OptionError  # noqa: E402
from shardpack.loader.sampling import EpochOrder  # noqa: E402
from shardpack.torch import (  # noqa: E402
    BlockShuffleSampler,
    PackedDataset,
    PackedIterableDataset,
    PadCollate,
    make_loader,
    resume_state_from_loader,
)

from .conftest import assert_same_json, write_jsonl  # noqa: E402

try:
    from torchdata.stateful_dataloader import StatefulDataLoader
except ImportError:  # pragma: no cover - torchdata is optional
    StatefulDataLoader = None

needs_torchdata = pytest.mark.skipif(StatefulDataLoader is None, reason="torchdata not installed")
# torchdata 0.11 calls a torch API that torch 2.13 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")

N_RECORDS = 997  # prime: uneven splits for every world size


def _records(n: int, first: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(first)
    return [
        {
            "id": i,
            "tokens": rng.integers(0, 50_000, int(rng.integers(0, 40))).tolist(),
            "text": "w" * int(rng.integers(1, 200)),
        }
        for i in range(first, first + n)
    ]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("single")
    src = write_jsonl(folder / "recs.jsonl", _records(N_RECORDS))
    out = folder / "recs.packed"
    DatasetPacker().pack(src, out, block_size="4K")
    return str(out)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The same records split over three packed files (read together as one dataset)."""
    folder = tmp_path_factory.mktemp("sharded")
    cuts = [0, 300, 301, N_RECORDS]
    paths = []
    for n, (a, b) in enumerate(itertools.pairwise(cuts)):
        src = write_jsonl(folder / f"part{n}.jsonl", _records(b - a, a))
        out = folder / f"shard-{n:05d}.packed"
        DatasetPacker().pack(src, out, block_size="4K")
        paths.append(str(out))
    return paths


def ids_of(records: list[Any]) -> list[int]:
    return [int(r["id"]) for r in records]


def batch_ids(batches: list[dict[str, Any]]) -> list[int]:
    return [int(i) for b in batches for i in b["id"]]


def expected_order(source: Any, seed: int, epoch: int, window_blocks: int = 16) -> list[int]:
    ds = shardpack.open(source)
    counts = np.concatenate([f.index["record_count"] for f in ds.files])
    order = EpochOrder(counts, seed=seed, epoch=epoch, window_blocks=window_blocks)
    return [int(ds[int(i)]["id"]) for i in order.all_records()]


# -- single process -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["single", "sharded"])
def test_epoch_yields_every_record_once_in_the_epoch_order(kind: str, request: Any) -> None:
    source = request.getfixturevalue(kind)
    ds = PackedIterableDataset(source, seed=7)
    ds.set_epoch(2)
    got = ids_of(list(ds))
    assert sorted(got) == list(range(N_RECORDS))
    assert got == expected_order(source, seed=7, epoch=2)
    ds.set_epoch(3)
    assert ids_of(list(ds)) != got
    assert len(ds) == N_RECORDS


def test_records_equal_the_reader_and_unshuffled_is_file_order(single: str) -> None:
    ds = PackedIterableDataset(single, shuffle=False)
    reader = shardpack.open(single)
    for got, want in zip(ds, reader, strict=True):
        assert_same_json(got, json.loads(json.dumps(want, default=lambda a: a.tolist())))


def test_already_open_dataset_is_accepted_and_pickles_as_paths(sharded: list[str]) -> None:
    opened = shardpack.open(sharded)
    ds = PackedIterableDataset(opened, seed=1)
    blob = pickle.dumps(ds)
    assert len(blob) < 2_000  # paths and options, no data, no memory maps
    clone = pickle.loads(blob)
    assert clone._handles[0]._dataset is None  # opened lazily where it is iterated
    assert ids_of(list(clone)) == ids_of(list(ds))


def test_each_block_is_decoded_once_per_epoch(single: str, monkeypatch: Any) -> None:
    calls: list[tuple[str, int]] = []
    original = shardpack.packfile.reader.PackedFile.view_block

    def counting(self: Any, block: int) -> Any:
        calls.append((self.path, block))
        return original(self, block)

    monkeypatch.setattr(shardpack.packfile.reader.PackedFile, "view_block", counting)
    ds = PackedIterableDataset(single, seed=3, window_blocks=4)
    assert len(list(ds)) == N_RECORDS
    blocks = shardpack.open(single).files[0].block_count
    assert len(calls) == blocks and len(set(calls)) == blocks


@pytest.mark.parametrize("k", [0, 1, 57, N_RECORDS - 1, N_RECORDS])
def test_state_dict_resumes_right_after_the_last_record(single: str, k: int) -> None:
    ds = PackedIterableDataset(single, seed=11)
    ds.set_epoch(4)
    full = ids_of(list(ds))
    ds.set_epoch(4)
    it = iter(ds)
    taken = [next(it)["id"] for _ in range(k)]
    state = pickle.loads(pickle.dumps(ds.state_dict()))
    fresh = PackedIterableDataset(single, seed=11)
    fresh.load_state_dict(state)
    assert fresh.epoch == 4
    assert taken + ids_of(list(fresh)) == full
    assert len(fresh) == 0 or ids_of(list(fresh)) == full  # the next iter is a whole epoch


def test_state_of_other_data_or_options_is_refused(single: str, sharded: list[str]) -> None:
    state = PackedIterableDataset(single, seed=1).state_dict()
    with pytest.raises(OptionError, match="seed"):
        PackedIterableDataset(single, seed=2).load_state_dict(state)
    with pytest.raises(OptionError, match=r"blocks|total"):
        PackedIterableDataset(sharded[0], seed=1).load_state_dict(state)
    with pytest.raises(OptionError):
        PackedIterableDataset(single).load_state_dict({"epoch": 1})


def test_states_are_checked_field_by_field_and_version_1_states_load(single: str) -> None:
    ds = PackedIterableDataset(single, seed=1)
    ds.set_epoch(2)
    it = iter(ds)
    taken = [next(it)["id"] for _ in range(30)]
    state = ds.state_dict()
    for bad, where in [
        ({"epoch": "2"}, r"Expected `int`, got `str` - at `\$\.epoch`"),
        ({"yielded": -1}, r"Expected `int` >= 0 - at `\$\.yielded`"),
        ({"uneven": "wrap"}, r"\$\.uneven"),
        (
            {"batching": {"mode": "tokens"}},
            r"missing required field `token_field` - at `\$\.batching`",
        ),
        ({"surprise": 1}, r"unknown field `surprise`"),
        ({"version": 9}, r"\$\.version"),
    ]:
        with pytest.raises(OptionError, match=where):
            PackedIterableDataset(single, seed=1).load_state_dict({**state, **bad})
    with pytest.raises(OptionError, match="outside the epoch"):
        PackedIterableDataset(single, seed=1).load_state_dict({**state, "position": 10**6})
    # a state written by the first loader (version 1: no samples, kept, batching or units)
    old = {k: v for k, v in state.items() if k not in {"samples", "kept", "batching", "units"}}
    fresh = PackedIterableDataset(single, seed=1)
    fresh.load_state_dict({**old, "version": 1})
    assert taken + ids_of(list(fresh)) == expected_order(single, seed=1, epoch=2)


def test_ranks_in_lockstep_resume_with_another_world_size(sharded: list[str]) -> None:
    """2 ranks take k records each; 3 ranks go on from rank 0's state: none lost or repeated."""
    k = 100
    first = [
        PackedIterableDataset(sharded, seed=5, rank=r, world_size=2, uneven="none")
        for r in range(2)
    ]
    seen: list[int] = []
    for ds in first:
        ds.set_epoch(1)
        it = iter(ds)
        seen += [next(it)["id"] for _ in range(k)]
    state = first[0].state_dict()
    assert state == {**first[1].state_dict(), "rank": 0}  # all ranks agree on the prefix
    rest: list[int] = []
    for r in range(3):
        ds = PackedIterableDataset(sharded, seed=5, rank=r, world_size=3, uneven="none")
        ds.load_state_dict(state)
        rest += ids_of(list(ds))
    assert sorted(seen + rest) == list(range(N_RECORDS))
    assert set(seen) == set(expected_order(sharded, 5, 1)[: 2 * k])  # the epoch's prefix


def test_uneven_split_pad_and_drop(single: str) -> None:
    world = 4  # 997 = 4 * 249 + 1
    for uneven, share in [("pad", 250), ("drop", 249)]:
        got = [
            ids_of(list(PackedIterableDataset(single, rank=r, world_size=world, uneven=uneven)))
            for r in range(world)
        ]
        assert [len(g) for g in got] == [share] * world
        flat = [i for g in got for i in g]
        if uneven == "pad":
            assert set(flat) == set(range(N_RECORDS)) and len(flat) - N_RECORDS == 3
        else:
            assert len(set(flat)) == len(flat) == N_RECORDS - 1


def test_columns_and_transform(single: str) -> None:
    ds = PackedIterableDataset(
        single, shuffle=False, columns=["id", "tokens"], transform=lambda r: {**r, "n": 1}
    )
    first = next(iter(ds))
    assert list(first) == ["id", "tokens", "n"]
    with pytest.raises(OptionError, match="no record has field 'nope'"):
        next(iter(PackedIterableDataset(single, columns=["nope"])))


# -- DataLoader workers ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["single", "sharded"])
def test_dataloader_batches_do_not_depend_on_num_workers(kind: str, request: Any) -> None:
    source = request.getfixturevalue(kind)

    def run(workers: int) -> list[int]:
        ds = PackedIterableDataset(source, seed=2, columns=["id", "tokens"])
        ds.set_epoch(1)
        return batch_ids(list(make_loader(ds, 8, num_workers=workers, stateful=False)))

    inline = run(0)
    assert sorted(inline) == list(range(N_RECORDS))
    assert run(2) == inline


def test_persistent_workers_that_would_repeat_the_first_epoch_are_refused(single: str) -> None:
    ds = PackedIterableDataset(single, seed=2, columns=["id"])
    with pytest.raises(OptionError, match="persistent_workers"):
        make_loader(ds, 8, num_workers=1, persistent_workers=True, stateful=False)
    # in file order every epoch is the same anyway: allowed
    ordered = PackedIterableDataset(single, shuffle=False, columns=["id"])
    loader = make_loader(ordered, 8, num_workers=1, persistent_workers=True, stateful=False)
    assert batch_ids(list(loader)) == list(range(N_RECORDS))


@pytest.mark.parametrize("persistent", [True, False])
def test_a_persistent_worker_warns_when_it_repeats_an_epoch(single: str, persistent: bool) -> None:
    # a plain DataLoader, not make_loader: the worker's copy sees its second iteration, and
    # its warning goes to the worker's stderr (a process of its own: run the loop in one)
    script = f"""
import torch
from shardpack.torch import PackedIterableDataset
ds = PackedIterableDataset({single!r}, seed=2, columns=["id"])
loader = torch.utils.data.DataLoader(
    ds, batch_size=8, num_workers=1, persistent_workers={persistent})
for epoch in range(3):
    ds.set_epoch(epoch)
    assert sum(len(batch["id"]) for batch in loader) == {N_RECORDS}
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    warned = "iterates this shuffled dataset a second time" in done.stderr  # once per worker
    assert warned == persistent, done.stderr


def test_plain_dataloader_resumes_from_state_after(single: str) -> None:
    def loader(ds: PackedIterableDataset) -> Any:
        return make_loader(ds, 8, num_workers=2, stateful=False)

    ds = PackedIterableDataset(single, seed=9, columns=["id"])
    ds.set_epoch(3)
    full = batch_ids(list(loader(ds)))
    steps = 0
    taken: list[int] = []
    for batch in loader(ds):
        taken += [int(i) for i in batch["id"]]
        steps += 1
        if steps == 20:
            break
    state = ds.state_after(steps * 8)  # what the training loop checkpoints
    fresh = PackedIterableDataset(single, seed=9, columns=["id"])
    fresh.load_state_dict(state)
    assert len(fresh) == N_RECORDS - 160
    assert taken + batch_ids(list(loader(fresh))) == full
    fresh.set_epoch(4)  # the next epoch starts from its beginning
    assert len(batch_ids(list(loader(fresh)))) == N_RECORDS


@needs_torchdata
@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resumes_mid_epoch(sharded: list[str], workers: int) -> None:
    def loader() -> Any:
        ds = PackedIterableDataset(sharded, seed=4, columns=["id", "tokens"])
        ds.set_epoch(2)
        return make_loader(ds, 8, num_workers=workers)

    full = batch_ids(list(loader()))
    first = loader()
    assert isinstance(first, StatefulDataLoader)
    taken: list[int] = []
    for n, batch in enumerate(first):
        taken += [int(i) for i in batch["id"]]
        if n == 12:
            break
    state = first.state_dict()
    second = loader()
    second.load_state_dict(state)
    assert taken + batch_ids(list(second)) == full


@needs_torchdata
def test_stateful_loader_state_carries_over_to_another_world_size(single: str) -> None:
    """Two ranks with two workers each stop after 7 batches; three ranks with one worker go on."""
    seen: list[int] = []
    states = []
    for rank in range(2):
        ds = PackedIterableDataset(single, seed=8, rank=rank, world_size=2, uneven="none")
        dl = make_loader(ds, 8, num_workers=2)
        for n, batch in enumerate(dl):
            seen += [int(i) for i in batch["id"]]
            if n == 6:
                break
        states.append(resume_state_from_loader(dl.state_dict()))
    assert states[0]["position"] == states[1]["position"] == 2 * 7 * 8
    rest: list[int] = []
    for rank in range(3):
        ds = PackedIterableDataset(single, seed=8, rank=rank, world_size=3, uneven="none")
        ds.load_state_dict(states[0])
        rest += batch_ids(list(make_loader(ds, 8, num_workers=1, stateful=False)))
    assert sorted(seen + rest) == list(range(N_RECORDS))


def test_map_style_dataset_with_block_shuffle_sampler(sharded: list[str]) -> None:
    ds = PackedDataset(sharded, columns=["id", "tokens"])
    assert len(ds) == N_RECORDS and ds[-1]["id"] == N_RECORDS - 1
    sampler = BlockShuffleSampler(ds, seed=3, rank=1, world_size=2)
    sampler.set_epoch(5)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=8, sampler=sampler, num_workers=2, collate_fn=PadCollate()
    )
    got = batch_ids(list(loader))
    other = BlockShuffleSampler(ds, seed=3, rank=0, world_size=2, uneven="none")
    other.set_epoch(5)
    assert len(got) == len(sampler) == 499
    assert sorted(set(got) | set(other)) == list(range(N_RECORDS))
    order = expected_order(sharded, 3, 5)
    assert got == order[1::2] + order[:1]  # rank 1's share, padded from the epoch's start


# -- collate --------------------------------------------------------------------------------


def test_pad_collate_on_distillation_data(tmp_path: Path, kd_jsonl: Path) -> None:
    out = tmp_path / "kd.packed"
    DatasetPacker().pack(kd_jsonl, out, dtypes={"teacher_topk_logprobs": "float16"})
    reader = shardpack.open(out)
    ds = PackedIterableDataset(out, shuffle=False, columns=["input_ids", "teacher_topk_logprobs"])
    collate = PadCollate(pad_values={"input_ids": -100}, side="left", with_lengths=True)
    batch = next(iter(make_loader(ds, 4, collate_fn=collate, stateful=False)))
    lengths = [len(reader[i]["input_ids"]) for i in range(4)]
    assert batch["input_ids_lengths"].tolist() == lengths
    longest = max(lengths)
    assert batch["input_ids"].shape == (4, longest)
    assert batch["teacher_topk_logprobs"].dtype == torch.float16
    for i, n in enumerate(lengths):
        want = reader[i]
        assert batch["input_ids"][i, longest - n :].tolist() == want["input_ids"].tolist()
        assert (batch["input_ids"][i, : longest - n] == -100).all()
        got = batch["teacher_topk_logprobs"][i, longest - n :].float().numpy()
        assert np.array_equal(got, want["teacher_topk_logprobs"].astype(np.float32))


def test_pad_collate_turns_ml_dtypes_bfloat16_into_torch_bfloat16() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([1.5, -2.25, 3.0], dtype=ml_dtypes.bfloat16)
    batch = PadCollate()([{"x": values}, {"x": values[:1]}])
    assert batch["x"].dtype == torch.bfloat16
    assert batch["x"].float().tolist() == [[1.5, -2.25, 3.0], [1.5, 0.0, 0.0]]


def test_pad_collate_writes_the_batch_once_into_one_buffer(monkeypatch: Any) -> None:
    made: list[np.ndarray] = []
    original = torch.from_numpy

    def spy(array: np.ndarray) -> Any:
        made.append(array)
        return original(array)

    monkeypatch.setattr(torch, "from_numpy", spy)
    records = [
        {"x": np.arange(3, dtype=np.int32), "m": {"y": 1.5}, "t": "a"},
        {"x": np.arange(1, dtype=np.int32), "m": {"y": 2.0}, "t": "b"},
    ]
    batch = PadCollate(with_lengths=True)(records)
    assert list(batch) == ["x", "x_lengths", "m", "t"]
    assert batch["x"].dtype == torch.int32 and batch["x"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch["m"]["y"].tolist() == [1.5, 2.0] and batch["t"] == ["a", "b"]
    assert len(made) == 1  # one buffer, written in place: no array copied in afterwards
    tensors = [batch["x"], batch["x_lengths"], batch["m"]["y"]]
    assert {t.untyped_storage().data_ptr() for t in tensors} == {made[0].ctypes.data}
    moved = batch.to("cpu")
    assert moved["x"].tolist() == batch["x"].tolist() and moved["t"] == ["a", "b"]
    clone = pickle.loads(pickle.dumps(batch))
    assert clone["m"]["y"].tolist() == [1.5, 2.0] and list(clone) == list(batch)


def test_a_batch_from_a_worker_arrives_as_one_storage(single: str) -> None:
    ds = PackedIterableDataset(single, seed=0)
    collate = PadCollate(with_lengths=True)
    for batch in make_loader(ds, 8, num_workers=2, collate_fn=collate, stateful=False):
        tensors = [v for v in batch.values() if isinstance(v, torch.Tensor)]
        assert len(tensors) == 3  # id, tokens, tokens_lengths (text stays a list)
        assert len({t.untyped_storage().data_ptr() for t in tensors}) == 1
        assert not tensors[0].is_shared()  # small: inside the pickle (the next test)


# -- separate ranks over torch.distributed (gloo on loopback) -------------------------------

RANK_SCRIPT = r"""
import json, sys
import torch.distributed as dist
from shardpack.torch import PackedIterableDataset, make_loader

port, out, paths = sys.argv[1], sys.argv[4], sys.argv[5:]
rank, world = int(sys.argv[2]), int(sys.argv[3])
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
source = paths[0] if len(paths) == 1 else paths
result = {}
for epoch in (0, 1):
    ds = PackedIterableDataset(source, seed=21, columns=["id"], uneven="pad")  # rank from dist
    ds.set_epoch(epoch)
    ids = [int(i) for b in make_loader(ds, 8, num_workers=2, stateful=False) for i in b["id"]]
    result[f"epoch{epoch}"] = ids
# resume: stop after 5 batches, checkpoint, carry on in a fresh loader
ds = PackedIterableDataset(source, seed=21, columns=["id"], uneven="pad")
ds.set_epoch(1)
taken = []
for n, b in enumerate(make_loader(ds, 8, num_workers=2, stateful=False)):
    taken += [int(i) for i in b["id"]]
    if n == 4:
        break
fresh = PackedIterableDataset(source, seed=21, columns=["id"], uneven="pad")
fresh.load_state_dict(ds.state_after(40))
taken += [int(i) for b in make_loader(fresh, 8, num_workers=2, stateful=False) for i in b["id"]]
result["resumed"] = taken
everyone = [None] * world
dist.all_gather_object(everyone, len(result["epoch0"]))
result["lengths"] = everyone
dist.destroy_process_group()
json.dump(result, open(out, "w"))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["single", "sharded"])
def test_separate_ranks_over_gloo(kind: str, request: Any, tmp_path: Path) -> None:
    source = request.getfixturevalue(kind)
    paths = [source] if isinstance(source, str) else source
    world, port = 2, _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RANK_SCRIPT,
                str(port),
                str(r),
                str(world),
                str(tmp_path / f"{r}.json"),
                *paths,
            ],
            env=env,
        )
        for r in range(world)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(world)]
    for epoch in ("epoch0", "epoch1"):
        per_rank = [res[epoch] for res in results]
        assert [len(ids) for ids in per_rank] == [499, 499]  # 997 padded to 2 x 499
        assert set(per_rank[0]) | set(per_rank[1]) == set(range(N_RECORDS))
        assert len(set(per_rank[0]) & set(per_rank[1])) == 1  # the one padding record
        order = expected_order(source, 21, int(epoch[-1]))
        assert per_rank[0] == order[0::2]
    assert results[0]["epoch0"] != results[0]["epoch1"]
    for res in results:
        assert res["resumed"] == res["epoch1"]
        assert res["lengths"] == [499, 499]


class _Batches(torch.utils.data.IterableDataset):  # type: ignore[misc]
    """Yields one small and one large TensorBatch per worker (module level: workers import it)."""

    def __iter__(self) -> Any:
        from shardpack.loader.tensors import INLINE_BYTES, TensorBatch

        worker = torch.utils.data.get_worker_info()
        for size in (1_000, INLINE_BYTES // 4 + 1_000):  # bytes / 4 int32 values: both paths
            ids = np.arange(size, dtype=np.int32) + (worker.id if worker else 0)
            yield TensorBatch.from_tree({"input_ids": ids, "meta": {"n": size}, "text": ["a"]})


def test_batches_cross_from_workers_inline_when_small_and_shared_when_large() -> None:
    """Small batches travel inside the pickle (a shared-memory storage costs a file descriptor
    handshake worth more than the copy), large ones as one shared storage; both arrive whole."""
    from shardpack.loader.tensors import INLINE_BYTES

    loader = torch.utils.data.DataLoader(_Batches(), batch_size=None, num_workers=2)
    got = list(loader)
    assert len(got) == 4
    for batch in got:
        size = batch["meta"]["n"]
        ids = batch["input_ids"]
        assert ids.shape == (size,) and batch["text"] == ["a"]
        assert torch.equal(ids - ids[0], torch.arange(size, dtype=torch.int32))
        assert batch.buffer.is_shared() == (batch.buffer.numel() > INLINE_BYTES)
