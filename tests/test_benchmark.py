"""`shardpack bench` on a user's own dataset: every figure issue #7 asks for, in the table, in
`--json` and in `--plot`, measured for real (no figure is checked for speed, only for sense)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shardpack import DatasetPacker


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardpack", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**{k: v for k, v in os.environ.items() if k != "COLUMNS"}, "CI": "true"},
    )


@pytest.fixture(scope="module")
def kd_packed(kd_jsonl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "kd.packed"
    DatasetPacker().pack(kd_jsonl, out, compression="zstd")  # zstd: un-shuffle is timed too
    return out


def test_bench_json_has_every_figure(kd_packed: Path, kd_jsonl: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    plot = tmp_path / "bench.png"
    proc = run(
        "bench", str(kd_packed), "--jsonl", str(kd_jsonl), "--batch-size", "8",
        "--repeats", "2", "--json", "--plot", str(plot),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    records = len(kd_jsonl.read_text().splitlines())
    assert report["records"] == records and report["batch_size"] == 8 and report["repeats"] == 2
    assert report["json_bytes"] == kd_jsonl.stat().st_size
    assert report["token_field"] == "input_ids" and report["tokens"] > records

    packed = report["packed"]
    for key in (
        "open_seconds",
        "first_batch_seconds",
        "scan_seconds",
        "scan_unverified_seconds",
        "scan_read_ahead_seconds",
    ):
        assert 0 < packed[key] < 60, key
    assert packed["records_per_s"] == pytest.approx(records / packed["scan_seconds"], rel=1e-6)
    assert packed["json_mb_per_s"] == pytest.approx(
        report["json_bytes"] / 1e6 / packed["scan_seconds"], rel=1e-6
    )
    assert packed["tokens_per_s"] == pytest.approx(
        report["tokens"] / packed["scan_seconds"], rel=1e-6
    )
    assert 0 < packed["random_access_p50_us"] <= packed["random_access_p99_us"]
    assert packed["dataloader_batches_per_s"] > 0  # through a real torch DataLoader
    assert packed["peak_rss_mb"] > 0
    where = packed["breakdown_seconds"]
    assert {"read", "checksum", "decompress", "unshuffle", "decode"} <= set(where)
    assert all(seconds >= 0 for seconds in where.values()) and where["decode"] > 0
    ceilings = packed["ceilings"]
    assert min(ceilings["read_mb_s"], ceilings["decompress_mb_s"], ceilings["memcpy_mb_s"]) > 0

    # the original JSONL, side by side in the same run, with ratios
    for parser in ("json", "orjson"):
        side = report["jsonl"][parser]
        assert side["scan_seconds"] > 0 and side["records_per_s"] > 0
    ratios = report["ratios"]
    assert ratios["scan_speedup_vs_json"] == pytest.approx(
        report["jsonl"]["json"]["scan_seconds"] / packed["scan_seconds"], rel=1e-6
    )
    assert ratios["scan_speedup_vs_orjson"] == pytest.approx(
        report["jsonl"]["orjson"]["scan_seconds"] / packed["scan_seconds"], rel=1e-6
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_table_by_default(kd_packed: Path, kd_jsonl: Path) -> None:
    proc = run("bench", str(kd_packed), "--jsonl", str(kd_jsonl), "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for label in ("json.loads", "orjson", "random access", "where time goes", "machine ceilings"):
        assert label in text, label
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    # in a pipe (make demo, CI logs) each figure stays on its label's line, not cut at 80 columns
    lines = text.splitlines()
    (where,) = [line for line in lines if "where time goes" in line]
    assert "read " in where and "decode " in where, where
    (ceilings,) = [line for line in lines if "machine ceilings" in line]
    assert "memcpy" in ceilings, ceilings
    (read_ahead,) = [line for line in lines if "read_ahead=True" in line]
    assert "x the scan above" in read_ahead, read_ahead


def test_the_read_ahead_figure_is_a_read_ahead_scan(
    kd_packed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scan_read_ahead_seconds`` times scans opened with ``read_ahead=True``, the others not."""
    from shardpack.bench import loading

    opened: list[bool] = []
    original = loading.open_dataset

    def recording(path: Any, **options: Any) -> Any:
        opened.append(bool(options.get("read_ahead")))
        return original(path, **options)

    monkeypatch.setattr(loading, "open_dataset", recording)
    assert loading.scan_packed(str(kd_packed), read_ahead=True) > 0
    assert loading.scan_packed(str(kd_packed)) > 0
    assert opened == [True, False]


def test_benchmark_loading_spelling(kd_packed: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "shardpack.benchmark_loading", "--dataset", str(kd_packed),
         "--batch-size", "8", "--repeats", "1", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["batch_size"] == 8


def test_bench_bad_input_is_one_line(tmp_path: Path) -> None:
    missing = run("bench", str(tmp_path / "nope.packed"))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    damaged = tmp_path / "damaged.packed"
    damaged.write_bytes(b"not a packed file at all" * 10)
    proc = run("bench", str(damaged), "--json")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(damaged) in proc.stderr
