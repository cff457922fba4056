"""A pack killed with SIGKILL at any moment leaves the output path as it was (or, once the
rename happened, holding the complete new file); it never holds a partial file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shardpack import DatasetPacker, InputError
from shardpack.dataset.validate_file import validate_path

# Runs a pack in a child process that SIGKILLs itself at a chosen point of the write path.
DRIVER = r"""
import os, signal, sys
import shardpack.build.packer, shardpack.dataset.validate_file, shardpack.packfile.writer
from shardpack import DatasetPacker, InputError

src, out, point = sys.argv[1:4]
os.environ["SOURCE_DATE_EPOCH"] = "1700000000"  # every run writes the same bytes

def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

progress = None
if point.startswith("unit:"):
    after = int(point[5:])
    calls = []
    def progress(*_args):
        calls.append(1)
        if len(calls) >= after:
            die()
elif point == "before-fsync":
    shardpack.packfile.writer.os.fsync = die
elif point == "validating":
    shardpack.dataset.validate_file._check_layout = die
elif point in ("before-rename", "after-rename"):
    real_replace = os.replace
    def replace(a, b):
        if point == "after-rename":
            real_replace(a, b)
        die()
    shardpack.packfile.writer.os.replace = replace
elif point == "slow":
    real_write = shardpack.packfile.writer.PackedFileWriter.write_block
    def write_block(self, *args):
        import time; time.sleep(0.02)
        real_write(self, *args)
    shardpack.packfile.writer.PackedFileWriter.write_block = write_block
# several units, so that a kill can land between them
DatasetPacker().pack(src, out, validate=True, progress=progress, block_size="16K", unit_bytes=256 * 1024)
"""

POINTS = ["unit:1", "unit:3", "before-fsync", "validating", "before-rename", "after-rename"]


def _pack_in_child(src: Path, out: Path, point: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(src), str(out), point],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: a kill reaches every process it made
    )


@pytest.fixture(scope="module")
def reference(kd_jsonl: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes an uninterrupted pack of the KD mix writes (with the driver's settings)."""
    out = tmp_path_factory.mktemp("ref") / "ref.packed"
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(kd_jsonl), str(out), "none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return out.read_bytes()


def _earlier_output(folder: Path, text_jsonl: Path) -> tuple[Path, bytes]:
    out = folder / "data.packed"
    DatasetPacker().pack(text_jsonl, out)
    return out, out.read_bytes()


def _assert_no_partial_file(folder: Path, out: Path, old: bytes | None, new: bytes) -> str:
    """The output is the old file, the complete new one, or absent. A temporary file left by
    the kill is either incomplete (and fails validation) or the complete new file."""
    for leftover in folder.glob(".*.tmp"):
        assert leftover.read_bytes() == new or not validate_path(leftover).ok
    if not out.exists():
        assert old is None
        return "absent"
    data = out.read_bytes()
    assert data in (old, new), "a partial or foreign file sits at the output path"
    assert validate_path(out, deep=True).ok
    return "old" if data == old else "new"


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("earlier", [True, False], ids=["over-old-file", "fresh"])
def test_sigkill_at_each_point_of_the_write_path(
    point: str, earlier: bool, kd_jsonl: Path, text_jsonl: Path, reference: bytes, tmp_path: Path
) -> None:
    out, old = (
        _earlier_output(tmp_path, text_jsonl) if earlier else (tmp_path / "data.packed", None)
    )
    child = _pack_in_child(kd_jsonl, out, point)
    assert child.wait(timeout=120) == -signal.SIGKILL
    state = _assert_no_partial_file(tmp_path, out, old, reference)
    assert state == ("new" if point == "after-rename" else "old" if earlier else "absent")


def test_sigkill_at_random_moments(
    kd_jsonl: Path, text_jsonl: Path, reference: bytes, tmp_path: Path
) -> None:
    rng = random.Random(7)
    out, old = _earlier_output(tmp_path, text_jsonl)
    seen = set()
    for _ in range(6):
        child = _pack_in_child(kd_jsonl, out, "slow")
        time.sleep(rng.uniform(0.2, 1.5))
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        state = _assert_no_partial_file(tmp_path, out, old, reference)
        seen.add(state)
        if state == "new":
            out.write_bytes(old)
    assert "old" in seen  # the kills did interrupt packs


def test_failed_repack_keeps_the_earlier_output(text_jsonl: Path, tmp_path: Path) -> None:
    out, old = _earlier_output(tmp_path, text_jsonl)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(InputError):
        DatasetPacker().pack(bad, out)
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "data.packed"]
