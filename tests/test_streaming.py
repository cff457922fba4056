"""Bounded memory: packing and scanning hold a few units/blocks, whatever the input size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import gen_kd_mix

MEASURE = """
import sys, shardpack
from shardpack.bench.loading import peak_rss_kb
mode, source, out = sys.argv[1:4]
if mode == "pack":
    shardpack.DatasetPacker().pack(source, out, compression="lz4")
else:
    with shardpack.open(out) as ds:
        for batch in ds.iter_batches(8):
            pass
print(peak_rss_kb() // 1024)
"""


def _peak_mb(mode: str, source: Path, out: Path) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, mode, str(source), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return int(proc.stdout.strip())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("stream")
    small, large = folder / "small.jsonl", folder / "large.jsonl"
    gen_kd_mix.generate(small, 12_000_000, seed=2, top_k=8, vocab_size=32_000)
    gen_kd_mix.generate(large, 96_000_000, seed=3, top_k=8, vocab_size=32_000)
    return small, large


def test_pack_memory_does_not_grow_with_input(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    small, large = inputs
    small_mb = _peak_mb("pack", small, tmp_path / "small.packed")
    large_mb = _peak_mb("pack", large, tmp_path / "large.packed")
    # 8x the input (96 MB, ~12 work units and hundreds of blocks) costs at most a few MB more
    assert large_mb - small_mb < 24, (small_mb, large_mb)


def test_scan_memory_does_not_grow_with_dataset(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    small, large = inputs
    _peak_mb("pack", small, tmp_path / "small.packed")
    _peak_mb("pack", large, tmp_path / "large.packed")
    small_mb = _peak_mb("scan", small, tmp_path / "small.packed")
    large_mb = _peak_mb("scan", large, tmp_path / "large.packed")
    assert large_mb - small_mb < 16, (small_mb, large_mb)
