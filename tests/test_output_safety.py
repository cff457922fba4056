"""No path destroys data: two packs into one output are refused while the first runs (a lock that
a killed pack does not leave held), nothing in a busy output is touched by the refused one, and
merge takes the same lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shardpack
from shardpack import OptionError, ShardedPacker
from shardpack.dataset.merge import merge_datasets
from shardpack.storage.output_lock import lock_location, output_lock

from .conftest import write_jsonl

RECORDS = [{"id": i, "text": f"line {i}"} for i in range(40)]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardpack", *args], capture_output=True, text=True, timeout=300
    )


def _refused(proc: subprocess.CompletedProcess[str], output: Path) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"output {output} is being written by another pack" in lines[0]
    return lines[0]


def _start_blocked_pack(output: Path, *extra: str) -> subprocess.Popen[str]:
    """A pack that takes its output's lock, then waits for its input on stdin."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardpack", "pack", "-", "-o", str(output), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = Path(lock_location(str(output)))
    deadline = time.monotonic() + 60
    while f"pid {proc.pid} " not in (lock.read_text() if lock.exists() else ""):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first pack never took its lock"
        time.sleep(0.05)
    return proc


def test_a_second_pack_into_a_file_being_packed_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.packed"
    other = write_jsonl(tmp_path / "other.jsonl", RECORDS[:5])
    first = _start_blocked_pack(out)
    try:
        line = _refused(_cli("pack", str(other), "-o", str(out)), out)
        assert f"pid {first.pid} on " in line
        with pytest.raises(OptionError, match="is being written by another pack"):
            shardpack.DatasetPacker().pack(other, out)
        lines = "".join(f'{{"id": {i}}}\n' for i in range(3))
        _out, err = first.communicate(lines, timeout=120)  # let the first one finish
        assert first.returncode == 0, err
    finally:
        first.kill()
        first.communicate()
    with shardpack.open(out) as ds:
        assert list(ds) == [{"id": i} for i in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.jsonl", "out.packed"]


def test_a_second_sharded_pack_into_a_busy_folder_touches_nothing(tmp_path: Path) -> None:
    """Today's data loss: two sharded packs into one folder both reported success. The second is
    refused before it looks at the folder (it used to delete the first one's temp files)."""
    folder = tmp_path / "ds"
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    first = _start_blocked_pack(folder, "--records-per-shard", "10")
    try:
        deadline = time.monotonic() + 60
        while not (folder / "unfinished-pack.json").exists():  # then it waits for its input
            assert time.monotonic() < deadline and first.poll() is None, "no plan written"
            time.sleep(0.05)
        live = folder / ".shard-00000.packed.k3j2.tmp"  # what the first pack would be writing
        live.write_bytes(b"in progress")
        before = sorted(p.name for p in folder.iterdir())
        for extra in (["--records-per-shard", "10"], []):
            _refused(_cli("pack", str(source), "-o", str(folder), *extra), folder)
        assert sorted(p.name for p in folder.iterdir()) == before and live.exists()
        with pytest.raises(OptionError, match="is being written by another pack"):
            merge_datasets([source], folder)
    finally:
        first.send_signal(signal.SIGKILL)  # a killed pack leaves its lock file, not the lock
        first.communicate(timeout=60)
    live.unlink()
    result = ShardedPacker().pack(source, folder, records_per_shard=10)
    assert result.record_count == 40 and not Path(lock_location(str(folder))).exists()
    with shardpack.open(folder) as ds:
        assert list(ds) == RECORDS


def test_the_lock_is_released_on_failure_and_refuses_a_foreign_file(tmp_path: Path) -> None:
    out = tmp_path / "out.packed"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ok": 1}\n{bad\n')
    assert "bad.jsonl:2" in _cli("pack", str(bad), "-o", str(out)).stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
    held = output_lock(str(out))
    with held, pytest.raises(OptionError, match="being written by another"), output_lock(str(out)):
        pass
    lock = Path(lock_location(str(out)))
    lock.write_text("my notes\n")  # a file of that name that is not ours: never reused
    with pytest.raises(OptionError, match="exists and is not a shardpack lock"):
        shardpack.DatasetPacker().pack(write_jsonl(tmp_path / "in.jsonl", RECORDS), out)
    assert lock.read_text() == "my notes\n"


def test_a_dry_run_removes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    leftover = folder / ".shard-00000.packed.k3j2.tmp"  # ours by its name: a real pack drops it
    leftover.write_bytes(b"in progress")
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    plan = shardpack.pack(source, folder, records_per_shard=10, dry_run=True)
    assert plan.units >= 1 and leftover.exists()
    shardpack.pack(source, folder, records_per_shard=10)
    assert not leftover.exists()


def test_a_writer_holds_its_output_until_it_is_closed_or_dropped(tmp_path: Path) -> None:
    """Two writers appending to one dataset would both number their shards after the same
    manifest: the second is refused while the first is open."""
    folder = tmp_path / "ds"
    first = shardpack.Writer(folder, records_per_shard=10, append=True)
    first.write_many(RECORDS[:15])
    with pytest.raises(OptionError, match="is being written by another pack"):
        shardpack.Writer(folder, records_per_shard=10, append=True)
    with pytest.raises(OptionError, match="is being written by another pack"):
        shardpack.pack(write_jsonl(tmp_path / "in.jsonl", RECORDS), folder, records_per_shard=10)
    first.close()
    second = shardpack.Writer(folder, records_per_shard=10, append=True)
    second.write_many(RECORDS[15:])
    second.abort()  # dropped: releases the output too
    with shardpack.Writer(folder, records_per_shard=10, append=True) as third:
        third.write_many(RECORDS[15:])
    with shardpack.open(folder) as ds:
        assert list(ds) == RECORDS
    assert not Path(lock_location(str(folder))).exists()
