"""The optional C modules (setup.py builds them with ``optional=True``): a source that no longer
compiles leaves the module built before it in place, silently, and the tests would then run
the old code. Where sources and modules lie side by side (a checkout), each module must be at
least as new as its sources."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

MODULES = {
    "shardpack.format._speedups": ["_speedups.c"],
    "shardpack.codecs._native_batch": [
        "_native_batch.c",
        "vendor/lz4/lz4.c",
        "vendor/zstd/zstddeclib.c",
    ],
}


@pytest.mark.parametrize("name", list(MODULES))
def test_a_built_module_is_not_older_than_its_sources(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError:
        pytest.skip(f"{name} is not built here")
    built = Path(module.__file__ or "")
    sources = [built.parent / source for source in MODULES[name]]
    if not all(source.exists() for source in sources):
        pytest.skip("installed without its sources")
    newest = max(source.stat().st_mtime for source in sources)
    assert built.stat().st_mtime >= newest, (
        f"{built.name} is older than its sources: the last build of them failed "
        "(pip install -e . shows why)"
    )
