"""How the format 1.1 golden files were made (once: never run it again over committed files).

SOURCE_DATE_EPOCH=1700000000 python tests/golden/v1.1/make_golden.py tests/golden/v1.1
"""

from __future__ import annotations

import sys
from pathlib import Path

import ml_dtypes
import numpy as np

import shardpack


def records() -> list[dict[str, object]]:
    """Every dtype of format 1.1 (int8, uint8, int16, uint16, uint32), 0-d arrays, bfloat16,
    beside JSON values; fixed values, so the file is the same on every machine."""
    out = []
    for i in range(40):
        out.append(
            {
                "id": i,
                "i8": np.array([-128, 0, 127, i % 100], dtype=np.int8),
                "u8": np.arange(i % 9, dtype=np.uint8),
                "i16": np.array([[-32768, i], [32767, -i]], dtype=np.int16),
                "u16": np.array([65535, i], dtype=np.uint16),
                "u32": np.array([2**32 - 1, i], dtype=np.uint32),
                "score": np.float32(i / 8),  # a 0-d array
                "flag": np.bool_(i % 2 == 0),
                "bf16": np.array([1.5, -2.25, i], dtype=ml_dtypes.bfloat16),
                "text": f"record {i} ünïcode",
                "ids": [i, i + 1, i + 2],  # a JSON list: narrowed to int32 as in 1.0
            }
        )
    return out


def main(folder: str) -> None:
    for codec in ("lz4", "zstd", "none"):
        shardpack.pack(records(), Path(folder) / f"{codec}.packed", compression=codec,
                       block_size=512, force=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
