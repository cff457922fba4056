"""The manifest of a sharded dataset (``manifest.json``): shards in order with their record counts,
sizes and hashes, totals, schema, stats and provenance. Decoding checks every field and every shard
name, so a damaged or hostile manifest is a ManifestError, never a read outside the folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

import msgspec
import xxhash

from .._version import __version__
from ..errors import FormatError, ManifestError
from ..format.layout import HEADER_SIZE, TRAILER_SIZE
from ..format.metadata import (
    ArrayField,
    Count,
    DatasetStats,
    Document,
    FileMetadata,
    Provenance,
    SourceSlice,
    decode_document,
)
from ..storage.folder import check_name

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SHARD_PATTERN = "shard-{:05d}.packed"
Hash = Annotated[str, msgspec.Meta(pattern="^xxh3_128:[0-9a-f]{32}$")]


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


class ShardEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One shard: its file (relative to the dataset folder) and what it must hold."""

    file: str
    records: Count
    blocks: Count
    size: Count = msgspec.field(name="bytes")
    file_hash: Hash  # xxh3_128 of the whole file: catches any change, truncation, swap
    content_hash: Hash  # the shard's own record content hash (from its footer)
    inputs: list[SourceSlice] = []  # provenance: the input slices it was packed from
    # where the footer (block index + metadata + trailer) starts: a remote reader fetches
    # exactly it, in one request, on the shard's first use; absent in older manifests
    footer_offset: Count | None = None

    def __post_init__(self) -> None:
        check_name(self.file)  # a ManifestError (a ValueError): reported with its JSON path
        if self.footer_offset is not None and not (
            HEADER_SIZE <= self.footer_offset <= self.size - TRAILER_SIZE
        ):
            raise ManifestError(
                f"footer_offset {self.footer_offset} lies outside a file of {self.size} bytes"
            )


class DatasetSchema(Document):
    """What readers need to agree on across shards: array dtypes, lossy fields, codecs, and the
    user's JSON Schema when one was given."""

    arrays: dict[str, ArrayField] = {}
    lossy: dict[str, str] = {}
    codecs: list[dict[str, Any]] = []
    json_schema: dict[str, Any] | None = None


class Totals(Document):
    shards: Count
    records: Count
    size: Count = msgspec.field(name="bytes")
    content_hash: str = ""


def dataset_content_hash(shards: list[ShardEntry]) -> str:
    """The dataset's content hash: xxh3_128 over the shards' content hashes, in order.

    It depends only on which records, in which order and in which shards, so a merge of two
    datasets has the hash a direct pack into the same shards would have.
    """
    return combined_content_hash(entry.content_hash for entry in shards)


def combined_content_hash(hashes: Iterable[str]) -> str:
    """The content hash of files read as one dataset, in order: xxh3_128 over their content
    hashes (a sharded dataset's, as its manifest and ``merge`` compute it)."""
    digest = xxhash.xxh3_128()
    for content_hash in hashes:
        digest.update(content_hash.encode("ascii") + b"\n")
    return "xxh3_128:" + digest.hexdigest()


