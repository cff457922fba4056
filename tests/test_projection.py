"""Field projection: ``shardpack.open(path, columns=[...])`` gives exactly the asked top-level
fields, equal to ``json.loads``, and steps over the others without decoding them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shardpack
from shardpack import CorruptBlockError, DatasetPacker, OptionError
from shardpack.format.decode import ArenaCursor
from shardpack.format.dtypes import EXT_NATIVE_STR
from shardpack.format.strings import native_string
from shardpack.packfile.reader import PackedFile

from .conftest import assert_same_json, write_jsonl

CODECS = ["lz4", "zstd", "none"]


def _select(record: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """What a projection must give: the asked fields the record has, in the record's order."""
    return {key: value for key, value in record.items() if key in columns}


def _kd_records(count: int = 40) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        n = int(rng.integers(1, 30))
        record: dict[str, Any] = {
            "prompt": f"question {i} 中文 é",
            "input_ids": rng.integers(0, 50_000, n).tolist(),
            "meta": {"teacher": "t", "scores": rng.random(3).tolist()},
            "topk_logprobs": (-rng.random((n, 4))).tolist(),
            "response": "answer " * (i % 7),
            "big": 2**70 + i,
            "score": [float("nan"), -0.0, float("inf")][i % 3],
            "text": "astral 𝄞, nul \u0000, unpaired \ud800" if i % 4 == 0 else "plain",
        }
        if i % 5 == 0:
            del record["response"]  # optional field: absent from the projection too
        records.append(record)
    return records


@pytest.fixture(scope="module")
def kd_packed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Any]]]:
    tmp = tmp_path_factory.mktemp("projection")
    records = _kd_records()
    source = write_jsonl(tmp / "kd.jsonl", records)
    out = {}
    for codec in CODECS:
        path = tmp / f"kd.{codec}"
        DatasetPacker().pack(source, path, compression=codec, block_size="4K")
        out[codec] = (path, [json.loads(line) for line in source.read_text("utf-8").splitlines()])
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_text_projection_equals_json_loads(codec: str, text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / f"gsm.{codec}"
    DatasetPacker().pack(text_jsonl, out, compression=codec, block_size="16K")
    expected = [json.loads(line) for line in text_jsonl.read_text("utf-8").splitlines()]
    with shardpack.open(out, columns=["answer"]) as ds:
        got = list(ds)
        assert got == [{"answer": r["answer"]} for r in expected]
        assert ds[7] == {"answer": expected[7]["answer"]}
        assert ds[-1] == {"answer": expected[-1]["answer"]}
        batches = list(ds.iter_batches(300))
        assert [r for b in batches for r in b] == got


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "columns",
    [
        ["topk_logprobs"],  # an array after a skipped array: the cursor must move past it
        ["input_ids"],
        ["prompt", "response"],  # no arrays kept, arrays skipped
        ["meta", "topk_logprobs"],  # nested arrays kept
        ["response", "prompt"],  # asked in another order: records keep their own
        ["big"],
        ["score", "text"],  # NaN, -0.0, inf; astral, NUL, an unpaired surrogate
        ["nothing_like_this"],
        [],
    ],
)
def test_projection_of_records_with_arrays(
    codec: str, columns: list[str], kd_packed: dict[str, tuple[Path, list[Any]]]
) -> None:
    path, expected = kd_packed[codec]
    with shardpack.open(path, columns=columns) as ds:
        got = list(ds)
        assert len(got) == len(expected)
        for actual, record in zip(got, expected, strict=True):
            assert_same_json(actual, _select(record, columns))
        for i in (0, 5, len(ds) - 1):
            assert_same_json(ds[i], _select(expected[i], columns))


def test_projected_arrays_are_the_arrays_of_a_full_read(
    kd_packed: dict[str, tuple[Path, list[Any]]],
) -> None:
    path, _ = kd_packed["lz4"]
    with shardpack.open(path) as full, shardpack.open(path, columns=["topk_logprobs"]) as part:
        for a, b in zip(full, part, strict=True):
            assert b["topk_logprobs"].dtype == a["topk_logprobs"].dtype == np.float64
            assert np.array_equal(a["topk_logprobs"], b["topk_logprobs"])


