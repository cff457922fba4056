"""The pipelines' spelling of ``shardpack pack`` and ``shardpack validate``.

python -m shardpack.pack_datasets --input X.jsonl --output Y.packed --compression lz4 [--validate]
python -m shardpack.pack_datasets --validate Y.packed
"""

from __future__ import annotations

import sys

from .cli.main import main


def translate(argv: list[str]) -> list[str]:
    """Map the legacy arguments onto the ``shardpack`` command line."""
    if "--output" not in argv and "-o" not in argv and "--validate" in argv:
        # `--validate PATH` alone means: validate an existing packed dataset
        i = argv.index("--validate")
        rest = argv[:i] + argv[i + 1 :]
        return ["validate", *rest]
    return ["pack", *argv]


def run(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    return main(translate(list(sys.argv[1:] if argv is None else argv)), exiting=exiting)


if __name__ == "__main__":
    raise SystemExit(run(exiting=True))
