"""The optional C parts: everything else is in pyproject.toml.

``optional=True``: where no C compiler is found the build goes on without them and shardpack
uses its pure-Python fallbacks, which read and write the same bytes: native strings
(format/strings.py), and a scan without lz4 and zstd read-ahead (codecs/native.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shardpack.format._speedups",
            ["src/shardpack/format/_speedups.c"],
            optional=True,
        ),
        Extension(
            "shardpack.codecs._native_batch",
            [
                "src/shardpack/codecs/_native_batch.c",
                "src/shardpack/codecs/vendor/lz4/lz4.c",
                "src/shardpack/codecs/vendor/zstd/zstddeclib.c",
            ],
            optional=True,
        ),
    ]
)
