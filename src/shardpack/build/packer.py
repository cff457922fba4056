"""DatasetPacker: the one orchestration entry point for packing JSONL into a packed file.

It reads inputs, splits them into work units (see ``units``), encodes units in this process or a
pool of worker processes (in order, with a bounded number in flight), writes the blocks, and
seals the file with its metadata. The CLI is a thin layer over this class.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..codecs import get_codec
from ..errors import OptionError
from ..format.metadata import FileMetadata, RecordedOptions, SourceSlice
from ..ingest.jsonl import iter_line_batches
from ..packfile.writer import PackedFileWriter
from ..storage.atomic import refuse_inputs_as_output
from ..storage.lock import output_lock
from ..storage.streams import InputDigest, open_input
from .checks import (
    check_not_empty,
    check_written,
    open_rejects,
    resolve_schema,
)
from .collector import MetadataCollector
from .incremental import find_up_to_date
from .options import (
    DEFAULT_COMPRESSION,
    ProgressCallback,
    encode_options,
    parse_size,
    resolve_workers,
)
from .parallel import encode_inputs, encode_items
from .provenance import build_provenance, parse_meta
from .units import (
    UNIT_INPUT_BYTES,
    EncodeOptions,
    Unit,
    UnitEncoder,
    split_unit_batches,
)

DICTIONARY_SAMPLE_BYTES = 4096  # zstd trains best on many small samples
DICTIONARY_TRAIN_BYTES = 8 * 1024 * 1024  # of input: the first units, whatever their size


@dataclass
class PackResult:
    """What a pack produced."""

    output_path: str
    record_count: int
    block_count: int
    input_bytes: int
    output_bytes: int
    seconds: float
    content_hash: str
    validation: Any = None
    metadata: FileMetadata | None = field(default=None, repr=False)
    rejected_count: int = 0  # input lines left out under on_error="skip"
    rejects_path: str | None = None
    up_to_date: bool = False  # nothing was done: the output already matched inputs and options

    @property
    def ratio(self) -> float:
        """Packed size over JSONL size."""
        return self.output_bytes / self.input_bytes if self.input_bytes else 0.0


class DatasetPacker:
    """Packs JSONL into shardpack's binary format (and validates packed data).

    Defaults set here apply to every ``pack`` call; each call may override them.
    """

    def __init__(
        self,
        *,
        compression: str = DEFAULT_COMPRESSION,
        level: int | None = None,
        block_size: int | str | None = None,
        dtypes: Mapping[str, str] | None = None,
        workers: int = 1,
    ) -> None:
        self.compression = compression
        self.level = level
        self.block_size = None if block_size is None else parse_size(block_size)
        self.dtypes = dict(dtypes or {})
        self.workers = workers

    def pack(
        self,
        input_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        output_path: str | os.PathLike[str],
        *,
        compression: str | None = None,
        level: int | None = None,
        block_size: int | str | None = None,
        dtypes: Mapping[str, str] | None = None,
        workers: int | None = None,
        validate: bool = False,
        progress: ProgressCallback | None = None,
        schema: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        on_error: str = "fail",
        rejects_path: str | os.PathLike[str] | None = None,
        allow_empty: bool = False,
        meta: Mapping[str, str] | Sequence[str] | None = None,
        force: bool = False,
        zstd_dictionary: bool = False,
        shuffle: bool | None = None,
    ) -> PackResult:
        """Pack one or more JSONL inputs (``-`` for stdin) into the packed file ``output_path``.

        ``schema`` (a JSON Schema or its file) rejects non-compliant records; without it a
        schema is inferred. ``on_error="skip"`` leaves bad lines out and lists them in
        ``rejects_path`` (default ``OUTPUT.rejects.jsonl``). Empty output fails unless
        ``allow_empty``. See docs/VALIDATION.md.

        ``meta`` adds user provenance (``{"teacher": "..."}`` or ``["teacher=..."]``). When the
        output exists, validates, and was built from inputs with the same sha256 and the same
        options, nothing is done (``result.up_to_date``) unless ``force``.
        ``shuffle`` stores numeric arrays as byte planes before compression (smaller, a copy
        on read); by default on for zstd, off for lz4 and none. ``zstd_dictionary`` trains a
        zstd dictionary on the first work unit and stores it in the file: better ratios for
        small blocks of repetitive text (see docs/BENCHMARKS.md).
        """
        started = time.perf_counter()
        inputs = _as_inputs(input_path)
        output = os.fspath(output_path)
        refuse_inputs_as_output(output, inputs, "output")
        options = encode_options(
            compression or self.compression,
            level=level if level is not None else self.level,
            block_size=block_size if block_size is not None else self.block_size,
            dtypes=dtypes if dtypes is not None else self.dtypes,
            shuffle=shuffle,
            schema=resolve_schema(schema),
            on_error=on_error,
        )
        n_workers = resolve_workers(workers if workers is not None else self.workers)
        UnitEncoder(options)  # fail fast on bad options, before any output exists
        if zstd_dictionary and options.codec["id"] != "zstd":
            raise OptionError("a compression dictionary needs --compression zstd")
        recorded = _recorded_options(options, allow_empty, zstd_dictionary)
        user_meta = parse_meta(meta)
        if not force:
            existing = find_up_to_date(output, inputs, recorded, options.schema, user_meta)
            if existing is not None:
                metadata, size = existing
                return PackResult(
                    output_path=output,
                    record_count=metadata.record_count,
                    block_count=metadata.block_count,
                    input_bytes=metadata.input_bytes,
                    output_bytes=size,
                    seconds=time.perf_counter() - started,
                    content_hash=metadata.content_hash,
                    metadata=metadata,
                    up_to_date=True,
                )

        collector = MetadataCollector()
        digests = {path: InputDigest() for path in inputs}
        with output_lock(output):  # trust: one pack per output; refused while held
            rejects = open_rejects(output, rejects_path, on_error, inputs)
            checked: list[Any] = []
            with PackedFileWriter(output) as writer, rejects:
                if n_workers > 1 and "-" not in inputs and not zstd_dictionary:
                    # workers read their own byte ranges of the inputs
                    encoded_units = encode_inputs(
                        inputs, options, n_workers, digests, UNIT_INPUT_BYTES
                    )
                else:
                    units: Iterator[Unit] = _iter_units(inputs, digests)
                    if zstd_dictionary:
                        units, options = _train_dictionary(units, options)
                    encoded_units = encode_items(units, options, n_workers, None)
                for encoded in encoded_units:
                    for block in encoded.blocks:
                        writer.write_block(block)
                    collector.add(encoded)
                    rejects.write(encoded.rejects)
                    if progress is not None:
                        progress(collector.input_bytes, writer.record_count)
                check_not_empty(writer.record_count, rejects.count, inputs, allow_empty)
                metadata = collector.metadata(
                    options,
                    writer,
                    [SourceSlice(path) for path in inputs],
                    rejected=rejects.count,
                    provenance=build_provenance(inputs, digests, recorded, user_meta),
                )
                hook = (
                    (lambda tmp: checked.append(check_written(tmp, output))) if validate else None
                )
                size = writer.finish(metadata, before_commit=hook)
                rejects.commit()

        result = PackResult(
            output_path=output,
            record_count=metadata.record_count,
            block_count=metadata.block_count,
            input_bytes=collector.input_bytes,
            output_bytes=size,
            seconds=time.perf_counter() - started,
            content_hash=metadata.content_hash,
            metadata=metadata,
            validation=checked[0] if checked else None,
            rejected_count=rejects.count,
            rejects_path=rejects.final_path,
        )
        return result

    def validate(
        self,
        path: str | os.PathLike[str],
        *,
        deep: bool = False,
        schema: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    ) -> Any:
        """Check a packed file; returns a ValidationReport (``.ok``, ``.problems``, counts).

        ``deep`` decodes every record (and re-checks the stored schema); ``schema`` checks the
        records against that schema instead, and implies ``deep``.
        """
        from ..dataset.validate_file import validate_path

        return validate_path(os.fspath(path), deep=deep, schema=resolve_schema(schema))


def _as_inputs(input_path: Any) -> list[str]:
    paths = [input_path] if isinstance(input_path, (str, os.PathLike)) else list(input_path)
    if not paths:
        raise OptionError("no input given")
    return [os.fspath(p) for p in paths]


def _iter_units(
    inputs: list[str], digests: Mapping[str, InputDigest] | None = None
) -> Iterator[Unit]:
    for path in inputs:
        digest = digests.get(path) if digests else None
        with open_input(path, digest) as stream:
            batches = iter_line_batches(stream, path, digest=digest)
            yield from split_unit_batches(batches, path, UNIT_INPUT_BYTES)


def _train_dictionary(
    units: Iterator[Unit], options: EncodeOptions
) -> tuple[Iterator[Unit], EncodeOptions]:
    """Train a zstd dictionary on the raw blocks of the first units (about
    DICTIONARY_TRAIN_BYTES of input, in this process, so the result does not depend on the
    worker count); returns the units again and the new options."""
    first: list[Unit] = []
    seen = 0
    for unit in units:
        first.append(unit)
        seen += sum(map(len, unit.lines))
        if seen >= DICTIONARY_TRAIN_BYTES:
            break
    if not first:
        return units, options
    raw_encoder = UnitEncoder(replace(options, codec={"id": "none"}))
    samples = [
        block.stored[i : i + DICTIONARY_SAMPLE_BYTES]
        for unit in first
        for block in raw_encoder.encode(unit).blocks
        for i in range(0, len(block.stored), DICTIONARY_SAMPLE_BYTES)
    ]
    codec = get_codec(options.codec)
    codec.train(samples)
    return itertools.chain(first, units), replace(options, codec=codec.to_dict())


def _recorded_options(
    options: EncodeOptions, allow_empty: bool, zstd_dictionary: bool
) -> RecordedOptions:
    """Every option that decides the output (the worker count never changes output)."""
    return RecordedOptions(
        codec={k: v for k, v in options.codec.items() if k != "dictionary"},
        block_size=options.block_size,
        dtypes=dict(sorted(options.dtype_overrides.items())),
        shuffle=options.shuffle,
        zstd_dictionary=zstd_dictionary,
        on_error=options.on_error,
        allow_empty=allow_empty,
        unit_input_bytes=UNIT_INPUT_BYTES,
    )
