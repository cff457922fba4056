"""A dataset folder on local disk or at an fsspec URL: the few file operations sharding needs.

Every name is checked to stay inside the folder (no absolute paths, ``..``, URL schemes, or local
symlinks leading out), so a manifest can never make shardpack read or write elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from ..errors import ManifestError
from .atomic import atomic_file

if TYPE_CHECKING:
    from .remote import RemoteReader
    from .scan_ahead import WholeFile
from .urls import is_url, url_to_fs

_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,254}$")
HASH_CHUNK = 8 << 20


def check_name(name: Any, *, allow_hidden: bool = False) -> str:
    """``name`` if it is a safe relative file name inside a dataset folder, else ManifestError.

    Allowed: parts of letters, digits, ``._-`` (not starting with a dot) joined by ``/``.
    Refused: absolute paths, ``..``, backslashes, drive letters, URL schemes, hidden files.
    """
    if not isinstance(name, str) or not name:
        raise ManifestError(f"unsafe shard name {name!r}: not a non-empty string")
    parts = name.split("/")
    if allow_hidden and len(parts) == 1 and name.startswith(".") and name not in (".", ".."):
        parts = [name[1:]]  # leftover temp files of killed runs, removed by name
    if len(parts) > 8 or not all(_NAME_PART.match(part) for part in parts):
        raise ManifestError(
            f"unsafe shard name {name!r}: shard files must be relative names inside the dataset "
            "folder (letters, digits, '._-', no '..', no absolute path or URL)"
        )
    return name


def file_hash(path: str | os.PathLike[str]) -> str:
    """xxh3_128 of a whole local file, as ``xxh3_128:<hex>``."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    return "xxh3_128:" + digest.hexdigest()


def bytes_hash(data: bytes | memoryview) -> str:
    return "xxh3_128:" + xxhash.xxh3_128_hexdigest(data)


class Storage:
    """Interface of a dataset folder (see LocalStorage, UrlStorage)."""

    root: str
    is_remote: bool = False

    def location(self, name: str, *, allow_hidden: bool = False) -> str:
        """The full path or URL of ``name`` (checked to stay inside the folder)."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def read_bytes(self, name: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write ``name`` whole, so readers see the old content or the new, never a mix."""
        raise NotImplementedError

    def remove(self, name: str) -> None:
        raise NotImplementedError

    def list_names(self) -> list[str]:
        """Names of the files directly in the folder (hidden files included)."""
        raise NotImplementedError

    def staging(self, name: str) -> Any:
        """Context manager: a local path to write ``name`` to; it appears in the folder on exit."""
        raise NotImplementedError

    def source(
        self,
        name: str,
        *,
        size: int | None = None,
        reader: RemoteReader | None = None,
        footer_offset: int | None = None,
        file_hash: str | None = None,
        whole: WholeFile | None = None,
    ) -> Any:
        """A reader source for ``name``, or None to let the reader map the local file.

        Remote: ``size``, ``footer_offset`` and ``file_hash`` (from the manifest) spare
        requests; ``reader`` holds the caches and read-ahead the dataset's files share;
        ``whole``: a full scan fetched the whole file, open it from those bytes."""
        raise NotImplementedError

    def hash_file(self, name: str) -> str:
        raise NotImplementedError

    def copy_in(
        self, source: str, new_name: str, source_options: dict[str, Any] | None = None
    ) -> None:
        """Put the file at ``source`` (path or URL) here as ``new_name``, byte for byte.
        ``source_options``: the fsspec options that reach a URL ``source``."""
        raise NotImplementedError


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        self._root = Path(root)

    def location(self, name: str, *, allow_hidden: bool = False) -> str:
        check_name(name, allow_hidden=allow_hidden)
        path = self._root / name
        if path.is_symlink() or path.exists():
            real, base = path.resolve(), self._root.resolve()
            if real != base and base not in real.parents:
                raise ManifestError(f"unsafe shard name {name!r}: it leads outside {self.root}")
        return os.fspath(path)

    def exists(self, name: str) -> bool:
        return os.path.isfile(self.location(name))

    def size(self, name: str) -> int:
        return os.path.getsize(self.location(name))

    def read_bytes(self, name: str) -> bytes:
        return Path(self.location(name)).read_bytes()

    def write_bytes(self, name: str, data: bytes) -> None:
        with atomic_file(Path(self.location(name))) as file:
            file.write(data)

    def remove(self, name: str) -> None:
        Path(self.location(name, allow_hidden=True)).unlink(missing_ok=True)

    def list_names(self) -> list[str]:
        if not self._root.is_dir():
            return []
        return sorted(p.name for p in self._root.iterdir() if p.is_file() or p.is_symlink())

    @contextmanager
    def staging(self, name: str) -> Iterator[str]:
        # PackedFileWriter already writes a temp file and renames it into place
        yield self.location(name)

    def source(
        self,
        name: str,
        *,
        size: int | None = None,
        reader: RemoteReader | None = None,
        footer_offset: int | None = None,
        file_hash: str | None = None,
        whole: WholeFile | None = None,
    ) -> Any:
        return None

    def hash_file(self, name: str) -> str:
        return file_hash(self.location(name))

    def copy_in(
        self, source: str, new_name: str, source_options: dict[str, Any] | None = None
    ) -> None:
        target = Path(self.location(new_name))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        if not is_url(source) or source.startswith("file://"):
            source = source.removeprefix("file://")
            try:
                os.link(source, target)  # free, and the bytes are the very same
            except OSError:
                shutil.copyfile(source, target)
            return
        fs, path = url_to_fs(source, source_options)
        fs.get_file(path, os.fspath(target))


