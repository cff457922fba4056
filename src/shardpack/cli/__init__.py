"""The ``shardpack`` command line: parse arguments, call the library, print results."""

from .main import cli, main

__all__ = ["cli", "main"]
