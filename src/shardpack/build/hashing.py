"""The inputs' sha256 for provenance, on threads of their own (or Dask tasks).

Hashing is the one step that must read every input byte in order, so it runs beside the pack
instead of inside the driver's loop: workers read their units while this thread reads the same
bytes (the second read is served by the page cache). hashlib releases the GIL while it hashes.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .._machine import usable_cores
from ..errors import ShardpackError
from ..storage.streams import InputDigest, input_errors
from ..storage.urls import is_remote, url_to_fs
from .inputs import InputFile
from .units import worker_name

READ_BYTES = 8 << 20


def hash_file(location: str, storage_options: dict[str, Any] | None = None) -> InputDigest:
    """sha256 and size of one input as stored (compressed inputs: their compressed bytes)."""
    digest = InputDigest()
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    remote = is_remote(location)
    with input_errors(location, "cannot open input", remote):
        if remote:
            fs, fs_path = url_to_fs(location, storage_options)
            stream: Any = fs.open(fs_path, "rb", block_size=READ_BYTES)
        else:
            stream = open(location, "rb", buffering=0)  # noqa: SIM115 - closed below
    try:
        with input_errors(location, "cannot read input", remote):
            while True:
                count = stream.readinto(buffer)
                if not count:
                    break
                digest.sha256.update(view[:count])
                digest.size += count
    finally:
        stream.close()
    return digest


def hash_threads() -> int:
    """Inputs hashed at once: one per four cores, up to 4 (one on small machines). Each is a
    sequential sha256 of ~1-2 GB/s; a many-file pack on many cores would wait for one lane."""
    return max(1, min(4, usable_cores() // 4))


class InputHasher:
    """Hashes the given inputs beside the pack, several at once (daemon threads here, or tasks
    on a Dask cluster through ``submit``, so that a cluster pack does not read every input
    byte in the driver); ``result`` waits for them."""

    def __init__(
        self,
        files: Sequence[InputFile],
        which: Sequence[int],
        storage_options: dict[str, Any] | None = None,
        submit: Callable[[str], Any] | None = None,
    ) -> None:
        self._files = files
        self._which = list(which)
        self._storage_options = storage_options
        self._submit = submit
        self._digests: dict[int, InputDigest] = {}
        self._errors: dict[int, ShardpackError] = {}
        self._todo = deque(self._which)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._futures: dict[int, Any] = {}
        self.hashed_by: dict[int, str] = {}  # input number -> the process that hashed it

    def start(self) -> InputHasher:
        if self._submit is not None:
            self._futures = {n: self._submit(self._files[n].location) for n in self._which}
            return self
        for _ in range(min(hash_threads(), len(self._which))):
            thread = threading.Thread(target=self._run, name="shardpack-sha256", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._todo or self._errors:
                    return
                number = self._todo.popleft()
            try:
                digest = hash_file(self._files[number].location, self._storage_options)
            except ShardpackError as exc:
                with self._lock:
                    self._errors[number] = exc
                return
            with self._lock:
                self._digests[number] = digest
                self.hashed_by[number] = worker_name()

    def stop(self) -> None:
        """The pack failed: hash nothing more (a file being hashed is finished; Dask tasks not
        started are cancelled)."""
        with self._lock:
            self._todo.clear()
        for future in self._futures.values():
            future.cancel()

    def covers_all(self) -> bool:
        """Whether every input is hashed here, and the hashing has ended."""
        if len(self._which) != len(self._files):
            return False
        if self._submit is not None:
            return all(future.done() for future in self._futures.values())
        return not any(thread.is_alive() for thread in self._threads)

    def result(self) -> dict[int, InputDigest]:
        for thread in self._threads:
            thread.join()
        for number, future in self._futures.items():
            if number in self._digests or number in self._errors:
                continue
            try:
                sha256_hex, size, by = future.result()
            except ShardpackError as exc:
                self._errors[number] = exc
                continue
            self._digests[number] = InputDigest.known(sha256_hex, size)
            self.hashed_by[number] = by
        if self._errors:  # the first failing input, whichever thread or task finished first
            raise self._errors[min(self._errors)]
        return self._digests
