"""The crafted corpus: hostile packed files and dataset folders, each made deterministically from
the seed files (``crafting.write_seeds``) with every checksum recomputed, and the one-line error
each must give. ``tests/test_corpus.py`` runs them through the library and the CLI; run this
module to write them out for a look: ``python -m tests.corpus OUT_DIR``.

Each case names the guard it exercises: removing that guard makes its case fail.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shardpack.errors import CorruptBlockError, FormatError, ManifestError, ShardpackError
from shardpack.format.layout import BLOCK_SHUFFLED, TRAILER, TRAILER_SIZE

from .crafting import PackedParts, raw_of, set_raw, trailer_for, zstd_frame, zstd_rle_frame

Craft = Callable[[dict[str, Path], Path], Path]


@dataclass(frozen=True)
class Case:
    """A crafted input and what reading it must say.

    ``access``: "open" fails at open, "scan" when every record is read in order, "columns" when
    they are read through a column projection, "get:N" when record N is read on its own (the
    other records may read fine), "none" when only deep validation can tell. ``cli``: the commands whose
    one error line (``validate --deep``: one of its INVALID lines) must hold ``message``.
    """

    name: str
    craft: Craft
    message: str
    error: type[ShardpackError] = FormatError
    access: str = "open"
    cli: tuple[str, ...] = ("unpack", "validate")
    validate_message: str = ""  # what ``validate --deep`` says, where it words it otherwise

    @property
    def validate_says(self) -> str:
        return self.validate_message or self.message


# ---- crafting helpers -------------------------------------------------------------------------


def edit(seed: str, change: Callable[[PackedParts], bytes | None]) -> Craft:
    """A case made by editing the parts of seed file ``seed`` (``change`` may return the bytes
    to write instead of the reassembled parts)."""

    def craft(seeds: dict[str, Path], out: Path) -> Path:
        parts = PackedParts.parse(seeds[seed].read_bytes())
        data = change(parts)
        target = out.with_name(out.name + ".packed")
        target.write_bytes(parts.assemble() if data is None else data)
        return target

    return craft


def raw_edit(
    block: int, change: Callable[[bytearray], bytes | bytearray | None], seed: str = "lz4"
) -> Craft:
    """A case made by editing raw block ``block`` of a seed (then recompressed)."""

    def apply(parts: PackedParts) -> None:
        raw = bytearray(raw_of(parts, block))
        changed = change(raw)
        set_raw(parts, block, bytes(raw if changed is None else changed))

    return edit(seed, apply)


def set_u32(raw: bytearray, position: int, value: int) -> None:
    struct.pack_into("<I", raw, position, value)


def u32(raw: bytearray, position: int) -> int:
    return int(struct.unpack_from("<I", raw, position)[0])


def table(raw: bytearray, which: str, j: int) -> int:
    """Byte position of entry ``j`` of a raw block's payload offsets or arena starts."""
    n = u32(raw, 0)
    return 8 + 4 * j + (4 * (n + 1) if which == "starts" else 0)


def payload_span(raw: bytearray, j: int) -> tuple[int, int]:
    n = u32(raw, 0)
    region = 8 + 8 * (n + 1)
    return region + u32(raw, table(raw, "offsets", j)), region + u32(
        raw, table(raw, "offsets", j + 1)
    )


def replace_in_payload(raw: bytearray, j: int, old: bytes, new: bytes) -> None:
    """Replace the first ``old`` in record ``j``'s payload by ``new`` (same length)."""
    begin, end = payload_span(raw, j)
    at = bytes(raw[begin:end]).index(old)
    raw[begin + at : begin + at + len(new)] = new


def index_field(block: int, field: str, value: int, *, keep: str = "") -> Craft:
    def change(parts: PackedParts) -> None:
        parts.index[block][field] = value
        if keep:
            parts.keep.add(keep)

    return edit("lz4", change)


