"""What a pack produced (or, for a dry run, would produce): typed results for callers and for
``--json``. Which processes encoded what is run information: it is here, never in the output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..dataset.manifest import Manifest
from ..dataset.validate_file import ValidationReport
from ..format.metadata import FileMetadata


@dataclass(frozen=True)
class PackResult:
    """The outcome of one pack: a single file (``metadata``) or a dataset folder (``manifest``)."""

    output_path: str
    record_count: int
    block_count: int
    input_bytes: int
    output_bytes: int
    seconds: float
    content_hash: str
    metadata: FileMetadata | None = field(default=None, repr=False)
    manifest: Manifest | None = field(default=None, repr=False)
    validation: ValidationReport | None = None  # with validate=True: the written file's report
    rejected_count: int = 0  # input lines left out under on_error="skip"
    rejects_path: str | None = None
    up_to_date: bool = False  # nothing was done: the output already matched inputs and options
    shards_packed: int = 0
    shards_reused: int = 0  # kept from an interrupted run
    workers: dict[str, list[str]] = field(default_factory=dict)  # file -> who encoded it

    @property
    def ratio(self) -> float:
        """Packed size over input size."""
        return self.output_bytes / self.input_bytes if self.input_bytes else 0.0

    @property
    def sharded(self) -> bool:
        return self.manifest is not None

    def summary(self) -> dict[str, Any]:
        """The JSON the CLI prints with ``--json``."""
        summary: dict[str, Any] = {
            "output": self.output_path,
            "records": self.record_count,
            "blocks": self.block_count,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "ratio": round(self.ratio, 4),
            "seconds": round(self.seconds, 3),
            "content_hash": self.content_hash,
            "validated": self.validation is not None,
            "rejected": self.rejected_count,
            "rejects_path": self.rejects_path,
            "up_to_date": self.up_to_date,
        }
        if self.manifest is not None:
            summary["shards"] = len(self.manifest.shards)
            summary["shards_packed"] = self.shards_packed
            summary["shards_reused"] = self.shards_reused
        summary["workers"] = self.workers
        return summary


class PlannedShard(msgspec.Struct):
    name: str
    units: int
    input_bytes: int


class PackPlan(msgspec.Struct):
    """What a pack would do (``--dry-run``): nothing is written."""

    output: str
    sharded: bool
    inputs: list[tuple[str, int | None, bool]]  # (path, bytes, read by the driver as a stream)
    units: int
    unit_bytes: int
    shards: list[PlannedShard]
    workers: int
    engine: str
    up_to_date: bool = False

    def summary(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]
