"""Assembling metadata: what the encoded units of one file report, merged in order into its
footer, and a sharded dataset's manifest from its shards."""

from __future__ import annotations

from typing import Any

import xxhash

from .._version import __version__
from ..dataset.manifest import Manifest, merge_schemas, schema_of
from ..format.layout import FORMAT_MAJOR, FORMAT_MINOR
from ..ingest.schema_infer import SchemaInferrer
from ..packfile.writer import PackedFileWriter
from ..stats import StatsCollector, block_size_stats, merge_stats, token_field
from .provenance import creation_time
from .resume import ShardResult
from .units import (
    UNIT_INPUT_BYTES,
    EncodedUnit,
    EncodeOptions,
)


class MetadataCollector:
    """Merges what the units report, in order, into the file's metadata."""

    def __init__(self) -> None:
        self.content = xxhash.xxh3_128()
        self.input_bytes = 0
        self.array_dtypes: dict[str, dict[str, int]] = {}
        self.lossy_fields: dict[str, str] = {}
        self.inferred = SchemaInferrer()
        self.stats = StatsCollector()

    def add(self, encoded: EncodedUnit) -> None:
        self.stats.merge(encoded.stats)
        if encoded.inferred is not None:
            self.inferred.merge(encoded.inferred)
        self.content.update(encoded.record_digests.astype("<u8").tobytes())
        self.input_bytes += encoded.input_bytes
        for path, seen in encoded.array_dtypes.items():
            merged = self.array_dtypes.setdefault(path, {})
            for name, count in seen.items():
                merged[name] = merged.get(name, 0) + count
        self.lossy_fields.update(encoded.lossy_fields)

    def stats_metadata(self, writer: PackedFileWriter) -> dict[str, Any]:
        """Record and field statistics plus block sizes (computed in the same single pass)."""

        stats = self.stats.to_dict()
        raw_sizes, stored_sizes = writer.block_sizes()
        stats["blocks"] = block_size_stats(raw_sizes, stored_sizes)
        stats["raw_bytes"] = int(sum(raw_sizes))
        stats["stored_bytes"] = int(sum(stored_sizes))
        stats["input_bytes"] = self.input_bytes
        stats["compression_ratio"] = (
            round(self.input_bytes / stats["stored_bytes"], 4) if stats["stored_bytes"] else None
        )
        arrays = {path: {"dtype": next(iter(seen))} for path, seen in self.array_dtypes.items()}
        stats["token_field"] = token_field({"arrays": arrays})
        return stats

    def metadata(
        self, options: EncodeOptions, writer: PackedFileWriter, inputs: list[str]
    ) -> dict[str, Any]:
        from ..packfile.reader import promotion_targets

        arrays = {
            path: {"stored": dict(sorted(seen.items()))} for path, seen in self.array_dtypes.items()
        }
        targets = promotion_targets(arrays)
        for path, info in arrays.items():
            info["dtype"] = targets[path].name if path in targets else next(iter(info["stored"]))
        return {
            "format": "shardpack",
            "format_version": f"{FORMAT_MAJOR}.{FORMAT_MINOR}",
            "created_by": f"shardpack {__version__}",
            "codec": options.codec,
            "block_size": options.block_size,
            "shuffle": options.shuffle,
            "unit_input_bytes": UNIT_INPUT_BYTES,
            "record_count": writer.record_count,
            "block_count": writer.block_count,
            "max_block_raw_size": writer.max_raw_size,
            "stored_bytes": writer.stored_bytes,
            "input_bytes": self.input_bytes,
            "arrays": dict(sorted(arrays.items())),
            "lossy": dict(sorted(self.lossy_fields.items())),
            "content_hash": "xxh3_128:" + self.content.hexdigest(),
            "inputs": [{"path": p} for p in inputs],
        }


def build_manifest(
    results: list[ShardResult],
    inputs: list[str],
    fingerprint: dict[str, Any],
    engine: dict[str, Any],
    storage_options: dict[str, Any] | None,
) -> Manifest:
    schema = merge_schemas([(r.entry.file, schema_of(r.metadata)) for r in results])
    input_bytes = sum(int(r.metadata.get("input_bytes", 0)) for r in results)
    records = [r.entry.records for r in results]
    sizes = [r.entry.bytes for r in results]
    stats = {
        **merge_stats([r.metadata.get("stats", {}) for r in results]),
        "records": sum(records),
        "shards": len(results),
        "input_bytes": input_bytes,
        "stored_bytes": sum(sizes),
        "ratio": round(sum(sizes) / input_bytes, 4) if input_bytes else None,
        "records_per_shard": {"min": min(records, default=0), "max": max(records, default=0)},
        "bytes_per_shard": {"min": min(sizes, default=0), "max": max(sizes, default=0)},
    }
    first = results[0].metadata if results else {}
    provenance = {
        "created_by": f"shardpack {__version__}",
        "created": creation_time(),  # SOURCE_DATE_EPOCH when set: reproducible manifests
        "inputs": fingerprint["inputs"],
        "options": {
            **fingerprint["encode"],
            **fingerprint["sharding"],
            "unit_input_bytes": first.get("unit_input_bytes"),
        },
        "engine": engine,
        "fingerprint": fingerprint,
    }
    return Manifest([r.entry for r in results], schema=schema, stats=stats, provenance=provenance)
