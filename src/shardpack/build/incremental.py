"""Incremental builds: is an existing packed file already what this pack would write?

Up to date means: the file opens and validates (footer, index, every block checksum), and its
provenance records the same inputs (by path and sha256), the same output-deciding options, the
same user metadata and, for ``--schema`` packs, the same schema.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

from ..dataset.validate_file import validate_path
from ..errors import ShardpackError
from ..format.metadata import FileMetadata, RecordedOptions
from ..packfile.reader import PackedFile
from .provenance import hash_file


def find_up_to_date(
    output: str,
    inputs: list[str],
    options: RecordedOptions,
    schema: Mapping[str, Any] | None,
    user_meta: dict[str, str],
) -> tuple[FileMetadata, int] | None:
    """(metadata, size) of ``output`` when it is up to date for this build, else None."""
    if "-" in inputs or not os.path.isfile(output):
        return None
    try:
        with PackedFile(output) as existing:
            metadata, size = existing.metadata, existing.size
    except (OSError, ShardpackError):
        return None
    provenance = metadata.provenance
    if provenance is None:
        return None
    recorded = provenance.inputs
    # compared as stored: through JSON, so tuples and lists, ints and floats compare alike
    if (
        [source.path for source in recorded] != inputs
        or msgspec.json.encode(provenance.options) != msgspec.json.encode(options)
        or provenance.meta != dict(sorted(user_meta.items()))
        or (metadata.schema_source == "user" and metadata.schema != schema)
    ):
        return None
    for source, path in zip(recorded, inputs, strict=True):
        try:
            sha256, _ = hash_file(path)
        except OSError:
            return None
        if sha256 != source.sha256:
            return None
    if not validate_path(output).ok:
        return None
    return metadata, size
