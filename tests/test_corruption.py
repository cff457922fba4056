"""Damaged packed files: validation always fails, and reading raises the library's own error or
returns exactly the original records; never other exceptions, wrong data or a hang."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardpack
from shardpack import DatasetPacker, ShardpackError
from shardpack.dataset.export import dumps_record
from shardpack.dataset.validate_file import validate_path
from shardpack.format.layout import (
    BLOCK_ALIGN,
    BLOCK_ENTRY,
    HEADER,
    HEADER_SIZE,
    INDEX_ALIGN,
    MAGIC,
    TRAILER_SIZE,
    Trailer,
    align,
    checksum,
)

from .conftest import write_jsonl

SWEEP_DAMAGES = 400


@pytest.fixture(scope="module", params=["lz4", "none"])
def packed(
    request: pytest.FixtureRequest,
    kd_jsonl: Path,
    text_jsonl: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[bytes, list[str]]:
    """A real packed file (KD arrays and text, many small blocks) and its records as JSON text."""
    folder = tmp_path_factory.mktemp("corrupt")
    kd = [json.loads(x) for x in kd_jsonl.read_text("utf-8").splitlines()[:6]]
    text = [json.loads(x) for x in text_jsonl.read_text("utf-8").splitlines()[:150]]
    src = write_jsonl(folder / "mix.jsonl", kd[:3] + text + kd[3:])
    out = folder / "mix.packed"
    DatasetPacker().pack(src, out, compression=request.param, block_size="8K", validate=True)
    with shardpack.open(out) as ds:
        expected = [dumps_record(r) for r in ds]
        expected += [expected[i] for i in (0, len(ds) // 2, len(ds) - 1)]
        assert len(ds.files[0].index) > 10
    return out.read_bytes(), expected


def _read_all(path: Path, verify: bool = True) -> list[str]:
    """Every record by iteration, then a few by random access (appended, compared too)."""
    with shardpack.open(path, verify=verify) as ds:
        records = [dumps_record(r) for r in ds]
        picks = (0, len(ds) // 2, len(ds) - 1) if len(ds) else ()
        return records + [dumps_record(ds[i]) for i in picks]


def _check_damaged(path: Path, expected: list[str], what: str) -> None:
    report = validate_path(path)
    assert not report.ok, f"validate passed a damaged file: {what}"
    assert all(str(p).startswith(str(path)) for p in report.problems)
    try:
        got = _read_all(path)
    except ShardpackError:
        return
    except Exception as exc:  # anything else is the bug this test hunts
        pytest.fail(f"{what}: reading raised {type(exc).__name__}: {exc}")
    assert got == expected, f"{what}: reading returned wrong data"


def _blocks(data: bytes) -> np.ndarray:
    trailer = Trailer.decode(data[-TRAILER_SIZE:], len(data))
    return np.frombuffer(data[trailer.index_offset : trailer.metadata_offset], BLOCK_ENTRY)


def _damages(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    size = len(data)
    kind = rng.choice(["flip", "flip", "truncate", "zero", "append", "swap", "magic", "version"])
    buf = bytearray(data)
    if kind == "flip":
        at, bit = rng.randrange(size), rng.randrange(8)
        buf[at] ^= 1 << bit
        return f"bit {bit} flipped at byte {at}", bytes(buf)
    if kind == "truncate":
        at = rng.randrange(size)
        return f"truncated to {at} bytes", data[:at]
    if kind == "zero":
        at = rng.randrange(size)
        length = rng.choice([1, 8, 64, 1000, 20000])
        buf[at : at + length] = bytes(len(buf[at : at + length]))
        return f"{length} bytes zeroed at {at}", bytes(buf)
    if kind == "append":
        garbage = rng.randbytes(rng.choice([1, 7, 64, 5000]))
        return f"{len(garbage)} garbage bytes appended", data + garbage
    if kind == "swap":
        blocks = _blocks(data)
        i, j = rng.sample(range(len(blocks)), 2)
        a, b = blocks[i], blocks[j]
        a0, a1 = int(a["offset"]), int(a["offset"] + a["stored_size"])
        b0, b1 = int(b["offset"]), int(b["offset"] + b["stored_size"])
        n = min(a1 - a0, b1 - b0)
        buf[a0 : a0 + n], buf[b0 : b0 + n] = data[b0 : b0 + n], data[a0 : a0 + n]
        return f"blocks {i} and {j} swapped", bytes(buf)
    if kind == "magic":
        at = rng.choice([0, size - 8]) + rng.randrange(8)
        buf[at] = (buf[at] + rng.randrange(1, 256)) % 256
        return f"magic damaged at byte {at}", bytes(buf)
    major, minor = rng.choice([(2, 0), (0, 0), (1, 1), (1, 7), (255, 255)])
    buf[:16] = HEADER.pack(MAGIC, major, minor, 0)
    return f"header version set to {major}.{minor}", bytes(buf)


def test_corruption_sweep(packed: tuple[bytes, list[str]], tmp_path: Path) -> None:
    data, expected = packed
    rng = random.Random(20240611)
    path = tmp_path / "damaged.packed"
    checked = 0
    while checked < SWEEP_DAMAGES:
        what, damaged = _damages(data, rng)
        if damaged == data:
            continue  # e.g. zeroing bytes that were zero padding already: nothing damaged
        path.write_bytes(damaged)
        _check_damaged(path, expected, what)
        checked += 1


def test_every_single_bit_flip_of_the_footer_is_caught(
    packed: tuple[bytes, list[str]], tmp_path: Path
) -> None:
    data, expected = packed
    trailer = Trailer.decode(data[-TRAILER_SIZE:], len(data))
    path = tmp_path / "damaged.packed"
    rng = random.Random(5)
    for at in list(range(0, 64)) + rng.sample(range(trailer.index_offset, len(data)), 120):
        buf = bytearray(data)
        buf[at] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(buf))
        _check_damaged(path, expected, f"flip at byte {at}")


def test_blocks_reordered_with_consistent_checksums_fail_deep_validation(
    packed: tuple[bytes, list[str]], tmp_path: Path
) -> None:
    """A tampered file whose index and footer checksums were recomputed: only the content
    hash can tell, and --deep checks it."""
    data, _ = packed
    trailer = Trailer.decode(data[-TRAILER_SIZE:], len(data))
    index = _blocks(data).copy()
    counts = index["record_count"]
    i, j = next(
        (i, j)
        for i in range(len(index))
        for j in range(i + 1, len(index))
        if counts[i] == counts[j]
    )
    order = list(range(len(index)))
    order[i], order[j] = j, i
    body = bytearray(data[:HEADER_SIZE])
    moved = index.copy()
    for position, source in enumerate(order):
        entry = index[source]
        body += bytes(align(len(body), BLOCK_ALIGN) - len(body))
        for name in ("stored_size", "raw_size", "checksum"):
            moved[name][position] = entry[name]
        moved["offset"][position] = len(body)
        body += data[int(entry["offset"]) : int(entry["offset"] + entry["stored_size"])]
    body += bytes(align(len(body), INDEX_ALIGN) - len(body))
    meta = data[trailer.metadata_offset : len(data) - TRAILER_SIZE]
    raw_index = moved.tobytes()
    forged = Trailer(
        len(body),
        len(raw_index),
        len(body) + len(raw_index),
        len(meta),
        trailer.record_count,
        checksum(raw_index + meta),
    )
    path = tmp_path / "reordered.packed"
    path.write_bytes(bytes(body) + raw_index + meta + forged.encode())
    assert validate_path(path).ok  # every checksum is consistent...
    report = validate_path(path, deep=True)
    assert not report.ok and "content hash mismatch" in str(report.problems[0])


def test_reader_verifies_checksums_by_default_and_can_opt_out(
    packed: tuple[bytes, list[str]], tmp_path: Path
) -> None:
    data, expected = packed
    blocks = _blocks(data)
    buf = bytearray(data)
    last = blocks[-1]
    # damage a string byte inside the last block so that the codec still decodes it
    buf[int(last["offset"] + last["stored_size"]) - 3] ^= 0x01
    path = tmp_path / "damaged.packed"
    path.write_bytes(bytes(buf))
    with shardpack.open(path) as ds, pytest.raises(shardpack.CorruptBlockError) as info:
        list(ds)
    error = info.value
    assert error.path == str(path) and error.block == len(blocks) - 1
    assert error.offset == int(last["offset"]) and "checksum mismatch" in str(error)
    assert f"block {error.block} (records {int(last['first_record'])}-" in str(error)
    with shardpack.open(path, verify=False) as ds:
        try:
            records = [dumps_record(r) for r in ds]
        except ShardpackError:
            return
    assert len(records) == len(expected) - 3  # expected ends with 3 random-access reads


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "random.packed"
    for data in (blob, MAGIC + blob, HEADER.pack(MAGIC, 1, 0, 0) + blob + MAGIC):
        path.write_bytes(data)
        with contextlib.suppress(ShardpackError):
            _read_all(path)
        assert not validate_path(path, deep=True).ok


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6
    ),
    verify=st.booleans(),
)
def test_fuzz_mutated_real_file(
    packed: tuple[bytes, list[str]], tmp_path: Path, edits: list[Any], verify: bool
) -> None:
    """Mutations anywhere; with ``verify=False`` damaged blocks reach the decoder itself, which
    must still fail with the library's errors only (the data may then be wrong: that is what
    the opt-out means)."""
    data, expected = packed
    buf = bytearray(data)
    for where, value in edits:
        buf[int(where * len(buf))] = value
    if bytes(buf) == data:
        return
    path = tmp_path / "mutated.packed"
    path.write_bytes(bytes(buf))
    try:
        got = _read_all(path, verify=verify)
    except ShardpackError:
        return
    if verify:
        assert got == expected