def metadata_field(seed: str, key: str, value: object) -> Craft:
    def change(parts: PackedParts) -> None:
        parts.metadata[key] = value

    return edit(seed, change)


def _claims_many_records(parts: PackedParts) -> None:
    parts.metadata["record_count"] = parts.record_count = 10**9  # trailer and metadata agree


def _index_size_not_whole_entries(parts: PackedParts) -> bytes:
    """One byte of the index counted as metadata: the offsets add up, the entries do not."""
    data = parts.assemble()
    fields = TRAILER.unpack(data[-TRAILER_SIZE:])
    index_offset, index_size, _metadata_offset, metadata_size, records, footer = fields[:6]
    trailer = trailer_for(
        len(data), index_offset, index_size - 1, metadata_size + 1, records, footer
    )
    return data[:-TRAILER_SIZE] + trailer


def _footer_before_the_blocks(parts: PackedParts) -> bytes:
    """The footer claimed to start inside the header, its sizes adding up to the file's end."""
    data = parts.assemble()
    records, footer = TRAILER.unpack(data[-TRAILER_SIZE:])[4:6]
    size = len(data)
    return data[:-TRAILER_SIZE] + trailer_for(size, 8, 0, size - 8 - TRAILER_SIZE, records, footer)


def folder_edit(change: Callable[[Path], None]) -> Craft:
    """A case made by editing a copy of the sharded seed folder."""

    def craft(seeds: dict[str, Path], out: Path) -> Path:
        shutil.copytree(seeds["sharded"], out)
        change(out)
        return out

    return craft


def manifest_edit(change: Callable[[dict[str, object]], None]) -> Craft:
    def apply(folder: Path) -> None:
        doc = json.loads((folder / "manifest.json").read_text())
        change(doc)
        (folder / "manifest.json").write_text(json.dumps(doc))

    return folder_edit(apply)


def _swap(folder: Path) -> None:
    first, second = folder / "shard-00000.packed", folder / "shard-00001.packed"
    data = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(data)


def _totals(key: str, delta: int) -> Callable[[dict[str, object]], None]:
    def change(doc: dict[str, object]) -> None:
        doc["totals"][key] += delta  # type: ignore[index]

    return change


def _entry_records(doc: dict[str, object]) -> None:
    doc["shards"][1]["records"] += 1  # type: ignore[index]
    doc["totals"]["records"] += 1  # type: ignore[index]


