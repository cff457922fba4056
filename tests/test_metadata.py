"""Statistics and provenance in the file, reproducible and incremental builds, info and diff."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shardpack
from shardpack import DatasetPacker

from .conftest import write_jsonl

EPOCH = "1700000000"


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardpack", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    records = [
        {
            "id": 1,
            "text": "abc",
            "input_ids": [1, 2, 3],
            "score": 0.5,
            "meta": {"lang": "en", "n": 1},
        },
        {
            "id": 2,
            "text": "hello",
            "input_ids": [4, 5, 6, 7, 8],
            "score": None,
            "meta": {"lang": "fr"},
        },
        {"id": 3, "text": "", "input_ids": [9], "score": 1.5, "extra": [True]},
        {
            "id": 4,
            "text": "xy",
            "input_ids": list(range(100)),
            "score": -2.0,
            "meta": {"lang": "en"},
        },
    ]
    return write_jsonl(tmp_path / "mixed.jsonl", records)


def test_statistics_in_one_pass(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "mixed.packed"
    DatasetPacker().pack(mixed, out)
    with shardpack.open(out) as ds:
        stats = ds.stats.to_dict()
    assert stats["records"] == 4
    fields = stats["fields"]
    assert fields["id"]["number"] == {"count": 4, "min": 1, "mean": 2.5, "max": 4}
    assert fields["score"]["nulls"] == 1 and fields["score"]["types"] == {"float": 3, "null": 1}
    assert fields["score"]["number"]["min"] == -2.0 and fields["score"]["number"]["max"] == 1.5
    text = fields["text"]["string_length"]
    assert (text["min"], text["max"], text["total"]) == (0, 5, 10)
    assert fields["meta"]["present"] == 3 and fields["meta.lang"]["present"] == 3
    assert fields["meta.n"]["present"] == 1
    assert fields["extra"]["types"] == {"array": 1} and fields["extra"]["array_dtypes"] == {
        "bool": 1
    }
    ids = fields["input_ids"]
    assert ids["array_dtypes"] == {"int32": 4}
    assert ids["array_elements"] == 109
    lengths = ids["array_length"]
    assert (lengths["min"], lengths["max"], lengths["total"], lengths["count"]) == (1, 100, 109, 4)
    assert lengths["p50"] == 3 and lengths["p95"] == 100
    assert ids["array_values"] == {"min": 0, "max": 99}
    assert stats["token_field"] == "input_ids"
    assert stats["blocks"]["raw"]["count"] == ds.metadata.block_count
    assert stats["raw_bytes"] > 0 and stats["stored_bytes"] > 0 and stats["compression_ratio"] > 0


def test_statistics_and_bytes_do_not_depend_on_workers(kd_jsonl: Path, tmp_path: Path) -> None:
    # several work units so the parallel path really splits the input
    big = tmp_path / "big.jsonl"
    big.write_bytes(kd_jsonl.read_bytes() * 4)
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    try:
        one = DatasetPacker().pack(big, tmp_path / "one.packed", workers=1)
        two = DatasetPacker().pack(big, tmp_path / "two.packed", workers=2)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    assert one.metadata.stats == two.metadata.stats
    assert (tmp_path / "one.packed").read_bytes() == (tmp_path / "two.packed").read_bytes()


def test_reproducible_with_source_date_epoch(mixed: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        proc = run(
            "pack",
            str(mixed),
            "-o",
            str(tmp_path / f"{name}.packed"),
            env={"SOURCE_DATE_EPOCH": EPOCH},
        )
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a.packed").read_bytes() == (tmp_path / "b.packed").read_bytes()
    with shardpack.open(tmp_path / "a.packed") as ds:
        assert ds.metadata.provenance.created == "2023-11-14T22:13:20Z"


def test_provenance(mixed: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    source = repo / "data.jsonl"
    source.write_bytes(mixed.read_bytes())
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "data.jsonl"], check=True)
    subprocess.run([*git, "commit", "-qm", "data"], check=True)
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()

    out = tmp_path / "p.packed"
    proc = run(
        "pack",
        str(source),
        "-o",
        str(out),
        "--compression",
        "zstd",
        "--level",
        "7",
        "--meta",
        "teacher=teacher-7b",
        "--meta",
        "generator=make_kd.py",
    )
    assert proc.returncode == 0, proc.stderr
    with shardpack.open(out) as ds:
        prov = ds.metadata.provenance
    import hashlib

    (entry,) = prov.inputs
    assert entry.path == str(source) and entry.size == source.stat().st_size
    assert entry.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert entry.lines == 4
    assert entry.git.to_dict() == {"repository": str(repo), "commit": commit, "dirty": False}
    assert prov.meta == {"generator": "make_kd.py", "teacher": "teacher-7b"}
    assert prov.options.codec == {"id": "zstd", "level": 7}
    assert prov.tool == f"shardpack {shardpack.__version__}" and prov.format_version == "1.2"
    assert {"python", "numpy", "msgspec", "lz4", "zstandard", "xxhash"} <= set(prov.versions)
    from importlib import metadata

    # the typed reader's parser has no __version__: read from its installed distribution
    assert prov.versions["pysimdjson"] == metadata.version("pysimdjson")
    assert prov.versions["ml-dtypes"] == metadata.version("ml-dtypes")

    source.write_text(source.read_text() + '{"id": 5}\n')  # now the repository is dirty
    run("pack", str(source), "-o", str(out))
    with shardpack.open(out) as ds:
        assert ds.metadata.provenance.inputs[0].git.dirty is True


def test_content_hash_ignores_codec_and_block_size(kd_jsonl: Path, tmp_path: Path) -> None:
    hashes = set()
    for codec, block in (("lz4", "4K"), ("zstd", "64K"), ("none", "1M")):
        result = DatasetPacker().pack(
            kd_jsonl, tmp_path / f"{codec}.packed", compression=codec, block_size=block
        )
        hashes.add(result.content_hash)
    assert len(hashes) == 1
    other = tmp_path / "other.jsonl"
    lines = kd_jsonl.read_text().splitlines()
    other.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # order matters
    assert DatasetPacker().pack(other, tmp_path / "other.packed").content_hash not in hashes


def test_info_json_and_readable(kd_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "kd.packed"
    DatasetPacker().pack(kd_jsonl, out, meta={"teacher": "t-7b"})
    proc = run("info", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    with shardpack.open(out) as ds:
        assert facts["metadata"] == ds.metadata.to_dict()
        assert facts["records"] == len(ds)
    readable = run("info", str(out), env={"COLUMNS": "160"})
    assert readable.returncode == 0
    for expected in (
        "input_ids length: total",
        "teacher_topk_logprobs",
        "meta teacher",
        "█",
        "sha256",
    ):
        assert expected in readable.stdout, expected


def test_diff(kd_jsonl: Path, mixed: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.packed", tmp_path / "b.packed", tmp_path / "c.packed"
    DatasetPacker().pack(kd_jsonl, a, compression="lz4")
    DatasetPacker().pack(kd_jsonl, b, compression="zstd", block_size="8K")
    DatasetPacker().pack(mixed, c)
    same = run("diff", str(a), str(b), "--json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["same_content"] is True
    differ = run("diff", str(a), str(c))
    assert differ.returncode == 1
    assert "content differs" in differ.stdout and "records" in differ.stdout


def test_incremental_builds(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.packed"
    assert run("pack", str(mixed), "-o", str(out)).returncode == 0
    before = out.stat().st_mtime_ns
    again = run("pack", str(mixed), "-o", str(out))
    assert again.returncode == 0 and "up to date" in again.stdout
    assert out.stat().st_mtime_ns == before
    forced = run("pack", str(mixed), "-o", str(out), "--force")
    assert "packed 4 records" in forced.stdout and out.stat().st_mtime_ns != before
    # a changed option or a changed input rebuilds
    assert "packed" in run("pack", str(mixed), "-o", str(out), "--compression", "zstd").stdout
    mixed.write_text(mixed.read_text() + '{"id": 9}\n')
    rebuilt = run("pack", str(mixed), "-o", str(out), "--compression", "zstd")
    assert "packed 5 records" in rebuilt.stdout
    # a damaged output is never "up to date"
    data = bytearray(out.read_bytes())
    data[40] ^= 1
    out.write_bytes(bytes(data))
    assert (
        "packed 5 records"
        in run("pack", str(mixed), "-o", str(out), "--compression", "zstd").stdout
    )


def test_pipeline_spellings(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "y.packed"
    base = [sys.executable, "-m"]
    proc = subprocess.run(
        [
            *base,
            "shardpack.pack_datasets",
            "--input",
            str(mixed),
            "--output",
            str(out),
            "--compression",
            "lz4",
            "--validate",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [*base, "shardpack.pack_datasets", "--validate", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout
    proc = subprocess.run(
        [
            *base,
            "shardpack.benchmark_loading",
            "--dataset",
            str(out),
            "--batch-size",
            "8",
            "--repeats",
            "1",
            "--no-memory",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["records"] == 4


@pytest.mark.slow
def test_make_build_dataset(mixed: Path, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "built.packed"
    make = [
        "make",
        "-C",
        str(root),
        "--no-print-directory",
        "build-dataset",
        f"DATASET={mixed}",
        f"PACKED_DATASET={out}",
    ]
    proc = subprocess.run(make, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert shardpack.DatasetPacker().validate(out).ok
    again = subprocess.run(make, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "up to date" in again.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n')
    failed = subprocess.run(
        [*make[:-2], f"DATASET={bad}", f"PACKED_DATASET={tmp_path / 'bad.packed'}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert failed.returncode != 0 and f"{bad}:2:" in failed.stderr


def test_metadata_is_typed_and_crafted_metadata_names_the_field(tmp_path: Path) -> None:
    """Footer metadata decodes into typed structures; a value of the wrong type (checksums
    recomputed, as a crafted file would have them) is a FormatError naming its JSON path."""
    from shardpack.format.metadata import Provenance

    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "ids": [i, i + 1]} for i in range(5)])
    result = DatasetPacker().pack(source, tmp_path / "good.packed")
    with shardpack.open(result.output_path) as ds:
        meta = ds.metadata
        assert isinstance(meta.provenance, Provenance) and meta.record_count == 5
        assert meta.arrays["ids"].dtype == "int32" and meta.stats.fields["id"].present == 5
        with pytest.warns(DeprecationWarning, match=r"use \.record_count"):
            assert meta["record_count"] == 5  # the old dict spelling still answers
    good = tmp_path / "good.packed"
    data = good.read_bytes()
    from shardpack.format.layout import Trailer, checksum
    from shardpack.packfile.reader import PackedFile

    with PackedFile(good) as packed:
        trailer = packed.trailer
        crafted = packed.metadata.to_dict()
    crafted["stats"]["records"] = [5]
    index = data[trailer.index_offset : trailer.metadata_offset]
    meta_bytes = json.dumps(crafted).encode()
    forged = Trailer(
        trailer.index_offset,
        len(index),
        trailer.metadata_offset,
        len(meta_bytes),
        trailer.record_count,
        checksum(index + meta_bytes),
    )
    bad = tmp_path / "bad.packed"
    bad.write_bytes(data[: trailer.metadata_offset] + meta_bytes + forged.encode())
    with pytest.raises(shardpack.FormatError, match=r"\$\.stats\.records"):
        shardpack.open(bad)
    proc = run("info", str(bad))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "$.stats.records" in proc.stderr
