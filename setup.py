"""The optional C part: everything else is in pyproject.toml.

``optional=True``: where no C compiler is found the build goes on without it and shardpack uses
its pure-Python fallbacks, which read and write the same bytes (format/strings.py)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "shardpack.format._speedups",
            ["src/shardpack/format/_speedups.c"],
            optional=True,
        ),
    ]
)
