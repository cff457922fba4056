"""Native strings (format 1.2): non-ASCII str values stored as CPython holds them, read by one copy.

Every test runs twice: with the C module (``_speedups``) and with the pure-Python fallback a
machine without a compiler gets. Both must write the same bytes and read the same values, and
both must refuse the same hostile bytes with a ValueError (the reader names the block).
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shardpack
from shardpack.errors import CorruptBlockError
from shardpack.format import decode, strings
from shardpack.format.block import BlockView
from shardpack.format.decode import ArenaCursor
from shardpack.format.dtypes import EXT_NATIVE_STR, EXT_RAW_STR
from shardpack.format.projection import Projection
from shardpack.format.records import RecordEncoder

from .conftest import golden_script
from .crafting import PackedParts, raw_block, raw_of, set_raw

BUILT = strings.speedups_built()

TEXTS = [
    "café",  # latin-1: kind 1
    "中文字符串，含标点。",  # kind 2, 3 UTF-8 bytes a character
    "Привет, мир",  # Cyrillic with ASCII: kind 2, under 1.5x its UTF-8
    "😀中文😀",  # past U+FFFF: kind 4
    "😀",  # kind 4 alone
    "a" * 300 + "’",  # mostly ASCII, one curly quote: stays UTF-8 (would double)
    "emoji 😀 and 中文",  # kind 4 would take 3.6x its UTF-8: stays UTF-8
    "",
    "plain ascii",
]


@pytest.fixture(params=["c", "python"])
def codec_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which implementation reads and writes: the C module, or the fallback."""
    if request.param == "c":
        if not BUILT:
            pytest.skip("the C module is not built here")
    else:
        monkeypatch.setattr(strings, "speedups", None)
        monkeypatch.setattr(strings, "_warned_slow", True)  # its own test below
    return str(request.param)


def _records() -> list[dict[str, Any]]:
    """Chat records of every kind of string, non-ASCII keys, big integers (format 1.2's goldens)."""
    return golden_script("1.2").text_records()  # type: ignore[no-any-return]


def _jsonl(tmp_path: Path, records: list[Any]) -> Path:
    path = tmp_path / "text.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")  # \u escapes
    return path


def _stored_kind(value: str) -> int | None:
    """How ``nativize`` stores ``value``: its native kind, or None for a msgpack str."""
    payload = strings.nativize(msgspec.msgpack.encode(value))
    decoded = msgspec.msgpack.decode(payload, ext_hook=lambda code, data: (code, bytes(data)))
    if isinstance(decoded, str):
        return None
    code, data = decoded
    assert code == EXT_NATIVE_STR
    return data[0]


def test_which_strings_are_stored_natively(codec_path: str) -> None:
    assert [_stored_kind(text) for text in TEXTS] == [1, 2, 2, 4, 4, None, None, None, None]


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
def test_jsonl_round_trip_equals_json_loads(codec_path: str, codec: str, tmp_path: Path) -> None:
    records = _records()
    out = tmp_path / "text.packed"
    shardpack.pack(_jsonl(tmp_path, records), out, compression=codec, block_size=512, workers=1)
    with shardpack.open(out) as ds:
        assert ds.metadata.format_version == "1.2"
        got = list(ds)
        assert got == records and all(list(a) == list(b) for a, b in zip(got, records, strict=True))
        assert ds[4] == records[4] and ds[len(ds) - 1] == records[-1]
    with shardpack.open(out, columns=["text"]) as ds:
        assert list(ds) == [{"text": r["text"]} for r in records]
    assert shardpack.DatasetPacker().validate(out, deep=True).ok


