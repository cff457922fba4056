"""Sharded datasets on local disk: pack, open, validate, resume, merge, path safety, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import shardpack
from shardpack import DatasetPacker, ManifestError, OptionError, ShardedPacker
from shardpack.build.outputs import PLAN_NAME
from shardpack.dataset.manifest import MANIFEST_NAME, Manifest
from shardpack.dataset.merge import merge_datasets
from shardpack.dataset.validate_file import validate_path
from shardpack.dataset.validate_folder import validate_dataset

from .conftest import assert_same_json, plain, write_jsonl


def _lines(*paths: Path) -> list[object]:
    out: list[object] = []
    for path in paths:
        out += [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return out


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardpack", *args], capture_output=True, text=True, timeout=300
    )


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.packed"))}


def test_sharded_pack_is_one_dataset_of_complete_shards(text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = ShardedPacker(workers=1).pack(text_jsonl, out, records_per_shard=450, validate=True)
    expected = _lines(text_jsonl)
    assert [e.records for e in result.manifest.shards] == [450, 450, 450, 450, 200]
    assert result.validation.ok and result.record_count == len(expected)
    doc = json.loads((out / MANIFEST_NAME).read_text())
    assert doc["totals"]["records"] == 2000 and doc["totals"]["shards"] == 5
    assert {"schema", "stats", "provenance"} <= set(doc)
    assert doc["provenance"]["inputs"][0]["path"] == str(text_jsonl)
    # every shard is a valid packed file on its own, holding its slice of the input
    start = 0
    for entry in result.manifest.shards:
        assert validate_path(out / entry.file, deep=True).ok
        with shardpack.open(out / entry.file) as one:
            assert list(one) == expected[start : start + entry.records]
        start += entry.records
    # a folder, its manifest, or a list: one dataset with global indices
    for target in (out, out / MANIFEST_NAME, [out / f"shard-{i:05d}.packed" for i in range(5)]):
        with shardpack.open(target) as ds:
            assert len(ds) == 2000
            assert ds[449] == expected[449] and ds[450] == expected[450] and ds[-1] == expected[-1]
            assert ds[448:452] == expected[448:452]
            assert list(ds) == expected
    # the records equal a single-file pack of the same input
    single = DatasetPacker().pack(text_jsonl, tmp_path / "one.packed")
    with shardpack.open(out) as ds, shardpack.open(single.output_path) as one:
        assert list(ds) == list(one)


def test_shard_size_targets_packed_bytes(text_jsonl: Path, tmp_path: Path) -> None:
    result = ShardedPacker().pack(text_jsonl, tmp_path / "ds", shard_size="150K")
    sizes = [e.size for e in result.manifest.shards]
    assert len(sizes) >= 3
    # cut at record boundaries from a measured ratio: close to the target, never far above it
    assert all(size < 1.3 * 150 * 1024 for size in sizes)
    assert all(size > 0.6 * 150 * 1024 for size in sizes[:-1])
    assert sum(e.records for e in result.manifest.shards) == 2000


def test_globs_and_several_inputs_make_one_dataset(tmp_path: Path) -> None:
    records = [{"id": i, "ids": list(range(i % 7)), "x": i / 3} for i in range(90)]
    (tmp_path / "in").mkdir(exist_ok=True)
    for i in range(3):
        write_jsonl(tmp_path / f"in/part-{i}.jsonl", records[i * 30 : (i + 1) * 30])
    (tmp_path / "in/part-1.jsonl").write_text(
        "\n" + (tmp_path / "in/part-1.jsonl").read_text() + "\n\n", encoding="utf-8"
    )
    out = tmp_path / "ds"
    result = ShardedPacker().pack([str(tmp_path / "in/part-*.jsonl")], out, records_per_shard=40)
    assert [e.records for e in result.manifest.shards] == [40, 40, 10]
    # shard 0 spans part-0 and the start of part-1; line numbers are those of the whole file
    slices = result.manifest.shards[0].inputs
    assert [Path(s.path).name for s in slices] == ["part-0.jsonl", "part-1.jsonl"]
    assert slices[1].first_line == 1
    assert result.manifest.shards[1].inputs[0].first_line == 12  # blank first line counted
    with shardpack.open(out) as ds:
        assert_same_json(list(ds), records)
    with pytest.raises(OptionError, match="no input matches"):
        ShardedPacker().pack([str(tmp_path / "in/nope-*.jsonl")], tmp_path / "x", shard_size="1M")


def test_bad_line_in_a_later_shard_names_its_real_line(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text("".join(f'{{"i": {i}}}\n' for i in range(25)) + "{oops\n", encoding="utf-8")
    with pytest.raises(shardpack.InputError, match=r"bad\.jsonl:26:2"):
        ShardedPacker().pack(src, tmp_path / "ds", records_per_shard=10)


def test_workers_give_byte_identical_output(
    kd_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small units so that 3 MB of input makes many units for the pool to share
    units = 256 * 1024
    one = ShardedPacker(workers=1, unit_bytes=units).pack(
        kd_jsonl, tmp_path / "w1", shard_size="400K"
    )
    two = ShardedPacker(workers=2, unit_bytes=units).pack(
        kd_jsonl, tmp_path / "w2", shard_size="400K"
    )
    assert len(one.manifest.shards) >= 2
    assert _shard_bytes(tmp_path / "w1") == _shard_bytes(tmp_path / "w2")
    assert one.content_hash == two.content_hash
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the build time is in the metadata
    a = DatasetPacker(workers=1, unit_bytes=units).pack(kd_jsonl, tmp_path / "a.packed")
    b = DatasetPacker(workers=2, unit_bytes=units).pack(kd_jsonl, tmp_path / "b.packed")
    assert a.metadata.block_count > 4
    assert Path(a.output_path).read_bytes() == Path(b.output_path).read_bytes()


def test_validate_names_missing_extra_swapped_truncated_shards(
    text_jsonl: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    ShardedPacker().pack(text_jsonl, out, records_per_shard=300)
    assert validate_dataset(out, deep=True).ok
    s = [out / f"shard-{i:05d}.packed" for i in range(7)]
    tmp = tmp_path / "swap"
    s[1].rename(tmp)
    s[2].rename(s[1])
    tmp.rename(s[2])
    with open(s[3], "r+b") as f:
        f.truncate(s[3].stat().st_size - 100)
    s[4].unlink()
    shutil.copyfile(s[0], out / "shard-00099.packed")
    report = validate_dataset(out)
    text = "\n".join(str(p) for p in report.problems)
    assert "shard-00099.packed: extra shard" in text
    assert "shard-00001.packed: holds the records of shard-00002.packed" in text
    assert "shard-00002.packed: holds the records of shard-00001.packed" in text
    assert "shard-00003.packed: truncated shard" in text
    assert "shard-00004.packed: missing shard" in text
    assert not any("shard-00000" in str(p) or "shard-00005" in str(p) for p in report.problems)
    # opening refuses a dataset whose shards do not match the manifest
    with pytest.raises(shardpack.ShardpackError):
        shardpack.open(out)
    run = _cli("validate", str(out))
    assert run.returncode == 1 and "INVALID" in run.stderr and "missing shard" in run.stderr


def test_validate_names_a_shard_replaced_by_a_larger_pack_of_its_records(
    text_jsonl: Path, tmp_path: Path
) -> None:
    # the same records, uncompressed: the same content hash, but not the shard the manifest
    # lists; open refuses it by its size, and validate must say so too
    out = tmp_path / "ds"
    ShardedPacker().pack(text_jsonl, out, records_per_shard=300)
    first = out / "shard-00000.packed"
    with shardpack.open(first) as shard:
        records = list(shard)
    shardpack.pack(records, tmp_path / "bigger.packed", compression="none")
    assert (tmp_path / "bigger.packed").stat().st_size > first.stat().st_size
    shutil.copyfile(tmp_path / "bigger.packed", first)
    report = validate_dataset(out)
    assert not report.ok
    assert any("shard-00000.packed" in str(p) and "the manifest says" in str(p)
               for p in report.problems), report.problems  # fmt: skip
    with pytest.raises(ManifestError, match="shard-00000"):
        shardpack.open(out)[0]


def test_validate_catches_a_flipped_byte_and_an_edited_manifest(
    text_jsonl: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    ShardedPacker().pack(text_jsonl, out, records_per_shard=1000)
    shard = out / "shard-00001.packed"
    data = bytearray(shard.read_bytes())
    data[200] ^= 0x40
    shard.write_bytes(bytes(data))
    problems = [str(p) for p in validate_dataset(out).problems]
    assert any("shard-00001.packed: block 0" in p and "checksum" in p for p in problems)
    doc = json.loads((out / MANIFEST_NAME).read_text())
    doc["shards"][0]["records"] += 1
    (out / MANIFEST_NAME).write_text(json.dumps(doc))
    report = validate_dataset(out)
    assert not report.ok and "totals.records" in str(report.problems[0])


def test_interrupted_pack_resumes_keeping_finished_shards(text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    fresh = ShardedPacker().pack(text_jsonl, tmp_path / "fresh", records_per_shard=250)

    class Interrupt(Exception):
        pass

    def stop_midway(done_bytes: int, records: int) -> None:
        if records > 1100:
            raise Interrupt

    with pytest.raises(Interrupt):
        ShardedPacker().pack(text_jsonl, out, records_per_shard=250, progress=stop_midway)
    assert not (out / MANIFEST_NAME).exists() and (out / PLAN_NAME).exists()
    with pytest.raises(ManifestError, match="run it again to resume"):
        shardpack.open(out)
    finished = sorted(p.name for p in out.glob("shard-*.packed"))
    assert 3 <= len(finished) < 8 and not list(out.glob(".*.tmp"))
    # damage two finished shards, one cut short, one with a byte flipped inside a block (its
    # size unchanged: only validating it tells): both packed again, the others kept untouched
    damaged = out / finished[0]
    damaged.write_bytes(damaged.read_bytes()[:-10])
    flipped = bytearray((out / finished[1]).read_bytes())
    flipped[len(flipped) // 3] ^= 0x40
    (out / finished[1]).write_bytes(bytes(flipped))
    stamps = {name: (out / name).stat().st_mtime_ns for name in finished[2:]}

    resumed = ShardedPacker().pack(text_jsonl, out, records_per_shard=250)
    assert resumed.shards_reused == len(finished) - 2
    assert resumed.shards_packed == 8 - resumed.shards_reused
    assert all((out / name).stat().st_mtime_ns == stamps[name] for name in stamps)
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "fresh")
    assert resumed.content_hash == fresh.content_hash
    assert not (out / PLAN_NAME).exists() and validate_dataset(out, deep=True).ok
    # other options: nothing can be reused
    again = ShardedPacker(compression="zstd").pack(text_jsonl, out, records_per_shard=250)
    assert again.shards_reused == 0
    again = ShardedPacker(compression="zstd").pack(text_jsonl, out, records_per_shard=500)
    assert sorted(p.name for p in out.glob("shard-*")) == [
        f"shard-0000{i}.packed" for i in range(4)
    ]


def test_sharded_pack_refuses_a_folder_of_other_files(text_jsonl: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OptionError, match="not part of a shardpack dataset"):
        ShardedPacker().pack(text_jsonl, tmp_path, records_per_shard=500)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_merge_keeps_shards_byte_for_byte(text_jsonl: Path, kd_jsonl: Path, tmp_path: Path) -> None:
    first = ShardedPacker().pack(text_jsonl, tmp_path / "a", records_per_shard=800)
    single = DatasetPacker().pack(text_jsonl, tmp_path / "b.packed")
    manifest = merge_datasets([tmp_path / "a", tmp_path / "b.packed"], tmp_path / "c")
    assert [e.records for e in manifest.shards] == [800, 800, 400, 2000]
    for i, entry in enumerate(first.manifest.shards):
        merged = tmp_path / "c" / f"shard-{i:05d}.packed"
        assert merged.read_bytes() == (tmp_path / "a" / entry.file).read_bytes()
        assert manifest.shards[i].file_hash == entry.file_hash
    assert (tmp_path / "c/shard-00003.packed").read_bytes() == Path(single.output_path).read_bytes()
    assert validate_dataset(tmp_path / "c", deep=True).ok
    assert manifest.provenance.merged_from[0].content_hash == first.content_hash
    with shardpack.open(tmp_path / "c") as ds:
        assert len(ds) == 4000 and ds[2000] == ds[0] and ds[-1] == ds[1999]
    # a field holding integers in one dataset and floats in another merges as one pack of both
    # would hold them: each array as stored
    write_jsonl(tmp_path / "ints.jsonl", [{"v": [1, 2, 3]}])
    write_jsonl(tmp_path / "floats.jsonl", [{"v": [1.5, 2.5]}])
    DatasetPacker().pack(tmp_path / "ints.jsonl", tmp_path / "ints.packed")
    DatasetPacker().pack(tmp_path / "floats.jsonl", tmp_path / "floats.packed")
    run = _cli(
        "merge",
        str(tmp_path / "ints.packed"),
        str(tmp_path / "floats.packed"),
        "-o",
        str(tmp_path / "e"),
    )
    assert run.returncode == 0, run.stderr
    with shardpack.open(tmp_path / "e") as ds:
        assert [r["v"].tolist() for r in ds] == [[1, 2, 3], [1.5, 2.5]]
        assert [r["v"].dtype.kind for r in ds] == ["i", "f"]


def test_a_field_of_ints_and_floats_packs_whatever_the_shard_boundaries(tmp_path: Path) -> None:
    # a field written as ints in some records and floats in others (scores, log-probs that
    # happen to be whole): a single file holds it, so must shards that split the two kinds
    records = [{"v": [1, 2]}, {"v": [0.5, 1.5]}, {"v": [3]}, {"v": [2.25]}]
    write_jsonl(tmp_path / "mixed.jsonl", records)
    single = DatasetPacker().pack(tmp_path / "mixed.jsonl", tmp_path / "one.packed")
    sharded = ShardedPacker().pack(tmp_path / "mixed.jsonl", tmp_path / "ds", records_per_shard=1)
    assert len(sharded.manifest.shards) == 4
    for where in (single.output_path, tmp_path / "ds"):
        with shardpack.open(where) as ds:
            assert [r["v"].tolist() for r in ds] == [r["v"] for r in records]
    assert validate_dataset(tmp_path / "ds", deep=True).ok
    assert sharded.manifest.schema.arrays["v"].stored == {"float32": 2, "int32": 2}


@pytest.mark.parametrize(
    "name",
    [
        "../outside.packed",
        "/etc/passwd",
        "s3://bucket/x.packed",
        "a/../../x.packed",
        ".hidden",
        "sub\\x.packed",
        "C:x.packed",
        "",
    ],
)
def test_manifest_cannot_point_outside_its_folder(
    text_jsonl: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "ds"
    ShardedPacker().pack(text_jsonl, out, records_per_shard=1000)
    manifest = Manifest.from_json((out / MANIFEST_NAME).read_bytes())
    doc = manifest.to_dict()
    doc["shards"][0]["file"] = name
    (out / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="unsafe shard name"):
        shardpack.open(out)
    assert "unsafe shard name" in str(validate_dataset(out).problems[0])


def test_symlinked_shard_leading_outside_is_refused(text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    ShardedPacker().pack(text_jsonl, out, records_per_shard=1000)
    secret = tmp_path / "elsewhere.packed"
    (out / "shard-00001.packed").rename(secret)
    os.symlink(secret, out / "shard-00001.packed")
    with pytest.raises(ManifestError, match="leads outside"):
        shardpack.open(out)


def test_cli_sharded_pack_info_validate(text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    run = _cli(
        "pack",
        str(text_jsonl),
        "-o",
        str(out),
        "--records-per-shard",
        "700",
        "-j",
        "2",
        "--validate",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["shards"] == 3 and summary["records"] == 2000 and summary["validated"]
    again = json.loads(
        _cli("pack", str(text_jsonl), "-o", str(out), "--records-per-shard", "700", "--json").stdout
    )
    assert again["shards_reused"] == 3 and again["content_hash"] == summary["content_hash"]
    info = json.loads(_cli("info", str(out), "--json").stdout)
    assert info["records"] == 2000 and len(info["paths"]) == 3
    run = _cli("validate", str(out), "--deep")
    assert run.returncode == 0 and run.stdout.startswith("OK ")
    run = _cli("pack", str(text_jsonl), "-o", str(tmp_path / "x"), "--shard-size", "lots")
    assert run.returncode == 2 and "not a size" in run.stderr


def test_errors_in_worker_processes_reach_the_caller_intact(tmp_path: Path) -> None:
    import pickle

    error = shardpack.InputError("invalid JSON", path="a.jsonl", line=3, column=4, excerpt="x")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is shardpack.InputError and str(again) == str(error) and again.line == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n' * 50 + '{"a": 2,}\n', encoding="utf-8")
    for packer in (DatasetPacker(workers=2), ShardedPacker(workers=2)):
        with pytest.raises(shardpack.InputError, match=r"bad\.jsonl:51:"):
            if isinstance(packer, ShardedPacker):
                packer.pack(bad, tmp_path / "ds", records_per_shard=20)
            else:
                packer.pack(bad, tmp_path / "bad.packed")
    # finished shards stay for a resume, but the dataset is not complete
    assert not (tmp_path / "ds" / MANIFEST_NAME).exists() and not list(tmp_path.glob("ds/.*.tmp"))


def test_units_cut_without_reading_hold_every_line_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain files are cut into units by byte ranges nobody reads first (each worker finds its
    own first and last line); a stream read by the driver is cut at the same places. Together
    the units hold every line once, numbered as in the whole file, with BOM, CRLF, blank lines
    and lines longer than a unit."""
    import gzip

    from shardpack.build.inputs import resolve_inputs
    from shardpack.build.planning import plan_units
    from shardpack.build.units import read_unit

    # drivers read streams in chunks: small ones make lines straddle chunk boundaries
    monkeypatch.setattr("shardpack.build.planning.READ_BYTES", 97)
    monkeypatch.setattr("shardpack.ingest.jsonl.PROBE_BYTES", 13)
    lines = []
    for i in range(400):
        record = json.dumps({"i": i, "t": "x" * (i * 7 % 90 if i % 50 else 1500)})
        lines.append(record + ("\r\n" if i % 3 == 0 else "\n") + ("\n  \n" if i % 11 == 0 else ""))
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "".join(lines).encode())
    gz = tmp_path / "mixed.jsonl.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    # line by line, as a plain reader sees them (BOM and CR dropped, blank lines skipped)
    expected = [
        (number, line.rstrip(b"\r"))
        for number, line in enumerate(src.read_bytes()[3:].split(b"\n"), start=1)
        if line.strip()
    ]

    def numbered(path: Path, **kw: object) -> tuple[list[tuple[int, bytes]], list[tuple]]:
        files = resolve_inputs(str(path))
        found, ranges, lines_before = [], [], 0
        for spec in plan_units(files, unit_bytes=300, **kw):  # type: ignore[arg-type]
            unit, start, end, count = read_unit(spec)
            offset = 0 if spec.first_line is not None else lines_before
            lines_before += count
            found += [
                (n + offset, line) for n, line in zip(unit.line_numbers, unit.lines, strict=True)
            ]
            ranges.append((spec.index, start, end, spec.shard))
        return found, ranges

    plain, plain_ranges = numbered(src)
    zipped, zipped_ranges = numbered(gz)
    assert plain == zipped == expected
    assert plain_ranges == zipped_ranges and len(plain_ranges) > 30
    counted, counted_ranges = numbered(src, records_per_shard=70)
    assert counted == expected
    per_shard = {}
    for _, _, _, shard in counted_ranges:
        per_shard[shard] = per_shard.get(shard, 0) + 1
    assert sorted(per_shard) == list(range(6))  # 400 records, 70 a shard
    assert numbered(gz, records_per_shard=70) == (counted, counted_ranges)
    # packs: plain or gzip, one worker or two, the same bytes
    plain_pack = ShardedPacker(workers=2, unit_bytes=300).pack(
        src, tmp_path / "a", records_per_shard=70
    )
    zipped_pack = ShardedPacker(workers=2, unit_bytes=300).pack(
        gz, tmp_path / "b", records_per_shard=70
    )
    assert plain_pack.content_hash == zipped_pack.content_hash
    assert [e.records for e in plain_pack.manifest.shards] == [70] * 5 + [50]
    with shardpack.open(tmp_path / "b") as ds:
        assert ds[399] == json.loads(lines[399])
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the build time is in the metadata
    one = DatasetPacker(workers=1, unit_bytes=300).pack([src, gz], tmp_path / "one.packed")
    two = DatasetPacker(workers=2, unit_bytes=300).pack([src, gz], tmp_path / "two.packed")
    assert one.metadata.block_count > 10
    assert one.metadata.provenance.inputs == two.metadata.provenance.inputs
    assert [i.lines for i in one.metadata.provenance.inputs] == [
        len(src.read_bytes().split(b"\n")) - 1
    ] * 2
    assert (tmp_path / "one.packed").read_bytes() == (tmp_path / "two.packed").read_bytes()


