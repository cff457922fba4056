"""Progress bars on a terminal only: never in pipes, CI logs or --json output."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest


def _run_on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run with stdout/stderr on a pseudo-terminal; returns the exit status and what it showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CI"}


def _pack_args(text_jsonl: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "shardpack", "pack", str(text_jsonl), "-o", str(out), "--force"]


def test_progress_bar_on_a_terminal(text_jsonl: Path, tmp_path: Path, env: dict[str, str]) -> None:
    status, shown = _run_on_terminal(_pack_args(text_jsonl, tmp_path / "a.packed"), env)
    assert status == 0
    assert "packing" in shown and "\x1b[" in shown  # a live bar, drawn with terminal escapes
    assert "packed 2000 records" in shown


def test_quiet_when_not_a_terminal(text_jsonl: Path, tmp_path: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(
        _pack_args(text_jsonl, tmp_path / "a.packed"), capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert "\x1b[" not in proc.stdout


def test_quiet_in_ci_even_on_a_terminal(
    text_jsonl: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    status, shown = _run_on_terminal(
        _pack_args(text_jsonl, tmp_path / "a.packed"), {**env, "CI": "true"}
    )
    assert status == 0 and "packing" not in shown


def test_json_output_is_only_json(text_jsonl: Path, tmp_path: Path, env: dict[str, str]) -> None:
    import json

    status, shown = _run_on_terminal(
        [*_pack_args(text_jsonl, tmp_path / "a.packed"), "--json"], env
    )
    assert status == 0
    assert json.loads(shown.replace("\r\n", "\n"))["records"] == 2000


def test_info_of_a_file_with_a_token_field_draws_its_length_histogram(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The histogram read the statistics through the deprecated mapping access (a
    DeprecationWarning on every ``info`` of a token dataset; an error under ``-W error``)."""
    from shardpack.cli.main import main

    from .conftest import write_jsonl

    records = [{"id": i, "tokens": list(range(i % 9 + 1))} for i in range(50)]
    source = write_jsonl(tmp_path / "tokens.jsonl", records)
    assert main(["pack", str(source), "-o", str(tmp_path / "t.packed"), "-q"]) == 0
    assert main(["info", str(tmp_path / "t.packed")]) == 0
    total = sum(len(r["tokens"]) for r in records)
    assert f"tokens length: total {total:,} tokens, p50 " in capsys.readouterr().out


def test_bench_gives_no_share_of_the_scan_above_the_whole() -> None:
    # read+check+decompress and the full scan are timed apart: on the shipped sample's ~1 ms
    # scan their noise had the part at 109% of the whole
    from shardpack.cli.render import _ceiling_share

    assert "too short to tell" in _ceiling_share(0.0011, 0.0010)
    assert "too short to tell" in _ceiling_share(0.003, 0.004)
    # the 50 MB KD demo's ~12 ms scan keeps its share
    assert _ceiling_share(0.002, 0.012) == "2.00 ms to read+check+decompress = 17% of the full scan"
    assert _ceiling_share(0.5, 1.0) == "500.00 ms to read+check+decompress = 50% of the full scan"
    assert _ceiling_share(2.0, 4.0) == "2.000 s to read+check+decompress = 50% of the full scan"
