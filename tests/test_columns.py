"""``iter_batches(as_columns=True)``: batches cut from columns the C decoder makes for blocks of
same-shaped object records, equal to the batches built from the records themselves, whatever
mix of block shapes, batch sizes and paths (no C module, projections, arrays) they come from."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shardpack
from shardpack import DatasetPacker
from shardpack.dataset.columns import batch_columns, column_batches
from shardpack.format import strings
from shardpack.format.decode import ArenaCursor
from shardpack.packfile.reader import PackedFile

from .conftest import write_jsonl
from .crafting import raw_block

BUILT = strings.speedups_built()


def _plain(value: Any) -> Any:
    """Batches compared as plain values (arrays as lists), key order included."""
    if isinstance(value, dict):
        return [(key, _plain(item)) for key, item in value.items()]
    if isinstance(value, np.ndarray):
        return ("array", value.tolist())
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _from_records(records: list[Any], batch_size: int, drop_last: bool) -> list[Any]:
    cut = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    if drop_last and cut and len(cut[-1]) < batch_size:
        cut.pop()
    return [_plain(batch_columns(batch)) for batch in cut]


# ---- the cutting, on blocks given as columns or as records ----

shapes = st.sampled_from([("a", "b"), ("b", "a"), ("a",), ("a", "b", "c")])


@st.composite
def block_streams(draw: Any) -> tuple[list[Any], list[Any]]:
    """Blocks (columns of one shape, or records of any) and the records they hold."""
    blocks: list[Any] = []
    records: list[Any] = []
    for _ in range(draw(st.integers(0, 8))):
        rows = draw(st.integers(1, 9))
        if draw(st.booleans()):
            keys = draw(shapes)
            block = [{key: f"{key}{len(records) + i}" for key in keys} for i in range(rows)]
            blocks.append((keys, [[record[key] for record in block] for key in keys]))
        else:
            block = [
                {key: len(records) + i for key in draw(shapes)[: draw(st.integers(0, 3))]}
                for i in range(rows)
            ]
            blocks.append(block)
        records += block
    return blocks, records


@settings(max_examples=400, deadline=None)
@given(stream=block_streams(), batch_size=st.integers(1, 12), drop_last=st.booleans())
def test_batches_from_columns_equal_batches_from_records(
    stream: tuple[list[Any], list[Any]], batch_size: int, drop_last: bool
) -> None:
    blocks, records = stream
    got = [_plain(batch) for batch in column_batches(blocks, batch_size, drop_last)]
    assert got == _from_records(records, batch_size, drop_last)


# ---- the C decoder's columns ----


def _columns_of(records: list[Any]) -> Any:
    raw = raw_block([strings.nativize(msgspec.msgpack.encode(r)) for r in records])
    decode = strings.c_columns_decoder()
    assert decode is not None
    return decode(raw, len(records), ArenaCursor(b"", 0, 0).ext_hook)


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
def test_c_columns_only_for_records_of_one_shape() -> None:
    assert _columns_of([{"q": "x", "a": 1}, {"q": "中文", "a": [2, {"n": None}]}]) == (
        ("q", "a"),
        [["x", "中文"], [1, [2, {"n": None}]]],
    )
    for records in (
        [{"q": 1, "a": 2}, {"a": 2, "q": 1}],  # another order
        [{"q": 1, "a": 2}, {"q": 1}],  # a key fewer
        [{"q": 1}, {"q": 1, "a": 2}],  # a key more
        [{"q": 1}, {"r": 1}],  # another key
        [{"q": 1}, [1]],  # no object
        ["text", "text"],
        [{}, {}],  # no keys: no rows to count in columns
    ):
        assert _columns_of(records) is None, records


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
def test_c_columns_refuse_a_repeated_key_and_claims_past_the_bytes() -> None:
    decode = strings.c_columns_decoder()
    assert decode is not None
    hook = ArenaCursor(b"", 0, 0).ext_hook
    # a crafted record naming a key twice: a dict keeps one, so no columns
    twice = b"\x82\xa1q\x01\xa1q\x02"
    assert decode(raw_block([twice, twice]), 2, hook) is None
    # 30,000 records of 2,000 keys each would be 60 million column slots: bytes that cannot
    # hold them are refused before any list is made for them
    wide = b"\xde\x07\xd0" + b"".join(b"\xa4" + f"{i:04x}".encode() + b"\xc0" for i in range(2000))
    raw = raw_block([wide] + [b"\xc0"] * 29_999)
    tracemalloc.start()
    try:
        assert decode(raw, 30_000, hook) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(
        st.fixed_dictionaries({"q": st.text(max_size=20), "n": st.integers(-(2**63), 2**63)}),
        min_size=1,
        max_size=12,
    ),
    data=st.data(),
)
def test_c_columns_on_changed_bytes_raise_value_errors_only(
    records: list[dict[str, Any]], data: Any
) -> None:
    raw = bytearray(raw_block([msgspec.msgpack.encode(r) for r in records]))
    region = 8 + 8 * (len(records) + 1)
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(region, len(raw) - 1))] = data.draw(st.integers(0, 255))
    decode = strings.c_columns_decoder()
    assert decode is not None
    try:
        got = decode(bytes(raw), len(records), ArenaCursor(b"", 0, 0).ext_hook)
    except (ValueError, TypeError, RecursionError):
        return
    if got is not None:  # what C cuts into columns are the records the record decoder reads
        keys, columns = got
        rows = [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]
        decode_block = strings.c_block_decoder()
        assert decode_block is not None
        assert rows == decode_block(bytes(raw), len(records), ArenaCursor(b"", 0, 0).ext_hook, None)


# ---- end to end, through the dataset ----


@pytest.fixture
def packed_shapes(tmp_path: Path) -> tuple[Path, list[Any]]:
    """Small blocks of text records that change shape along the file: same-shaped runs, another
    key order, a key more, a record of no keys."""
    records: list[Any] = [{"q": f"question {i}", "a": "’" * (i % 3)} for i in range(300)]
    records += [{"a": str(i), "q": "x"} for i in range(40)]
    records += [{"a": "y", "q": "z", "extra": i} for i in range(25)]
    records += [{}, {"q": "after"}] + [{"q": "tail", "a": str(i)} for i in range(90)]
    out = tmp_path / "shapes.packed"
    DatasetPacker().pack(write_jsonl(tmp_path / "in.jsonl", records), out, block_size="1K")
    return out, records


@pytest.mark.parametrize("c_module", [True, False])
@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_column_batches_of_a_file_equal_its_record_batches(
    packed_shapes: tuple[Path, list[Any]],
    batch_size: int,
    c_module: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, records = packed_shapes
    if not c_module:
        monkeypatch.setattr(strings, "speedups", None)
        monkeypatch.setattr(strings, "_warned_slow", True)
    elif not BUILT:
        pytest.skip("the C module is not built here")
    for drop_last in (False, True):
        with shardpack.open(path) as ds:
            got = [
                _plain(b) for b in ds.iter_batches(batch_size, as_columns=True, drop_last=drop_last)
            ]
        assert got == _from_records(records, batch_size, drop_last)
    with shardpack.open(path, columns=["q"]) as ds:
        projected = [_plain(b) for b in ds.iter_batches(batch_size, as_columns=True)]
    assert projected == _from_records(
        [{k: v for k, v in r.items() if k == "q"} for r in records], batch_size, False
    )


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
def test_same_shaped_text_blocks_come_as_columns(packed_shapes: tuple[Path, list[Any]]) -> None:
    # the speed of as_columns: no dict made for blocks of one shape (the first 300 records)
    path, _ = packed_shapes
    with PackedFile(path) as packed:
        kinds = [type(block) for block in packed.iter_block_columns()]
    assert kinds[0] is tuple and list in kinds


def test_column_batches_of_arrays_are_stacked(kd_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "kd.packed"
    DatasetPacker().pack(kd_jsonl, out)
    with shardpack.open(out) as ds:
        records = list(ds)
        got = [_plain(b) for b in ds.iter_batches(16, as_columns=True)]
    assert got == _from_records(records, 16, False)