def test_both_implementations_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not BUILT:
        pytest.skip("the C module is not built here")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    source = _jsonl(tmp_path, _records())
    shardpack.pack(source, tmp_path / "c.packed", block_size=512, workers=1)
    monkeypatch.setattr(strings, "speedups", None)
    monkeypatch.setattr(strings, "_warned_slow", True)
    shardpack.pack(source, tmp_path / "py.packed", block_size=512, workers=1)
    c, py = (PackedParts.parse((tmp_path / n).read_bytes()) for n in ("c.packed", "py.packed"))
    assert c.blocks == py.blocks and c.metadata["content_hash"] == py.metadata["content_hash"]


def test_each_path_reads_what_the_other_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not BUILT:
        pytest.skip("the C module is not built here")
    records = _records()
    source = _jsonl(tmp_path, records)
    shardpack.pack(source, tmp_path / "c.packed", block_size=512, workers=1)
    speedups = strings.speedups
    monkeypatch.setattr(strings, "speedups", None)
    monkeypatch.setattr(strings, "_warned_slow", True)
    shardpack.pack(source, tmp_path / "py.packed", block_size=512, workers=1)
    with shardpack.open(tmp_path / "c.packed") as ds:
        assert list(ds) == records
    monkeypatch.setattr(strings, "speedups", speedups)
    with shardpack.open(tmp_path / "py.packed") as ds:
        assert list(ds) == records


def test_records_with_arrays_and_native_strings(codec_path: str, tmp_path: Path) -> None:
    """Blocks with arrays take msgspec's decoder, which meets native strings in its hook."""
    records = [
        {"prompt": text, "ids": list(range(i, i + 5)), "logp": [0.5, -1.25 * i]}
        for i, text in enumerate(TEXTS)
    ]
    out = tmp_path / "kd.packed"
    shardpack.pack(_jsonl(tmp_path, records), out, workers=1)
    with shardpack.open(out) as ds:
        for got, want in zip(ds, records, strict=True):
            assert got["prompt"] == want["prompt"] and got["ids"].tolist() == want["ids"]
    with shardpack.open(out, columns=["prompt"]) as ds:
        assert [r["prompt"] for r in ds] == TEXTS


def test_python_records_and_surrogates(codec_path: str, tmp_path: Path) -> None:
    """Writer records: a lone surrogate stays the raw-UTF-8 extension (no native string holds
    one), numpy arrays beside native strings, a non-ASCII key."""
    records = [
        {"t": "中\ud800文", "a": np.arange(3, dtype=np.int16), "é": "ünï"},
        {"t": "\udfff", "a": np.zeros(0, dtype=np.float32), "é": "😀"},
    ]
    out = tmp_path / "w.packed"
    with shardpack.Writer(out) as writer:
        for record in records:
            writer.write(record)
    with shardpack.open(out) as ds:
        got = list(ds)
    assert [r["t"] for r in got] == ["中\ud800文", "\udfff"]
    assert [r["é"] for r in got] == ["ünï", "😀"]
    assert got[0]["a"].tolist() == [0, 1, 2] and got[1]["a"].dtype == np.float32
    payload = RecordEncoder().encode({"t": "中\ud800文"}, bytearray())
    assert bytes([EXT_RAW_STR]) in payload and bytes([EXT_NATIVE_STR]) not in payload


# ---- hostile bytes: both decoders refuse the same native strings ----

BAD_NATIVE = {
    "no kind byte": b"",
    "unknown kind": b"\x03abc",
    "odd UCS-2 length": b"\x02abc",
    "a surrogate": b"\x02" + struct.pack("<H", 0xD800),
    "a surrogate pair": b"\x02" + struct.pack("<HH", 0xD83D, 0xDE00),
    "past U+10FFFF": b"\x04" + struct.pack("<I", 0x110000),
    "a UCS-4 surrogate": b"\x04" + struct.pack("<I", 0xDC00),
    "UCS-4 length": b"\x04abcde",
}


def _ext(data: bytes) -> bytes:
    return msgspec.msgpack.encode(msgspec.msgpack.Ext(EXT_NATIVE_STR, data))


