"""A local packed file's bytes: ranges copied with pread (or into a caller's buffer), or viewed
in a read-only memory map."""

from __future__ import annotations

import mmap
import os

from ..errors import FormatError


class LocalSource:
    """Byte ranges of a local file: copied with pread, or zero-copy views of a memory map.

    Compressed blocks are read with ``pread`` (they are decompressed into new memory anyway, and
    copies keep the resident set bounded on a full scan); uncompressed blocks are served as views
    of a read-only map, so their arrays point straight into the page cache.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self.size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise FormatError(f"cannot open: {exc.strerror or exc}", path=path) from exc
        self._view: memoryview | None = None

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FormatError(f"read of {length} bytes at {offset} is past the end", path=self.path)
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        data = os.pread(self._fd, length, offset)  # type: ignore[arg-type]
        if len(data) != length:
            raise FormatError(f"file shrank while reading at byte {offset}", path=self.path)
        return data

    def read_into(self, offset: int, buffer: memoryview) -> None:
        """Fill ``buffer`` from ``offset`` on: no new memory (a scan reuses its buffers)."""
        length = len(buffer)
        self._check(offset, length)
        done = 0
        while done < length:
            got = os.preadv(self._fd, [buffer[done:]], offset + done)  # type: ignore[arg-type]
            if got <= 0:
                raise FormatError(f"file shrank while reading at byte {offset}", path=self.path)
            done += got

    def view(self, offset: int, length: int) -> memoryview:
        self._check(offset, length)
        if self._view is None:
            mapped = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ) if self.size else b""  # type: ignore[arg-type]
            self._view = memoryview(mapped)
        return self._view[offset : offset + length]

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        return self._fd

    def close(self) -> None:
        # arrays handed out may still view the map: the last of them releases it
        self._view = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()
