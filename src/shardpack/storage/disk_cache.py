"""A disk cache of fetched bytes that every process of a machine shares (DataLoader workers,
ranks): bounded in size, checked on every read, safe to kill at any moment.

Layout of the cache folder (``v1/`` so a later layout can live beside it):

    v1/ab/<hash>        one entry, <hash> being XXH3-128 of its key: either a 16-byte header
                        (magic SPC1, payload size, XXH3-64 of the payload) and the payload
                        (a footer, a block), or a *range* of a remote file: a 16-byte header
                        (magic SPR1, length, offset in the file) and the bytes, whose blocks
                        are checked against their block-index checksums when read
    v1/tmp/             entries being written; renamed into place when complete
    v1/claims/<hash>    "process P of host H is fetching this": others wait instead of fetching
    v1/trim.lock        held (flock) by the one process that trims the cache at a time

Entries appear whole or not at all (write to ``tmp/``, then ``rename``). A reader checks the
header and the checksum of every entry or block it reads and deletes an entry that fails (a
torn write after a power loss), so a crash never serves bad bytes. Writers do not sync: losing
the cache only means fetching again. Keys name the object version (ETag), so a replaced object
never meets the entries of its old version. The least recently used entries go when the
folder passes its bound.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable

import xxhash

from .locks import ForkSafeLock

ENTRY_HEADER = struct.Struct("<4sIQ")  # magic, payload size, XXH3-64 of the payload
ENTRY_MAGIC = b"SPC1"
RANGE_HEADER = struct.Struct("<4sIQ")  # magic, length, offset of the range in its file
RANGE_MAGIC = b"SPR1"
TRIM_TO = 0.9  # a trim leaves the cache at this share of its bound
TRIM_EVERY = 1 / 16  # a process trims after writing this share of the bound
TOUCH_AFTER_S = 60.0  # an entry read is marked recently used at most once a minute
TEMP_STALE_S = 600.0  # temp files older than this are left over from killed writers
POLL_S = 0.005


class DiskCache:
    """Entries by key in a folder; see the module docstring for the layout and the protocol."""

    def __init__(self, folder: str, max_bytes: int, *, claim_timeout_s: float = 60.0) -> None:
        self.folder = os.path.join(folder, "v1")
        self.max_bytes = max_bytes
        self.claim_timeout_s = claim_timeout_s
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.discarded = 0  # entries that failed their check
        self._written = 0
        self._host = socket.gethostname()
        self._lock = ForkSafeLock()
        for sub in ("tmp", "claims"):
            os.makedirs(os.path.join(self.folder, sub), exist_ok=True)

    def _path(self, key: str, kind: str = "") -> str:
        digest = xxhash.xxh3_128_hexdigest(key.encode("utf-8", "surrogatepass"))
        if kind:
            return os.path.join(self.folder, kind, digest)
        return os.path.join(self.folder, digest[:2], digest[2:])

    # -- entries -------------------------------------------------------------------------------

    def get(self, key: str, expected: int | None = None) -> bytes | None:
        """The entry's payload, checked (against ``expected``, its XXH3-64, when given); None
        when absent or damaged (then it is removed)."""
        payload = self._read(key, expected)
        if payload is None:
            self.misses += 1
        else:
            self.hits += 1
        return payload

    def _read(self, key: str, expected: int | None) -> bytes | None:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            stat = os.fstat(fd)
            data, mtime = os.read(fd, stat.st_size), stat.st_mtime
        except OSError:
            return None
        finally:
            os.close(fd)
        payload = _check_entry(data, expected)
        if payload is None:
            self.discarded += 1
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        if time.time() - mtime > TOUCH_AFTER_S:
            with contextlib.suppress(OSError):
                os.utime(path)  # least recently *used* goes first
        return payload

    def remove(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._path(key))

    def has(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def read_range(self, key: str, offset: int, length: int, expected: int) -> bytes | None:
        """Bytes ``[offset, offset + length)`` of the range entry ``key`` if it holds them and
        their XXH3-64 is ``expected`` (a block's index checksum); a damaged entry is removed."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except OSError:
            return None
        try:
            magic, size, start = RANGE_HEADER.unpack(os.pread(fd, RANGE_HEADER.size, 0))
            if magic != RANGE_MAGIC or not start <= offset <= offset + length <= start + size:
                return None
            data = os.pread(fd, length, RANGE_HEADER.size + offset - start)
            mtime = os.fstat(fd).st_mtime
        except (OSError, struct.error):
            return None
        finally:
            os.close(fd)
        if len(data) != length or xxhash.xxh3_64_intdigest(data) != expected:
            self.discarded += 1
            self.remove(key)
            return None
        if time.time() - mtime > TOUCH_AFTER_S:
            with contextlib.suppress(OSError):
                os.utime(self._path(key))
        self.hits += 1
        return data

    def put(self, key: str, data: bytes | memoryview) -> None:
        """Store ``data`` under ``key`` (whole, or not at all)."""
        header = ENTRY_HEADER.pack(ENTRY_MAGIC, len(data), xxhash.xxh3_64_intdigest(data))
        self._write(key, header, data)

    def put_range(self, key: str, offset: int, data: bytes | memoryview) -> None:
        """Store bytes of a remote file that start at ``offset`` as the range entry ``key``."""
        self._write(key, RANGE_HEADER.pack(RANGE_MAGIC, len(data), offset), data)

    def _write(self, key: str, header: bytes, data: bytes | memoryview) -> None:
        if len(data) + len(header) > self.max_bytes:
            return
        target = self._path(key)
        temp = os.path.join(
            self.folder, "tmp", f"{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
        )
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                entry = memoryview(header + data)
                while entry:
                    entry = entry[os.write(fd, entry) :]
            finally:
                os.close(fd)
            try:
                os.replace(temp, target)
            except FileNotFoundError:  # first entry of its sub-folder
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(temp, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            return  # a full or read-only disk makes a cache miss, never a failed read
        with self._lock:
            self.writes += 1
            self._written += len(data) + len(header)
            due = self._written > self.max_bytes * TRIM_EVERY
            if due:
                self._written = 0
        if due:
            self.trim()

    # -- claims: one process fetches, the others wait --------------------------------------------

    def claim(self, key: str) -> bool:
        """Take the claim on ``key``: True if this process should fetch it, False if another
        live process is fetching it already."""
        path = self._path(key, "claims")
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._stale(path):
                    return False
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            except OSError:
                return True  # cannot claim (read-only folder): fetch without telling others
            with os.fdopen(fd, "w") as file:
                file.write(f"{os.getpid()} {self._host}")
            return True
        return False

    def release(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._path(key, "claims"))

    def claimed_elsewhere(self, key: str) -> bool:
        path = self._path(key, "claims")
        return os.path.exists(path) and not self._stale(path)

    def wait(self, claim_key: str, lookup: Callable[[], bytes | None]) -> bytes | None:
        """``lookup()`` once the process holding ``claim_key`` has stored what it fetches; None
        if the claim ends (or goes stale) without it."""
        while True:
            data = lookup()
            if data is not None:
                return data
            if not self.claimed_elsewhere(claim_key):
                return lookup()  # stored just before the claim went?
            time.sleep(POLL_S)

    def _stale(self, path: str) -> bool:
        try:
            age = time.time() - os.stat(path).st_mtime
            with open(path) as file:
                pid_text, _, host = file.read().partition(" ")
        except (OSError, ValueError):
            return False  # being written right now, or just released
        if age > self.claim_timeout_s:
            return True
        if host == self._host and pid_text.isdigit():
            try:
                os.kill(int(pid_text), 0)
            except ProcessLookupError:
                return True  # its process died
            except OSError:
                pass
        return False

    # -- size bound ----------------------------------------------------------------------------

    def usage(self) -> int:
        """Bytes held by entries now."""
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[float, int, str]]:
        found = []
        with os.scandir(self.folder) as subs:
            for sub in subs:
                if len(sub.name) != 2 or not sub.is_dir():
                    continue
                with os.scandir(sub.path) as entries:
                    for entry in entries:
                        with contextlib.suppress(OSError):
                            stat = entry.stat()
                            found.append((stat.st_mtime, stat.st_size, entry.path))
        return found

    def trim(self) -> None:
        """Remove least recently used entries down to 90 % of the bound (one trimmer at a time),
        and what killed processes left behind (temp files, claims)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: trim without the lock
            fcntl = None  # type: ignore[assignment]
        with open(os.path.join(self.folder, "trim.lock"), "a") as lock:
            if fcntl is not None:
                # wait for another trimmer (a process, or a thread of this one: flock is per
                # open file): one that gave up instead left its writes untrimmed, over the bound
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            entries = sorted(self._entries())
            total = sum(size for _, size, _ in entries)
            for _, size, path in entries:
                if total <= self.max_bytes * TRIM_TO:
                    break
                with contextlib.suppress(OSError):
                    os.unlink(path)  # a reader holding it open still reads it whole
                    total -= size
            now = time.time()
            for kind in ("tmp", "claims"):
                with os.scandir(os.path.join(self.folder, kind)) as leftovers:
                    for item in leftovers:
                        with contextlib.suppress(OSError):
                            old = now - item.stat().st_mtime > TEMP_STALE_S
                            if old if kind == "tmp" else self._stale(item.path):
                                os.unlink(item.path)


def _check_entry(data: bytes, expected: int | None) -> bytes | None:
    if len(data) < ENTRY_HEADER.size:
        return None
    magic, size, digest = ENTRY_HEADER.unpack_from(data)
    payload = data[ENTRY_HEADER.size :]
    if magic != ENTRY_MAGIC or size != len(payload) or expected not in (None, digest):
        return None
    return payload if xxhash.xxh3_64_intdigest(payload) == digest else None