@pytest.mark.parametrize("name", sorted(BAD_NATIVE))
def test_bad_native_strings_are_refused(codec_path: str, name: str) -> None:
    payload = msgspec.msgpack.encode({"s": "x"})[:-2] + _ext(BAD_NATIVE[name])
    raw = raw_block([payload])
    view = BlockView(raw, 1)
    with pytest.raises(ValueError):
        view.records()
    with pytest.raises(ValueError):
        view.record(0)


def test_a_crafted_native_string_names_its_shard_and_block(codec_path: str, tmp_path: Path) -> None:
    out = tmp_path / "text.packed"
    shardpack.pack(_jsonl(tmp_path, _records()), out, block_size=512, workers=1)
    parts = PackedParts.parse(out.read_bytes())
    raw = bytearray(raw_of(parts, 1))
    at = raw.find(bytes([EXT_NATIVE_STR, 2]))  # the code and kind byte of a UCS-2 string
    assert at > 0
    raw[at + 1] = 3
    set_raw(parts, 1, bytes(raw))
    out.write_bytes(parts.assemble())
    with shardpack.open(out) as ds, pytest.raises(CorruptBlockError, match=r"block 1\b.*kind 3"):
        list(ds)
    report = shardpack.DatasetPacker().validate(out, deep=True)
    assert not report.ok and [p.block for p in report.problems] == [1]
    assert "kind 3" in report.problems[0].message


# ---- the C decoder against msgspec's, on values and on mutated bytes ----

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)


def _python_decode(payload: bytes) -> Any:
    def hook(code: int, data: memoryview) -> Any:
        if code == EXT_NATIVE_STR:
            return strings.str_from_native(data)
        raise ValueError(f"unknown extension type {code}")

    return msgspec.msgpack.decode(payload, ext_hook=hook)


def _c_decode(payload: bytes) -> Any:
    def hook(code: int, data: bytes) -> Any:
        raise ValueError(f"unknown extension type {code}")

    decode = strings.c_decoder()
    assert decode is not None
    return decode(payload, 0, len(payload), hook)


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_c_decoder_matches_msgspec_and_json(value: Any) -> None:
    payload = strings.nativize(msgspec.msgpack.encode(value))
    assert payload == strings._nativize_python(msgspec.msgpack.encode(value))
    got = _c_decode(payload)
    assert got == _python_decode(payload)
    assert json.dumps(got) == json.dumps(value)  # key order and float bits too


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
@settings(max_examples=400, deadline=None)
@given(value=json_values, data=st.data())
def test_c_decoder_on_mutated_bytes_raises_value_errors_only(value: Any, data: Any) -> None:
    payload = bytearray(strings.nativize(msgspec.msgpack.encode(value)))
    for _ in range(data.draw(st.integers(1, 4))):
        what = data.draw(st.sampled_from(["byte", "cut", "grow"]))
        if what == "byte" and payload:
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
        elif what == "cut":
            del payload[data.draw(st.integers(0, len(payload))) :]
        else:
            payload += bytes(data.draw(st.binary(max_size=8)))
    try:
        got = _c_decode(bytes(payload))
    except (ValueError, TypeError):  # TypeError: an unhashable key, as msgspec says too
        return
    # what C accepts, msgspec accepts as the same value (C is the stricter of the two); compared
    # encoded, as a mutated float can be a NaN, which equals nothing
    expected = _python_decode(bytes(payload))
    assert got == expected or msgspec.msgpack.encode(got) == msgspec.msgpack.encode(expected)


def _msgpack_str(data: bytes) -> bytes:
    """``data`` under a msgpack str32 header, whatever its bytes."""
    return b"\xdb" + struct.pack(">I", len(data)) + data


