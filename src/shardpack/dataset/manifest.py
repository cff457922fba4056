"""The manifest of a sharded dataset (``manifest.json``): shards in order with their record counts,
sizes and hashes, totals, schema, stats and provenance. Parsing checks every field and every shard
name, so a damaged or hostile manifest is a ManifestError, never a read outside the folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import xxhash

from .._version import __version__
from ..errors import ManifestError
from ..storage.folder import check_name

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "shardpack-dataset"
MANIFEST_VERSION = 1
SHARD_PATTERN = "shard-{:05d}.packed"


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


@dataclass(frozen=True)
class ShardEntry:
    """One shard: its file (relative to the dataset folder) and what it must hold."""

    file: str
    records: int
    blocks: int
    bytes: int
    file_hash: str  # xxh3_128 of the whole file: catches any change, truncation, swap
    content_hash: str  # the shard's own record content hash (from its footer)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # provenance: input slices

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ShardEntry:
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: a shard entry is not an object")
        try:
            entry = cls(
                file=check_name(data["file"]),
                records=_count(data["records"], f"{where}.records"),
                blocks=_count(data["blocks"], f"{where}.blocks"),
                bytes=_count(data["bytes"], f"{where}.bytes"),
                file_hash=_hash(data["file_hash"], f"{where}.file_hash"),
                content_hash=_hash(data["content_hash"], f"{where}.content_hash"),
                inputs=list(data.get("inputs", [])),
            )
        except KeyError as exc:
            raise ManifestError(f"{where}: missing field {exc.args[0]!r}") from None
        except ManifestError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        return entry


def dataset_content_hash(shards: list[ShardEntry]) -> str:
    """The dataset's content hash: xxh3_128 over the shards' content hashes, in order.

    It depends only on which records, in which order and in which shards, so a merge of two
    datasets has the hash a direct pack into the same shards would have.
    """
    digest = xxhash.xxh3_128()
    for entry in shards:
        digest.update(entry.content_hash.encode("ascii") + b"\n")
    return "xxh3_128:" + digest.hexdigest()


@dataclass
class Manifest:
    """A parsed ``manifest.json``."""

    shards: list[ShardEntry]
    schema: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(entry.records for entry in self.shards)

    @property
    def bytes(self) -> int:
        return sum(entry.bytes for entry in self.shards)

    @property
    def content_hash(self) -> str:
        return dataset_content_hash(self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "created_by": f"shardpack {__version__}",
            "totals": {
                "shards": len(self.shards),
                "records": self.records,
                "bytes": self.bytes,
                "content_hash": self.content_hash,
            },
            "schema": self.schema,
            "stats": self.stats,
            "provenance": self.provenance,
            "shards": [entry.to_dict() for entry in self.shards],
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, where: str = MANIFEST_NAME) -> Manifest:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{where}: not a shardpack dataset manifest")
        version = doc.get("format_version")
        if version != MANIFEST_VERSION:
            raise ManifestError(
                f"{where}: unsupported manifest version {version!r} "
                f"(this shardpack reads version {MANIFEST_VERSION})"
            )
        shards_doc = doc.get("shards")
        if not isinstance(shards_doc, list):
            raise ManifestError(f"{where}: 'shards' is not a list")
        shards = [
            ShardEntry.from_dict(s, f"{where}: shards[{i}]") for i, s in enumerate(shards_doc)
        ]
        names = [entry.file for entry in shards]
        if len(set(names)) != len(names):
            raise ManifestError(f"{where}: a shard file is listed twice")
        if MANIFEST_NAME in names:
            raise ManifestError(f"{where}: the manifest cannot list itself as a shard")
        manifest = cls(
            shards,
            schema=_object(doc.get("schema", {}), f"{where}: schema"),
            stats=_object(doc.get("stats", {}), f"{where}: stats"),
            provenance=_object(doc.get("provenance", {}), f"{where}: provenance"),
        )
        totals = doc.get("totals")
        if not isinstance(totals, dict):
            raise ManifestError(f"{where}: 'totals' is missing")
        expected = {
            "shards": len(shards),
            "records": manifest.records,
            "bytes": manifest.bytes,
            "content_hash": manifest.content_hash,
        }
        for key, value in expected.items():
            if totals.get(key) != value:
                raise ManifestError(
                    f"{where}: totals.{key} is {totals.get(key)!r} but the shards add up to "
                    f"{value!r} (manifest edited or damaged)"
                )
        return manifest


def merge_schemas(schemas: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One schema for datasets read together, or ManifestError naming the first conflict.

    Compatible: the same kind (int, float, bool...) for every numeric array field present in
    several of them, the same lossy setting per field, and equal JSON Schemas where both have one.
    """
    arrays: dict[str, dict[str, Any]] = {}
    lossy: dict[str, str] = {}
    owners: dict[str, str] = {}
    codecs: list[dict[str, Any]] = []
    json_schema: tuple[str, Any] | None = None
    for name, schema in schemas:
        for path, info in schema.get("arrays", {}).items():
            kinds = {_kind(dtype) for dtype in info.get("stored", {})}
            if path in arrays:
                before = {_kind(dtype) for dtype in arrays[path]["stored"]}
                if kinds and before and kinds != before:
                    raise ManifestError(
                        f"incompatible schemas: field {path!r} holds {'/'.join(sorted(before))} "
                        f"arrays in {owners[path]} but {'/'.join(sorted(kinds))} arrays in {name}"
                    )
                stored = arrays[path]["stored"]
                for dtype, count in info.get("stored", {}).items():
                    stored[dtype] = stored.get(dtype, 0) + count
            else:
                arrays[path] = {"stored": dict(info.get("stored", {}))}
                owners[path] = name
        for path, how in schema.get("lossy", {}).items():
            if path in lossy and lossy[path] != how:
                raise ManifestError(
                    f"incompatible schemas: field {path!r} is stored {lossy[path]} in one "
                    f"dataset and {how} in {name}"
                )
            lossy[path] = how
        for codec in schema.get("codecs", []):
            if codec not in codecs:
                codecs.append(codec)
        if "json_schema" in schema:
            if json_schema is not None and json_schema[1] != schema["json_schema"]:
                raise ManifestError(
                    f"incompatible schemas: {json_schema[0]} and {name} declare different "
                    "JSON Schemas"
                )
            json_schema = (name, schema["json_schema"])
    for info in arrays.values():
        # the widest stored width of the field's kind is what readers promote to
        info["dtype"] = max(info["stored"], key=_width) if info["stored"] else None
        info["stored"] = dict(sorted(info["stored"].items()))
    merged: dict[str, Any] = {"arrays": dict(sorted(arrays.items())), "lossy": lossy}
    merged["codecs"] = codecs
    if json_schema is not None:
        merged["json_schema"] = json_schema[1]
    return merged


def schema_of(metadata: dict[str, Any]) -> dict[str, Any]:
    """The schema part of one packed file's metadata, in the manifest's shape."""
    schema: dict[str, Any] = {
        "arrays": metadata.get("arrays", {}),
        "lossy": metadata.get("lossy", {}),
        "codecs": [metadata.get("codec", {})],
    }
    if "schema" in metadata and metadata.get("schema_source") == "user":
        schema["json_schema"] = metadata["schema"]  # inferred schemas differ per shard by nature
    return schema


def _kind(dtype: str) -> str:
    if dtype.startswith(("int", "uint")):
        return "int"
    if dtype.startswith(("float", "bfloat")):
        return "float"
    return dtype


def _width(dtype: str) -> int:
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return int(digits) if digits else 0


def _count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError(f"{where} is not a non-negative integer: {value!r}")
    return value


def _hash(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("xxh3_128:") or len(value) != 41:
        raise ManifestError(f"{where} is not an xxh3_128 hash: {value!r}")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} is not an object")
    return value
