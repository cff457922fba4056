"""What ``shardpack.open()`` is given -> the packed files to read: a packed file, a dataset folder,
its manifest.json, an fsspec URL of any of these. Shard paths come only through the manifest's
checked names, so they stay inside the dataset folder or URL prefix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import FormatError, ManifestError, RemoteError
from ..storage.failures import as_remote_error, failure_reason
from ..storage.folder import Storage, open_storage, split_location
from ..storage.ranges import RangeSource
from ..storage.remote import RemoteReader
from ..storage.remote_options import RemoteOptions
from ..storage.scan_ahead import WholeFile
from ..storage.urls import is_remote, is_url, url_to_fs
from .manifest import MANIFEST_NAME, Manifest


@dataclass
class PackedLocation:
    """One packed file to open, and what the manifest says it holds (if there is one)."""

    path: str
    storage: Storage | None = None
    name: str | None = None
    size: int | None = None
    records: int | None = None
    storage_options: dict[str, Any] | None = None
    content_hash: str | None = None  # the manifest's, checked against the footer on open
    footer_offset: int | None = None
    file_hash: str | None = None

    def source(self, reader: RemoteReader | None = None, whole: WholeFile | None = None) -> Any:
        """A reader source (remote byte ranges), or None for a local file. ``reader``: the
        caches and read-ahead shared by the files of a dataset; ``whole``: the whole file,
        fetched by a full scan, to open it from."""
        if self.storage is not None and self.name is not None:
            return self.storage.source(
                self.name,
                size=self.size,
                reader=reader,
                footer_offset=self.footer_offset,
                file_hash=self.file_hash,
                whole=whole,
            )
        if is_remote(self.path):
            if reader is None:
                reader = RemoteReader(RemoteOptions(storage_options=self.storage_options or {}))
            return RangeSource(self.path, reader=reader, whole=whole)
        return None


@dataclass
class Located:
    locations: list[PackedLocation]
    manifest: Manifest | None = None
    root: str | None = None


def locate(
    path: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    reader: RemoteReader | None = None,
) -> Located:
    """Resolve one path or URL to the packed files it stands for. With ``reader``, a remote
    dataset's manifest is read in one request (no listing, no metadata request)."""
    text = os.fspath(path)
    if reader is not None and is_remote(text) and not text.endswith(".packed"):
        root = split_location(text)[0] if _is_manifest(text) else text
        storage = open_storage(root, storage_options)
        data = reader.fetcher.read_object(storage.location(MANIFEST_NAME))
        if data is not None:
            return _from_manifest(storage, data, storage_options)
    folder = _dataset_folder(text, storage_options)
    if folder is None:
        return Located(
            [PackedLocation(text.removeprefix("file://"), storage_options=storage_options)]
        )
    storage = open_storage(folder, storage_options)
    if not storage.exists(MANIFEST_NAME):
        raise ManifestError(
            f"{folder}: no {MANIFEST_NAME} (not a sharded dataset, or a pack that did not finish: "
            "run it again to resume)"
        )
    try:
        data = storage.read_bytes(MANIFEST_NAME)
    except OSError as exc:
        where = storage.location(MANIFEST_NAME)
        if storage.is_remote:  # the store's failure, in words: not a damaged manifest
            raise as_remote_error(exc, where, "cannot read") from exc
        raise FormatError(f"cannot read: {exc}", path=where) from exc
    return _from_manifest(storage, data, storage_options)


def _from_manifest(
    storage: Storage, data: bytes, storage_options: dict[str, Any] | None
) -> Located:
    manifest = Manifest.from_json(data, storage.location(MANIFEST_NAME))
    locations = [
        PackedLocation(
            storage.location(entry.file),  # checks the name stays inside the folder
            storage=storage,
            name=entry.file,
            size=entry.size,
            records=entry.records,
            storage_options=storage_options,
            content_hash=entry.content_hash,
            footer_offset=entry.footer_offset,
            file_hash=entry.file_hash,
        )
        for entry in manifest.shards
    ]
    return Located(locations, manifest, storage.root)


def is_dataset(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``path`` names a sharded dataset (folder or manifest), not a single packed file.
    RemoteError when the store cannot tell (access denied, cannot connect)."""
    return _dataset_folder(os.fspath(path), storage_options) is not None


def _is_manifest(text: str) -> bool:
    return split_location(text)[1] == MANIFEST_NAME


def _dataset_folder(text: str, storage_options: dict[str, Any] | None) -> str | None:
    if split_location(text)[1] == MANIFEST_NAME:
        return split_location(text)[0]
    if is_url(text) and not text.startswith("file://"):
        fs, fs_path = url_to_fs(text, storage_options)
        try:
            return text.rstrip("/") if fs.isdir(fs_path) else None
        except FileNotFoundError:  # no such bucket: opened as a file, which reports it
            return None
        except Exception as exc:
            reason = failure_reason(exc)  # access denied, cannot connect...: in words
            if reason is None:
                raise  # a bug (or a bad storage option) is not disguised as a store's answer
            raise RemoteError(reason, path=text) from exc
    local = text.removeprefix("file://")
    return local if os.path.isdir(local) else None
