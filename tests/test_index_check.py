"""The block index's checks in one C pass (``_speedups.index_fits``) against the numpy checks of
``format/layout.py`` (``check_index``): the C pass accepts exactly the indexes the numpy checks
accept, on indexes mutated field by field around every bound; where it finds something wrong,
the numpy checks name it, so the errors are those of a reader without the C module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardpack import CorruptBlockError, DatasetPacker, FormatError
from shardpack.format import layout
from shardpack.format.bounds import (
    BLOCK_FIXED_BYTES,
    MAX_BLOCK_RAW_BYTES,
    MAX_BLOCK_RECORDS,
    MIN_RECORD_BYTES,
)
from shardpack.packfile.reader import PackedFile

pytestmark = pytest.mark.skipif(layout.index_fits is None, reason="the C module is not built here")


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory, text_jsonl: Path) -> PackedFile:
    out = tmp_path_factory.mktemp("index") / "gsm.lz4"
    DatasetPacker().pack(text_jsonl, out, compression="lz4", block_size="16K")
    return PackedFile(out)


def _numpy_accepts(index: np.ndarray, data_end: int, records: int, max_raw: int) -> bool:
    try:
        layout.check_block_bounds(index, None)
        saved, layout.index_fits = layout.index_fits, None
        try:
            layout.check_index(
                index, data_end=data_end, record_count=records, max_raw_size=max_raw, path=None
            )
        finally:
            layout.index_fits = saved
    except (FormatError, CorruptBlockError):
        return False
    return True


def _c_accepts(index: np.ndarray, data_end: int, records: int, max_raw: int) -> bool:
    assert layout.index_fits is not None
    return bool(layout.index_fits(index, data_end, records, max_raw, *layout._INDEX_LIMITS))


def _near(value: int) -> st.SearchStrategy[int]:
    return st.sampled_from([value - 1, value, value + 1])


FIELDS = ["offset", "stored_size", "raw_size", "first_record", "record_count", "flags"]
WIDTHS = {"record_count": 32, "flags": 32}


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_c_pass_accepts_exactly_what_the_numpy_checks_accept(
    packed: PackedFile, data: Any
) -> None:
    index = packed.index.copy()
    data_end, records = packed.trailer.index_offset, packed.record_count
    max_raw = packed.metadata.max_block_raw_size
    assert _c_accepts(index, data_end, records, max_raw)
    for _ in range(data.draw(st.integers(1, 3))):
        row = data.draw(st.integers(0, len(index) - 1))
        field = data.draw(st.sampled_from(FIELDS))
        top = (1 << WIDTHS.get(field, 64)) - 1
        entry = index[row]
        bounds = [
            0,
            1,
            top,
            top - 1,
            int(entry[field]),
            int(index[row - 1]["offset"]) + int(index[row - 1]["stored_size"]) if row else 16,
            data_end,
            max_raw,
            MAX_BLOCK_RAW_BYTES,
            MAX_BLOCK_RECORDS,
            BLOCK_FIXED_BYTES + MIN_RECORD_BYTES * int(entry["record_count"]),
            int(entry["raw_size"]) + int(entry["raw_size"]) // 128 + 1024,
            int(entry["first_record"]),
        ]
        value = data.draw(st.sampled_from(bounds).flatmap(_near))
        index[row][field] = min(max(value, 0), top)
    records = data.draw(st.sampled_from([records, records - 1, records + 1, 0]))
    data_end = data.draw(_near(data_end))
    assert _c_accepts(index, data_end, records, max_raw) == _numpy_accepts(
        index, data_end, records, max_raw
    )


def test_a_block_of_no_records_is_refused_even_where_the_numbering_adds_up(
    packed: PackedFile,
) -> None:
    """The last block made empty, the file's record count lowered to match: only the rule
    that every block holds records is broken."""
    index = packed.index.copy()
    data_end, max_raw = packed.trailer.index_offset, packed.metadata.max_block_raw_size
    records = packed.record_count - int(index[-1]["record_count"])
    index[-1]["record_count"] = 0
    assert not _numpy_accepts(index, data_end, records, max_raw)
    assert not _c_accepts(index, data_end, records, max_raw)


def test_a_block_too_small_for_its_records_is_refused(packed: PackedFile) -> None:
    index = packed.index.copy()
    data_end, records = packed.trailer.index_offset, packed.record_count
    max_raw = packed.metadata.max_block_raw_size
    entry = index[3]
    entry["raw_size"] = BLOCK_FIXED_BYTES + MIN_RECORD_BYTES * int(entry["record_count"]) - 1
    entry["stored_size"] = 100  # within what that raw size may store
    assert not _numpy_accepts(index, data_end, records, max_raw)
    assert not _c_accepts(index, data_end, records, max_raw)


def test_a_last_block_running_past_the_data_area_is_refused(packed: PackedFile) -> None:
    index = packed.index
    last_end = int(index[-1]["offset"]) + int(index[-1]["stored_size"])
    records, max_raw = packed.record_count, packed.metadata.max_block_raw_size
    assert _c_accepts(index, last_end, records, max_raw)
    assert not _numpy_accepts(index, last_end - 1, records, max_raw)
    assert not _c_accepts(index, last_end - 1, records, max_raw)


@pytest.mark.parametrize("over", ["raw_size", "record_count"])
def test_a_block_above_the_format_caps_is_refused_whatever_the_metadata_allows(
    over: str,
) -> None:
    """One block claiming more raw bytes or records than the format's caps, in a file whose
    metadata (a crafted one) allows any raw size."""
    index = np.zeros(1, dtype=layout.BLOCK_ENTRY)
    records = MAX_BLOCK_RECORDS + 1 if over == "record_count" else 1
    index[0] = (16, 100, BLOCK_FIXED_BYTES + MIN_RECORD_BYTES * records, 0, records, 0, 0)
    if over == "raw_size":
        index[0]["raw_size"] = MAX_BLOCK_RAW_BYTES + 1
    unbounded = 1 << 40
    assert not _numpy_accepts(index, unbounded, records, unbounded)
    assert not _c_accepts(index, unbounded, records, unbounded)
    index[0]["raw_size"] = BLOCK_FIXED_BYTES + MIN_RECORD_BYTES
    index[0]["record_count"] = 1
    assert _numpy_accepts(index, unbounded, 1, unbounded) and _c_accepts(
        index, unbounded, 1, unbounded
    )


def test_an_empty_index_fits_only_a_file_without_records() -> None:
    empty = np.zeros(0, dtype=layout.BLOCK_ENTRY)
    assert _c_accepts(empty, 1000, 0, 1 << 20)
    assert not _c_accepts(empty, 1000, 1, 1 << 20)


def test_arguments_the_c_pass_cannot_read_leave_it_to_the_numpy_checks(
    packed: PackedFile,
) -> None:
    index = packed.index
    assert layout.index_fits is not None
    assert not layout.index_fits(index, -1, 0, 0, *layout._INDEX_LIMITS)
    assert not layout.index_fits(index, 1 << 70, 0, 0, *layout._INDEX_LIMITS)
    assert not layout.index_fits(b"x" * 47, 1000, 0, 0, *layout._INDEX_LIMITS)
    assert not layout.index_fits(object(), 1000, 0, 0, *layout._INDEX_LIMITS)