class UrlStorage(Storage):
    is_remote = True

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.root = url.rstrip("/")
        self.storage_options = storage_options
        self._fs, self._path = url_to_fs(self.root, storage_options)
        self._path = self._path.rstrip("/")

    def location(self, name: str, *, allow_hidden: bool = False) -> str:
        return f"{self.root}/{check_name(name, allow_hidden=allow_hidden)}"

    def _fs_path(self, name: str, *, allow_hidden: bool = False) -> str:
        return f"{self._path}/{check_name(name, allow_hidden=allow_hidden)}"

    def exists(self, name: str) -> bool:
        # not fsspec's isfile: it answers False for any failure, and a store that timed out
        # would read as a missing shard (damage) instead of a store that did not answer
        from .failures import remote_errors

        with remote_errors(self.location(name), "cannot check"):
            try:
                info = self._fs.info(self._fs_path(name))
            except FileNotFoundError:
                return False
        return bool(info.get("type") == "file")

    def size(self, name: str) -> int:
        return int(self._fs.size(self._fs_path(name)))

    def read_bytes(self, name: str) -> bytes:
        return bytes(self._fs.cat_file(self._fs_path(name)))

    def write_bytes(self, name: str, data: bytes) -> None:
        # one PUT: object stores make it visible whole or not at all
        self._fs.pipe_file(self._fs_path(name), data)

    def remove(self, name: str) -> None:
        path = self._fs_path(name, allow_hidden=True)
        if self._fs.exists(path):
            self._fs.rm_file(path)

    def list_names(self) -> list[str]:
        try:
            entries = self._fs.ls(self._path, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(
            e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file"
        )

    @contextmanager
    def staging(self, name: str) -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="shardpack-") as folder:
            local = os.path.join(folder, name.replace("/", "_"))
            yield local
            self._fs.put_file(local, self._fs_path(name))

    def source(
        self,
        name: str,
        *,
        size: int | None = None,
        reader: RemoteReader | None = None,
        footer_offset: int | None = None,
        file_hash: str | None = None,
        whole: WholeFile | None = None,
    ) -> Any:
        from .ranges import RangeSource  # the remote stack loads with the first URL
        from .remote import RemoteReader
        from .remote_options import RemoteOptions

        if reader is None:
            reader = RemoteReader(RemoteOptions(storage_options=dict(self.storage_options or {})))
        return RangeSource(
            self.location(name),
            size=size,
            reader=reader,
            footer_offset=footer_offset,
            file_hash=file_hash,
            whole=whole,
        )

    def hash_file(self, name: str) -> str:
        digest = xxhash.xxh3_128()
        with self._fs.open(self._fs_path(name), "rb", block_size=HASH_CHUNK) as file:
            while chunk := file.read(HASH_CHUNK):
                digest.update(chunk)
        return "xxh3_128:" + digest.hexdigest()

    def copy_in(
        self, source: str, new_name: str, source_options: dict[str, Any] | None = None
    ) -> None:
        target = self._fs_path(new_name)
        if not is_url(source) or source.startswith("file://"):
            self._fs.put_file(source.removeprefix("file://"), target)
            return
        options = source_options if source_options is not None else self.storage_options
        fs, path = url_to_fs(source, options)
        if type(fs) is type(self._fs):
            self._fs.copy(path, target)  # server-side copy where the store supports it
            return
        with fs.open(path, "rb") as src, self._fs.open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, HASH_CHUNK)


def open_storage(
    root: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> Storage:
    """The folder at ``root``: a local path or an fsspec URL."""
    text = os.fspath(root)
    if is_url(text) and not text.startswith("file://"):
        return UrlStorage(text, storage_options)
    return LocalStorage(text.removeprefix("file://"))


def split_location(path: str) -> tuple[str, str]:
    """(folder, file name) of a local path or URL."""
    if is_url(path):
        folder, _, name = path.rstrip("/").rpartition("/")
        return folder, name
    folder, name = os.path.split(path)
    return folder or ".", name
