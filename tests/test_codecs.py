"""The codec contract, as a suite every codec runs: a new codec subclasses CodecTests."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import pytest

from shardpack.codecs import Codec, available_codecs, get_codec
from shardpack.errors import CodecError, OptionError, UnknownCodecError

SAMPLES = [
    b"",
    b"x",
    b"hello world " * 1000,
    os.urandom(70_000),
    bytes(range(256)) * 300,
]


class CodecTests:
    """Subclass with ``config`` set to a codec config to get the whole suite."""

    config: ClassVar[dict[str, Any]]

    def codec(self) -> Codec:
        return get_codec(self.config)

    @pytest.mark.parametrize("raw", SAMPLES, ids=lambda s: f"{len(s)}B")
    def test_round_trip(self, raw: bytes) -> None:
        codec = self.codec()
        assert bytes(codec.decode(codec.encode(raw), len(raw))) == raw

    def test_config_round_trips(self) -> None:
        codec = self.codec()
        again = get_codec(codec.to_dict())
        assert again == codec and again.to_dict() == codec.to_dict()
        assert codec.to_dict()["id"] == self.config["id"]

    def test_deterministic(self) -> None:
        raw = SAMPLES[2]
        assert self.codec().encode(raw) == self.codec().encode(raw)

    def test_wrong_raw_size_is_an_error(self) -> None:
        codec = self.codec()
        stored = codec.encode(SAMPLES[2])
        with pytest.raises(CodecError):
            codec.decode(stored, len(SAMPLES[2]) - 1)

    def test_garbage_is_an_error_not_a_crash(self) -> None:
        codec = self.codec()
        stored = bytearray(codec.encode(SAMPLES[2]))
        for i in range(0, len(stored), max(1, len(stored) // 16)):
            damaged = bytes(stored[:i]) + bytes([stored[i] ^ 0xFF]) + bytes(stored[i + 1 :])
            try:
                out = codec.decode(damaged, len(SAMPLES[2]))
            except CodecError:
                continue
            assert len(out) == len(SAMPLES[2])  # never more than asked for


class TestNone(CodecTests):
    config: ClassVar[dict[str, Any]] = {"id": "none"}


class TestLZ4(CodecTests):
    config: ClassVar[dict[str, Any]] = {"id": "lz4", "level": 0}


class TestLZ4HighCompression(CodecTests):
    config: ClassVar[dict[str, Any]] = {"id": "lz4", "level": 9}


class TestZstd(CodecTests):
    config: ClassVar[dict[str, Any]] = {"id": "zstd", "level": 3}


class TestZstdWithDictionary(CodecTests):
    config: ClassVar[dict[str, Any]] = {"id": "zstd", "level": 3}

    def codec(self) -> Codec:
        codec = get_codec(self.config)
        codec.train(
            [(b'{"question": "%d apples", "answer": "%d"}' % (i, i * 7)) * 20 for i in range(200)]
        )
        assert "dictionary" in codec.to_dict()
        return codec


def test_registry_lists_codecs_and_rejects_unknown() -> None:
    assert {"lz4", "zstd", "none"} <= set(available_codecs())
    with pytest.raises(UnknownCodecError, match="available: "):
        get_codec("brotli")
    with pytest.raises(OptionError):
        get_codec("zstd", level=99)
    with pytest.raises(OptionError):
        get_codec("none", level=3)


def test_pack_with_a_trained_zstd_dictionary(text_jsonl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import shardpack

    out = tmp_path / "dict.packed"
    result = shardpack.DatasetPacker().pack(
        text_jsonl, out, compression="zstd", block_size="4K", zstd_dictionary=True, validate=True
    )
    plain = shardpack.DatasetPacker().pack(
        text_jsonl, tmp_path / "plain.packed", compression="zstd", block_size="4K"
    )
    assert "dictionary" in result.metadata.codec
    assert result.output_bytes < 0.9 * plain.output_bytes  # small blocks: the dictionary pays off
    assert result.content_hash == plain.content_hash
    expected = [json.loads(line) for line in text_jsonl.read_text().splitlines()]
    with shardpack.open(out) as ds:
        assert list(ds) == expected
    again = shardpack.DatasetPacker().pack(
        text_jsonl, out, compression="zstd", block_size="4K", zstd_dictionary=True
    )
    assert again.up_to_date
    with pytest.raises(OptionError, match="needs --compression zstd"):
        shardpack.DatasetPacker().pack(
            text_jsonl, tmp_path / "x.packed", compression="lz4", zstd_dictionary=True
        )
