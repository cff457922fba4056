"""Input byte streams: local files, stdin or URLs, gzip/zstd decompressed when their magic says
so, optionally hashed (sha256, size) on the way for provenance. A URL's failures are InputErrors
that name it and say why (not found, access denied, cannot connect)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Protocol

import zstandard

from ..errors import InputError
from .failures import failure_reason
from .urls import is_remote, reason_of, url_to_fs

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@contextmanager
def open_input(path: str, digest: InputDigest | None = None) -> Iterator[IO[bytes]]:
    """A binary stream of the decompressed input; ``-`` is stdin. Sniffs gzip/zstd by magic.

    With ``digest``, the input's bytes as stored (before decompression) are hashed on the way.
    """
    try:
        if path == "-":
            source: IO[bytes] = sys.stdin.buffer
        else:
            source = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"cannot open input: {exc.strerror or exc}", path=path) from exc
    counted: Any = HashingReader(source, digest) if digest is not None else source
    try:
        with decompressed(counted) as stream:
            yield stream
    finally:
        if path != "-":
            source.close()


def is_compressed_head(head: bytes) -> bool:
    """True when the first bytes of a file are a gzip or zstd magic number."""
    return head.startswith((GZIP_MAGIC, ZSTD_MAGIC))


@contextmanager
def decompressed(raw: Any) -> Iterator[IO[bytes]]:
    """A buffered stream of ``raw``'s content, gunzipped or un-zstd-ed when its magic says so."""
    # a large buffer: KD lines are tens of KB, and small reads make line splitting slow
    buffered = io.BufferedReader(raw, buffer_size=1 << 20)
    head = buffered.peek(4)[:4]
    if head.startswith(GZIP_MAGIC):
        with gzip.GzipFile(fileobj=buffered) as stream:
            yield stream  # type: ignore[misc]
    elif head.startswith(ZSTD_MAGIC):
        with zstandard.ZstdDecompressor().stream_reader(buffered) as reader:
            yield io.BufferedReader(reader, buffer_size=1 << 20)
    else:
        yield buffered


class Sha256(Protocol):
    def update(self, data: Any, /) -> None: ...
    def hexdigest(self) -> str: ...


class _Known:
    """A sha256 computed elsewhere (a Dask worker): its hex digest only."""

    def __init__(self, hexdigest: str) -> None:
        self._hex = hexdigest

    def update(self, data: Any, /) -> None:
        raise RuntimeError("this digest was computed elsewhere and is complete")

    def hexdigest(self) -> str:
        return self._hex


class InputDigest:
    """sha256, size and line count of one input, filled in while it is read."""

    def __init__(self) -> None:
        self.sha256: Sha256 = hashlib.sha256()
        self.size = 0
        self.lines = 0

    @classmethod
    def known(cls, sha256_hex: str, size: int) -> InputDigest:
        """The digest of an input hashed in another process."""
        digest = cls()
        digest.sha256, digest.size = _Known(sha256_hex), size
        return digest


class HashingReader(io.RawIOBase):
    """A raw stream that feeds every byte read through it into an InputDigest."""

    def __init__(self, raw: IO[bytes], digest: InputDigest) -> None:
        self._raw = raw
        self._digest = digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._digest.sha256.update(memoryview(buffer)[:n])
            self._digest.size += n
        return n or 0


@contextmanager
def open_url_input(
    url: str, storage_options: dict[str, Any] | None = None, digest: InputDigest | None = None
) -> Iterator[IO[bytes]]:
    """A binary stream of a remote JSONL input, gzip/zstd sniffed by magic like local inputs.

    With ``digest``, the object's bytes as stored (before decompression) are hashed on the way,
    as ``open_input`` does for a local file."""
    fs, path = url_to_fs(url, storage_options)
    with input_errors(url, "cannot open input"):
        file = fs.open(path, "rb", block_size=8 << 20)
    raw: Any = RemoteReader(file, url)
    counted: Any = HashingReader(raw, digest) if digest is not None else raw
    try:
        with decompressed(counted) as stream:
            yield stream
    finally:
        file.close()


