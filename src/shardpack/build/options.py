"""Pack options: one validated type for every way of packing (one file, a sharded folder, remote
URLs, local workers, Dask, Python records), and the fingerprint of what decides the bytes.

``PackOptions`` holds canonical values (sizes in bytes, a loaded schema, ``{key: value}``
metadata); ``PackOptions.create`` also takes what people type (``"64K"``, a schema file,
``["teacher=x"]``). Options that decide the output are recorded in provenance and hashed into
the fingerprint; options that only decide how a pack runs (workers, validate, force, resume,
rejects, storage options) never change a byte.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import xxhash

from .._machine import usable_cores
from ..codecs import get_codec
from ..errors import OptionError
from ..format.bounds import MAX_BLOCK_RAW_BYTES, describe_size
from ..format.layout import FORMAT_MAJOR, FORMAT_MINOR
from ..format.metadata import RecordedOptions
from ..format.records import parse_dtype_overrides
from ..ingest.rejects import ON_ERROR_CHOICES

DEFAULT_BLOCK_SIZE = 64 * 1024
# lz4 is the speed codec: half-size blocks halve what a random read decompresses (p50 52 -> 36
# µs on the KD mix) for +0.3% size there, +2.4% on short text (docs/DECISIONS.md)
DEFAULT_BLOCK_SIZES = {"lz4": 32 * 1024}
DEFAULT_COMPRESSION = "lz4"
STRING_CHOICES = ("native", "utf8")
# Small units keep a unit's working set (lines, values, payloads, blocks: ~5x the unit) in memory
# the allocator reuses: first-touching fresh pages costs up to ~3 ms per MB on a VM, which made
# a 4 MB pack 25% slower with 8 MiB units (docs/DECISIONS.md, "Work units").
UNIT_INPUT_BYTES = 1024 * 1024
# A shard is a run of whole work units, and units are cut no larger than a shard: a unit-less
# "--shard-size 1" planned one unit per input byte (420k units for a 420 KB input, minutes of
# silence). 4 KiB still allows tiny shards for tests (docs/SHARDING.md).
MIN_SHARD_SIZE = 4 * 1024

ProgressCallback = Callable[[int, int], None]  # (input bytes done, records done)


@dataclass(frozen=True)
class EncodeOptions:
    """What a worker needs to encode units: everything that decides the bytes of the blocks."""

    codec: dict[str, Any]
    block_size: int
    dtype_overrides: Mapping[str, str] = field(default_factory=dict)
    schema: Mapping[str, Any] | None = None  # a user's JSON Schema every record must meet
    on_error: str = "fail"  # "skip": a bad line becomes a Rejection instead of failing the pack
    shuffle: bool = False  # store block arenas as byte planes (BLOCK_SHUFFLED)
    unit_bytes: int = UNIT_INPUT_BYTES
    native_strings: bool = True  # non-ASCII str values as native strings (format 1.2)


@dataclass(frozen=True)
class PackOptions:
    """How to pack. Canonical values; ``create`` parses the spellings people type."""

    # -- what decides the output (recorded, fingerprinted) -------------------------------------
    compression: str = DEFAULT_COMPRESSION
    level: int | None = None
    block_size: int | None = None  # raw bytes per block; None: the codec's default
    dtypes: Mapping[str, str] = field(default_factory=dict)  # opt-in lossy: field -> dtype
    shuffle: bool | None = None  # byte-plane shuffle of arrays; None: on for zstd only
    dictionary: bool = False  # zstd: train one dictionary for the whole dataset
    # "native": non-ASCII strings stored as CPython holds them (fast to read, format 1.2);
    # "utf8": UTF-8 only, which shardpack before 1.2 reads too (for a rollout)
    strings: Literal["native", "utf8"] = "native"
    schema: Mapping[str, Any] | None = None  # a JSON Schema every record must meet
    on_error: Literal["fail", "skip"] = "fail"
    allow_empty: bool = False
    meta: Mapping[str, str] = field(default_factory=dict)  # user provenance
    shard_size: int | None = None  # packed bytes per shard: writes a sharded folder
    records_per_shard: int | None = None  # records per shard: writes a sharded folder
    unit_bytes: int = UNIT_INPUT_BYTES  # input per work unit (tests make it small)
    # -- how the pack runs (never changes a byte) ----------------------------------------------
    workers: int = 0  # worker processes; 0: all cores
    validate: bool = False  # deep-validate every file before it reaches its path
    force: bool = False  # pack even when the output is up to date
    resume: bool = True  # sharded: keep finished shards of an interrupted run
    rejects: str | None = None  # where skipped lines go (default OUTPUT.rejects.jsonl)
    storage_options: Mapping[str, Any] | None = None  # for fsspec URLs

    def __post_init__(self) -> None:
        codec = get_codec(self.compression, self.level)  # UnknownCodecError / OptionError
        object.__setattr__(self, "compression", codec.codec_id)
        parse_dtype_overrides(self.dtypes)
        if self.on_error not in ON_ERROR_CHOICES:
            raise OptionError(
                f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}, got {self.on_error!r}"
            )
        if self.on_error == "fail" and self.rejects is not None:
            raise OptionError("a rejects file only applies with on_error='skip'")
        if self.strings not in STRING_CHOICES:
            raise OptionError(
                f"strings must be one of {', '.join(STRING_CHOICES)}, got {self.strings!r}"
            )
        if self.dictionary and codec.codec_id != "zstd":
            raise OptionError("a compression dictionary needs --compression zstd")
        for name in ("block_size", "shard_size", "records_per_shard", "unit_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise OptionError(f"{name} must be a positive number, got {value!r}")
        if self.shard_size is not None and self.records_per_shard is not None:
            # records per shard promises exactly N records a shard: a size cannot cut them too
            raise OptionError("give a shard size or records per shard, not both")
        if self.shard_size is not None and self.shard_size < MIN_SHARD_SIZE:
            raise OptionError(
                f"shard size {self.shard_size} is below the minimum of "
                f"{describe_size(MIN_SHARD_SIZE)} (e.g. 64K, 512M)"
            )
        if self.block_size is not None and self.block_size > MAX_BLOCK_RAW_BYTES:  # trust: bounds
            raise OptionError(
                f"block size {self.block_size} is above the format's block cap of "
                f"{describe_size(MAX_BLOCK_RAW_BYTES)}"
            )
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise OptionError(f"workers must be >= 0 (0: all cores), got {self.workers!r}")
        if self.schema is not None:
            from ..ingest.schema_check import check_schema  # jsonschema: only when given

            object.__setattr__(self, "schema", check_schema(dict(self.schema)))
        object.__setattr__(self, "dtypes", dict(sorted(self.dtypes.items())))
        object.__setattr__(self, "meta", {str(k): str(v) for k, v in sorted(self.meta.items())})

    @classmethod
    def create(
        cls,
        *,
        block_size: int | str | None = None,
        shard_size: int | str | None = None,
        schema: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        meta: Mapping[str, str] | Sequence[str] | None = None,
        dtypes: Mapping[str, str] | None = None,
        rejects: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> PackOptions:
        """Options from what people type: sizes as ``"64K"``/``"512M"``, a schema file path,
        ``["key=value"]`` metadata. Unknown names are an OptionError, not silently ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptionError(f"unknown pack option(s): {', '.join(unknown)}")
        return cls(
            block_size=None if block_size is None else parse_size(block_size),
            shard_size=None if shard_size is None else parse_size(shard_size),
            schema=load_schema_option(schema),
            meta=parse_meta(meta),
            dtypes=dict(dtypes or {}),
            rejects=None if rejects is None else os.fspath(rejects),
            **{k: v for k, v in options.items() if v is not None or k == "level"},
        )

    def replace(self, **changes: Any) -> PackOptions:
        return dataclasses.replace(self, **changes)

    @property
    def sharded(self) -> bool:
        """Whether the output is a sharded dataset folder (else one packed file)."""
        return self.shard_size is not None or self.records_per_shard is not None

    @property
    def block_bytes(self) -> int:
        if self.block_size is not None:
            return self.block_size
        return DEFAULT_BLOCK_SIZES.get(self.compression, DEFAULT_BLOCK_SIZE)

    @property
    def byte_shuffle(self) -> bool:
        """Byte-plane shuffle is on by default for zstd only (see docs/DECISIONS.md)."""
        return self.compression == "zstd" if self.shuffle is None else self.shuffle

    def worker_count(self) -> int:
        return self.workers or usable_cores()

    def encode_options(self, codec: Mapping[str, Any] | None = None) -> EncodeOptions:
        """What workers need; ``codec`` replaces the configured one (a trained dictionary)."""
        return EncodeOptions(
            codec=dict(codec)
            if codec is not None
            else get_codec(self.compression, self.level).to_dict(),
            block_size=self.block_bytes,
            dtype_overrides=dict(self.dtypes),
            schema=self.schema,
            on_error=self.on_error,
            shuffle=self.byte_shuffle,
            unit_bytes=self.unit_bytes,
            native_strings=self.strings == "native",
        )

    def recorded(self) -> RecordedOptions:
        """The options that decide the output, as provenance records them."""
        return RecordedOptions(
            codec=get_codec(self.compression, self.level).to_dict(),
            block_size=self.block_bytes,
            dtypes=dict(self.dtypes),
            shuffle=self.byte_shuffle,
            zstd_dictionary=self.dictionary,
            strings=self.strings,
            on_error=self.on_error,
            allow_empty=self.allow_empty,
            unit_input_bytes=self.unit_bytes,
            shard_size=self.shard_size,
            records_per_shard=self.records_per_shard,
        )

    def fingerprint(self, inputs: Sequence[tuple[str, str]]) -> str:
        """What decides the output's bytes, hashed: the format version, the recorded options,
        the schema, the user metadata, and each input's ``(path, content id)``. Equal
        fingerprints mean an equal pack: "up to date" and "resume may keep a shard" both ask."""
        document = {
            "format": f"{FORMAT_MAJOR}.{FORMAT_MINOR}",
            "options": self.recorded(),
            "schema": self.schema,
            "meta": dict(self.meta),
            "inputs": [list(item) for item in inputs],
        }
        encoded = msgspec.json.encode(document, order="sorted")
        return "xxh3_128:" + xxhash.xxh3_128_hexdigest(encoded)


