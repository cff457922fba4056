"""What ``shardpack.open()`` is given -> the packed files to read: a packed file, a dataset folder,
its manifest.json, an fsspec URL of any of these. Shard paths come only through the manifest's
checked names, so they stay inside the dataset folder or URL prefix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import FormatError, ManifestError
from ..storage.folder import Storage, open_storage, split_location
from ..storage.ranges import BlockCache, RangeSource
from ..storage.urls import is_url, url_to_fs
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

    def source(self, cache: BlockCache | None = None) -> Any:
        """A reader source (remote byte ranges), or None for a local file."""
        if self.storage is not None and self.name is not None:
            return self.storage.source(self.name, size=self.size, cache=cache)
        if is_url(self.path) and not self.path.startswith("file://"):
            return RangeSource(self.path, storage_options=self.storage_options, cache=cache)
        return None


@dataclass
class Located:
    locations: list[PackedLocation]
    manifest: Manifest | None = None
    root: str | None = None


def locate(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Located:
    """Resolve one path or URL to the packed files it stands for."""
    text = os.fspath(path)
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
    where = storage.location(MANIFEST_NAME)
    try:
        manifest = Manifest.from_json(storage.read_bytes(MANIFEST_NAME), where)
    except OSError as exc:
        raise FormatError(f"cannot read: {exc}", path=where) from exc
    locations = [
        PackedLocation(
            storage.location(entry.file),  # checks the name stays inside the folder
            storage=storage,
            name=entry.file,
            size=entry.size,
            records=entry.records,
            storage_options=storage_options,
            content_hash=entry.content_hash,
        )
        for entry in manifest.shards
    ]
    return Located(locations, manifest, storage.root)


def is_dataset(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``path`` names a sharded dataset (folder or manifest), not a single packed file."""
    return _dataset_folder(os.fspath(path), storage_options) is not None


def _dataset_folder(text: str, storage_options: dict[str, Any] | None) -> str | None:
    if split_location(text)[1] == MANIFEST_NAME:
        return split_location(text)[0]
    if is_url(text) and not text.startswith("file://"):
        fs, fs_path = url_to_fs(text, storage_options)
        try:
            return text.rstrip("/") if fs.isdir(fs_path) else None
        except OSError:
            return None
    local = text.removeprefix("file://")
    return local if os.path.isdir(local) else None
