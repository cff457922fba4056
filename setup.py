"""The optional C parts: everything else is in pyproject.toml.

``optional=True``: where no C compiler is found the build goes on without them and shardpack
uses its pure-Python fallbacks, which read and write the same bytes: native strings
(format/strings.py) and lz4 read-ahead (codecs/lz4.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shardpack.format._speedups",
            ["src/shardpack/format/_speedups.c"],
            optional=True,
        ),
        Extension(
            "shardpack.codecs._lz4_batch",
            ["src/shardpack/codecs/_lz4_batch.c", "src/shardpack/codecs/vendor/lz4/lz4.c"],
            optional=True,
        ),
    ]
)
