"""The typed documents of the format: a packed file's footer metadata, and the statistics and
provenance that a file's footer and a dataset's manifest both carry.

Decoding validates every field and names the one that is wrong (``$.stats.records``), so crafted
metadata is a FormatError, never a TypeError deep inside a reader. Unknown fields are ignored (a
newer writer may add some). New files are written as strict JSON with sorted keys, non-finite
floats as ``null``; files of format 1.0 could hold ``NaN``/``Infinity`` in statistics, which
``decode_file_metadata`` still reads (see docs/FORMAT.md).
"""

# No ``from __future__ import annotations`` here: msgspec would evaluate a hundred annotation
# strings (compile + eval) the first time a footer is decoded, 1 ms of a fresh process's first
# open (~2 ms with, ~1 ms without). Classes must therefore be defined before they are used.
import json
import warnings
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from ..errors import FormatError

Count = Annotated[int, msgspec.Meta(ge=0)]
Number = int | float  # JSON numbers: integers beyond 64 bits stay exact


# Every field is written, defaults included: msgspec's omit_defaults compares strings by
# identity, so the same value made in another process (a Dask worker) would be written
# differently, and shards must be byte-identical wherever they are packed.
class Document(msgspec.Struct, forbid_unknown_fields=False):
    """Base of the metadata structs: attribute access, ``to_dict``, and (deprecated) the
    ``doc["key"]`` access of the earlier dict-shaped metadata."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, exactly as written to the file (non-finite floats as None)."""
        return msgspec.json.decode(msgspec.json.encode(self))  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> Any:
        if key not in self.__struct_fields__:
            raise KeyError(key)
        warnings.warn(
            f"metadata[{key!r}] is deprecated: metadata is typed now, use .{key}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """Deprecated dict-style access; use the attribute."""
        if key not in self.__struct_fields__:
            return default
        value = self[key]
        return default if value is None else value


class ArrayField(Document):
    """A field holding numeric arrays: the dtype readers hand out, and how often each stored
    width occurred (a field stored narrower in some records is widened on read)."""

    dtype: str
    stored: dict[str, Count] = {}


class LengthSummary(Document):
    """Lengths (of strings, arrays, blocks) summarised: exact min/max/total, log-linear
    histogram as ``[low, high, count]`` rows, percentiles as bucket upper bounds."""

    count: Count = 0
    total: Count | None = None
    min: Count | None = None
    mean: float | None = None
    max: Count | None = None
    p50: Count | None = None
    p95: Count | None = None
    p99: Count | None = None
    histogram: list[tuple[Count, Count, Count]] | None = None


class NumberSummary(Document):
    count: Count
    min: Number | None = None
    mean: float | None = None
    max: Number | None = None


class ValueRange(Document):
    min: float | None = None
    max: float | None = None


class FieldSummary(Document):
    """What one field path (dotted; list levels transparent) held across the records."""

    present: Count
    types: dict[str, Count] = {}
    nulls: Count = 0
    string_length: LengthSummary | None = None
    number: NumberSummary | None = None
    array_length: LengthSummary | None = None
    array_dtypes: dict[str, Count] | None = None
    array_elements: Count | None = None
    array_values: ValueRange | None = None


class BlockSizes(Document):
    raw: LengthSummary
    stored: LengthSummary


class Spread(Document):
    min: Count = 0
    max: Count = 0


class DatasetStats(Document):
    """Statistics of a file or of a whole dataset (merged exactly from its shards')."""

    records: Count = 0
    fields: dict[str, FieldSummary] = {}
    blocks: BlockSizes | None = None
    raw_bytes: Count = 0
    stored_bytes: Count = 0
    input_bytes: Count = 0
    compression_ratio: float | None = None
    token_field: str | None = None
    # sharded datasets only
    shards: Count | None = None
    ratio: float | None = None
    records_per_shard: Spread | None = None
    bytes_per_shard: Spread | None = None


class GitState(Document):
    """The commit of the repository holding an input, and whether the input differs from it."""

    repository: str
    commit: str
    dirty: bool | None = None


class InputSource(Document):
    """One input of a pack: what it was, byte for byte."""

    path: str
    size: Count | None = None
    sha256: str | None = None
    lines: Count | None = None
    git: GitState | None = None
    # manifests of format 1 identified inputs by size and modification stamp
    size_at_plan: Count | None = msgspec.field(default=None, name="bytes")
    stamp: str | None = None


class SourceSlice(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Lines of one input: bytes [start, end) of its content (decompressed), starting at line
    ``first_line`` and holding ``lines`` lines; a whole input when only ``path`` is given."""

    path: str
    start: Count | None = None
    end: Count | None = None
    first_line: Count | None = None
    lines: Count | None = None  # how many lines (blank ones included) the slice holds


class RecordedOptions(Document):
    """The pack options that decide the output, as provenance records them."""

    codec: dict[str, Any] = {}
    block_size: Count | None = None
    dtypes: dict[str, str] = {}
    shuffle: bool | None = None
    zstd_dictionary: bool = False
    strings: str = "utf8"  # "native" since format 1.2 (files before it have no such key)
    on_error: str = "fail"
    allow_empty: bool = False
    unit_input_bytes: Count | None = None
    shard_size: Count | None = None
    records_per_shard: Count | None = None


class MergedSource(Document):
    """A dataset that ``merge`` took shards from."""

    path: str
    content_hash: str | None = None
    shards: Count | None = None


class Provenance(Document):
    """Where a file or dataset came from and how it was built."""

    inputs: list[InputSource] = []
    created: str | None = None
    tool: str | None = None
    format_version: str | None = None
    versions: dict[str, str] = {}
    options: RecordedOptions | None = None
    meta: dict[str, str] = {}
    fingerprint: str | dict[str, Any] | None = None  # format-1 manifests stored an object
    merged_from: list[MergedSource] | None = None


class FileMetadata(Document):
    """A packed file's footer metadata (docs/FORMAT.md, "Metadata")."""

    format: Literal["shardpack"]
    format_version: str
    created_by: str
    codec: dict[str, Any]
    block_size: Count
    record_count: Count
    block_count: Count
    max_block_raw_size: Count
    stored_bytes: Count
    input_bytes: Count
    content_hash: str
    arrays: dict[str, ArrayField] = {}
    lossy: dict[str, str] = {}
    inputs: list[SourceSlice] = []
    unit_input_bytes: Count | None = None
    shuffle: bool = False
    schema: dict[str, Any] | None = None
    schema_source: Literal["user", "inferred"] | None = None
    on_error: str = "fail"
    rejected_lines: Count = 0
    stats: DatasetStats | None = None
    provenance: Provenance | None = None


class DatasetMetadata(FileMetadata):
    """A whole dataset's metadata in the shape of one file's: a single file's own, or, for a
    sharded dataset, assembled from its manifest (``shards`` set)."""

    shards: Count | None = None


T = TypeVar("T", bound=msgspec.Struct)


def decode_document(data: bytes | memoryview, kind: type[T], where: str) -> T:
    """``data`` (JSON) as a ``kind``, or FormatError naming ``where`` and the offending field."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise FormatError(f"invalid metadata: {exc}", path=where) from None
    except RecursionError:
        raise FormatError("metadata is nested too deeply to read", path=where) from None
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec's own, or invalid UTF-8
        pass  # not strict JSON: format 1.0 wrote NaN/Infinity in statistics, json reads them
    try:
        loaded = json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FormatError(f"metadata is not valid JSON: {exc}", path=where) from None
    try:
        return msgspec.convert(loaded, kind)
    except msgspec.ValidationError as exc:
        raise FormatError(f"invalid metadata: {exc}", path=where) from None
    except RecursionError:
        raise FormatError("metadata is nested too deeply to read", path=where) from None


def decode_file_metadata(data: bytes | memoryview, where: str) -> FileMetadata:
    return decode_document(data, FileMetadata, where)


def encode_document(document: msgspec.Struct) -> bytes:
    """Strict JSON, keys sorted (the same bytes for the same content), non-finite floats null."""
    return msgspec.json.encode(document, order="sorted")


def widest_dtypes(arrays: dict[str, ArrayField]) -> dict[str, str]:
    """Fields whose arrays were stored in several widths of one kind -> the widest (by name)."""
    from .dtypes import DTYPE_BY_NAME

    targets: dict[str, str] = {}
    for path, field in arrays.items():
        stored = [DTYPE_BY_NAME[name] for name in field.stored if name in DTYPE_BY_NAME]
        if len(stored) > 1 and len({dtype.kind for dtype in stored}) == 1:
            targets[path] = max(stored, key=lambda dtype: dtype.itemsize).name
    return targets
