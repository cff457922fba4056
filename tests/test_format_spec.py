"""docs/FORMAT.md is enough to read a packed file: an independent reader built from it alone.

Only struct, json, xxhash, lz4/zstandard and a plain msgpack decoder are used here; nothing from
shardpack except to write the file under test.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from pathlib import Path
from typing import Any

import lz4.block
import msgspec
import numpy as np
import pytest
import xxhash
import zstandard

from shardpack import DatasetPacker

from .conftest import assert_same_json

DTYPES = {1: "?", 2: "<i4", 3: "<i8", 4: "<u8", 5: "<f4", 6: "<f8", 7: "<f2"}


def read_packed_by_the_spec(path: Path) -> list[Any]:
    data = path.read_bytes()
    assert data[:8] == b"\x89SHP\r\n\x1a\n" and struct.unpack_from("<H", data, 8)[0] == 1
    trailer = data[-64:]
    idx_off, idx_size, meta_off, meta_size, n_records, footer_sum, major, _minor, own, magic = (
        struct.unpack("<QQQQQQHHI8s", trailer)
    )
    assert magic == data[:8] and major == 1
    assert own == xxhash.xxh3_64_intdigest(trailer[:52] + trailer[56:]) & 0xFFFFFFFF
    footer = data[idx_off : meta_off + meta_size]
    assert xxhash.xxh3_64_intdigest(footer) == footer_sum
    meta = json.loads(data[meta_off : meta_off + meta_size])
    codec = meta["codec"]
    records: list[Any] = []
    for b in range(idx_size // 48):
        offset, stored_size, raw_size, first, count, _flags, block_sum = struct.unpack_from(
            "<QQQQIIQ", data, idx_off + 48 * b
        )
        assert first == len(records) and offset % 64 == 0
        stored = data[offset : offset + stored_size]
        assert xxhash.xxh3_64_intdigest(stored) == block_sum
        if codec["id"] == "lz4":
            raw = lz4.block.decompress(stored, uncompressed_size=raw_size)
        elif codec["id"] == "zstd":
            dictionary = codec.get("dictionary")
            zdict = (
                zstandard.ZstdCompressionDict(base64.b64decode(dictionary)) if dictionary else None
            )
            raw = zstandard.ZstdDecompressor(dict_data=zdict).decompress(stored)
        else:
            raw = stored
        assert len(raw) == raw_size
        n, arena_offset = struct.unpack_from("<II", raw)
        assert n == count and arena_offset % 64 == 0
        offsets = struct.unpack_from(f"<{n + 1}I", raw, 8)
        starts = struct.unpack_from(f"<{n + 1}I", raw, 8 + 4 * (n + 1))
        region = 8 + 8 * (n + 1)
        assert raw[region] == 0xDD and int.from_bytes(raw[region + 1 : region + 5], "big") == n
        for j in range(n):
            cursor = [starts[j]]

            def ext_hook(
                code: int,
                ext: memoryview,
                cursor: list[int] = cursor,
                raw: bytes = raw,
                arena_offset: int = arena_offset,
            ) -> Any:
                if code == 1:
                    dtype, ndim = ext[0], ext[1]
                    dims = struct.unpack_from(f"<{ndim}I", ext, 2)
                    start = (cursor[0] + 7) // 8 * 8
                    size = math.prod(dims) * np.dtype(DTYPES[dtype]).itemsize
                    cursor[0] = start + size
                    chunk = raw[arena_offset + start : arena_offset + start + size]
                    return np.frombuffer(chunk, DTYPES[dtype]).reshape(dims)
                if code == 2:
                    return int(bytes(ext))
                if code == 3:
                    return bytes(ext).decode("utf-8", "surrogatepass")
                raise AssertionError(f"unknown ext {code}")

            payload = raw[region + offsets[j] : region + offsets[j + 1]]
            records.append(msgspec.msgpack.Decoder(ext_hook=ext_hook).decode(payload))
            assert cursor[0] <= starts[j + 1]
    assert len(records) == n_records
    return records


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
def test_spec_reader_reads_what_shardpack_writes(
    codec: str, kd_jsonl: Path, tmp_path: Path
) -> None:
    records = [
        {"ids": [1, 2, 3], "lp": [[0.5, -0.25]], "big": 2**70, "s": "\ud800", "u": [2**63]},
        {"mixed": [1, 2.5], "flags": [True, False], "nested": {"x": [[1], [2]]}},
        *[json.loads(line) for line in kd_jsonl.read_text().splitlines()[:5]],
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.packed"
    DatasetPacker().pack(source, out, compression=codec, block_size=4096)
    for got, expected in zip(read_packed_by_the_spec(out), records, strict=True):
        assert_same_json(got, expected)
