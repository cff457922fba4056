"""The reader: footer-only open, per-block checksums on read, errors naming file and block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import shardpack
from shardpack import CorruptBlockError, DatasetPacker, FormatError
from shardpack.reader import PackedFile


@pytest.fixture
def packed(text_jsonl: Path, tmp_path: Path) -> Path:
    out = tmp_path / "gsm.packed"
    DatasetPacker().pack(text_jsonl, out, compression="lz4", block_size="16K")
    return out


def _damage(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_open_reads_only_the_footer(packed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shardpack.reader import LocalSource

    reads: list[tuple[int, int]] = []
    original = LocalSource.read

    def recording_read(self: LocalSource, offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return original(self, offset, length)

    monkeypatch.setattr(LocalSource, "read", recording_read)
    with PackedFile(packed) as f:
        footer_start = f.trailer.index_offset
        assert f.block_count > 10
        assert len(reads) == 3  # header, trailer, footer
        assert all(offset == 0 or offset >= footer_start for offset, _ in reads)
        f.record(500)
        assert len(reads) == 4 and reads[-1][0] == int(f.index[f.block_of(500)]["offset"])


def test_damaged_block_is_named_and_others_stay_readable(packed: Path) -> None:
    with shardpack.open(packed) as ds:
        entry = ds.files[0].index[3]
        first, count = int(entry["first_record"]), int(entry["record_count"])
        expected_other = ds[0]
    _damage(packed, int(entry["offset"]) + 10)

    with shardpack.open(packed) as ds:  # opening never touches blocks
        assert len(ds) == 2000
        assert ds[0] == expected_other
        with pytest.raises(CorruptBlockError) as caught:
            ds[first + 1]
        err = caught.value
        assert err.block == 3 and err.path == str(packed)
        assert (err.first_record, err.record_count) == (first, count)
        assert "checksum mismatch" in str(err) and str(packed) in str(err) and "block 3" in str(err)
        with pytest.raises(CorruptBlockError):
            list(ds)


def test_verification_can_be_turned_off(packed: Path) -> None:
    with shardpack.open(packed) as ds:
        entry = ds.files[0].index[1]
    # damage a byte of the lz4 stream: unchecked, it decodes to garbage or fails to decode
    _damage(packed, int(entry["offset"]) + int(entry["stored_size"]) // 2)
    with shardpack.open(packed, verify=False) as ds:
        try:
            ds[int(entry["first_record"])]
        except CorruptBlockError as exc:
            assert "checksum" not in str(exc)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[: len(d) - 1], "trailer"),
        (lambda d: d[: len(d) // 2], "trailer"),
        (lambda d: b"\x00" * 8 + d[8:], "bad magic"),
        (lambda d: d[:8] + b"\x02\x00" + d[10:], "unsupported format version 2"),
        (lambda d: b"", "too short"),
        (lambda d: d + b"garbage", "trailer"),
    ],
)
def test_damaged_files_are_refused_on_open(mutate, message: str, packed: Path) -> None:  # type: ignore[no-untyped-def]
    packed.write_bytes(mutate(packed.read_bytes()))
    with pytest.raises(FormatError, match=message) as caught:
        shardpack.open(packed)
    assert str(packed) in str(caught.value)


def test_footer_damage_is_caught(packed: Path) -> None:
    with PackedFile(packed) as f:
        metadata_offset = f.trailer.metadata_offset
    _damage(packed, metadata_offset + 3)
    with pytest.raises(FormatError, match="footer checksum"):
        shardpack.open(packed)


def test_not_a_packed_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"a": 1}) * 100)
    with pytest.raises(FormatError, match="not a shardpack file"):
        shardpack.open(path)


def test_indexing_rules(packed: Path) -> None:
    with shardpack.open(packed) as ds:
        assert ds[-1] == ds[len(ds) - 1]
        assert ds[5:2] == []
        assert len(ds[-3:]) == 3
        with pytest.raises(IndexError):
            ds[-len(ds) - 1]
        with pytest.raises(TypeError):
            ds[1.5]  # type: ignore[index]
        with pytest.raises(TypeError):
            ds["1"]  # type: ignore[index]


def test_list_of_files_reads_as_one_dataset(packed: Path, text_jsonl: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.packed"
    DatasetPacker().pack(text_jsonl, other, compression="zstd")
    with shardpack.open([packed, other]) as ds:
        assert len(ds) == 4000
        assert ds[2000] == ds[0]
        assert ds[-1] == ds[1999]
        assert sum(1 for _ in ds) == 4000