def test_skipped_fields_are_never_decoded(
    kd_packed: dict[str, tuple[Path, list[Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The big integers of ``big`` are extension values: a decode-then-drop would call the hook."""
    path, _ = kd_packed["lz4"]
    calls: list[int] = []
    original = ArenaCursor.ext_hook

    def counting(self: ArenaCursor, code: int, data: memoryview) -> Any:
        calls.append(code)
        return original(self, code, data)

    monkeypatch.setattr(ArenaCursor, "ext_hook", counting)
    with PackedFile(path) as packed:  # a new file: its decoders bind the patched hook
        records = list(packed.iter_records(columns=["prompt"]))
        # the kept field's native strings come through the hook, one each; no skipped field does
        native = [native_string(r["prompt"]) for r in records]
        assert len(records) == 40 and calls == [EXT_NATIVE_STR] * (40 - native.count(None)) != []
        calls.clear()
        list(packed.iter_records(columns=["big"]))
        assert calls and set(calls) == {2}  # only the asked field's extensions


def test_a_skipped_field_that_cannot_decode_does_not_matter(tmp_path: Path) -> None:
    """Invalid UTF-8 in a skipped field (verification off): a full read fails, the projection
    never looks at those bytes."""
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"keep": i, "skip": "MARKERMARKER"} for i in range(5)]
    )
    out = tmp_path / "out.packed"
    DatasetPacker().pack(source, out, compression="none")
    data = bytearray(out.read_bytes())
    at = data.index(b"MARKERMARKER")
    data[at : at + 2] = b"\xff\xfe"
    out.write_bytes(bytes(data))
    with shardpack.open(out, verify=False) as ds, pytest.raises(CorruptBlockError):
        list(ds)
    with shardpack.open(out, verify=False, columns=["keep"]) as ds:
        assert list(ds) == [{"keep": i} for i in range(5)]


def test_wrong_array_metadata_falls_back_to_a_full_decode(
    kd_packed: dict[str, tuple[Path, list[Any]]],
) -> None:
    """Which fields hold arrays comes from metadata; if it were wrong, the arena would not add
    up and the block is decoded in full, then projected: the answer stays right."""
    path, expected = kd_packed["zstd"]
    with PackedFile(path) as packed:
        packed.metadata.arrays = {}
        got = list(packed.iter_records(columns=["topk_logprobs"]))
        assert_same_json(got, [_select(r, ["topk_logprobs"]) for r in expected])
        assert_same_json(
            packed.record(3, ["topk_logprobs"]), _select(expected[3], ["topk_logprobs"])
        )


def test_damaged_block_is_still_named(
    kd_packed: dict[str, tuple[Path, list[Any]]], tmp_path: Path
) -> None:
    source, _ = kd_packed["lz4"]
    path = tmp_path / "damaged.packed"
    data = bytearray(source.read_bytes())
    with PackedFile(source) as packed:
        entry = packed.index[2]
    data[int(entry["offset"]) + 3] ^= 0x40
    path.write_bytes(bytes(data))
    with shardpack.open(path, columns=["prompt"]) as ds:
        with pytest.raises(CorruptBlockError) as caught:
            list(ds)
        assert caught.value.block == 2 and "checksum mismatch" in str(caught.value)


def test_columns_need_object_records(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"a": 1}, ["x", "y"], {"a": 3}])
    out = tmp_path / "out.packed"
    DatasetPacker().pack(source, out)
    with shardpack.open(out, columns=["a"]) as ds:
        assert ds[0] == {"a": 1}
        with pytest.raises(OptionError, match="record 1 is a list, not an object"):
            ds[1]
        with pytest.raises(OptionError, match="record 1 is a list"):
            list(ds)


@pytest.mark.parametrize("columns", ["answer", [1], ["a", None]])
def test_columns_must_be_a_list_of_names(columns: Any, text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.packed"
    DatasetPacker().pack(text_jsonl, out)
    with pytest.raises(OptionError, match="columns must be a list of field names"):
        shardpack.open(out, columns=columns)
