"""The README's training snippet runs as written (sizes scaled to a small mix) on the mixed KD
mix the demo generates, with real DataLoader workers, and its checkpoint resumes exactly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchdata")

from shardpack import DatasetPacker
from shardpack.torch import PackedIterableDataset, make_loader

README = Path(__file__).resolve().parents[1] / "README.md"
COLUMNS = ["input_ids", "teacher_topk_ids", "teacher_topk_logprobs", "loss_mask"]
MAX_TOKENS = 1_024  # the README's 16k budget scaled to the test mix (a few dozen distill records)

CHECK = """
# -- appended by the test: the resumed loader yields the rest of the checkpointed epoch
assert "loss_mask_present" in batch or "loss_mask" not in batch
check = PackedIterableDataset(
    "kd_mix.packed", filter=lambda r: "input_ids" in r, columns=COLUMNS, seed=0
)
check.set_epoch(ckpt["epoch"])
full = [b["input_ids"] for b in make_loader(check, max_tokens=MAX_TOKENS, stateful=False)]
after = [b["input_ids"] for b in loader]
last = len(full) // EVERY * EVERY
assert ckpt["epoch"] == 1 and 0 < len(after) == len(full) - last, (len(after), len(full), last)
assert all(torch.equal(a, b) for a, b in zip(after, full[last:], strict=True))
print("resumed", len(after), "of", len(full))
"""


def training_snippet() -> str:
    text = README.read_text("utf-8")
    section = text[text.index("### Training with PyTorch") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the README's training section"
    return match.group(1)


def test_readme_training_snippet_trains_and_resumes_on_the_mixed_kd_mix(
    kd_mixed_jsonl: Path, tmp_path: Path
) -> None:
    DatasetPacker().pack(kd_mixed_jsonl, tmp_path / "kd_mix.packed", compression="lz4")
    probe = PackedIterableDataset(
        tmp_path / "kd_mix.packed", filter=lambda r: "input_ids" in r, columns=COLUMNS
    )
    make_loader(probe, max_tokens=MAX_TOKENS, stateful=False)
    probe.set_epoch(1)
    batches = len(probe)
    every = next(k for k in range(2, batches) if batches % k)  # a checkpoint mid-epoch
    snippet = training_snippet()
    for old in ("max_tokens=16_384", "step % 100 == 0", '"kd_mix.packed"', "num_workers=2"):
        assert old in snippet, f"the README snippet changed: {old!r} is gone"
    code = snippet.replace("max_tokens=16_384", "max_tokens=MAX_TOKENS").replace(
        "step % 100 == 0", "step % EVERY == 0"
    )
    program = f"MAX_TOKENS, EVERY, COLUMNS = {MAX_TOKENS}, {every}, {COLUMNS!r}\n{code}{CHECK}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-W", "ignore::UserWarning", "-c", program],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("resumed"), proc.stdout


def tour_snippet() -> str:
    text = README.read_text("utf-8")
    section = text[text.index("## Use it") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the README's 'Use it' section"
    return match.group(1)


def test_readme_api_tour_runs_on_the_mixed_kd_mix(kd_mixed_jsonl: Path, tmp_path: Path) -> None:
    """The README's Python tour runs as written (its S3 line aside) on the demo's mixed mix."""
    lines = kd_mixed_jsonl.read_text("utf-8").splitlines(keepends=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "raw").mkdir()
    (tmp_path / "data" / "kd_mix.jsonl").write_text("".join(lines), "utf-8")
    (tmp_path / "raw" / "a.jsonl").write_text("".join(lines[: len(lines) // 2]), "utf-8")
    (tmp_path / "raw" / "b.jsonl").write_text("".join(lines[len(lines) // 2 :]), "utf-8")
    code = tour_snippet()
    s3 = 'ds = shardpack.open("s3://bucket/kd_mix", cache_dir="/nvme/cache")'
    pinned = 'shardpack.open("kd_mix/", expected_hash="xxh3_128:...")'
    for old in (s3, pinned, "teacher_outputs"):
        assert old in code, f"the README tour changed: {old!r} is gone"
    code = code.replace(s3, "pass  # no bucket here").replace(
        pinned,
        'shardpack.open("data/kd_mix", expected_hash=shardpack.open("data/kd_mix").content_hash)',
    )
    setup = (
        "import numpy as np, torch\n"
        "teacher_outputs = [[{'input_ids': np.arange(5, dtype=np.int32), "
        "'lp': torch.randn(5, 4)}] * 3] * 2\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", setup + code],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
