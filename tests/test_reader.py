"""The reader: footer-only open, per-block checksums on read, errors naming file and block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import shardpack
from shardpack import CorruptBlockError, DatasetPacker, FormatError
from shardpack.packfile.reader import PackedFile


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
    from shardpack.packfile.local import LocalSource

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


def test_unknown_block_flags_are_refused(packed: Path) -> None:
    import struct

    import xxhash

    from shardpack.format.layout import TRAILER, TRAILER_SIZE

    data = bytearray(packed.read_bytes())
    trailer = TRAILER.unpack(bytes(data[-TRAILER_SIZE:]))
    index_offset, _index_size, meta_offset, meta_size = trailer[:4]
    struct.pack_into("<I", data, index_offset + 36, 2)  # block 0: an unknown flag bit
    footer = bytes(data[index_offset : meta_offset + meta_size])
    struct.pack_into("<Q", data, len(data) - TRAILER_SIZE + 40, xxhash.xxh3_64_intdigest(footer))
    body = bytes(data[-TRAILER_SIZE:])
    own = xxhash.xxh3_64_intdigest(body[:52] + body[56:]) & 0xFFFFFFFF
    struct.pack_into("<I", data, len(data) - TRAILER_SIZE + 52, own)
    packed.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="flags this reader does not know"):
        shardpack.open(packed)


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


def test_array_headers_are_checked_every_time_and_cached_by_shape() -> None:
    """The decoder remembers parsed array headers; the arena bounds are still checked per array,
    bad headers are refused every time (never cached), and equal headers give distinct arrays."""
    import struct

    import msgspec
    import numpy as np

    from shardpack.format.decode import ArenaCursor

    arena = np.arange(10, dtype="<i4").tobytes()
    cursor = ArenaCursor(arena, 0, len(arena))
    decoder = msgspec.msgpack.Decoder(ext_hook=cursor.ext_hook)

    def decode(*headers: bytes) -> object:
        cursor.position = 0
        return decoder.decode(msgspec.msgpack.encode([msgspec.msgpack.Ext(1, h) for h in headers]))

    three = struct.pack("<BBI", 2, 1, 3)
    for _ in range(2):  # first parsed, then from the cache: same answer
        first, second = decode(three, three)  # type: ignore[misc]
        assert first.tolist() == [0, 1, 2] and second.tolist() == [4, 5, 6]  # 8-byte aligned
        assert not first.flags.writeable  # views of a bytes block are read-only
    grid = struct.pack("<BBII", 2, 2, 2, 2)
    assert decode(grid)[0].tolist() == [[0, 1], [2, 3]]  # type: ignore[index]
    for _ in range(2):
        with pytest.raises(ValueError, match="past the end"):
            decode(three, three, three)  # the third needs elements 8..10 of 10
    bad = {
        struct.pack("<BBI", 99, 1, 1): "unknown dtype code",
        struct.pack("<BBI", 2, 2, 1): "bad array header",
        b"\x02\x01": "bad array header",
    }
    for header, message in bad.items():
        for _ in range(2):
            with pytest.raises(ValueError, match=message):
                decode(header)


def test_plain_file_path_and_located_path_read_the_same(packed: Path, tmp_path: Path) -> None:
    """A local file opens directly; a list, or a name locate() must look at, takes the general
    path: both read the same records."""
    odd_name = tmp_path / "data.json"  # a packed file named .json is still a packed file
    odd_name.write_bytes(packed.read_bytes())
    with (
        shardpack.open(packed) as direct,
        shardpack.open([packed]) as located,
        shardpack.open(odd_name) as renamed,
    ):
        assert len(direct) == len(located) == len(renamed)
        for i in (0, 777, len(direct) - 1):
            assert direct[i] == located[i] == renamed[i]


def test_short_or_past_the_end_reads_are_format_errors(tmp_path: Path) -> None:
    """Guards that other checks usually reach first (a remote object shorter than a trailer has
    no local size check before it; a read past the end names itself)."""
    from shardpack.format.layout import Trailer
    from shardpack.packfile.local import LocalSource

    with pytest.raises(FormatError):
        Trailer.decode(b"x" * 10, 10)
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    source = LocalSource(str(path))
    with pytest.raises(FormatError, match="past the end"):
        source.read(9, 2)


def test_a_remote_object_whose_etag_changes_is_refused_at_once() -> None:
    """Without If-Match (stores other than S3) the ETag of each response is the only check; a
    replaced object is an error at once, not retried as a transient failure."""
    from shardpack.errors import ObjectChangedError
    from shardpack.storage.failures import is_transient as _transient
    from shardpack.storage.fetch import ObjectPin

    pin = ObjectPin("gs://b/x.packed", "etag-a")
    pin.observe("etag-a", None, 10)
    with pytest.raises(ObjectChangedError, match="etag-a"):
        pin.observe("etag-b", None, 10)
    assert not _transient(ObjectChangedError("changed", path="gs://b/x.packed"), "gs://b/x")
