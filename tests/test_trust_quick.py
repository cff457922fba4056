"""The three trust fixes that could not wait: no git process runs on the data's repository, a
zstd frame's declared size is checked before anything is allocated, and no output replaces an
input (or a temp file survives a failed write)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import shardpack
from shardpack import DatasetPacker, OptionError
from shardpack.build.gitstate import git_state
from shardpack.codecs import ZstdCodec
from shardpack.errors import CodecError

from .conftest import file_size_limit, write_jsonl

RECORDS = [{"id": i, "text": f"line {i}", "input_ids": [i, i + 1, i + 2]} for i in range(50)]


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardpack", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,  # type: ignore[call-overload]
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# ---- git state without running git ------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    base = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    return subprocess.run([*base, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    write_jsonl(repo / "data.jsonl", RECORDS)
    (repo / "other.txt").write_text("x")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "data")
    return repo


def test_packing_inside_a_hostile_repository_runs_none_of_its_programs(
    repo: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    hook = tmp_path / "monitor.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    # what `git status` would run: an fsmonitor hook and a clean filter for every file
    _git(repo, "config", "core.fsmonitor", str(hook))
    _git(repo, "config", "filter.evil.clean", f"{hook} %f")
    (repo / ".gitattributes").write_text("* filter=evil\n")
    proc = run("pack", str(repo / "data.jsonl"), "-o", str(tmp_path / "out.packed"))
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    with shardpack.open(tmp_path / "out.packed") as ds:
        git = ds.metadata.provenance.inputs[0].git
    assert git.commit == _git(repo, "rev-parse", "HEAD").strip()
    assert git.dirty is False


def test_git_state_reads_packed_refs_detached_heads_and_every_index_version(repo: Path) -> None:
    data = str(repo / "data.jsonl")
    commit = _git(repo, "rev-parse", "HEAD").strip()
    expected = {"repository": str(repo), "commit": commit, "dirty": False}
    assert git_state(data) == expected
    _git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "master").exists()
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert git_state(data) == expected
    for version in ("2", "3", "4"):
        _git(repo, "update-index", "--index-version", version)
        assert git_state(data) == expected, version
    _git(repo, "checkout", "-q", "--detach")
    assert git_state(data) == expected
    # the same size, other bytes: found by the blob hash, not by the size
    text = (repo / "data.jsonl").read_bytes()
    (repo / "data.jsonl").write_bytes(text.replace(b"line 1", b"LINE 1", 1))
    assert git_state(data) == {**expected, "dirty": True}
    (repo / "data.jsonl").write_bytes(text)
    assert git_state(data) == expected
    (repo / "new.jsonl").write_bytes(text)  # untracked
    assert git_state(str(repo / "new.jsonl")) == {**expected, "dirty": True}


def test_git_state_of_a_linked_worktree(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "wt"
    _git(repo, "worktree", "add", "-q", "-b", "side", str(other))
    commit = _git(other, "rev-parse", "HEAD").strip()
    state = git_state(str(other / "data.jsonl"))
    assert state == {"repository": str(other), "commit": commit, "dirty": False}


def test_git_state_survives_damaged_or_hostile_git_files(repo: Path) -> None:
    data = str(repo / "data.jsonl")
    (repo / ".git" / "index").write_bytes(b"DIRC" + struct.pack(">II", 2, 10**9) + b"\0" * 30)
    assert git_state(data)["dirty"] is True  # an unreadable index: not known to be clean
    (repo / ".git" / "HEAD").unlink()
    os.mkfifo(repo / ".git" / "HEAD")  # would block a naive read forever
    assert git_state(data) is None
    (repo / ".git" / "HEAD").unlink()
    (repo / ".git" / "HEAD").write_text("ref: refs/../../../etc/passwd\n")
    assert git_state(data) is None


# ---- zstd frames that lie about their size ----------------------------------------------------


def _zstd_frame_claiming(content_size: int, payload: bytes = b"x") -> bytes:
    """A zstd frame whose header declares ``content_size`` bytes, holding one raw block."""
    descriptor = 0b11_1_0_0_0_00  # 8-byte content size, single segment, no checksum, no dict
    block_header = (1 | (0 << 1) | (len(payload) << 3)).to_bytes(3, "little")  # last, raw
    return (
        b"\x28\xb5\x2f\xfd"
        + bytes([descriptor])
        + struct.pack("<Q", content_size)
        + (block_header + payload)
    )


def test_zstd_refuses_a_frame_claiming_more_than_the_index_before_allocating() -> None:
    codec = ZstdCodec()
    with pytest.raises(CodecError, match=r"declares 1099511627776 bytes"):
        codec.decode(_zstd_frame_claiming(1 << 40), 1)
    good = codec.encode(b"abc" * 1000)
    assert codec.decode(good, 3000) == b"abc" * 1000
    with pytest.raises(CodecError, match="declares 3000 bytes"):
        codec.decode(good, 2999)


def test_a_packed_file_with_a_terabyte_zstd_frame_is_one_clean_error(tmp_path: Path) -> None:
    from shardpack.build.units import EncodedBlock
    from shardpack.format.layout import checksum
    from shardpack.packfile.writer import PackedFileWriter

    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    good = DatasetPacker().pack(source, tmp_path / "good.packed", compression="zstd")
    metadata = good.metadata
    bomb = tmp_path / "bomb.packed"
    frame = _zstd_frame_claiming(1 << 40)
    with PackedFileWriter(bomb) as writer:  # checksums recomputed, as an attacker can
        writer.write_block(EncodedBlock(frame, 1 << 20, len(RECORDS), checksum(frame)))
        writer.finish(msgspec.structs.replace(metadata, max_block_raw_size=1 << 20, block_count=1))
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
    for args in (["validate", str(bomb)], ["head", str(bomb)], ["unpack", str(bomb), "-o", "-"]):
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                limit + "from shardpack.cli.main import main; exit(main())",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
        assert "block 0" in proc.stdout + proc.stderr and "zstd frame declares" in (
            proc.stdout + proc.stderr
        )
    with shardpack.open(bomb) as ds, pytest.raises(shardpack.CorruptBlockError, match="block 0"):
        ds[0]


# ---- no output over an input ------------------------------------------------------------------


def test_a_rejects_file_that_is_an_input_is_refused(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", RECORDS)
    out = tmp_path / "out.packed"
    # the default rejects name OUT.rejects.jsonl, given as an input
    default_named = write_jsonl(tmp_path / "out.packed.rejects.jsonl", RECORDS)
    before = default_named.read_bytes()
    with pytest.raises(OptionError, match=r"rejects file .* is one of the inputs"):
        DatasetPacker().pack([good, default_named], out, on_error="skip")
    assert default_named.read_bytes() == before and not out.exists()
    proc = run("pack", str(good), "-o", str(out), "--on-error", "skip", "--rejects", str(good))
    assert "is one of the inputs" in one_line_error(proc) and proc.returncode == 2
    assert json.loads(good.read_text().splitlines()[0]) == RECORDS[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "good.jsonl",
        "out.packed.rejects.jsonl",
    ]


def test_unpack_refuses_to_write_over_what_it_reads(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    packed = tmp_path / "x.packed"
    DatasetPacker().pack(source, packed)
    before = packed.read_bytes()
    assert "is one of the inputs" in one_line_error(run("unpack", str(packed), "-o", str(packed)))
    os.link(packed, tmp_path / "alias.jsonl")  # a hard link is the same file too
    assert "is one of the inputs" in one_line_error(
        run("unpack", str(packed), "-o", str(tmp_path / "alias.jsonl"))
    )
    assert packed.read_bytes() == before
    folder = tmp_path / "sharded"
    assert run("pack", str(source), "-o", str(folder), "--records-per-shard", "20").returncode == 0
    manifest = (folder / "manifest.json").read_bytes()
    for target in (folder / "manifest.json", folder / "shard-00001.packed"):
        assert "is one of the inputs" in one_line_error(
            run("unpack", str(folder), "-o", str(target))
        )
    assert (folder / "manifest.json").read_bytes() == manifest
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_sharded_pack_refusing_a_folder_deletes_nothing_in_it(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    folder = tmp_path / "busy"
    folder.mkdir()
    # a user's temporary file looks like ours (".NAME.XXXX.tmp") but names no file of ours
    kept = [".draft.tmp", ".notes.txt.abc123.tmp", ".shard-00000.packed.tmp", "notes.txt"]
    for name in kept:
        (folder / name).write_text("keep me")
    proc = run("pack", str(source), "-o", str(folder), "--records-per-shard", "20")
    assert "not part of a shardpack dataset" in one_line_error(proc)
    assert sorted(p.name for p in folder.iterdir()) == kept
    (folder / "notes.txt").unlink()  # only temporary-looking files left: still not ours
    proc = run("pack", str(source), "-o", str(folder), "--records-per-shard", "20")
    assert "not part of a shardpack dataset" in one_line_error(proc)
    assert sorted(p.name for p in folder.iterdir()) == kept[:3]


def test_a_write_that_fails_midway_leaves_no_temp_file(kd_jsonl: Path, tmp_path: Path) -> None:
    """A full disk, as the file-size limit makes it: the write fails, nothing is left behind."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    proc = subprocess.run(
        [sys.executable, "-m", "shardpack", "pack", str(kd_jsonl), "-o", str(out_dir / "kd")],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=file_size_limit(256 * 1024),
    )
    one_line_error(proc)
    assert list(out_dir.iterdir()) == []
