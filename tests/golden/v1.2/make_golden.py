"""How the format 1.2 golden files were made (once: never run it again over committed files).

SOURCE_DATE_EPOCH=1700000000 python tests/golden/v1.2/make_golden.py tests/golden/v1.2
"""

from __future__ import annotations

import sys
from pathlib import Path

import shardpack

TEXTS = [
    "café crème",  # native, kind 1
    "中文句子，含标点。",  # native, kind 2
    "Привет, мир",  # native, kind 2
    "😀中文😀",  # native, kind 4
    "a" * 40 + "’",  # UTF-8: native would double it
    "emoji 😀 and 中文",  # UTF-8: kind 4 would take 3.6x
    "plain ascii",
    "",
    "lone \ud800 surrogate",  # the raw-string extension, never native
]


def text_records() -> list[dict[str, object]]:
    """Text only (blocks without arrays): chat turns, non-ASCII keys, a big integer."""
    return [
        {
            "id": i,
            "text": text,
            "messages": [
                {"role": "user", "content": text},
                {"role": "助手", "content": text[::-1]},
            ],
            "键": [text, i, None, True, 1.5],
            "big": 10**20 + i,
        }
        for i, text in enumerate(TEXTS * 4)
    ]


def kd_records() -> list[dict[str, object]]:
    """Native strings beside arrays (blocks with an arena)."""
    return [
        {"prompt": text, "ids": [i, i + 1, i + 2], "logp": [0.5, -1.25 * i]}
        for i, text in enumerate(TEXTS * 2)
    ]


def main(folder: str) -> None:
    out = Path(folder)
    for codec in ("lz4", "zstd", "none"):
        shardpack.pack(text_records(), out / f"text-{codec}.packed", compression=codec,
                       block_size=512, force=True)  # fmt: skip
    shardpack.pack(kd_records(), out / "kd-zstd.packed", compression="zstd", block_size=512,
                   force=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