def _expect_like_cpython(data: bytes) -> None:
    """The C decoder reads ``data`` (as a str value and as a map key) as CPython's strict UTF-8
    decoder does: the same str, in the same kind (str equality compares kinds), or a ValueError
    where CPython refuses the bytes."""
    try:
        expected: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        expected = None
    for payload, unwrap in (
        (_msgpack_str(data), lambda got: got),
        (b"\x81" + _msgpack_str(data) + b"\xc0", lambda got: next(iter(got))),
    ):
        if expected is None:
            with pytest.raises(ValueError):
                _c_decode(payload)
        else:
            got = unwrap(_c_decode(payload))
            assert got == expected  # CPython's str equality holds only between equal kinds


# UTF-8's edges: each refused form, and the first and last of each length
UTF8_EDGES = [
    *(b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xf0\x80\x80\x80"),  # overlong
    *(b"\xf0\x8f\xbf\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf"),  # overlong, surrogates
    *(b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff", b"\x80", b"\xbf"),  # past U+10FFFF, stray
    *(b"\xe2\x80", b"\xf0\x9f\x98", b"\xc3", b"\xc3\x28", b"\xe2\x28\xa1"),  # cut short, bad
    *(b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xee\x80\x80"),  # valid
    *(b"\xef\xbf\xbf", b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xc3\xa9"),
]


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
@pytest.mark.parametrize("edge", UTF8_EDGES, ids=lambda edge: edge.hex())
@pytest.mark.parametrize("ascii_before", [0, 1, 7, 8, 9, 23])
def test_c_utf8_edges_read_as_cpython_reads_them(edge: bytes, ascii_before: int) -> None:
    # runs of ASCII around the edge: the decoder copies ASCII 8 bytes at a time
    _expect_like_cpython(b"q" * ascii_before + edge)
    _expect_like_cpython(b"q" * ascii_before + edge + b"r" * 11)
    _expect_like_cpython(edge + "’".encode() + b"s" * ascii_before)


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
@settings(max_examples=400, deadline=None)
@given(
    text=st.lists(st.text(max_size=12) | st.sampled_from(["x" * 9, "’", "é", "😀"])).map("".join),
    data=st.data(),
)
def test_c_utf8_strings_read_as_cpython_reads_them(text: str, data: Any) -> None:
    encoded = bytearray(text.encode())
    _expect_like_cpython(bytes(encoded))
    if encoded:  # and the same text with a byte changed: valid or not, read as CPython reads it
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
        _expect_like_cpython(bytes(encoded))


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
def test_c_decoder_keys_that_differ_in_one_byte_are_told_apart() -> None:
    # short keys come from a cache of 512 slots read a word at a time: keys alike but for one
    # byte, at every place and of every cached length, are each their own key, and 1,200 keys of
    # one length share slots
    alphabet = [chr(c) for c in range(33, 127)]
    for length in range(1, 34):
        keys = ["k" * length]
        keys += [("k" * at + "j" + "k" * (length - at - 1)) for at in range(length)]
        pairs = [a + b for a in alphabet for b in alphabet][:1200]
        if length >= 2:  # two bytes that vary, at the start and at the end
            keys += [(pair + "k" * length)[:length] for pair in pairs]
            keys += [("k" * length + pair)[-length:] for pair in pairs]
        keys = list(dict.fromkeys(keys))
        record = {key: i for i, key in enumerate(keys)}
        for _ in range(2):  # the second time from the cache
            got = _c_decode(msgspec.msgpack.encode(record))
            assert got == record and list(got) == keys


def _c_block(records: list[Any]) -> bytes:
    return raw_block([strings.nativize(msgspec.msgpack.encode(r)) for r in records])


def _c_projected(raw: bytes, count: int, wanted: set[str]) -> Any:
    decode_block = strings.c_block_decoder()
    assert decode_block is not None
    return decode_block(raw, count, ArenaCursor(b"", 0, 0).ext_hook, frozenset(wanted))


records_of_objects = st.lists(
    st.dictionaries(st.sampled_from(["q", "answer", "id", "中", "k" * 40]), json_values),
    min_size=1,
    max_size=10,
)


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=records_of_objects, wanted=st.sets(st.sampled_from(["q", "id", "中", "k" * 40, "no"]))
)
def test_c_projection_keeps_what_the_python_projection_keeps(
    records: list[dict[str, Any]], wanted: set[str]
) -> None:
    # columns= on text: C keeps the asked keys of each record, in its order, and steps over the
    # other values (nested, native strings, every msgpack width) without building them
    raw = _c_block(records)
    got = _c_projected(raw, len(records), wanted)
    expected = BlockView(raw, len(records)).records(Projection(sorted(wanted)))
    assert got == expected == [{k: v for k, v in r.items() if k in wanted} for r in records]
    assert [list(r) for r in got] == [list(r) for r in expected]


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
def test_c_projection_refuses_a_record_that_is_no_object() -> None:
    raw = _c_block([{"q": 1}, [1, 2]])
    with pytest.raises(ValueError, match="not an object"):
        _c_projected(raw, 2, {"q"})
    with pytest.raises(ValueError, match="inconsistent block header"):
        _c_projected(raw, 3, {"q"})
    # a left-out value nested past the decoder's bound is refused, not stepped through
    deep = raw_block([b"\x81\xa4skip" + b"\x91" * 5000 + b"\xc0"])
    with pytest.raises(ValueError, match="nested too deep"):
        _c_projected(deep, 1, {"q"})


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
@settings(max_examples=300, deadline=None)
@given(records=records_of_objects, data=st.data())
def test_c_projection_on_mutated_bytes_raises_value_errors_only(
    records: list[dict[str, Any]], data: Any
) -> None:
    raw = bytearray(_c_block(records))
    region = 8 + 8 * (len(records) + 1)
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(region, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        got = _c_projected(bytes(raw), len(records), {"q", "中"})
    except (ValueError, TypeError, RecursionError):
        return
    assert got is None or len(got) == len(records)


@pytest.mark.skipif(not BUILT, reason="the C module is not built here")
def test_c_decoder_bounds_nesting_and_lengths() -> None:
    deep = b"\x91" * 5000 + b"\xc0"
    with pytest.raises(ValueError, match="nested too deep"):
        _c_decode(deep)
    # a list claiming 2**32-1 items in 5 bytes: refused before any allocation
    with pytest.raises(ValueError, match="ends inside"):
        _c_decode(b"\xdd\xff\xff\xff\xff")
    with pytest.raises(ValueError, match="continues after"):
        _c_decode(b"\xc0\xc0")
    decode = strings.c_decoder()
    assert decode is not None
    with pytest.raises(ValueError, match="outside the buffer"):
        decode(b"\xc0", 0, 2, None)


def test_speedups_are_built_where_a_compiler_is() -> None:
    """The install compiles the C module wherever a C compiler and Python's headers are; a
    silent fallback would leave text scans at their old speed unnoticed."""
    import sysconfig

    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not (shutil.which("cc") or shutil.which("gcc")) or not headers.exists():
        pytest.skip("no C compiler or Python headers here")
    if sys.platform != "linux":
        pytest.skip("checked on Linux")
    assert BUILT


# ---- format 1.2 golden files: committed once, read by every later version ----

GOLDEN = Path(__file__).parent / "golden" / "v1.2"


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
def test_golden_files_of_format_1_2_read_back_exactly(codec_path: str, codec: str) -> None:
    expected = golden_script("1.2").text_records()
    path = GOLDEN / f"text-{codec}.packed"
    with shardpack.open(path) as ds:
        assert ds.metadata.format_version == "1.2"
        got = list(ds)
        assert got == expected and all(
            list(a) == list(b) for a, b in zip(got, expected, strict=True)
        )
        assert ds[3] == expected[3]
    raw = b"".join(raw_of(PackedParts.parse(path.read_bytes()), b) for b in range(2))
    assert bytes([EXT_NATIVE_STR, 2]) in raw  # the files do hold native strings
    assert shardpack.DatasetPacker().validate(path, deep=True).ok


def test_golden_native_strings_beside_arrays(codec_path: str) -> None:
    expected = golden_script("1.2").kd_records()
    with shardpack.open(GOLDEN / "kd-zstd.packed") as ds:
        for got, want in zip(ds, expected, strict=True):
            assert got["prompt"] == want["prompt"] and got["ids"].tolist() == want["ids"]


def test_reading_native_strings_without_the_c_module_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "text.packed"
    shardpack.pack(_jsonl(tmp_path, _records()), out, block_size=512, workers=1)
    monkeypatch.setattr(strings, "speedups", None)
    monkeypatch.setattr(strings, "_warned_slow", False)
    with pytest.warns(RuntimeWarning, match="C modules are not built") as caught:
        with shardpack.open(out) as ds:
            assert list(ds) == _records()
        with shardpack.open(out) as ds:
            list(ds)
    assert len(caught) == 1


# ---- strings="utf8": files readers before 1.2 read ----


def _as_a_reader_before_1_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """msgspec's decoder with a hook that knows no native strings, as shardpack 1.1 had."""
    original = ArenaCursor.ext_hook

    def hook(self: ArenaCursor, code: int, data: memoryview) -> Any:
        if code == EXT_NATIVE_STR:
            raise ValueError(f"unknown extension type {code}")
        return original(self, code, data)

    monkeypatch.setattr(strings, "speedups", None)
    monkeypatch.setattr(ArenaCursor, "ext_hook", hook)
    # this thread's decoder holds the hook it was made with: one with the patched hook, for
    # this test only (monkeypatch puts back what was there, or nothing)
    cursor = ArenaCursor(b"", 0, 0)
    pair = (cursor, msgspec.msgpack.Decoder(ext_hook=cursor.ext_hook))
    monkeypatch.setattr(decode._thread_state, "pair", pair, raising=False)


def test_utf8_strings_are_read_by_readers_before_1_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records()
    source = _jsonl(tmp_path, records)
    shardpack.pack(source, tmp_path / "utf8.packed", strings="utf8", block_size=512, workers=1)
    shardpack.pack(source, tmp_path / "native.packed", block_size=512, workers=1)
    with shardpack.open(tmp_path / "utf8.packed") as ds:
        assert ds.metadata.provenance.options.strings == "utf8"
    _as_a_reader_before_1_2(monkeypatch)
    with shardpack.open(tmp_path / "utf8.packed") as ds:
        assert list(ds) == records
    with (
        shardpack.open(tmp_path / "native.packed") as ds,
        pytest.raises(CorruptBlockError, match=r"block 0\b.*unknown extension type 4"),
    ):
        list(ds)


def test_strings_option_from_the_command_line_and_the_writer(tmp_path: Path) -> None:
    from shardpack.cli.main import main as cli_main

    source = _jsonl(tmp_path, _records())
    assert (
        cli_main(["pack", str(source), "-o", str(tmp_path / "a.packed"), "--strings", "utf8", "-q"])
        == 0
    )
    with shardpack.open(tmp_path / "a.packed") as ds:
        assert ds.metadata.provenance.options.strings == "utf8"
    # the option decides the bytes: the pack is not "up to date" under the other one
    assert cli_main(["pack", str(source), "-o", str(tmp_path / "a.packed"), "-q"]) == 0
    with shardpack.open(tmp_path / "a.packed") as ds:
        assert ds.metadata.provenance.options.strings == "native"
    with shardpack.Writer(tmp_path / "w.packed", strings="utf8") as writer:
        writer.write({"t": "中文"})
    with shardpack.open(tmp_path / "w.packed") as ds:
        assert list(ds) == [{"t": "中文"}] and ds.metadata.provenance.options.strings == "utf8"
    with pytest.raises(shardpack.OptionError, match="strings must be one of native, utf8"):
        shardpack.pack(source, tmp_path / "x.packed", strings="latin1")
