"""The pipelines' spelling of ``shardpack bench``.

python -m shardpack.benchmark_loading --dataset PACKED --batch-size 8
"""

from __future__ import annotations

import sys

from .cli.main import main


def run(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # --dataset PATH is the positional PACKED argument of `shardpack bench`
    if "--dataset" in args:
        i = args.index("--dataset")
        args[i : i + 2] = args[i + 1 : i + 2]
    return main(["bench", *args], exiting=exiting)


if __name__ == "__main__":
    raise SystemExit(run(exiting=True))
