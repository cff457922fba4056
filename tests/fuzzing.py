"""A structure-aware fuzzer of the readers: hypothesis draws edits of a real packed file's header,
trailer, index entries, metadata, stored blocks, raw block tables and record payloads (every
checksum recomputed, as an attacker can), then opens, scans, reads at random and validates the
result. Anything but shardpack's own one-line errors (and IndexError past the end) is a finding,
and so is a MemoryError: the fuzzer runs under an address-space limit.

    python -m tests.fuzzing --seconds 600 [--seed N] [--memory-mib 1536]

``tests/test_fuzz_reader.py`` runs it for a few seconds in CI; run it longer by hand. A finding
prints hypothesis' shrunk example and the seed of the round that found it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import shardpack
from shardpack.dataset.validate_file import validate_path
from shardpack.dataset.validate_folder import validate_dataset
from shardpack.format.bounds import MAX_BLOCK_RAW_BYTES, MAX_BLOCK_RECORDS
from shardpack.packfile import scan

from .crafting import PackedParts, raw_of, set_raw, write_seeds, zstd_frame, zstd_rle_frame

BOUNDARY = [
    0,
    1,
    5,
    7,
    8,
    63,
    64,
    65,
    255,
    4096,
    MAX_BLOCK_RECORDS,
    MAX_BLOCK_RECORDS + 1,
    2**31 - 1,
    2**31,
    2**32 - 1,
    MAX_BLOCK_RAW_BYTES,
    MAX_BLOCK_RAW_BYTES + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
]
U32 = ("record_count", "flags")
INDEX_FIELDS = ("offset", "stored_size", "raw_size", "first_record", "record_count", "flags")
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _value(data: st.DataObject, *, u32: bool = False) -> int:
    value = data.draw(st.sampled_from(BOUNDARY) | st.integers(0, 2**64 - 1), label="value")
    return value % 2**32 if u32 else value


def edit_header(data: st.DataObject, parts: PackedParts) -> None:
    header = bytearray(parts.header)
    position = data.draw(st.integers(0, len(header) - 1), label="header byte")
    header[position] = data.draw(st.integers(0, 255), label="to")
    parts.header = bytes(header)


def edit_trailer(data: st.DataObject, parts: PackedParts) -> None:
    what = data.draw(st.sampled_from(["records", "version", "checksums"]), label="trailer")
    if what == "records":
        parts.record_count = _value(data)
    elif what == "version":
        parts.version = (data.draw(st.integers(0, 3)), data.draw(st.integers(0, 65535)))
    else:
        parts.keep.add(data.draw(st.sampled_from(["footer", "trailer"])))


def edit_index(data: st.DataObject, parts: PackedParts) -> None:
    if len(parts.index) == 0:
        return
    block = data.draw(st.integers(0, len(parts.index) - 1), label="index entry")
    field = data.draw(st.sampled_from(INDEX_FIELDS), label="field")
    neighbour = int(parts.index[min(block + 1, len(parts.index) - 1)][field])
    value = data.draw(
        st.sampled_from([neighbour, neighbour + 1, max(neighbour - 1, 0)]) | st.just(None),
        label="near",
    )
    value = _value(data, u32=field in U32) if value is None else value
    parts.index[block][field] = value % (2**32 if field in U32 else 2**64)
    if field in ("offset", "stored_size"):
        parts.keep.add("offsets")


def edit_metadata(data: st.DataObject, parts: PackedParts) -> None:
    what = data.draw(st.sampled_from(["value", "delete", "codec", "bytes"]), label="metadata")
    keys = sorted(parts.metadata)
    if what == "value":
        parts.metadata[data.draw(st.sampled_from(keys))] = data.draw(JSON, label="json")
    elif what == "delete":
        parts.metadata.pop(data.draw(st.sampled_from(keys)))
    elif what == "codec":
        codec = parts.metadata.get("codec")
        codec = dict(codec) if isinstance(codec, dict) else {}
        key = data.draw(st.sampled_from(["id", "level", "dictionary"]))
        codec[key] = data.draw(
            st.sampled_from(["lz4", "zstd", "none", "LZ4", "x", "", "AAAA", "N3ekMA=="]) | JSON
        )
        parts.metadata["codec"] = codec
    else:
        text = json.dumps(parts.metadata).encode()
        cut = data.draw(st.integers(0, len(text)), label="cut")
        parts.metadata_bytes = text[:cut] + data.draw(st.binary(max_size=8), label="tail")


def edit_stored(data: st.DataObject, parts: PackedParts) -> None:
    if not parts.blocks:
        return
    block = data.draw(st.integers(0, len(parts.blocks) - 1), label="stored block")
    stored = bytearray(parts.blocks[block])
    what = data.draw(st.sampled_from(["flip", "truncate", "bomb", "frame"]), label="stored")
    if what == "flip" and stored:
        position = data.draw(st.integers(0, len(stored) - 1))
        stored[position] ^= 1 << data.draw(st.integers(0, 7))
    elif what == "truncate":
        stored = stored[: data.draw(st.integers(0, len(stored)))]
    elif what == "bomb":
        size = data.draw(st.sampled_from([1 << 16, 1 << 20, MAX_BLOCK_RAW_BYTES, 1 << 30]))
        stored = bytearray(zstd_rle_frame(size, data.draw(st.integers(0, 255))))
        if data.draw(st.booleans(), label="index agrees"):
            parts.index[block]["raw_size"] = size
    else:
        stored = bytearray(zstd_frame(_value(data), data.draw(st.binary(max_size=16))))
    parts.blocks[block] = bytes(stored)


def edit_raw(data: st.DataObject, parts: PackedParts) -> None:
    """A raw block's tables or payload bytes edited, then stored again with the file's codec."""
    if not parts.blocks:
        return
    block = data.draw(st.integers(0, len(parts.blocks) - 1), label="raw block")
    try:
        raw = bytearray(raw_of(parts, block))
    except Exception:  # an earlier edit made it unreadable: nothing to edit inside
        return
    if len(raw) < 8:
        return
    n = struct.unpack_from("<I", raw, 0)[0]
    tables = [0, 4] + [8 + 4 * j for j in range(min(2 * (n + 1), (len(raw) - 8) // 4))]
    what = data.draw(st.sampled_from(["table", "byte", "ext", "resize"]), label="raw edit")
    if what == "table":
        position = data.draw(st.sampled_from(tables), label="table entry")
        old = struct.unpack_from("<I", raw, position)[0]
        new = data.draw(
            st.sampled_from([old + 1, max(old - 1, 0), old + 8, len(raw), len(raw) + 1])
            | st.integers(0, 2**32 - 1),
            label="to",
        )
        struct.pack_into("<I", raw, position, new % 2**32)
    elif what == "byte":
        start = 8 + 8 * (n + 1)
        position = data.draw(st.integers(min(start, len(raw) - 1), len(raw) - 1), label="at")
        raw[position] = data.draw(st.integers(0, 255), label="to")
    elif what == "ext":
        # an extension's header: type byte and the bytes after it (dtype, ndim, dims, digits)
        found = [i for i in range(len(raw) - 3) if raw[i] in (0xC7, 0xD4, 0xD5, 0xD6, 0xD7)]
        if found:
            at = data.draw(st.sampled_from(found), label="ext at")
            span = data.draw(st.integers(1, 9), label="ext byte")
            if at + span < len(raw):
                raw[at + span] = data.draw(st.integers(0, 255), label="to")
    else:
        size = data.draw(st.integers(0, len(raw) + 128), label="new size")
        raw = raw[:size] + bytearray(max(0, size - len(raw)))
    set_raw(parts, block, bytes(raw))


def edit_blocks(data: st.DataObject, parts: PackedParts) -> None:
    """Whole blocks dropped, duplicated or swapped, the index following them."""
    count = len(parts.blocks)
    if count < 2:
        return
    i, j = data.draw(st.integers(0, count - 1)), data.draw(st.integers(0, count - 1))
    what = data.draw(st.sampled_from(["drop", "duplicate", "swap"]), label="blocks")
    rows = list(range(count))
    if what == "drop":
        rows.pop(i)
    elif what == "duplicate":
        rows.insert(i, j)
    else:
        rows[i], rows[j] = rows[j], rows[i]
    parts.blocks = [parts.blocks[r] for r in rows]
    parts.index = parts.index[rows].copy()
    if data.draw(st.booleans(), label="renumber"):
        first = 0
        for entry in parts.index:
            entry["first_record"] = first
            first += int(entry["record_count"])
        parts.record_count = first


EDITS = [
    edit_header,
    edit_trailer,
    edit_index,
    edit_metadata,
    edit_stored,
    edit_raw,
    edit_raw,
    edit_blocks,
]


def read_everything(ds: Any) -> None:
    """A scan, batches as columns, reads at the start, middle and end, and one past the end (an
    IndexError)."""
    count = len(ds)
    for _ in ds:
        pass
    try:  # batches as columns: the C decoder's columns, or records
        for _ in ds.iter_batches(7, as_columns=True):
            pass
    except shardpack.OptionError as exc:  # records that are no objects
        assert "as_columns needs object records" in str(exc), exc
    for i in {0, count // 2, count - 1} if count else ():
        ds[i]
    try:
        ds[count]
    except IndexError:
        pass
    else:
        raise AssertionError(f"ds[{count}] of {count} records did not raise")


def exercise(path: Path) -> None:
    """Everything a reader does with a file; only shardpack's errors may come out."""
    readings: list[tuple[bool, list[str] | None, bool]] = [
        (True, None, False),
        (False, None, False),
        (True, ["id", "text", "ids"], False),
        (True, None, True),  # read-ahead: lz4's native thread reads, checks and decompresses
        (False, None, True),
    ]
    for verify, columns, read_ahead in readings:
        try:
            with shardpack.open(path, verify=verify, columns=columns, read_ahead=read_ahead) as ds:
                read_everything(ds)
        except shardpack.ShardpackError as exc:
            text = str(exc)
            assert "\n" not in text and str(path) in text, text
    deep = validate_path(path, deep=True)
    for problem in deep.problems:
        assert str(problem).startswith(str(path)), problem
    if deep.ok:  # a file that passes deep validation reads in full
        with shardpack.open(path) as ds:
            assert len(list(ds)) == len(ds)