class Manifest(Document):
    """A parsed ``manifest.json``."""

    format: Literal["shardpack-dataset"]
    format_version: int
    created_by: str
    totals: Totals
    schema: DatasetSchema = msgspec.field(default_factory=DatasetSchema)
    stats: DatasetStats = msgspec.field(default_factory=DatasetStats)
    provenance: Provenance = msgspec.field(default_factory=Provenance)
    shards: list[ShardEntry] = []

    @classmethod
    def create(
        cls,
        shards: list[ShardEntry],
        *,
        schema: DatasetSchema | None = None,
        stats: DatasetStats | None = None,
        provenance: Provenance | None = None,
    ) -> Manifest:
        """A new manifest with its totals computed from ``shards``."""
        return cls(
            format="shardpack-dataset",
            format_version=MANIFEST_VERSION,
            created_by=f"shardpack {__version__}",
            totals=_totals(shards),
            schema=schema or DatasetSchema(),
            stats=stats or DatasetStats(),
            provenance=provenance or Provenance(),
            shards=list(shards),
        )

    @property
    def records(self) -> int:
        return sum(entry.records for entry in self.shards)

    @property
    def size(self) -> int:
        """Bytes of all shard files."""
        return sum(entry.size for entry in self.shards)

    @property
    def content_hash(self) -> str:
        return dataset_content_hash(self.shards)

    def to_json(self) -> bytes:
        return msgspec.json.format(msgspec.json.encode(self), indent=1) + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str = MANIFEST_NAME) -> Manifest:
        try:
            manifest = decode_document(data, cls, where)
        except FormatError as exc:
            raise ManifestError(str(exc)) from None
        if manifest.format_version != MANIFEST_VERSION:
            raise ManifestError(
                f"{where}: unsupported manifest version {manifest.format_version!r} "
                f"(this shardpack reads version {MANIFEST_VERSION})"
            )
        names = [entry.file for entry in manifest.shards]
        if len(set(names)) != len(names):
            raise ManifestError(f"{where}: a shard file is listed twice")
        if MANIFEST_NAME in names:
            raise ManifestError(f"{where}: the manifest cannot list itself as a shard")
        expected, found = _totals(manifest.shards), manifest.totals
        for key in ("shards", "records", "size", "content_hash"):
            if getattr(found, key) != getattr(expected, key):
                name = "bytes" if key == "size" else key
                raise ManifestError(
                    f"{where}: totals.{name} is {getattr(found, key)!r} but the shards add up "
                    f"to {getattr(expected, key)!r} (manifest edited or damaged)"
                )
        return manifest


def _totals(shards: list[ShardEntry]) -> Totals:
    return Totals(
        shards=len(shards),
        records=sum(entry.records for entry in shards),
        size=sum(entry.size for entry in shards),
        content_hash=dataset_content_hash(shards),
    )


def merge_schemas(schemas: list[tuple[str, DatasetSchema]]) -> DatasetSchema:
    """One schema for datasets read together, or ManifestError naming the first conflict.

    Compatible: the same lossy setting per field, and equal JSON Schemas where both have one.
    A field's arrays may be of several kinds (ints in some records, floats in others), as within
    one file: each is read as stored, never cast across kinds, so where shard boundaries fall (or
    which datasets are merged) cannot make a pack fail.
    """
    stored_by_path: dict[str, dict[str, int]] = {}
    lossy: dict[str, str] = {}
    codecs: list[dict[str, Any]] = []
    json_schema: tuple[str, Any] | None = None
    for name, schema in schemas:
        for path, field in schema.arrays.items():
            if path in stored_by_path:
                stored = stored_by_path[path]
                for dtype, count in field.stored.items():
                    stored[dtype] = stored.get(dtype, 0) + count
            else:
                stored_by_path[path] = dict(field.stored)
        for path, how in schema.lossy.items():
            if path in lossy and lossy[path] != how:
                raise ManifestError(
                    f"incompatible schemas: field {path!r} is stored {lossy[path]} in one "
                    f"dataset and {how} in {name}"
                )
            lossy[path] = how
        for codec in schema.codecs:
            if codec not in codecs:
                codecs.append(codec)
        if schema.json_schema is not None:
            if json_schema is not None and json_schema[1] != schema.json_schema:
                raise ManifestError(
                    f"incompatible schemas: {json_schema[0]} and {name} declare different "
                    "JSON Schemas"
                )
            json_schema = (name, schema.json_schema)
    arrays = {
        # the widest stored width of the field's kind is what readers promote to
        path: ArrayField(dtype=max(stored, key=_width), stored=dict(sorted(stored.items())))
        for path, stored in sorted(stored_by_path.items())
        if stored
    }
    return DatasetSchema(
        arrays=arrays,
        lossy=lossy,
        codecs=codecs,
        json_schema=None if json_schema is None else json_schema[1],
    )


def schema_of(metadata: FileMetadata) -> DatasetSchema:
    """The schema part of one packed file's metadata, in the manifest's shape."""
    return DatasetSchema(
        arrays=metadata.arrays,
        lossy=metadata.lossy,
        codecs=[metadata.codec],
        # inferred schemas differ per shard by nature: only a user's schema is dataset-wide
        json_schema=metadata.schema if metadata.schema_source == "user" else None,
    )


def _width(dtype: str) -> int:
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return int(digits) if digits else 0