def test_killed_cli_pack_resumes(kd_jsonl: Path, text_jsonl: Path, tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "ds"
    args = [sys.executable, "-m", "shardpack", "pack", str(kd_jsonl), str(text_jsonl)]
    args += ["-o", str(out), "--records-per-shard", "20", "-j", "1", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "shard-00003.packed").exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)  # no cleanup at all: as a lost node or an OOM kill
    proc.communicate()
    if (out / MANIFEST_NAME).exists():
        pytest.skip("the pack finished before it could be killed")
    kept = {p.name for p in out.glob("shard-*.packed")}
    assert kept and (out / PLAN_NAME).exists()
    run = _cli(*args[3:])
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["shards_reused"] == len(kept)  # shards appear whole (temp file + rename)
    assert summary["shards_packed"] + summary["shards_reused"] == summary["shards"]
    fresh = ShardedPacker().pack([kd_jsonl, text_jsonl], tmp_path / "fresh", records_per_shard=20)
    assert summary["content_hash"] == fresh.content_hash
    assert _shard_bytes(out) == _shard_bytes(tmp_path / "fresh")
    assert not list(out.glob(".*")) and validate_dataset(out).ok


def test_a_field_has_one_dtype_across_shards(tmp_path: Path) -> None:
    small = [{"ids": [1, 2, 3], "p": [0.5, 0.25]} for _ in range(5)]
    big = [{"ids": [1, 2**40], "p": [0.1, 0.2]} for _ in range(5)]
    write_jsonl(tmp_path / "a.jsonl", small + big)
    ShardedPacker().pack(tmp_path / "a.jsonl", tmp_path / "ds", records_per_shard=5)
    with shardpack.open(tmp_path / "ds") as ds:
        assert ds.manifests[0].schema.arrays["ids"].dtype == "int64"
        assert {str(ds[i]["ids"].dtype) for i in range(10)} == {"int64"}
        assert [r["ids"].tolist() for r in ds] == [r["ids"] for r in small + big]
        assert {str(ds[i]["p"].dtype) for i in range(10)} == {"float64"}


