"""The inputs of a pack: paths, URLs, globs and stdin resolved to what each one is.

A *file* input (a plain local file or object) can be read at any byte range by whoever encodes
it, so workers read their own units and nobody reads it first. A *stream* input (stdin, gzip or
zstd) can only be read from its start, so the driver reads it once and hands its units out.
Parquet and Arrow IPC files (known by their magic bytes, whatever their names) are read by
pieces: workers read their own row groups or record batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import OptionError
from ..ingest.columnar import HEAD_BYTES, JSONL, columnar_kind
from ..storage.globs import expand_globs
from ..storage.streams import is_compressed_head, read_head, stored_size_and_stamp
from ..storage.urls import is_remote

InputsArg = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class InputFile:
    """One input: its name as given (recorded in provenance) and where to read it."""

    path: str  # as the user gave it
    location: str  # absolute local path, URL or "-": the same for every worker and machine
    stream: bool  # read once from the start by the driver (stdin, gzip, zstd)
    size: int | None  # bytes as stored; None for stdin
    stamp: str  # modification time (ns) or ETag: cheap change detection
    kind: str = JSONL  # or "parquet" / "arrow" (Arrow IPC, Feather v2), by magic bytes

    @property
    def remote(self) -> bool:
        return is_remote(self.location)


def expand_inputs(inputs: InputsArg, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Paths and URLs with globs (``*``, ``?``, ``[..]``, ``**``) expanded, each sorted, in order.

    A glob that matches nothing is an error (a typo must not silently pack less data).
    """
    return expand_globs(inputs, storage_options)


def resolve_inputs(
    inputs: InputsArg, storage_options: dict[str, Any] | None = None
) -> list[InputFile]:
    """Every input, expanded and looked at (size, stamp, compressed or not): InputError for one
    that cannot be read, named."""
    files = []
    for path in expand_inputs(inputs, storage_options):
        if path == "-":
            files.append(InputFile(path, "-", True, None, ""))
            continue
        location = path if is_remote(path) else os.path.abspath(path.removeprefix("file://"))
        size, stamp = stored_size_and_stamp(location, storage_options)
        head = read_head(location, HEAD_BYTES, storage_options) if size > 0 else b""
        kind = columnar_kind(head) or JSONL
        compressed = is_compressed_head(head)
        files.append(InputFile(path, location, compressed, size, stamp, kind))
    if sum(f.path == "-" for f in files) > 1:
        raise OptionError("stdin ('-') can be an input only once")
    return files