class RemoteReader(io.RawIOBase):
    """A raw stream of an fsspec file whose failed reads are InputErrors naming the URL."""

    def __init__(self, file: Any, url: str) -> None:
        self._file = file
        self._url = url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with input_errors(self._url, "cannot read input"):
            return int(self._file.readinto(buffer) or 0)


@contextmanager
def input_errors(url: str, what: str, remote: bool = True) -> Iterator[None]:
    """Storage failures inside become an InputError naming the input ``url`` and saying why
    (``storage_reason``); any other error passes as it is."""
    try:
        yield
    except Exception as exc:
        if (reason := storage_reason(exc, remote)) is None:
            raise
        raise InputError(f"{what}: {reason}", path=url) from exc


def storage_reason(exc: BaseException, remote: bool = True) -> str | None:
    """Why reading an input failed, in words (``not found``, ``access denied``, ``cannot
    connect (...)``...; a local file's: the OS's words); None for an error that is not about
    storage (let it through)."""
    if isinstance(exc, InputError):
        return None
    reason = failure_reason(exc) if remote else None
    if reason is None and isinstance(exc, (OSError, ValueError)):
        reason = reason_of(exc)
    return reason


@contextmanager
def open_any_input(
    path: str, storage_options: dict[str, Any] | None = None, digest: InputDigest | None = None
) -> Iterator[IO[bytes]]:
    """The decompressed stream of a local path, ``-`` or URL; with ``digest``, its bytes as
    stored are hashed (sha256, size) on the way, whichever it is."""
    if is_remote(path):
        with open_url_input(path, storage_options, digest) as stream:
            yield stream
    else:
        with open_input(path.removeprefix("file://"), digest) as stream:
            yield stream


def read_head(path: str, length: int, storage_options: dict[str, Any] | None = None) -> bytes:
    """The first ``length`` bytes of a local file or URL (fewer if it is shorter): what its
    magic number says it is. A URL is read with one request for these bytes only (opening it
    as a file would fetch a whole block: 50 MiB on S3)."""
    if is_remote(path):
        if length <= 0:
            return b""
        fs, fs_path = url_to_fs(path, storage_options)
        with input_errors(path, "cannot read input"):
            return bytes(fs.cat_file(fs_path, start=0, end=length))
    with open(path.removeprefix("file://"), "rb") as file:
        return file.read(length)


def read_range(
    location: str, start: int, length: int, storage_options: dict[str, Any] | None = None
) -> bytes:
    """Bytes [start, start + length) of a local file or a URL (fewer at the end of the file)."""
    if length <= 0:
        return b""
    if is_remote(location):
        fs, fs_path = url_to_fs(location, storage_options)
        with input_errors(location, "cannot read input"):
            return bytes(fs.cat_file(fs_path, start=start, end=start + length))
    try:
        fd = os.open(location.removeprefix("file://"), os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise InputError(f"cannot open input: {exc.strerror or exc}", path=location) from exc
    try:
        chunks = []
        while length > 0:
            chunk = os.pread(fd, length, start)
            if not chunk:
                break
            chunks.append(chunk)
            start += len(chunk)
            length -= len(chunk)
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]
    finally:
        os.close(fd)


def stored_size_and_stamp(
    location: str, storage_options: dict[str, Any] | None = None
) -> tuple[int, str]:
    """An input's size as stored and a cheap change stamp (mtime in ns, or the object's ETag)."""
    if is_remote(location):
        fs, fs_path = url_to_fs(location, storage_options)
        with input_errors(location, "cannot open input"):
            info = fs.info(fs_path)
        if info.get("type") == "directory":
            raise InputError("is a folder, not a JSONL file", path=location)
        stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
        return int(info.get("size") or 0), str(stamp)
    try:
        stat = os.stat(location.removeprefix("file://"))
    except OSError as exc:
        raise InputError(f"cannot open input: {exc.strerror or exc}", path=location) from exc
    if not os.path.isfile(location.removeprefix("file://")):
        raise InputError("is not a regular file", path=location)
    return stat.st_size, str(stat.st_mtime_ns)
