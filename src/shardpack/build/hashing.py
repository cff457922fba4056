"""The inputs' sha256 for provenance, on a thread of its own.

Hashing is the one step that must read every input byte in order, so it runs beside the pack
instead of inside the driver's loop: workers read their units while this thread reads the same
bytes (the second read is served by the page cache). hashlib releases the GIL while it hashes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..errors import InputError, ShardpackError
from ..storage.streams import InputDigest
from ..storage.urls import is_remote, reason_of, url_to_fs
from .inputs import InputFile

READ_BYTES = 8 << 20


def hash_file(location: str, storage_options: dict[str, Any] | None = None) -> InputDigest:
    """sha256 and size of one input as stored (compressed inputs: their compressed bytes)."""
    digest = InputDigest()
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    try:
        if is_remote(location):
            fs, fs_path = url_to_fs(location, storage_options)
            stream: Any = fs.open(fs_path, "rb", block_size=READ_BYTES)
        else:
            stream = open(location, "rb", buffering=0)  # noqa: SIM115 - closed below
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot open input: {reason_of(exc)}", path=location) from exc
    try:
        while True:
            count = stream.readinto(buffer)
            if not count:
                break
            digest.sha256.update(view[:count])
            digest.size += count
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read input: {reason_of(exc)}", path=location) from exc
    finally:
        stream.close()
    return digest


class InputHasher:
    """Hashes the given inputs one after another on a daemon thread; ``result`` waits for it."""

    def __init__(
        self,
        files: Sequence[InputFile],
        which: Sequence[int],
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self._files = files
        self._which = list(which)
        self._storage_options = storage_options
        self._digests: dict[int, InputDigest] = {}
        self._error: ShardpackError | None = None
        self._thread = threading.Thread(target=self._run, name="shardpack-sha256", daemon=True)

    def start(self) -> InputHasher:
        if self._which:
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for number in self._which:
                self._digests[number] = hash_file(
                    self._files[number].location, self._storage_options
                )
        except ShardpackError as exc:
            self._error = exc

    def result(self) -> dict[int, InputDigest]:
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digests
