"""``shardpack pack`` at its edges, as users hit them: output names and spellings (any file name,
not stdout, not a folder's trailing slash), options that would otherwise be ignored or explode
(a ``--dtype`` that matches nothing, a unit-less shard size, both shard limits), stdin that is
Parquet, the rejects file when every line is rejected, and messages in the command's spelling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import shardpack
from shardpack import OptionError

from .conftest import write_jsonl

RECORDS = [{"id": i, "text": f"line {i}"} for i in range(40)]
# a float array field only in the second half: absent from the first shards and units
FLOATS = [
    {"id": i, "ids": [i, i + 1]} | ({"logp": [0.5, -1.25]} if i >= 20 else {}) for i in range(40)
]


def _cli(*args: str, cwd: Path | None = None, stdin: bytes | None = None, timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "shardpack", *args],
        capture_output=True,
        input=stdin,
        timeout=timeout,
        cwd=cwd,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def _one_line(proc: subprocess.CompletedProcess[str], status: int) -> str:
    """The single stderr line of a command that failed with ``status``."""
    assert proc.returncode == status and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "name", ["my data.packed", "a+b (1).packed", "café.packed", ".hidden.packed"]
)
def test_a_single_file_may_have_any_name_the_os_accepts(name: str, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / name
    run = _cli("pack", str(source), "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert len(shardpack.open(out)) == len(RECORDS)
    again = _cli("pack", str(source), "-o", str(out))
    assert again.returncode == 0 and "up to date" in again.stdout
    # the Python API and the Writer alike
    assert shardpack.pack(str(source), tmp_path / f"py {name}").record_count == len(RECORDS)
    with shardpack.Writer(tmp_path / f"w {name}") as writer:
        writer.write_many(RECORDS)
    assert len(shardpack.open(tmp_path / f"w {name}")) == len(RECORDS)


def test_packed_output_cannot_go_to_stdout(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    line = _one_line(_cli("pack", str(source), "-o", "-", cwd=tmp_path), 2)
    assert "cannot go to stdout" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no file named '-'


def test_a_trailing_slash_names_a_folder_not_a_single_file(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    line = _one_line(_cli("pack", str(source), "-o", f"{tmp_path / 'newdir'}/"), 2)
    assert "--shard-size or --records-per-shard" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    with pytest.raises(OptionError, match="names a folder"):
        shardpack.pack(str(source), f"{tmp_path / 'newdir'}/")
    # with a shard limit the slash is the folder it always was
    run = _cli("pack", str(source), "-o", f"{tmp_path / 'newdir'}/", "--records-per-shard", "10")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "newdir" / "manifest.json").is_file()


def test_skip_with_every_line_rejected_still_writes_the_rejects_file(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text("x\n{oops\n[1,\n")
    out = tmp_path / "out.packed"
    rejects = tmp_path / "out.packed.rejects.jsonl"
    rejects.write_text('{"stale": true}\n')
    line = _one_line(_cli("pack", str(source), "-o", str(out), "--on-error", "skip"), 1)
    assert "all 3 input lines were rejected" in line
    listed = [json.loads(text) for text in rejects.read_text().splitlines()]
    assert [r["line"] for r in listed] == [1, 2, 3] and listed[0]["text"] == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name, rejects.name]  # no temp


def test_a_dtype_that_matches_no_float_array_field_is_an_error(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", FLOATS)
    out = tmp_path / "out.packed"
    for wrong in ("logpp", "nosuch", "id"):  # misspelt, absent, an int (not an array)
        line = _one_line(
            _cli("pack", str(source), "-o", str(out), "--dtype", f"{wrong}=float16"), 2
        )
        assert f"--dtype {wrong}=float16" in line and "float array fields: logp" in line
        assert not out.exists()
    # present in some shards only: fine, and applied
    folder = tmp_path / "ds"
    ok = ["pack", str(source), "--dtype", "logp=float16", "--records-per-shard", "10"]
    assert _cli(*ok, "-o", str(folder)).returncode == 0
    assert shardpack.open(folder)[39]["logp"].dtype.name == "float16"
    wrong_folder = tmp_path / "wrong"
    line = _one_line(_cli(*ok, "-o", str(wrong_folder), "--dtype", "logpx=bfloat16"), 2)
    assert "--dtype logpx=bfloat16" in line and "logp=" not in line
    assert not (wrong_folder / "manifest.json").exists()  # never made a dataset


def test_a_dtype_is_checked_over_every_unit_of_a_multi_worker_pack(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", FLOATS)
    small = {"workers": 2, "unit_bytes": 256}  # many units, the first ones without the field
    result = shardpack.pack(str(source), tmp_path / "a.packed", dtypes={"logp": "float16"}, **small)
    assert result.metadata.lossy == {"logp": "float16"}
    with pytest.raises(OptionError, match="nosuch"):
        shardpack.pack(str(source), tmp_path / "b.packed", dtypes={"nosuch": "float16"}, **small)
    assert not (tmp_path / "b.packed").exists()
    with pytest.raises(OptionError, match="nosuch"):
        shardpack.pack(
            str(source), tmp_path / "c", dtypes={"nosuch": "float16"}, shard_size="8K", **small
        )


@pytest.mark.parametrize("kind", ["parquet", "arrow"])
def test_parquet_or_arrow_on_stdin_is_named(kind: str, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"id": [1, 2, 3]})
    data = tmp_path / f"x.{kind}"
    if kind == "parquet":
        pytest.importorskip("pyarrow.parquet").write_table(table, data)
    else:
        pytest.importorskip("pyarrow.feather").write_feather(table, data)
    what = "Parquet" if kind == "parquet" else "Arrow IPC"
    for extra in ([], ["--records-per-shard", "2"]):  # both stdin planners
        out = tmp_path / f"out{len(extra)}"
        line = _one_line(_cli("pack", "-", "-o", str(out), *extra, stdin=data.read_bytes()), 1)
        assert f"{what} data on stdin is not supported" in line
        assert not out.exists() or not (out / "manifest.json").exists()


def test_a_tiny_shard_size_is_refused_before_planning(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS * 200)
    for extra in ([], ["--dry-run"]):
        run = _cli("pack", str(source), "-o", str(tmp_path / "ds"), "--shard-size", "1", *extra,
                   timeout=60)  # fmt: skip
        assert "below the minimum of 4 KiB" in _one_line(run, 2)
    with pytest.raises(OptionError, match="minimum"):
        shardpack.pack(str(source), tmp_path / "ds", shard_size=4095, dry_run=True)
    assert not (tmp_path / "ds").exists()


def test_shard_size_and_records_per_shard_are_exclusive(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    run = _cli("pack", str(source), "-o", str(tmp_path / "ds"), "--shard-size", "100K",
               "--records-per-shard", "15")  # fmt: skip
    assert "--shard-size or --records-per-shard, not both" in _one_line(run, 2)
    with pytest.raises(OptionError, match="not both"):
        shardpack.pack(str(source), tmp_path / "ds", shard_size="100K", records_per_shard=15)
    assert not (tmp_path / "ds").exists()


def test_messages_name_the_command_s_flags(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    line = _one_line(_cli("pack", str(empty), "-o", str(tmp_path / "e.packed")), 1)
    assert "--allow-empty" in line and "allow_empty" not in line
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    run = _cli("pack", str(source), "-o", str(tmp_path / "r.packed"), "--rejects", "r.jsonl")
    line = _one_line(run, 2)
    assert "--on-error skip" in line and "on_error" not in line
    with pytest.raises(OptionError, match="on_error='skip'"):  # Python keeps its own spelling
        shardpack.pack(str(source), tmp_path / "r.packed", rejects="r.jsonl")


def test_shardpack_without_a_command_prints_its_help_on_stdout() -> None:
    run = _cli()
    assert run.returncode == 2 and run.stderr == ""
    assert run.stdout.startswith("Usage: shardpack [OPTIONS] COMMAND [ARGS]...")
    assert "pack" in run.stdout and "usage error" not in run.stdout


def test_the_writer_keeps_the_rejects_and_checks_dtypes_as_a_pack_does(tmp_path: Path) -> None:
    schema = {"type": "object", "required": ["text"]}
    out = tmp_path / "w.packed"
    stale = tmp_path / "w.packed.rejects.jsonl"
    stale.write_text("stale\n")
    writer = shardpack.Writer(out, schema=schema, on_error="skip")
    writer.write_many([{"id": 1}, {"id": 2}])
    with pytest.raises(shardpack.InputError, match="all 2 input lines were rejected"):
        writer.close()
    assert not out.exists()
    rejected = [json.loads(line) for line in stale.read_text().splitlines()]
    assert [(r["line"], json.loads(r["text"])) for r in rejected] == [
        (1, {"id": 1}),
        (2, {"id": 2}),
    ]
    for target, extra in (
        (tmp_path / "d.packed", {}),
        (tmp_path / "ds", {"records_per_shard": 10}),
    ):
        writer = shardpack.Writer(target, dtypes={"logpp": "float16"}, **extra)
        writer.write_many(FLOATS)
        with pytest.raises(OptionError, match="logpp=float16"):
            writer.close()
        assert not target.exists() or not (target / "manifest.json").exists()
