"""The format's resource bounds: crafted files that claim more than the caps are refused, naming
file and block, before anything is allocated (checked under a memory limit); writers never make
a block, footer or record count beyond them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import msgspec
import numpy as np
import pytest

import shardpack
from shardpack import DatasetPacker, FormatError, InputError, OptionError
from shardpack.format.block import BlockBuilder, block_cuts
from shardpack.format.bounds import (
    MAX_BLOCK_RAW_BYTES,
    MAX_BLOCK_RECORDS,
    MAX_BLOCKS,
    MAX_METADATA_BYTES,
    min_raw_size,
    raw_block_size,
)
from shardpack.format.layout import BLOCK_ENTRY, TRAILER_SIZE
from shardpack.format.records import RecordEncoder, RecordLimitError
from shardpack.packfile.reader import PackedFile

from .conftest import write_jsonl
from .crafting import PackedParts, trailer_for, zstd_rle_frame

MEMORY_LIMIT = 1 << 30  # address space of the reading process: a few times the caps' worth


def run_limited(
    code: str, *args: str, limit: int = MEMORY_LIMIT
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python whose address space is capped at ``limit`` bytes."""
    prelude = f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


CLI = "from shardpack.cli.main import main; sys.exit(main(sys.argv[1:]))"


def assert_refused_by_every_command(
    path: Path, *expected: str, commands: tuple[str, ...] = ("validate", "info", "head", "unpack")
) -> None:
    """Each of ``commands`` exits 1 with one line naming the file and ``expected``, within the
    memory limit and without a traceback."""
    for command in commands:
        args = [command, str(path), *(["-o", "-"] if command == "unpack" else [])]
        proc = run_limited(CLI, *args)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, (args, out)
        assert "Traceback" not in out and "MemoryError" not in out, out
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, (args, out)
        for text in (str(path), *expected):
            assert text in lines[0], (args, lines[0])


@pytest.fixture(scope="module")
def one_block(tmp_path_factory: pytest.TempPathFactory) -> PackedParts:
    """A real zstd file of one block of 50 short records, taken apart."""
    folder = tmp_path_factory.mktemp("bounds")
    source = write_jsonl(folder / "in.jsonl", [{"id": i} for i in range(50)])
    out = folder / "one.packed"
    DatasetPacker().pack(source, out, compression="zstd")
    parts = PackedParts.parse(out.read_bytes())
    assert len(parts.blocks) == 1
    return parts


def _write(parts: PackedParts, path: Path) -> Path:
    path.write_bytes(parts.assemble())
    return path


# ---- decompression bombs ----------------------------------------------------------------------


def test_a_gibibyte_of_zeros_is_refused_at_open_naming_the_block(
    one_block: PackedParts, tmp_path: Path
) -> None:
    """32 KiB of valid zstd that decompresses to 1 GiB: the index's raw size is above the cap,
    so nothing is decompressed (every command stays within a 1 GiB address space)."""
    parts = one_block.copy()
    parts.blocks = [zstd_rle_frame(1 << 30)]
    parts.index["raw_size"] = 1 << 30
    parts.metadata["max_block_raw_size"] = 1 << 30
    bomb = _write(parts, tmp_path / "bomb.packed")
    assert bomb.stat().st_size < 40_000
    with pytest.raises(FormatError, match=r"block 0 .*claims 1073741824 raw bytes, above the"):
        shardpack.open(bomb)
    assert_refused_by_every_command(bomb, "block 0", "above the format's cap of 256 MiB")


def test_a_bomb_within_the_cap_allocates_no_more_than_the_index_declares(
    one_block: PackedParts, tmp_path: Path
) -> None:
    """A frame that claims what the index claims, up to the cap: the read allocates that much
    once, finds no records in it, and says so for the block."""
    parts = one_block.copy()
    parts.blocks = [zstd_rle_frame(MAX_BLOCK_RAW_BYTES)]
    parts.index["raw_size"] = MAX_BLOCK_RAW_BYTES
    parts.metadata["max_block_raw_size"] = MAX_BLOCK_RAW_BYTES
    bomb = _write(parts, tmp_path / "bomb.packed")
    reading = ("validate", "head", "unpack")  # info reads only the footer: it works
    assert_refused_by_every_command(bomb, "block 0", "bad block layout", commands=reading)