def test_torch_loaders_read_a_sharded_folder(text_jsonl: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from shardpack.torch import PackedDataset, PackedIterableDataset

    out = tmp_path / "ds"
    ShardedPacker().pack(text_jsonl, out, records_per_shard=600)
    expected = _lines(text_jsonl)
    mapped = PackedDataset(str(out), columns=["question"])
    assert len(mapped) == 2000 and mapped[1999]["question"] == expected[1999]["question"]
    loader = torch.utils.data.DataLoader(
        PackedIterableDataset(str(out), columns=["question"]),
        batch_size=None,
        num_workers=2,
    )
    seen = sorted(record["question"] for record in loader)
    assert seen == sorted(record["question"] for record in expected)


def test_sharded_dataset_metadata_is_dataset_wide(kd_jsonl: Path, tmp_path: Path) -> None:
    """ds.stats of a sharded dataset describe all its records, as a single-file pack would."""

    single = tmp_path / "single.packed"
    DatasetPacker().pack(kd_jsonl, single)
    result = ShardedPacker().pack([str(kd_jsonl)], str(tmp_path / "sharded"), records_per_shard=7)
    assert len(result.manifest.shards) > 2
    with shardpack.open(single) as one, shardpack.open(tmp_path / "sharded") as many:
        assert many.metadata.record_count == len(one) == len(many)
        assert many.metadata.shards == len(result.manifest.shards)
        assert many.stats.fields == one.stats.fields
        assert many.stats.token_field == "input_ids"
        assert many.metadata.arrays["input_ids"].dtype == "int32"


def test_every_option_works_on_a_sharded_pack(tmp_path: Path) -> None:
    """Schema, skip with rejects, meta, dictionary, validate, force: the same options as a
    single file, through the same pipeline, and the same provenance in the manifest."""
    import hashlib

    records = [
        {"id": i, "text": f"row {i} " * (i % 9), "ids": list(range(i % 13))} for i in range(300)
    ]
    lines = [json.dumps(r) for r in records]
    lines[40] = '{"id": "forty"}'  # breaks the schema
    lines[77] = "{oops"  # not JSON
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"id": {"type": "integer"}}}))
    out = tmp_path / "ds"
    args = [
        sys.executable, "-m", "shardpack", "pack", str(src), "-o", str(out),
        "--records-per-shard", "100", "--schema", str(schema), "--on-error", "skip",
        "--meta", "teacher=t-7b", "--compression", "zstd", "--dictionary", "--validate", "--json",
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["records"] == 298 and summary["rejected"] == 2 and summary["validated"]
    rejects = [json.loads(x) for x in Path(summary["rejects_path"]).read_text().splitlines()]
    assert [r["line"] for r in rejects] == [41, 78]
    assert summary["rejects_path"] == str(out) + ".rejects.jsonl"
    with shardpack.open(out) as ds:
        meta = ds.metadata
        assert len(ds) == 298 and meta.shards == 3
        assert meta.codec["id"] == "zstd" and "dictionary" in meta.codec
        (source,) = meta.provenance.inputs
        assert source.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
        assert source.size == src.stat().st_size and source.lines == 300
        assert meta.provenance.meta == {"teacher": "t-7b"}
        assert meta.provenance.options.records_per_shard == 100
        assert meta.provenance.options.zstd_dictionary
        assert meta.schema["properties"] == {"id": {"type": "integer"}}
        dictionaries = {f.metadata.codec["dictionary"] for f in ds.files}
        assert len(dictionaries) == 1  # trained once for the whole dataset
    info = subprocess.run(
        [sys.executable, "-m", "shardpack", "info", str(out), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    facts = json.loads(info.stdout)
    assert facts["metadata"]["provenance"]["inputs"][0]["lines"] == 300
    assert facts["metadata"]["input_bytes"] == src.stat().st_size
    again = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout)["up_to_date"]
    forced = subprocess.run([*args, "--force"], capture_output=True, text=True, timeout=120)
    assert not json.loads(forced.stdout)["up_to_date"]


def test_sharded_zstd_shuffles_like_a_single_file(kd_jsonl: Path, tmp_path: Path) -> None:

    ShardedPacker(compression="zstd").pack(
        [str(kd_jsonl)], str(tmp_path / "z"), records_per_shard=10
    )
    DatasetPacker().pack(kd_jsonl, tmp_path / "one.packed", compression="zstd")
    with shardpack.open(tmp_path / "z") as ds, shardpack.open(tmp_path / "one.packed") as one:
        assert all(set(f.index["flags"].tolist()) == {1} for f in ds.files)
        for got, want in zip(ds, one, strict=True):
            assert_same_json(got, plain(want))


def test_validate_schema_checks_every_shard_of_a_dataset(text_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    ShardedPacker().pack(text_jsonl, out, records_per_shard=500)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["question", "answer"]}))
    run = _cli("validate", str(out), "--schema", str(schema))
    assert run.returncode == 0 and "2000 records decoded" in run.stdout, run.stderr
    # long questions break this one, in whichever shard they are
    strict = {"type": "object", "properties": {"question": {"maxLength": 700}}}
    schema.write_text(json.dumps(strict))
    report = validate_dataset(out, schema=strict)
    assert report.schema_checked and report.records_checked == 2000
    long = [p for p in report.problems if "violates the schema at $.question" in str(p)]
    assert long and report.schema_failures == len(long)
    run = _cli("validate", str(out), "--schema", str(schema))
    assert run.returncode == 1 and "violates the schema at $.question" in run.stderr


def test_a_manifest_field_of_the_wrong_type_is_named_by_its_path(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    shardpack.pack([{"i": i} for i in range(30)], out, records_per_shard=10)
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    manifest["shards"][0]["records"] = "ten"
    (out / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(ManifestError, match=r"\$\.shards\[0\]\.records"):
        shardpack.open(out)
