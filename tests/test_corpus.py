"""The crafted corpus (``tests/corpus.py``): every hostile file or folder is refused with the
library's own error naming file, block or shard, and with one line and a non-zero exit by the
CLI, inside a 1 GiB address space; never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import shardpack
from shardpack.dataset.validate_folder import validate_dataset

from .corpus import CASES, Case, write_corpus
from .crafting import write_seeds

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 1 << 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("corpus")
    return write_corpus(write_seeds(folder / "seeds"), folder / "corpus")


@pytest.fixture(scope="module")
def seeds(corpus: dict[str, Path]) -> dict[str, Path]:
    folder = next(iter(corpus.values())).parent.parent / "seeds"
    return {p.stem: p for p in folder.iterdir() if p.suffix == ".packed" or p.is_dir()}


def _read(path: Path, access: str) -> None:
    with shardpack.open(path, columns=["id", "text"] if access == "columns" else None) as ds:
        if access in ("scan", "columns"):
            for _ in ds:
                pass
        elif access.startswith("get:"):
            ds[int(access[4:])]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_library_refuses_it_naming_where(case: Case, corpus: dict[str, Path]) -> None:
    path = corpus[case.name]
    if case.access == "none":  # readable, but deep validation finds it out
        _read(path, "scan")
        report = validate_dataset(path, deep=True)
        assert not report.ok and case.validate_says in str(report.problems[0])
        return
    with pytest.raises(case.error) as caught:
        _read(path, case.access)
    text = str(caught.value)
    assert case.message in text and str(path) in text and "\n" not in text, text


def test_the_cli_refuses_each_in_one_line_within_a_memory_limit(corpus: dict[str, Path]) -> None:
    jobs = []
    for case in CASES:
        path = str(corpus[case.name])
        for command in case.cli:
            args = ["unpack", path, "-o", "-"] if command == "unpack" else [command, path, "--deep"]
            jobs.append((case.name, args))
    code = (
        "import json, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT})); "
        "from tests.corpus import run_cli; "
        "print(json.dumps(run_cli(json.load(sys.stdin))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    by_name = {case.name: case for case in CASES}
    for result in json.loads(proc.stdout):
        case, args, stderr = by_name[result["case"]], result["args"], result["stderr"]
        lines = stderr.strip().splitlines()
        assert result["status"] == 1 and "Traceback" not in stderr, (case.name, args, stderr)
        if args[0] == "unpack":
            assert len(lines) == 1 and case.message in lines[0], (case.name, stderr)
        else:
            assert any(case.validate_says in line for line in lines), (case.name, stderr)
        assert all(line.startswith(("shardpack: error: ", "INVALID ")) for line in lines), stderr


@pytest.mark.parametrize("seed", ["lz4", "zstd", "none", "sharded"])
def test_an_index_past_either_end_is_an_index_error(seed: str, seeds: dict[str, Path]) -> None:
    with shardpack.open(seeds[seed]) as ds:
        last = ds[len(ds) - 1]
        assert last["id"] == len(ds) - 1 and ds[-len(ds)]["id"] == 0
        for index in (len(ds), len(ds) + 7, -len(ds) - 1):
            with pytest.raises(IndexError, match=f"record {index} out of range"):
                ds[index]