HOSTILE_NAMES = [
    "../escape.packed",
    "/etc/hostname",
    "",
    ".",
    "manifest.json",
    "sub/shard-00000.packed",
    "shard-99999.packed",
    "shard-\x00.packed",
    "shard-00000.packed",
]


def edit_manifest(data: st.DataObject, folder: Path) -> None:
    """The manifest's values, keys, shard entries and names; or its bytes cut short."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_bytes())
    except ValueError:
        return  # cut short by an earlier edit
    if not isinstance(manifest, dict):
        return
    entries = manifest.get("shards")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        entries = [{}]
    entries = entries or [{}]
    what = data.draw(
        st.sampled_from(["value", "delete", "entry", "entries", "name", "bytes"]), label="manifest"
    )
    if what in ("value", "delete"):
        keys = sorted(manifest)
        key = data.draw(st.sampled_from(keys), label="key")
        if what == "value":
            manifest[key] = data.draw(JSON | st.integers(0, 2**64), label="json")
        else:
            manifest.pop(key)
    elif what == "entry":
        entry = data.draw(st.sampled_from(entries), label="entry")
        if entry:
            key = data.draw(st.sampled_from(sorted(entry)), label="entry key")
            if data.draw(st.booleans(), label="delete"):
                entry.pop(key)
            else:
                entry[key] = data.draw(
                    JSON | st.sampled_from(BOUNDARY) | st.integers(-1, 10**6), label="json"
                )
    elif what == "entries" and len(entries) > 1:
        i, j = (
            data.draw(st.integers(0, len(entries) - 1)),
            data.draw(st.integers(0, len(entries) - 1)),
        )
        how = data.draw(st.sampled_from(["drop", "duplicate", "swap"]), label="entries")
        if how == "drop":
            entries.pop(i)
        elif how == "duplicate":
            entries.insert(i, dict(entries[j]))
        else:
            entries[i], entries[j] = entries[j], entries[i]
    elif what == "name":
        entry = data.draw(st.sampled_from(entries), label="entry")
        entry["file"] = data.draw(st.sampled_from(HOSTILE_NAMES) | st.text(max_size=12))
    text = json.dumps(manifest).encode()
    if what == "bytes":
        cut = data.draw(st.integers(0, len(text)), label="cut")
        text = text[:cut] + data.draw(st.binary(max_size=8), label="tail")
    path.write_bytes(text)


def edit_shard_files(data: st.DataObject, folder: Path) -> None:
    """A shard's bytes flipped or cut, or two shards' files swapped."""
    shards = sorted(folder.glob("*.packed"))
    what = data.draw(st.sampled_from(["flip", "cut", "swap", "remove"]), label="shard file")
    one = data.draw(st.sampled_from(shards), label="shard")
    blob = bytearray(one.read_bytes())
    if what == "flip" and blob:
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= 0xFF
        one.write_bytes(bytes(blob))
    elif what == "cut":
        one.write_bytes(bytes(blob[: data.draw(st.integers(0, len(blob)))]))
    elif what == "swap":
        other = data.draw(st.sampled_from(shards), label="other")
        other_blob = other.read_bytes()
        other.write_bytes(bytes(blob))
        one.write_bytes(other_blob)
    else:
        one.unlink()


def exercise_folder(folder: Path) -> None:
    """Everything a reader does with a dataset folder; only shardpack's one-line errors may come
    out, and a folder that passes deep validation reads in full."""
    try:
        with shardpack.open(folder) as ds:
            read_everything(ds)
    except shardpack.ShardpackError as exc:
        assert "\n" not in str(exc), str(exc)
    deep = validate_dataset(folder, deep=True)
    for problem in deep.problems:
        assert "\n" not in str(problem), problem
    if deep.ok:
        with shardpack.open(folder) as ds:
            assert len(list(ds)) == len(ds)


def fuzz_round(round_seed: int, examples: int) -> Any:
    """Hypothesis, drawing ``examples`` cases from ``round_seed``, none remembered between runs."""

    def wrap(test: Any) -> Any:
        test = given(st.data())(test)
        test = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(test)
        return seed(round_seed)(test)

    return wrap


def make_folder_test(seeds: dict[str, Path], folder: Path, round_seed: int, examples: int) -> Any:
    original = {p.name: p.read_bytes() for p in seeds["sharded"].iterdir() if p.is_file()}

    @fuzz_round(round_seed, examples)
    def fuzz(data: st.DataObject) -> None:
        target = folder / "fuzzed-dataset"
        if target.exists():
            for p in target.iterdir():
                p.unlink()
        else:
            target.mkdir()
        for name, blob in original.items():
            (target / name).write_bytes(blob)
        edits = st.sampled_from([edit_manifest, edit_manifest, edit_shard_files])
        for edit in data.draw(st.lists(edits, min_size=1, max_size=3)):
            edit(data, target)
        exercise_folder(target)

    return fuzz


def make_test(seeds: dict[str, Path], folder: Path, round_seed: int, examples: int) -> Any:
    names = sorted(name for name in seeds if name != "sharded")
    originals = {name: seeds[name].read_bytes() for name in names}

    @fuzz_round(round_seed, examples)
    def fuzz(data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(names), label="seed")
        parts = PackedParts.parse(originals[name])
        for edit in data.draw(st.lists(st.sampled_from(EDITS), min_size=1, max_size=3)):
            edit(data, parts)
        blob = parts.assemble()
        if data.draw(st.booleans(), label="raw flips") and blob:
            flips = data.draw(st.lists(st.integers(0, len(blob) - 1), max_size=3))
            buffer = bytearray(blob)
            for position in flips:
                buffer[position] ^= 0xFF
            blob = bytes(buffer)
        path = folder / f"{name}-fuzzed.packed"
        path.write_bytes(blob)
        exercise(path)

    return fuzz


def run(seconds: float, first_seed: int, examples_per_round: int = 40) -> int:
    """Fuzz for ``seconds``, in rounds of ``examples_per_round`` examples seeded ``first_seed``,
    ``first_seed + 1``, ...; returns the number of rounds (a finding raises)."""
    # batches of a few blocks: the seeds are small, and read-ahead pipelines only past one batch
    scan.FIRST_BATCH_RAW_BYTES, scan.BATCH_RAW_BYTES = 2048, 4096
    with tempfile.TemporaryDirectory(prefix="shardpack-fuzz-") as tmp:
        folder = Path(tmp)
        seeds = write_seeds(folder / "seeds")
        stop = time.monotonic() + seconds
        rounds = 0
        while time.monotonic() < stop:
            round_seed = first_seed + rounds
            try:
                make_test(seeds, folder, round_seed, examples_per_round)()
                make_folder_test(seeds, folder, round_seed, examples_per_round // 4)()
            except BaseException:
                print(f"finding in the round seeded {round_seed}", file=sys.stderr)
                raise
            rounds += 1
        return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "little"))
    parser.add_argument("--memory-mib", type=int, default=1536)
    args = parser.parse_args()
    limit = args.memory_mib << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rounds = run(args.seconds, args.seed)
    print(json.dumps({"rounds": rounds, "first_seed": args.seed, "seconds": args.seconds}))


if __name__ == "__main__":
    main()