def parse_size(size: int | str) -> int:
    """Bytes from ``65536``, ``"64K"``, ``"64KiB"``, ``"1M"``, ``"1.5MB"`` (powers of 1024)."""
    if isinstance(size, bool):
        raise OptionError(f"not a size: {size!r}")
    if isinstance(size, int):
        value = size
    else:
        text = str(size).strip().upper().removesuffix("IB").removesuffix("B")
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
        number = text[:-1] if scale > 1 else text
        try:
            value = int(float(number) * scale)
        except ValueError:
            raise OptionError(f"not a size: {size!r} (use e.g. 65536, 64K, 1M)") from None
    if value <= 0:
        raise OptionError(f"size must be positive, got {size!r}")
    return value


def default_block_size(codec_id: str, block_size: int | str | None = None) -> int:
    """``block_size`` in bytes, or the codec's default block size when it is None."""
    if block_size is None:
        return DEFAULT_BLOCK_SIZES.get(codec_id, DEFAULT_BLOCK_SIZE)
    return parse_size(block_size)


def parse_meta(pairs: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """User metadata from ``{"k": "v"}`` or ``["k=v", ...]`` (``--meta KEY=VALUE``)."""
    if not pairs:
        return {}
    if isinstance(pairs, Mapping):
        return {str(k): str(v) for k, v in pairs.items()}
    if isinstance(pairs, str):
        pairs = [pairs]
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionError(f"--meta expects KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def load_schema_option(
    schema: Mapping[str, Any] | str | os.PathLike[str] | None,
) -> dict[str, Any] | None:
    """A JSON Schema from a dict or a file path (checked when the options are built)."""
    if schema is None or isinstance(schema, Mapping):
        return None if schema is None else dict(schema)
    from ..ingest.schema_check import load_schema  # jsonschema: only when a schema is given

    return load_schema(schema)
