"""Assembling metadata: what the encoded units of one file report, merged in order into its
footer, and a sharded dataset's manifest from its shards."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import xxhash

from .._version import __version__
from ..dataset.manifest import Manifest, merge_schemas, schema_of
from ..format.layout import FORMAT_MAJOR, FORMAT_MINOR
from ..format.metadata import (
    ArrayField,
    DatasetStats,
    FileMetadata,
    Provenance,
    SourceSlice,
    Spread,
    widest_dtypes,
)
from ..ingest.schema_infer import SchemaInferrer
from ..packfile.writer import PackedFileWriter
from ..stats import StatsCollector, block_size_stats, merge_stats, token_field
from .options import EncodeOptions
from .units import EncodedUnit

if TYPE_CHECKING:
    from .sink import ShardResult


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

    def file_stats(self, writer: PackedFileWriter) -> DatasetStats:
        """Record and field statistics plus block sizes (computed in the same single pass)."""
        raw_sizes, stored_sizes = writer.block_sizes()
        stats = self.stats.to_stats()
        stats.blocks = block_size_stats(raw_sizes, stored_sizes)
        stats.raw_bytes = int(sum(raw_sizes))
        stats.stored_bytes = int(sum(stored_sizes))
        stats.input_bytes = self.input_bytes
        stored = stats.stored_bytes
        stats.compression_ratio = round(self.input_bytes / stored, 4) if stored else None
        stats.token_field = token_field(self.arrays())
        return stats

    def arrays(self) -> dict[str, ArrayField]:
        """Each array field's stored widths, and the widest of them that readers hand out."""
        arrays = {
            path: ArrayField(dtype=next(iter(seen)), stored=dict(sorted(seen.items())))
            for path, seen in sorted(self.array_dtypes.items())
        }
        for path, dtype in widest_dtypes(arrays).items():
            arrays[path].dtype = dtype
        return arrays

    def metadata(
        self,
        options: EncodeOptions,
        writer: PackedFileWriter,
        inputs: list[SourceSlice],
        *,
        rejected: int = 0,
        provenance: Provenance | None = None,
    ) -> FileMetadata:
        """The footer metadata of the file ``writer`` wrote."""
        user_schema = options.schema is not None
        return FileMetadata(
            format="shardpack",
            format_version=f"{FORMAT_MAJOR}.{FORMAT_MINOR}",
            created_by=f"shardpack {__version__}",
            codec=options.codec,
            block_size=options.block_size,
            shuffle=options.shuffle,
            unit_input_bytes=options.unit_bytes,
            record_count=writer.record_count,
            block_count=writer.block_count,
            max_block_raw_size=writer.max_raw_size,
            stored_bytes=writer.stored_bytes,
            input_bytes=self.input_bytes,
            arrays=self.arrays(),
            lossy=dict(sorted(self.lossy_fields.items())),
            content_hash="xxh3_128:" + self.content.hexdigest(),
            inputs=inputs,
            schema=dict(options.schema) if user_schema else self.inferred.to_schema(),  # type: ignore[arg-type]
            schema_source="user" if user_schema else "inferred",
            on_error=options.on_error,
            rejected_lines=rejected,
            stats=self.file_stats(writer),
            provenance=provenance,
        )


def build_manifest(results: list[ShardResult], provenance: Provenance) -> Manifest:
    """A sharded dataset's manifest: its shards in order (their input slices numbered by line
    from each input's start), merged schema and statistics, and the pack's provenance."""
    schema = merge_schemas([(r.entry.file, schema_of(r.metadata)) for r in results])
    input_bytes = sum(r.metadata.input_bytes for r in results)
    records = [r.entry.records for r in results]
    sizes = [r.entry.size for r in results]
    stats = merge_stats([r.metadata.stats or DatasetStats() for r in results])
    stats.records = sum(records)
    stats.shards = len(results)
    stats.input_bytes = input_bytes
    stats.stored_bytes = sum(sizes)
    stats.ratio = round(sum(sizes) / input_bytes, 4) if input_bytes else None
    stats.records_per_shard = Spread(min=min(records, default=0), max=max(records, default=0))
    stats.bytes_per_shard = Spread(min=min(sizes, default=0), max=max(sizes, default=0))
    lines_before: dict[str, int] = {}
    entries = []
    for result in results:
        numbered = []
        for piece in result.entry.inputs:
            first = lines_before.get(piece.path, 0) + 1
            if piece.start == 0:
                first = 1  # the same file given twice starts counting again
            lines_before[piece.path] = first - 1 + (piece.lines or 0)
            numbered.append(msgspec.structs.replace(piece, first_line=first))
        entries.append(msgspec.structs.replace(result.entry, inputs=numbered))
    return Manifest.create(entries, schema=schema, stats=stats, provenance=provenance)
