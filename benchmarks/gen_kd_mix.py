"""Generate a synthetic knowledge-distillation mix as JSONL, shaped like real teacher dumps.

A real KD mix is not uniform, and neither is the default one here (``--mix mixed``): chat
records (a list of messages, text only), instruct records (prompt and response, text only) and
distill records (prompt and response, the response's ``input_ids`` and, per token, the
teacher's top-k token ids and log-probs) sit side by side, and optional fields come and go
(a chat's system prompt, an instruct record's quality score, a distill record's loss mask).
``--mix uniform`` writes distill records only, all with the same fields (the earlier mix).
Log-probs are computed in float32 and printed as Python floats (long float64 reprs), as a
teacher written in PyTorch would emit them.

    python benchmarks/gen_kd_mix.py --output kd_mix.jsonl --target-mb 300 --seed 0 [--mix uniform]
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


# record kinds of the mixed mix and how often each comes (by record count)
KINDS = (("chat", 0.35), ("instruct", 0.25), ("distill", 0.40))
MIXES = ("mixed", "uniform")


def _sentence(rng: np.random.Generator, low: int, high: int, end: str = ".") -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high)))).capitalize() + end


def make_chat_record(rng: np.random.Generator, index: int) -> dict:
    """A chat record: messages only (text); sometimes a system prompt, sometimes a language."""
    turns = int(rng.integers(1, 4))
    messages = []
    for _ in range(turns):
        messages.append({"role": "user", "content": _sentence(rng, 5, 40, "?")})
        messages.append({"role": "assistant", "content": _sentence(rng, 20, 200)})
    record: dict = {"id": f"chat-{index:08d}", "source": "chat", "messages": messages}
    if rng.random() < 0.3:
        record["system"] = _sentence(rng, 5, 20)
    if rng.random() < 0.5:
        record["language"] = str(rng.choice(["en", "de", "fr"]))
    return record


def make_instruct_record(rng: np.random.Generator, index: int) -> dict:
    """An instruct record: prompt and response (text); a quality score on most records."""
    record: dict = {
        "id": f"inst-{index:08d}",
        "source": str(rng.choice(["gsm8k", "mbpp", "arxiv"])),
        "prompt": _sentence(rng, 8, 60, "?"),
        "response": _sentence(rng, 20, 400),
    }
    if rng.random() < 0.6:
        record["score"] = round(float(rng.random()), 3)
    return record


def make_distill_record(rng: np.random.Generator, index: int, top_k: int, vocab_size: int) -> dict:
    """A distill record (``make_record``), sometimes with a per-token loss mask."""
    record = make_record(rng, index, top_k, vocab_size)
    record["source"] = "distill"
    if rng.random() < 0.5:
        n = len(record["input_ids"])
        prompt_tokens = int(rng.integers(1, max(2, n // 3)))
        record["loss_mask"] = [i >= prompt_tokens for i in range(n)]
    return record


def make_mixed_record(rng: np.random.Generator, index: int, top_k: int, vocab_size: int) -> dict:
    kind = rng.choice(len(KINDS), p=[share for _, share in KINDS])
    if kind == 0:
        return make_chat_record(rng, index)
    if kind == 1:
        return make_instruct_record(rng, index)
    return make_distill_record(rng, index, top_k, vocab_size)


def generate(
    output: Path | None,
    target_bytes: int,
    seed: int,
    top_k: int,
    vocab_size: int,
    mix: str = "mixed",
) -> int:
    """Write records until ``target_bytes`` of JSONL; returns the number of records written.

    ``mix="mixed"``: chat, instruct and distill records; ``"uniform"``: distill records only."""
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    make = make_mixed_record if mix == "mixed" else make_record
    rng = np.random.default_rng(seed)
    out = sys.stdout.buffer if output is None else open(output, "wb")  # noqa: SIM115
    written = count = 0
    try:
        while written < target_bytes:
            line = json.dumps(make(rng, count, top_k, vocab_size)).encode() + b"\n"
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
    parser.add_argument(
        "--mix", choices=MIXES, default="mixed", help="mixed record kinds, or distill records only"
    )
    args = parser.parse_args(argv)
    n = generate(
        args.output, int(args.target_mb * 1e6), args.seed, args.top_k, args.vocab_size, args.mix
    )
    print(f"wrote {n} records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
