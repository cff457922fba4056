"""Incremental builds: is an existing packed file already what this pack would write?

Up to date means: the file opens and validates (footer, index, every block checksum), and its
provenance records the same inputs (by path and sha256), the same output-deciding options, the
same user metadata and, for ``--schema`` packs, the same schema.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..dataset.validate_file import validate_path
from ..errors import ShardpackError
from ..packfile.reader import PackedFile
from .provenance import hash_file, recorded_options


def find_up_to_date(
    output: str, inputs: list[str], build_options: dict[str, Any], user_meta: dict[str, str]
) -> tuple[dict[str, Any], int] | None:
    """(metadata, size) of ``output`` when it is up to date for this build, else None."""
    if "-" in inputs or not os.path.isfile(output):
        return None
    try:
        with PackedFile(output) as existing:
            metadata, size = existing.metadata, existing.size
    except (OSError, ShardpackError):
        return None
    provenance = metadata.get("provenance") or {}
    recorded = provenance.get("inputs") or []
    options = json.loads(json.dumps(recorded_options(build_options)))  # as stored: JSON types
    if (
        [source.get("path") for source in recorded] != inputs
        or provenance.get("options") != options
        or provenance.get("meta", {}) != dict(sorted(user_meta.items()))
        or (
            metadata.get("schema_source") == "user"
            and metadata.get("schema") != build_options["schema"]
        )
    ):
        return None
    for source, path in zip(recorded, inputs, strict=True):
        try:
            sha256, _ = hash_file(path)
        except OSError:
            return None
        if sha256 != source.get("sha256"):
            return None
    if not validate_path(output).ok:
        return None
    return metadata, size
