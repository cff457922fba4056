"""Guards that other tests did not miss when they were removed: each test here fails with its
guard (named in its docstring) disabled, and passes with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import shardpack
from shardpack import DatasetPacker, FormatError, ManifestError, OptionError, ShardedPacker
from shardpack.errors import CorruptBlockError
from shardpack.format.bounds import MAX_BLOCK_RAW_BYTES, MAX_BLOCK_RECORDS

from .conftest import file_size_limit
from .corpus import set_u32, table, u32
from .crafting import PackedParts, raw_of, set_raw, write_seeds

RECORDS = [{"id": i, "text": f"record {i}"} for i in range(60)]


def _jsonl(path: Path, records: list[dict[str, object]] = RECORDS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_seeds(tmp_path_factory.mktemp("seeds"))


# ---- readers ----------------------------------------------------------------------------------


def test_a_payload_region_running_into_the_arena_is_refused_on_a_scan(
    seeds: dict[str, Path], tmp_path: Path
) -> None:
    """format/block.py BlockView.records: ``end > self.arena_offset``."""
    parts = PackedParts.parse(seeds["lz4"].read_bytes())
    raw = bytearray(raw_of(parts, 2))
    n, arena_offset = u32(raw, 0), u32(raw, 4)
    region = 8 + 8 * (n + 1)
    set_u32(raw, table(raw, "offsets", n), arena_offset - region + 1)  # one byte into the arena
    set_raw(parts, 2, bytes(raw))
    path = tmp_path / "region.packed"
    path.write_bytes(parts.assemble())
    with shardpack.open(path) as ds, pytest.raises(CorruptBlockError) as caught:
        list(ds)
    text = str(caught.value)
    assert "block 2" in text and "payload region is out of bounds" in text, text


def test_an_index_holding_fewer_records_than_the_file_claims_is_refused(
    seeds: dict[str, Path], tmp_path: Path
) -> None:
    """format/layout.py check_index: ``int(counts.sum()) != record_count``. Without it the file
    opens with 3 phantom records and reading the last one raises a bare IndexError."""
    parts = PackedParts.parse(seeds["lz4"].read_bytes())
    parts.record_count += 3  # trailer and metadata agree; the blocks hold 3 fewer
    parts.metadata["record_count"] = parts.record_count
    path = tmp_path / "phantom.packed"
    path.write_bytes(parts.assemble())
    with pytest.raises(FormatError, match="record numbering in the index does not add up"):
        shardpack.open(path)


def test_a_manifest_whose_total_content_hash_is_edited_is_refused(tmp_path: Path) -> None:
    """dataset/manifest.py Manifest.from_json: the ``content_hash`` key of the totals check."""
    out = tmp_path / "ds"
    ShardedPacker().pack(_jsonl(tmp_path / "in.jsonl"), out, records_per_shard=20)
    doc = json.loads((out / "manifest.json").read_text())
    doc["totals"]["content_hash"] = "xxh3_128:" + "ab" * 16
    (out / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=r"totals\.content_hash is .* but the shards add up"):
        shardpack.open(out)


# ---- no output over an input ------------------------------------------------------------------


@pytest.mark.parametrize("inside", ["sub/in.jsonl", "shard-00009.packed"])
def test_an_input_inside_the_output_folder_is_refused_and_kept(tmp_path: Path, inside: str) -> None:
    """build/outputs.py OutputLayout._check_folder: ``input ... lies inside the output folder``.
    Without it the second case packs "successfully" and deletes its own input (a stale shard)."""
    out = tmp_path / "ds"
    ShardedPacker().pack(_jsonl(tmp_path / "in.jsonl"), out, records_per_shard=20)
    source = _jsonl(out / inside)
    before = source.read_bytes()
    with pytest.raises(OptionError, match="lies inside the output folder"):
        ShardedPacker().pack(source, out, records_per_shard=20)
    assert source.read_bytes() == before


def test_a_rejects_file_that_is_the_output_is_refused(tmp_path: Path) -> None:
    """build/pipeline.py _rejects_path: ``the rejects file cannot be the output``."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"ok": 1}\n{bad\n{"ok": 2}\n')
    out = tmp_path / "out.packed"
    with pytest.raises(OptionError, match="the rejects file cannot be the output"):
        DatasetPacker().pack(source, out, on_error="skip", rejects_path=out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_unpack_to_arrow_refuses_to_write_over_what_it_reads(tmp_path: Path) -> None:
    """dataset/arrow_export.py write_table_file: ``refuse_inputs_as_output``. Without it
    ``unpack x.arrow -o x.arrow`` replaces the packed file by its Arrow export."""
    pytest.importorskip("pyarrow")
    packed = tmp_path / "x.arrow"  # a packed file may have any name
    DatasetPacker().pack(_jsonl(tmp_path / "in.jsonl"), packed)
    before = packed.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "shardpack", "unpack", str(packed), "-o", str(packed)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "is one of the inputs" in lines[0] and "Traceback" not in proc.stderr
    assert packed.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


# ---- writers never exceed the caps ------------------------------------------------------------


@pytest.fixture
def one_block(tmp_path: Path) -> PackedParts:
    out = tmp_path / "one.packed"
    DatasetPacker().pack(_jsonl(tmp_path / "in.jsonl", [{"id": i} for i in range(50)]), out)
    parts = PackedParts.parse(out.read_bytes())
    assert len(parts.blocks) == 1
    return parts


def _block(parts: PackedParts, raw_size: int | None = None, records: int | None = None) -> object:
    from shardpack.build.units import EncodedBlock

    entry = parts.index[0]
    return EncodedBlock(
        parts.blocks[0],
        int(entry["raw_size"]) if raw_size is None else raw_size,
        int(entry["record_count"]) if records is None else records,
        0,
        0,
    )


@pytest.mark.parametrize("field", ["raw_size", "records"])
def test_the_writer_refuses_a_block_above_the_caps(
    one_block: PackedParts, tmp_path: Path, field: str
) -> None:
    """packfile/writer.py write_block: ``raw_size > MAX_BLOCK_RAW_BYTES or record_count >
    MAX_BLOCK_RECORDS``."""
    from shardpack.packfile.writer import PackedFileWriter

    block = (
        _block(one_block, raw_size=MAX_BLOCK_RAW_BYTES + 1)
        if field == "raw_size"
        else _block(one_block, records=MAX_BLOCK_RECORDS + 1)
    )
    out = tmp_path / "out" / "big.packed"
    with (
        pytest.raises(FormatError, match="above the format's caps"),
        PackedFileWriter(out) as writer,
    ):
        writer.write_block(block)  # type: ignore[arg-type]
    assert list(out.parent.iterdir()) == []


def test_the_writer_refuses_more_blocks_than_the_footer_cap(
    one_block: PackedParts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """packfile/writer.py write_block: ``len(self._entries) >= MAX_BLOCKS`` (the cap, 4M
    blocks, lowered to 2 here)."""
    from shardpack.packfile import writer as writer_module

    monkeypatch.setattr(writer_module, "MAX_BLOCKS", 2)
    out = tmp_path / "out" / "many.packed"
    with (
        pytest.raises(FormatError, match="holds at most 2 blocks"),
        writer_module.PackedFileWriter(out) as writer,
    ):
        for _ in range(3):
            writer.write_block(_block(one_block))  # type: ignore[arg-type]
    assert list(out.parent.iterdir()) == []


def test_the_writer_refuses_more_records_per_byte_than_the_format_allows(
    one_block: PackedParts, tmp_path: Path
) -> None:
    """packfile/writer.py finish: ``self.record_count > records_allowed(size)``: blocks that
    each claim the most records a block may hold, in a few hundred bytes each."""
    from shardpack.format.metadata import FileMetadata
    from shardpack.packfile.writer import PackedFileWriter

    metadata = msgspec.convert(one_block.metadata, FileMetadata)
    out = tmp_path / "out" / "dense.packed"
    with (
        pytest.raises(FormatError, match="per byte: use larger blocks"),
        PackedFileWriter(out) as writer,
    ):
        for _ in range(8):
            writer.write_block(_block(one_block, records=MAX_BLOCK_RECORDS))  # type: ignore[arg-type]
        writer.finish(metadata)
    assert list(out.parent.iterdir()) == []


# ---- unpack: fsynced, and no temp file left by a failure --------------------------------------


def test_unpack_fsyncs_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """storage/atomic.py atomic_file (what write_jsonl writes through): ``os.fsync`` of the
    temp file before the rename."""
    from shardpack.dataset import export

    packed = tmp_path / "x.packed"
    DatasetPacker().pack(_jsonl(tmp_path / "in.jsonl"), packed)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self") else "?")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "out.jsonl"
    with shardpack.open(packed) as ds:
        assert export.write_jsonl(ds, str(out), sources=[str(packed)]) == len(RECORDS)
    assert any(".out.jsonl." in name and name.endswith(".tmp") for name in synced), synced
    assert str(tmp_path) in synced, synced  # and the folder, so that the rename is durable


def test_outputs_get_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    """Temp files are made 0600; what is moved into place is readable as any new file would be
    (shared datasets, training jobs running as another account)."""
    previous = os.umask(0o022)
    try:
        single = tmp_path / "x.packed"
        DatasetPacker().pack(_jsonl(tmp_path / "in.jsonl"), single)
        folder = tmp_path / "ds"
        ShardedPacker().pack(tmp_path / "in.jsonl", folder, records_per_shard=5)
        out = tmp_path / "out.jsonl"
        run = subprocess.run(
            [sys.executable, "-m", "shardpack", "unpack", str(single), "-o", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
    finally:
        os.umask(previous)
    made = [single, out, *folder.iterdir()]
    assert len(made) > 3
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in made} == {p.name: "0o644" for p in made}


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_an_unpack_that_fails_midway_leaves_no_temp_file(tmp_path: Path, suffix: str) -> None:
    """dataset/export.py and dataset/arrow_export.py: ``tmp.unlink`` when the write fails (a
    full disk, as the file-size limit makes it)."""

    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    records = [{"id": i, "text": os.urandom(48).hex()} for i in range(4000)]
    packed = tmp_path / "x.packed"
    DatasetPacker().pack(_jsonl(tmp_path / "in.jsonl", records), packed)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardpack",
            "unpack",
            str(packed),
            "-o",
            str(out_dir / f"x{suffix}"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=file_size_limit(64 * 1024),
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert list(out_dir.iterdir()) == []
