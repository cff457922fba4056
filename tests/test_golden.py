"""Files written by earlier versions stay readable: committed golden files, never regenerated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import shardpack

from .conftest import assert_same_json

GOLDEN = Path(__file__).parent / "golden"


def _expected(folder: Path) -> list[object]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text("utf-8").splitlines()]


@pytest.mark.parametrize(
    "name",
    ["v1.0/lz4.packed", "v1.0/zstd.packed", "v1.0/none.packed", "v1.0/zstd-shuffled.packed"],
)
def test_golden_files_read_back_exactly(name: str) -> None:
    path = GOLDEN / name
    expected = _expected(path.parent)
    with shardpack.open(path) as ds:
        assert len(ds) == len(expected)
        for got, want in zip(ds, expected, strict=True):
            assert_same_json(got, want)
        assert_same_json(ds[-1], expected[-1])
    report = shardpack.DatasetPacker().validate(path, deep=True)
    assert report.ok, report.problems


def test_golden_lossy_file_keeps_its_dtype() -> None:
    path = GOLDEN / "v1.0" / "lossy-float16.packed"
    expected = _expected(path.parent)
    with shardpack.open(path) as ds:
        assert ds.metadata.lossy == {"teacher_topk_logprobs": "float16"}
        got = ds[len(ds) - 1]["teacher_topk_logprobs"]
        assert got.dtype == np.float16
        np.testing.assert_allclose(got, expected[-1]["teacher_topk_logprobs"], rtol=1e-3)


def test_golden_content_hash_is_codec_independent() -> None:
    hashes = set()
    for name in ("lz4", "zstd", "none", "zstd-shuffled"):
        with shardpack.open(GOLDEN / "v1.0" / f"{name}.packed") as ds:
            hashes.add(ds.metadata.content_hash)
    assert len(hashes) == 1
