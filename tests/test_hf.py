"""Hugging Face datasets with the real ``datasets`` library, on datasets made in the test (no hub):
``shardpack.from_hf`` packs a Dataset or IterableDataset, ``Dataset.to_hf`` gives the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shardpack

from .conftest import assert_same_json

datasets = pytest.importorskip("datasets")


def kd_rows(n: int = 300) -> dict[str, list[Any]]:
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 30, size=n)
    return {
        "id": [f"kd-{i}" for i in range(n)],
        "input_ids": [rng.integers(0, 32_000, size=k).tolist() for k in lengths],
        "topk": [rng.standard_normal((k, 4)).astype(np.float32).tolist() for k in lengths],
        "turns": [[{"role": "user", "text": f"q{i}"}] for i in range(n)],
        "score": rng.random(n).tolist(),
    }


def features() -> Any:
    f = datasets
    return f.Features(
        {
            "id": f.Value("string"),
            "input_ids": f.List(f.Value("int32")),
            "topk": f.List(f.List(f.Value("float32"))),
            "turns": f.List({"role": f.Value("string"), "text": f.Value("string")}),
            "score": f.Value("float64"),
        }
    )


def test_from_hf_packs_a_dataset_with_its_types(tmp_path: Path) -> None:
    rows = kd_rows()
    hf = datasets.Dataset.from_dict(rows, features=features())
    result = shardpack.from_hf(hf, tmp_path / "hf.packed", compression="zstd",
                               meta={"source": "test"})  # fmt: skip
    assert result.record_count == 300
    with shardpack.open(tmp_path / "hf.packed") as ds:
        row = ds[17]
        assert row["input_ids"].dtype == np.int32  # the feature's type, not JSON's narrowing
        assert row["topk"].dtype == np.float32 and row["topk"].shape == (len(row["input_ids"]), 4)
        assert row["turns"] == [{"role": "user", "text": "q17"}]
        for i, got in enumerate(ds):
            assert_same_json(got, {key: values[i] for key, values in rows.items()})
        assert ds.metadata.provenance.meta == {"source": "test"}


def test_from_hf_follows_selection_and_streams_an_iterable_dataset(tmp_path: Path) -> None:
    hf = datasets.Dataset.from_dict(kd_rows(), features=features())
    picked = hf.shuffle(seed=3).select(range(100))
    shardpack.from_hf(picked, tmp_path / "picked", records_per_shard=40, batch_rows=32)
    with shardpack.open(tmp_path / "picked") as ds:
        assert [e.records for e in ds.manifests[0].shards] == [40, 40, 20]
        assert [r["id"] for r in ds] == picked["id"]
    streamed = hf.to_iterable_dataset(num_shards=3)
    shardpack.from_hf(streamed, tmp_path / "streamed.packed")
    with shardpack.open(tmp_path / "streamed.packed") as ds:
        assert [r["id"] for r in ds] == [row["id"] for row in streamed]
    with pytest.raises(shardpack.OptionError, match=r"takes a datasets\.Dataset"):
        shardpack.from_hf([{"a": 1}], tmp_path / "no.packed")


def test_to_hf_gives_the_same_rows(kd_jsonl: Path, tmp_path: Path) -> None:
    import json

    packed = tmp_path / "kd.packed"
    shardpack.pack(kd_jsonl, packed, workers=1)
    with shardpack.open(packed) as ds:
        hf = ds.to_hf()
    expected = [json.loads(line) for line in kd_jsonl.read_text("utf-8").splitlines()]
    assert isinstance(hf, datasets.Dataset) and len(hf) == len(expected)
    assert hf.features["input_ids"] == datasets.List(datasets.Value("int32"))
    for got, want in zip(hf, expected, strict=True):
        assert_same_json(got, want)
    # and back: HF -> packed -> HF keeps the rows
    shardpack.from_hf(hf, tmp_path / "again.packed")
    again = shardpack.open(tmp_path / "again.packed").to_hf()
    assert again[3] == hf[3] and again.features == hf.features