def test_a_frame_producing_more_than_its_index_entry_is_refused(
    one_block: PackedParts, tmp_path: Path
) -> None:
    parts = one_block.copy()
    raw = len(zstd_rle_frame(1 << 20))
    parts.blocks = [zstd_rle_frame(1 << 20)]
    parts.index["raw_size"] = 1 << 16  # the frame declares (and makes) 16 times more
    parts.metadata["max_block_raw_size"] = 1 << 16
    assert raw < 1 << 16
    path = _write(parts, tmp_path / "more.packed")
    with shardpack.open(path) as ds, pytest.raises(shardpack.CorruptBlockError) as caught:
        ds[0]
    assert caught.value.block == 0 and "zstd frame declares 1048576 bytes" in str(caught.value)


# ---- record counts ----------------------------------------------------------------------------


def test_a_tiny_file_claiming_400_million_records_is_refused_before_a_loader_sizes_anything(
    tmp_path: Path,
) -> None:
    """The file of the issue: a few hundred bytes whose trailer, index and metadata agree on
    4×10⁸ records. Opening it (and the torch loader) is one line, inside 1 GiB."""
    records = 400_000_000
    parts = PackedParts(
        header=b"\x89SHP\r\n\x1a\n\x01\x00\x00\x00\x00\x00\x00\x00",
        blocks=[b"\x00" * 16],
        index=np.zeros(1, dtype=BLOCK_ENTRY),
        metadata={
            "format": "shardpack",
            "format_version": "1.0",
            "created_by": "x",
            "codec": {"id": "none"},
            "block_size": 16,
            "record_count": records,
            "block_count": 1,
            "max_block_raw_size": 16,
            "stored_bytes": 16,
            "input_bytes": 0,
            "content_hash": "xxh3_128:" + "0" * 32,
        },
        record_count=records,
    )
    parts.index["raw_size"] = 16
    parts.index["record_count"] = records  # one block, consistent with trailer and metadata
    path = _write(parts, tmp_path / "many.packed")
    assert path.stat().st_size < 600
    with pytest.raises(FormatError, match=r"claims 400000000 records in a file of \d+ bytes"):
        shardpack.open(path)
    proc = run_limited(
        """
        import shardpack
        from shardpack.torch import PackedDataset, PackedIterableDataset
        for make in (PackedDataset, PackedIterableDataset):
            try:
                dataset = make(sys.argv[1])
                len(dataset) if make is PackedDataset else next(iter(dataset))
            except shardpack.ShardpackError as exc:
                print(str(exc).splitlines()[0])
        """,
        str(path),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("claims 400000000 records") == 2, proc.stdout


@pytest.mark.parametrize(
    ("count", "raw", "message"),
    [
        (MAX_BLOCK_RECORDS + 1, 16 << 20, f"claims {MAX_BLOCK_RECORDS + 1} records, above"),
        (1000, min_raw_size(1000) - 1, "claims 1000 records in 9020 raw bytes, too few"),
    ],
)
def test_a_block_claiming_more_records_than_it_may_hold_is_refused(
    one_block: PackedParts, tmp_path: Path, count: int, raw: int, message: str
) -> None:
    parts = one_block.copy()
    parts.index["record_count"] = count
    parts.index["raw_size"] = raw
    parts.metadata["max_block_raw_size"] = raw
    parts.record_count = parts.metadata["record_count"] = count
    parts.blocks = [parts.blocks[0] + b"\0" * (count // 64)]  # enough bytes for the per-file cap
    path = _write(parts, tmp_path / "claims.packed")
    with pytest.raises(shardpack.CorruptBlockError, match=message) as caught:
        shardpack.open(path)
    assert caught.value.block == 0 and str(path) in str(caught.value)


def test_a_block_storing_more_than_any_codec_makes_of_its_raw_size_is_refused(
    one_block: PackedParts, tmp_path: Path
) -> None:
    parts = one_block.copy()
    parts.blocks = [parts.blocks[0] + b"\0" * 5000]
    path = _write(parts, tmp_path / "stored.packed")
    raw = int(parts.index[0]["raw_size"])
    with pytest.raises(shardpack.CorruptBlockError, match=rf"stored bytes for {raw} raw bytes"):
        shardpack.open(path)


# ---- the footer -------------------------------------------------------------------------------


def _sparse_file(path: Path, index_size: int, metadata_size: int, records: int = 0) -> Path:
    """A file of zeros (sparse: it takes no disk) ending in a trailer that is right about its
    own checksum and the footer's place, claiming ``index_size`` + ``metadata_size`` bytes."""
    index_offset = 64
    size = index_offset + index_size + metadata_size + TRAILER_SIZE
    with path.open("wb") as file:
        file.write(b"\x89SHP\r\n\x1a\n\x01\x00\x00\x00\x00\x00\x00\x00")
        file.truncate(size - TRAILER_SIZE)
        file.seek(size - TRAILER_SIZE)
        file.write(trailer_for(size, index_offset, index_size, metadata_size, records))
    return path


def test_a_footer_above_the_caps_is_refused_before_it_is_read(tmp_path: Path) -> None:
    blocks = MAX_BLOCKS + 1
    index = _sparse_file(tmp_path / "index.packed", blocks * BLOCK_ENTRY.itemsize, 2)
    with pytest.raises(FormatError, match=f"index of {blocks} blocks is above the format's cap"):
        shardpack.open(index)
    metadata = _sparse_file(tmp_path / "metadata.packed", 0, MAX_METADATA_BYTES + 1)
    with pytest.raises(FormatError, match="metadata of 67108865 bytes is above the format's cap"):
        shardpack.open(metadata)
    assert_refused_by_every_command(metadata, "above the format's cap of 64 MiB")


# ---- writers keep to the caps -----------------------------------------------------------------


def test_blocks_close_at_the_record_cap_on_every_packing_path(tmp_path: Path) -> None:
    """70,000 one-byte records with 1 MiB blocks: the fast path (payloads cut in bulk) and the
    careful path (a bad line in the unit) both close blocks at MAX_BLOCK_RECORDS."""
    count = MAX_BLOCK_RECORDS + 4464
    fast = tmp_path / "fast.jsonl"
    fast.write_text("0\n" * count)
    careful = tmp_path / "careful.jsonl"
    careful.write_text("0\n" * count + "{bad\n")
    hashes = set()
    for source, on_error in ((fast, "fail"), (careful, "skip")):
        out = tmp_path / f"{source.stem}.packed"
        DatasetPacker().pack(source, out, block_size="1M", on_error=on_error)
        with PackedFile(out) as packed:
            assert packed.index["record_count"].tolist() == [MAX_BLOCK_RECORDS, 4464]
            hashes.add(packed.metadata.content_hash)
            assert len(packed) == count and packed.record(count - 1) == 0
    assert len(hashes) == 1


def test_block_cuts_follow_the_builder_and_hold_back_a_record_that_would_overflow() -> None:
    mib = 1 << 20
    assert block_cuts(np.array([135 * mib, 135 * mib, 10]), 256 * mib) == [1, 3]
    assert block_cuts(np.array([100, 100, 100]), 150) == [2, 3]
    assert block_cuts(np.ones(MAX_BLOCK_RECORDS + 5, np.int64), 1 << 28) == [
        MAX_BLOCK_RECORDS,
        MAX_BLOCK_RECORDS + 5,
    ]
    with pytest.raises(RecordLimitError, match="above the format's block cap of 256 MiB"):
        block_cuts(np.array([10, MAX_BLOCK_RAW_BYTES]), 64)
    rng = np.random.default_rng(0)
    for _ in range(50):  # and where no cap is reached, exactly as BlockBuilder cuts
        values = ["x" * int(n) for n in rng.integers(0, 300, size=int(rng.integers(1, 200)))]
        sizes = np.array([len(msgspec.msgpack.encode(v)) for v in values])
        block_size = int(rng.integers(1, 2000))
        builder, ends = BlockBuilder(RecordEncoder()), []
        for i, value in enumerate(values):
            builder.add(value)
            while builder.full(block_size):
                builder.build()
                ends.append(i + 1)
        if len(builder):
            ends.append(len(values))
        assert block_cuts(sizes, block_size) == ends


def test_the_builder_holds_back_a_record_that_would_take_its_block_over_the_cap() -> None:
    encoder = RecordEncoder()
    builder = BlockBuilder(encoder)
    half = "x" * (135 << 20)
    builder.add("small")
    builder.add(half)
    assert not builder.full(MAX_BLOCK_RAW_BYTES)
    builder.add(half)  # does not fit: it opens the next block
    assert builder.full(MAX_BLOCK_RAW_BYTES) and len(builder) == 2
    first = builder.build()
    assert len(first) <= MAX_BLOCK_RAW_BYTES and len(builder) == 1
    second = builder.build()
    assert len(second) == raw_block_size(1, len(half) + 5, 0)  # a str32 header, the string
    del first, second, half
    builder.add("small")
    with pytest.raises(RecordLimitError, match="record of 268435520 bytes encoded is above"):
        builder.add("y" * MAX_BLOCK_RAW_BYTES)
    assert len(builder) == 1 and not builder.full(MAX_BLOCK_RAW_BYTES)


@pytest.mark.slow
def test_a_record_above_the_block_cap_is_refused_with_its_line(tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    with source.open("wb") as file:
        file.write(b'{"id": 1}\n"')
        file.write(b"x" * MAX_BLOCK_RAW_BYTES)
        file.write(b'"\n{"id": 3}\n')
    out = tmp_path / "big.packed"
    with pytest.raises(InputError, match=r"big.jsonl:2: record of \d+ bytes encoded is above"):
        DatasetPacker().pack(source, out)
    assert not out.exists()
    result = DatasetPacker().pack(source, out, on_error="skip")
    assert result.record_count == 2 and result.rejected_count == 1
    with shardpack.open(out) as ds:
        assert list(ds) == [{"id": 1}, {"id": 3}]
    os.unlink(f"{out}.rejects.jsonl")


def test_a_block_size_above_the_cap_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}])
    with pytest.raises(OptionError, match="above the format's block cap of 256 MiB"):
        DatasetPacker().pack(source, tmp_path / "out.packed", block_size="512M")


def test_the_decoded_block_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": f"{i:08d}" * 9000} for i in range(40)])
    out = tmp_path / "out.packed"
    DatasetPacker().pack(source, out, block_size=64 * 1024)
    tracemalloc.start()
    try:
        with PackedFile(out, cache_blocks=100, cache_bytes=300_000) as packed:
            assert packed.block_count == 40
            for i in range(40):
                packed.record(i)
            held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 600_000  # three blocks of ~80 KB and their records; all 40 would be 3.2 MB
    # and in blocks: two kept of 40 read, whatever bytes the cache would still allow
    tracemalloc.start()
    try:
        with PackedFile(out, cache_blocks=2, cache_bytes=1 << 30) as packed:
            for i in range(40):
                packed.record(i)
            held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 400_000  # two blocks of ~80 KB and their records


def test_footer_metadata_of_a_bad_zstd_dictionary_is_a_format_error(
    one_block: PackedParts, tmp_path: Path
) -> None:
    import base64

    parts = one_block.copy()
    damaged = b"\x37\xa4\x30\xec" + b"\xff" * 300  # a dictionary's magic, then garbage
    parts.metadata["codec"] = {
        "id": "zstd",
        "level": 3,
        "dictionary": base64.b64encode(damaged).decode(),
    }
    path = _write(parts, tmp_path / "dict.packed")
    with pytest.raises(FormatError, match="zstd dictionary in file metadata is unusable"):
        shardpack.open(path)
    parts.metadata["codec"] = {"id": "zstd", "dictionary": 12}
    with pytest.raises(FormatError, match="cannot use the file's codec"):
        shardpack.open(_write(parts, tmp_path / "dict.packed"))
    assert json.loads(json.dumps(parts.metadata))  # the crafted metadata is plain JSON


def test_a_file_that_shrinks_under_an_open_reader_names_the_block(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": f"{i:06d}" * 300} for i in range(60)])
    out = tmp_path / "out.packed"
    DatasetPacker().pack(source, out, block_size=4096)
    with PackedFile(out) as packed:
        last = packed.block_count - 1
        with out.open("r+b") as file:
            file.truncate(int(packed.index[last]["offset"]) + 10)
        assert packed.record(0) == {"text": "000000" * 300}
        with pytest.raises(shardpack.CorruptBlockError, match="file shrank") as caught:
            packed.record(len(packed) - 1)
        assert caught.value.block == last


def test_the_writer_refuses_metadata_above_the_cap_and_leaves_nothing(
    one_block: PackedParts, tmp_path: Path
) -> None:
    from shardpack.build.units import EncodedBlock
    from shardpack.format.metadata import FileMetadata
    from shardpack.packfile.writer import PackedFileWriter

    entry = one_block.index[0]
    block = EncodedBlock(
        one_block.blocks[0], int(entry["raw_size"]), int(entry["record_count"]), 0, 0
    )
    metadata = msgspec.convert(one_block.metadata, FileMetadata)
    huge = msgspec.structs.replace(metadata, schema={"description": "x" * MAX_METADATA_BYTES})
    out = tmp_path / "out" / "big.packed"
    above = pytest.raises(FormatError, match=r"metadata of \d+ bytes is above the format's cap")
    with above, PackedFileWriter(out) as writer:
        writer.write_block(block)
        writer.finish(huge)
    assert list(out.parent.iterdir()) == []
