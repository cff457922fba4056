"""Generate a synthetic knowledge-distillation mix as JSONL, shaped like real teacher dumps.

Each line holds a prompt and teacher response (text), the response's ``input_ids`` and, per
token, the teacher's top-k token ids and log-probs. Log-probs are computed in float32 and printed
as Python floats (long float64 reprs), as a teacher written in PyTorch would emit them.

    python benchmarks/gen_kd_mix.py --output kd_mix.jsonl --target-mb 300 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

WORDS = [
    "the",
    "model",
    "answer",
    "question",
    "reason",
    "step",
    "first",
    "then",
    "because",
    "therefore",
    "value",
    "total",
    "number",
    "compute",
    "result",
    "check",
    "sum",
    "each",
    "time",
    "we",
    "so",
    "it",
    "is",
    "of",
    "and",
    "to",
    "in",
    "a",
    "that",
    "for",
    "with",
    "as",
    "on",
    "this",
    "gradient",
    "token",
    "teacher",
    "student",
    "loss",
    "sample",
    "batch",
    "layer",
    "weight",
    "attention",
    "vector",
]


def make_record(rng: np.random.Generator, index: int, top_k: int, vocab_size: int) -> dict:
    """One KD record: text fields, token ids, and [len][k] top-k ids and log-probs."""
    n_tokens = int(np.clip(rng.lognormal(mean=4.7, sigma=0.5), 16, 4096))
    prompt_words = rng.choice(WORDS, size=int(rng.integers(8, 60)))
    response_words = rng.choice(WORDS, size=max(1, n_tokens // 2))
    input_ids = rng.integers(0, vocab_size, size=n_tokens, dtype=np.int64)
    topk_ids = rng.integers(0, vocab_size, size=(n_tokens, top_k), dtype=np.int64)
    logits = rng.standard_normal((n_tokens, top_k), dtype=np.float32) * np.float32(3.0)
    logits = -np.sort(-logits, axis=1)
    logprobs = (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)
    return {
        "id": f"kd-{index:08d}",
        "source": str(rng.choice(["gsm8k", "mbpp", "chat", "arxiv"])),
        "prompt": " ".join(prompt_words).capitalize() + "?",
        "response": " ".join(response_words).capitalize() + ".",
        "input_ids": input_ids.tolist(),
        "teacher_topk_ids": topk_ids.tolist(),
        # float32 values widened to Python floats: long reprs, exactly representable in float32
        "teacher_topk_logprobs": logprobs.astype(np.float64).tolist(),
        "meta": {"temperature": 1.0, "teacher": "teacher-7b", "top_k": top_k},
    }


def generate(output: Path | None, target_bytes: int, seed: int, top_k: int, vocab_size: int) -> int:
    """Write records until ``target_bytes`` of JSONL; returns the number of records written."""
    rng = np.random.default_rng(seed)
    out = sys.stdout.buffer if output is None else open(output, "wb")  # noqa: SIM115
    written = count = 0
    try:
        while written < target_bytes:
            line = json.dumps(make_record(rng, count, top_k, vocab_size)).encode() + b"\n"
            out.write(line)
            written += len(line)
            count += 1
    finally:
        if output is not None:
            out.close()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="JSONL file to write (default: stdout)")
    parser.add_argument("--target-mb", type=float, default=300.0, help="approximate size in MB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--vocab-size", type=int, default=151_936)
    args = parser.parse_args(argv)
    n = generate(args.output, int(args.target_mb * 1e6), args.seed, args.top_k, args.vocab_size)
    print(f"wrote {n} records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
