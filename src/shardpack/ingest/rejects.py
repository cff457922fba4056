"""Rejected input lines under ``--on-error skip``: what was wrong, where, and the line itself.

The rejects file is JSONL, one object per rejected line, in input order:
``{"path": ..., "line": 7, "column": 12, "json_path": null, "reason": ..., "text": ...}``.
``text`` is the line as read (invalid UTF-8 bytes as ``\\xNN`` escapes), so it can be fixed and
re-packed. The file is written under a temporary name and renamed when the pack succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import InputError, SchemaError, ShardpackError
from ..storage.atomic import discard, move_into_place, temp_beside
from ..storage.urls import is_remote, url_to_fs

ON_ERROR_CHOICES = ("fail", "skip")
REJECTS_SUFFIX = ".rejects.jsonl"


@dataclass
class Rejection:
    """One input line left out of the pack."""

    path: str
    line: int
    reason: str
    column: int | None = None
    json_path: str | None = None
    text: str = ""

    @classmethod
    def from_error(cls, error: ShardpackError, path: str, line: int, data: bytes) -> Rejection:
        column = error.column if isinstance(error, InputError) else None
        json_path = error.json_path if isinstance(error, SchemaError) else None
        reason = getattr(error, "reason", None) or str(error)
        if isinstance(error, SchemaError):
            reason = f"schema violation at {error.json_path}: {error.reason}"
        text = data.decode("utf-8", "backslashreplace")
        return cls(path, line, reason, column, json_path, text)

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" + (f":{self.column}" if self.column else "")
        return f"{where}: {self.reason}"


def default_rejects_path(output: str) -> str:
    """``OUT.rejects.jsonl`` beside the output (a file, or a dataset folder)."""
    return output.rstrip("/") + REJECTS_SUFFIX


class RejectsWriter:
    """Streams rejections to a temporary file; ``commit`` moves it to its final name (a local
    path, or a URL it is uploaded to), durably."""

    def __init__(
        self, path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
    ) -> None:
        self.path = os.fspath(path)
        self.storage_options = storage_options
        self._folder: str | None = None
        if is_remote(self.path):
            self._folder = tempfile.mkdtemp(prefix="shardpack-")
            self._tmp = Path(self._folder) / "rejects.jsonl"
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        else:
            fd, self._tmp = temp_beside(Path(self.path))
        self._file: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        self.count = 0

    def write(self, rejections: list[Rejection]) -> None:
        for rejection in rejections:
            self._file.write(json.dumps(asdict(rejection), ensure_ascii=False) + "\n")
        self.count += len(rejections)

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self._folder is None:
            move_into_place(self._tmp, Path(self.path))
            return
        try:
            fs, fs_path = url_to_fs(self.path, self.storage_options)
            fs.put_file(os.fspath(self._tmp), fs_path)
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)

    def abort(self) -> None:
        discard(self._file, self._tmp)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()