def _entry(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def change(doc: dict[str, object]) -> None:
        doc["shards"][0][key] = value  # type: ignore[index]

    return change


def _foreign_shard(folder: Path) -> None:
    parts = PackedParts.parse((folder / "shard-00002.packed").read_bytes())
    parts.metadata["content_hash"] = "xxh3_128:" + "ab" * 16
    (folder / "shard-00002.packed").write_bytes(parts.assemble())


def _checksum_damage(parts: PackedParts) -> None:
    parts.keep.add("checksums")
    block = bytearray(parts.blocks[3])
    block[len(block) // 2] ^= 0x10
    parts.blocks[3] = bytes(block)


def _lz4_claims_too_much(parts: PackedParts) -> None:
    stored = len(parts.blocks[2])
    parts.index[2]["raw_size"] = 255 * stored + 65
    parts.metadata["max_block_raw_size"] = int(parts.index["raw_size"].max())


def _zstd_frame(parts: PackedParts, frame: bytes, raw_size: int) -> None:
    parts.blocks[1] = frame
    parts.index[1]["raw_size"] = raw_size
    parts.metadata["max_block_raw_size"] = int(parts.index["raw_size"].max())


def _shuffled_arena_of_odd_size(raw: bytearray) -> bytearray:
    set_u32(raw, 4, len(raw) - 3)  # the arena would be 3 bytes: not whole 4-byte words
    return raw


def _bad_dictionary(parts: PackedParts) -> None:
    import base64

    damaged = b"\x37\xa4\x30\xec" + b"\xff" * 300  # a dictionary's magic, then garbage
    parts.metadata["codec"] = {"id": "zstd", "dictionary": base64.b64encode(damaged).decode()}


def _overlap(parts: PackedParts) -> None:
    parts.keep.add("offsets")
    parts.index[1]["offset"] = parts.index[0]["offset"]


def _outside(parts: PackedParts) -> None:
    parts.keep.add("offsets")
    parts.index[-1]["offset"] = parts.index[-1]["offset"] + 64 * 1024


def _reordered(parts: PackedParts) -> None:
    """Blocks 1 and 2 swapped, index consistent (offsets, numbering, checksums): only the content
    hash can tell."""
    parts.blocks[1], parts.blocks[2] = parts.blocks[2], parts.blocks[1]
    first, second = parts.index[1].copy(), parts.index[2].copy()
    parts.index[1], parts.index[2] = second, first
    parts.index[1]["first_record"] = first["first_record"]
    parts.index[2]["first_record"] = first["first_record"] + second["record_count"]


def _shuffled_raw(parts: PackedParts, change: Callable[[bytearray], bytearray]) -> None:
    raw = bytearray(raw_of(parts, 2))
    set_raw(parts, 2, bytes(change(raw)))
    parts.index[2]["flags"] = BLOCK_SHUFFLED


def _none_raw_size_off(parts: PackedParts) -> None:
    parts.index[2]["raw_size"] = int(parts.index[2]["raw_size"]) - 8


def _stores_more_than_raw(parts: PackedParts) -> None:
    parts.index[2]["raw_size"] = 100  # no codec stores 1,200 bytes of 100


def _region_one_short(raw: bytearray) -> None:
    """The payload region's array header and end both say one record fewer than the block."""
    n = _n(raw)
    region = 8 + 8 * (n + 1)
    raw[region + 1 : region + 5] = (n - 1).to_bytes(4, "big")
    set_u32(raw, table(raw, "offsets", n), u32(raw, table(raw, "offsets", n - 1)))


def _last_arena_start_short(raw: bytearray) -> None:
    n = _n(raw)
    set_u32(raw, table(raw, "starts", n), u32(raw, table(raw, "starts", n - 1)))


def _block_in_the_header(parts: PackedParts) -> None:
    parts.keep.add("offsets")
    parts.index[0]["offset"] = 8


def _last_block_runs_on(parts: PackedParts) -> None:
    parts.keep.add("offsets")
    parts.index[-1]["stored_size"] = int(parts.index[-1]["stored_size"]) + 1000


def _raw_above_the_files_maximum(parts: PackedParts) -> None:
    parts.metadata["max_block_raw_size"] = int(parts.index["raw_size"].max()) - 1


def _n(raw: bytearray) -> int:
    return u32(raw, 0)


# ---- the cases --------------------------------------------------------------------------------

CASES: list[Case] = [
    # header and trailer (format/layout.py: check_header, Trailer.decode)
    Case("empty", edit("lz4", lambda p: b""), "too short"),
    Case("not-packed", edit("lz4", lambda p: b'{"a": 1}\n' * 20), "not a shardpack file"),
    Case("bad-magic", edit("lz4", lambda p: b"\0" * 8 + p.assemble()[8:]), "bad magic at start"),
    Case(
        "future-major",
        edit("lz4", lambda p: p.assemble()[:8] + b"\x02\x00" + p.assemble()[10:]),
        "unsupported format version 2",
    ),
    Case("truncated", edit("lz4", lambda p: p.assemble()[:-1]), "no shardpack trailer"),
    Case("trailer-checksum", edit("lz4", lambda p: p.keep.add("trailer")), "trailer checksum"),
    Case("trailer-outside", edit("lz4", _footer_before_the_blocks), "trailer points outside"),
    Case(
        "trailer-index-size",
        edit("lz4", _index_size_not_whole_entries),
        "trailer points outside the file",
    ),
    Case("footer-checksum", edit("lz4", lambda p: p.keep.add("footer")), "footer checksum"),
    Case(
        "records-per-byte",
        edit("lz4", _claims_many_records),
        "claims 1000000000 records in a file of",
    ),
    # metadata (format/metadata.py: decode_document; codecs)
    Case(
        "metadata-not-json",
        edit("lz4", lambda p: setattr(p, "metadata_bytes", b"{not json")),
        "metadata is not valid JSON",
    ),
    Case(
        "metadata-deep",
        edit("lz4", lambda p: setattr(p, "metadata_bytes", b'{"a":' * 100_000)),
        "metadata is nested too deeply",
    ),
    Case(  # found by the fuzzer: msgspec raised a bare UnicodeDecodeError
        "metadata-invalid-utf8",
        edit("lz4", lambda p: setattr(p, "metadata_bytes", b'{"codec": {"id": "\x80"}}')),
        "metadata is not valid JSON",
    ),
    Case("metadata-wrong-type", metadata_field("lz4", "block_count", "many"), "$.block_count"),
    Case("metadata-list", metadata_field("lz4", "max_block_raw_size", [1]), "$.max_block_raw_size"),
    Case(
        "metadata-not-object",
        edit("lz4", lambda p: setattr(p, "metadata_bytes", b"[]")),
        "invalid metadata",
    ),
    Case("codec-unknown", metadata_field("lz4", "codec", {"id": "brotli"}), "unknown codec"),
    Case("codec-not-object", metadata_field("lz4", "codec", "lz4"), "$.codec"),
    Case("codec-level", metadata_field("lz4", "codec", {"id": "lz4", "level": 99}), "lz4 level"),
    Case("codec-level-type", metadata_field("lz4", "codec", {"id": "lz4", "level": []}), "codec"),
    Case("dictionary-unusable", edit("dict", _bad_dictionary), "dictionary in file metadata"),
    Case(
        "dictionary-not-base64",
        metadata_field("dict", "codec", {"id": "zstd", "dictionary": "!!!"}),
        "not valid base64",
    ),
    # the index (format/layout.py: check_block_bounds, check_index)
    Case("index-raw-cap", index_field(2, "raw_size", 1 << 30), "above the format's cap of 256"),
    Case("index-record-cap", index_field(2, "record_count", 70_000), "above the format's cap of"),
    Case("index-too-few-raw-bytes", index_field(2, "raw_size", 40), "too few to hold them"),
    Case("index-stored-too-big", edit("none", _stores_more_than_raw), "stored bytes for 100 raw"),
    Case("index-empty-block", index_field(2, "record_count", 0), "a block holds no records"),
    Case("index-overlap", edit("lz4", _overlap), "blocks overlap or are out of order"),
    Case("index-outside", edit("lz4", _outside), "a block lies outside the data area"),
    Case("index-runs-on", edit("lz4", _last_block_runs_on), "a block lies outside the data area"),
    Case("index-in-header", edit("lz4", _block_in_the_header), "a block lies outside the data"),
    Case(
        "index-raw-above-maximum",
        edit("lz4", _raw_above_the_files_maximum),
        "raw size above the file's maximum",
    ),
    Case(  # found by the fuzzer: the end of such a block wrapped around in int64
        "index-offset-wraps",
        index_field(0, "offset", 2**63 - 1, keep="offsets"),
        "a block lies outside the data area",
    ),
    Case("index-numbering", index_field(2, "first_record", 1), "record numbering"),
    Case("index-flags", index_field(2, "flags", 2), "flags this reader does not know"),
    # blocks as stored (reader checksums, codecs)
    Case(
        "block-checksum",
        edit("lz4", _checksum_damage),
        "block 3",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "lz4-garbage",
        edit("lz4", lambda p: p.blocks.__setitem__(2, b"\xff" * len(p.blocks[2]))),
        "lz4 decompression failed",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "lz4-claims-too-much",
        edit("lz4", _lz4_claims_too_much),
        "cannot hold",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "zstd-frame-declares-more",
        edit("zstd", lambda p: _zstd_frame(p, zstd_rle_frame(1 << 20), 4096)),
        "zstd frame declares 1048576 bytes",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "zstd-frame-lies-small",
        edit("zstd", lambda p: _zstd_frame(p, zstd_frame(4096, b"x" * 10), 4096)),
        "zstd",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "none-size",
        edit("none", _none_raw_size_off),
        "differs from raw size",
        CorruptBlockError,
        "scan",
    ),
    # raw blocks (format/block.py: unshuffle_block, BlockView, records, _record_span)
    Case(
        "shuffle-odd-arena",
        edit("zstd", lambda p: _shuffled_raw(p, _shuffled_arena_of_odd_size)),
        "shuffled arena has an impossible size",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "block-count",
        raw_edit(2, lambda r: set_u32(r, 0, _n(r) - 1)),
        "records, index says",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "block-tables-overrun",
        raw_edit(2, lambda r: set_u32(r, 4, 8 + 8 * (_n(r) + 1))),
        "block tables overrun the block",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "block-arena-beyond",
        raw_edit(2, lambda r: set_u32(r, 4, len(r) + 64)),
        "block tables overrun the block",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "payload-region",
        raw_edit(2, lambda r: set_u32(r, table(r, "offsets", 0), 6)),
        "payload region is out of bounds",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "record-span-payload",
        raw_edit(2, lambda r: set_u32(r, table(r, "offsets", 2), u32(r, 4) + 9)),
        "offset table entry for record",
        CorruptBlockError,
        "get:13",
        ("validate",),
    ),
    Case(
        "record-span-arena",
        raw_edit(2, lambda r: set_u32(r, table(r, "starts", 2), len(r))),
        "offset table entry for record",
        CorruptBlockError,
        "get:13",
        ("validate",),
    ),
    Case(
        "record-reads-beyond-its-arena",
        raw_edit(2, lambda r: set_u32(r, table(r, "starts", 3), u32(r, table(r, "starts", 2)))),
        "reads arrays beyond its arena range",
        CorruptBlockError,
        "get:14",
        ("validate",),
        "arrays do not fill its arena range",
    ),
    Case(
        "payload-region-short",
        raw_edit(2, _region_one_short),
        "payload region does not hold its records",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "payload-region-short-projected",
        raw_edit(2, _region_one_short, "dict"),  # text: no arena to give the short list away
        "payload region does not hold its records",
        CorruptBlockError,
        "columns",
        ("validate",),
    ),
    Case(
        "records-beyond-the-arena",
        raw_edit(2, _last_arena_start_short),
        "records read arrays beyond the block's arena",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "payload-not-an-array",
        raw_edit(2, lambda r: r.__setitem__(8 + 8 * (_n(r) + 1), 0xC0)),
        "cannot decode",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "msgpack-garbage",
        raw_edit(2, lambda r: r.__setitem__(payload_span(r, 0)[0], 0xC1)),
        "cannot decode",
        CorruptBlockError,
        "scan",
    ),
    # record payloads (format/decode.py: ArenaCursor.ext_hook, _array_spec)
    Case(
        "array-past-arena",
        raw_edit(
            2,
            lambda r: replace_in_payload(
                r, 0, b"\xc7\x06\x01\x02\x01", b"\xc7\x06\x01\x02\x01\xff\xff\xff\x7f"
            ),
        ),
        "array runs past the end of the block's arena",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "array-bad-header",
        raw_edit(
            2, lambda r: replace_in_payload(r, 0, b"\xc7\x06\x01\x02\x01", b"\xc7\x06\x01\x02\x03")
        ),
        "bad array header",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "array-unknown-dtype",
        raw_edit(2, lambda r: replace_in_payload(r, 0, b"\xc7\x06\x01\x02", b"\xc7\x06\x01\x63")),
        "unknown dtype code 99",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "unknown-extension",
        raw_edit(2, lambda r: replace_in_payload(r, 0, b"\xc7\x06\x01", b"\xc7\x06\x09")),
        "unknown extension type 9",
        CorruptBlockError,
        "scan",
    ),
    Case(
        "bad-big-integer",
        raw_edit(0, lambda r: replace_in_payload(r, 0, b"\xc7\x15\x02\x31", b"\xc7\x15\x02\x61")),
        "bad big-integer extension",
        CorruptBlockError,
        "scan",
    ),
    Case(  # readers count by the trailer and index; only validate compares the metadata's count
        "metadata-record-count",
        metadata_field("lz4", "record_count", 121),
        "metadata counts 121 records, trailer 120",
        access="none",
        cli=("validate",),
    ),
    Case(  # found by the fuzzer: a msgpack bin value crashed unpack with an internal error
        "record-holds-bytes",
        raw_edit(2, lambda r: replace_in_payload(r, 0, b"\xa2ok", b"\xc4\x01k")),
        "holds bytes",
        access="none",
    ),
    # blocks moved with every checksum consistent: only the content hash can tell
    Case(
        "blocks-reordered",
        edit("lz4", _reordered),
        "content hash mismatch",
        access="none",
        cli=("validate",),
    ),
    # sharded datasets (dataset/manifest.py, dataset/identity.py, storage/folder.py)
    Case("shards-swapped", folder_edit(_swap), "holds the records of shard-00001", ManifestError),
    Case(
        "shard-foreign",
        folder_edit(_foreign_shard),
        "differs from manifest entry 2",
        ManifestError,
        validate_message="content hash differs from the manifest",
    ),
    Case("totals-shards", manifest_edit(_totals("shards", 1)), "totals.shards is", ManifestError),
    Case(
        "totals-records", manifest_edit(_totals("records", -1)), "totals.records is", ManifestError
    ),
    Case(
        "entry-records",
        manifest_edit(_entry_records),
        "holds 40 records but the manifest lists 41",
        ManifestError,
        validate_message="holds 40 records, the manifest says 41",
    ),
    Case(
        "shard-name-escapes",
        manifest_edit(_entry("file", "../seed.jsonl")),
        "unsafe shard name",
        ManifestError,
    ),
    Case(
        "manifest-version",
        manifest_edit(lambda d: d.__setitem__("format_version", 99)),
        "unsupported manifest version",
        ManifestError,
    ),
    Case(
        "manifest-lists-twice",
        manifest_edit(_entry("file", "shard-00001.packed")),
        "listed twice",
        ManifestError,
    ),
    Case(
        "manifest-missing",
        folder_edit(lambda f: (f / "manifest.json").unlink()),
        "no manifest.json",
        ManifestError,
    ),
]


assert len({c.name for c in CASES}) == len(CASES)


def write_corpus(seeds: dict[str, Path], folder: Path) -> dict[str, Path]:
    """Every case written under ``folder`` (files ``NAME.packed``, folders ``NAME``)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {case.name: case.craft(seeds, folder / case.name) for case in CASES}


def run_cli(jobs: list[tuple[str, list[str]]]) -> list[dict[str, object]]:
    """Run ``shardpack`` commands in this process, each as the CLI would (exit status, stderr
    lines; stdout discarded): the corpus runs in one process under a memory limit."""
    import contextlib
    import io

    from shardpack.cli.main import main

    results: list[dict[str, object]] = []
    for name, args in jobs:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = main(args)
            except BaseException as exc:  # what escapes the CLI is the finding
                status, err = -1, io.StringIO(f"Traceback: {type(exc).__name__}: {exc}")
        results.append({"case": name, "args": args, "status": status, "stderr": err.getvalue()})
    return results


if __name__ == "__main__":
    from .crafting import write_seeds

    out = Path(sys.argv[1])
    paths = write_corpus(write_seeds(out / "seeds"), out / "corpus")
    for case in CASES:
        print(f"{paths[case.name]}\t{case.message}")
