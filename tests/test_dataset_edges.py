"""Edges of the dataset commands: validate from Python on folders and manifests, validate's globs
and version check, merge refusing damaged sources, diff across codecs and shard layouts, and the
dataset hash recomputed from its documented bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import xxhash

from shardpack import DatasetPacker, FormatError, ShardedPacker
from shardpack.dataset.merge import merge_datasets
from shardpack.dataset.validate_file import validate_path
from shardpack.dataset.validate_folder import validate_dataset

from .conftest import write_jsonl
from .crafting import PackedParts

RECORDS = [{"id": i, "text": f"record {i} " * (i % 7), "ids": [i, i + 1]} for i in range(240)]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardpack", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", RECORDS)


@pytest.fixture
def single(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "one.packed"
    DatasetPacker().pack(source, out, block_size="1K")
    return out


@pytest.fixture
def folder(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    ShardedPacker().pack(source, out, records_per_shard=60, block_size="1K")
    return out


def _flip_middle(path: Path) -> None:
    """One bit flipped in the middle of the middle block: footer, size and claims stay right."""
    data = bytearray(path.read_bytes())
    entry = PackedParts.parse(bytes(data)).index
    entry = entry[len(entry) // 2]
    data[int(entry["offset"]) + int(entry["stored_size"]) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# validate


@pytest.mark.parametrize("packer", [DatasetPacker, ShardedPacker])
def test_python_validate_takes_a_folder_or_its_manifest(folder: Path, packer: type) -> None:
    for path in (folder, folder / "manifest.json", str(folder)):
        report = packer().validate(path)
        assert report.ok, [str(p) for p in report.problems]
        assert report.files_checked == 4 and report.blocks_checked > 4
    _flip_middle(folder / "shard-00002.packed")
    report = DatasetPacker().validate(folder, deep=True)
    assert not report.ok
    assert any("shard-00002.packed" in str(p) for p in report.problems)


def test_python_validate_takes_a_file_url(folder: Path, single: Path) -> None:
    assert DatasetPacker().validate(f"file://{folder}").ok
    assert DatasetPacker().validate(single).ok


def test_cli_validate_expands_quoted_globs(single: Path, folder: Path, tmp_path: Path) -> None:
    run = _cli("validate", "o*.packed", "d*", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith("OK one.packed")
    assert run.stdout.splitlines()[1].startswith("OK ds")
    none = _cli("validate", "zz*.packed", cwd=tmp_path)
    assert none.returncode == 2 and "no packed file or dataset matches 'zz*.packed'" in none.stderr


def test_validate_compares_the_metadata_version_with_the_header(single: Path) -> None:
    parts = PackedParts.parse(single.read_bytes())
    assert parts.metadata["format_version"] == "1.2"
    parts.version = (1, 5)  # trailer; header too, so only the metadata disagrees
    parts.header = parts.header[:10] + (5).to_bytes(2, "little") + parts.header[12:]
    single.write_bytes(parts.assemble())
    report = validate_path(single)
    problems = [str(p) for p in report.problems]
    assert problems == [
        f"{single}: metadata says format_version '1.2', trailer says 1.5: version edited or damaged"
    ]


# merge


def test_merge_refuses_a_damaged_single_file_and_writes_nothing(
    single: Path, tmp_path: Path
) -> None:
    _flip_middle(single)
    out = tmp_path / "merged"
    with pytest.raises(FormatError, match=r"one\.packed: block \d+ .*checksum mismatch"):
        merge_datasets([single], out)
    assert not out.exists() or not list(out.iterdir())
    run = _cli("merge", str(single), "-o", str(tmp_path / "cli"))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "one.packed" in run.stderr
    assert not (tmp_path / "cli").exists() or not list((tmp_path / "cli").iterdir())


def test_merge_refuses_a_damaged_shard_and_writes_nothing(
    folder: Path, single: Path, tmp_path: Path
) -> None:
    _flip_middle(folder / "shard-00002.packed")
    out = tmp_path / "merged"
    with pytest.raises(FormatError, match=r"shard-00002\.packed: file hash .* differs from the"):
        merge_datasets([single, folder], out)
    assert not out.exists() or not list(out.iterdir())  # not even the good file was linked
    assert os.stat(single).st_nlink == 1


def test_merge_of_intact_sources_still_links(folder: Path, single: Path, tmp_path: Path) -> None:
    manifest = merge_datasets([folder, single], tmp_path / "merged")
    assert [e.records for e in manifest.shards] == [60, 60, 60, 60, 240]
    assert os.stat(single).st_nlink == 2  # hard-linked after verification, not copied
    assert validate_dataset(tmp_path / "merged").ok


def test_merge_removes_its_shards_when_a_copy_fails(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardpack.storage.folder import LocalStorage

    copy_in, calls = LocalStorage.copy_in, []

    def failing(
        self: LocalStorage, source: str, new_name: str, options: dict[str, Any] | None = None
    ) -> None:
        calls.append(new_name)
        if len(calls) == 3:
            raise OSError("disk full")
        copy_in(self, source, new_name, options)

    monkeypatch.setattr(LocalStorage, "copy_in", failing)
    out = tmp_path / "merged"
    with pytest.raises(OSError, match="disk full"):
        merge_datasets([folder], out)
    assert calls == ["shard-00000.packed", "shard-00001.packed", "shard-00002.packed"]
    assert not list(out.iterdir())  # a re-run may start: the folder is empty
    monkeypatch.setattr(LocalStorage, "copy_in", copy_in)
    assert len(merge_datasets([folder], out).shards) == 4


# diff


def test_diff_compares_content_across_shard_layouts(
    source: Path, single: Path, folder: Path, tmp_path: Path
) -> None:
    other = tmp_path / "ds2"
    ShardedPacker().pack(source, other, records_per_shard=240, compression="zstd")
    zstd = tmp_path / "z.packed"
    DatasetPacker().pack(source, zstd, compression="zstd")
    for a, b, how in (
        (single, folder, "records"),  # one file against four shards
        (folder, other, "records"),  # four shards against one
        (single, other, "content hashes"),  # a file against a one-shard folder: one split
        (single, zstd, "content hashes"),
    ):
        run = _cli("diff", str(a), str(b), "--json")
        assert run.returncode == 0, (a, b, run.stdout, run.stderr)
        result = json.loads(run.stdout)
        assert result["same_content"] is True and result["compared"] == how
        assert result["differences"] == [], result["differences"]  # no schema vs None
    fewer = tmp_path / "fewer.packed"
    DatasetPacker().pack(write_jsonl(tmp_path / "f.jsonl", RECORDS[:-1]), fewer)
    assert _cli("diff", str(fewer), str(folder)).returncode == 1
    changed = [*RECORDS[:100], {"id": -1, "text": "", "ids": [0, 0]}, *RECORDS[101:]]
    moved = tmp_path / "moved.packed"
    DatasetPacker().pack(write_jsonl(tmp_path / "m.jsonl", changed), moved)
    run = _cli("diff", str(moved), str(folder))
    assert run.returncode == 1 and "content differs" in run.stdout and "records hash" in run.stdout


def test_diff_verify_reads_the_blocks(single: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.packed"
    good.write_bytes(single.read_bytes())
    _flip_middle(single)
    quick = _cli("diff", str(single), str(good))  # footer claims only: documented
    assert quick.returncode == 0 and "compared content hashes" in quick.stdout
    run = _cli("diff", "--verify", str(single), str(good))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "one.packed: block" in run.stderr and "checksum mismatch" in run.stderr


# the dataset hash, as docs/SHARDING.md spells it


def test_dataset_hash_is_recomputable_from_the_documented_bytes(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    data = b"".join(s["content_hash"].encode("ascii") + b"\n" for s in manifest["shards"])
    assert len(data) == 42 * len(manifest["shards"])
    assert "xxh3_128:" + xxhash.xxh3_128_hexdigest(data) == manifest["totals"]["content_hash"]
