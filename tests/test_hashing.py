"""The inputs' sha256 for provenance: several inputs hashed at once on a big machine, the first
failing input reported whatever finished first, and the cores counted as the process may use."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

import shardpack
from shardpack import _machine
from shardpack.build import hashing
from shardpack.build.inputs import InputFile
from shardpack.errors import InputError


def _input(path: Path) -> InputFile:
    return InputFile(str(path), str(path), False, path.stat().st_size if path.exists() else 0, "")


def _files(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"part-{i}.jsonl"
        path.write_bytes(b'{"i": %d, "text": "%s"}\n' % (i, b"x" * (1000 + i)) * (200 + i))
        paths.append(path)
    return paths


def test_several_inputs_are_hashed_at_once_on_a_big_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "hash_threads", lambda: 3)
    paths = _files(tmp_path, 5)
    started = threading.Barrier(3, timeout=10)  # three threads are hashing at the same time
    original = hashing.hash_file

    def hash_file(location: str, storage_options: object = None) -> object:
        if location in {str(p) for p in paths[:3]}:
            started.wait()
        return original(location)

    monkeypatch.setattr(hashing, "hash_file", hash_file)
    hasher = hashing.InputHasher([_input(p) for p in paths], range(5)).start()
    digests = hasher.result()
    assert {n: d.sha256.hexdigest() for n, d in digests.items()} == {
        n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in enumerate(paths)
    }
    assert {n: d.size for n, d in digests.items()} == {
        n: p.stat().st_size for n, p in enumerate(paths)
    }
    assert hasher.covers_all()


def test_the_first_failing_input_is_reported_whatever_finished_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "hash_threads", lambda: 4)
    paths = _files(tmp_path, 4)
    files = [_input(p) for p in paths]
    files[1] = _input(tmp_path / "gone-1.jsonl")
    files[3] = _input(tmp_path / "gone-3.jsonl")
    with pytest.raises(InputError) as caught:
        hashing.InputHasher(files, range(4)).start().result()
    assert "gone-1.jsonl" in str(caught.value)


def test_a_pack_of_many_inputs_records_each_sha256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "hash_threads", lambda: 4)
    paths = _files(tmp_path, 6)
    result = shardpack.pack(paths, tmp_path / "out.packed", workers=1)
    with shardpack.open(result.output_path) as ds:
        inputs = ds.metadata.provenance.inputs
    recorded = {e.path: e.sha256 for e in inputs}
    assert recorded == {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (7, 1), (8, 2), (16, 4), (64, 4)])
def test_hash_threads_follow_the_usable_cores(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert _machine.usable_cores() == cores
    assert hashing.hash_threads() == threads


def test_the_default_worker_count_is_the_cores_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A container's cpuset or a SLURM allocation, not the whole node."""
    from shardpack.build.options import PackOptions

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    assert PackOptions().worker_count() == 3
    assert PackOptions(workers=5).worker_count() == 5
