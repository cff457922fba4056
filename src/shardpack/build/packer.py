"""The packing API: ``pack()`` in one call, and ``DatasetPacker`` / ``ShardedPacker``, the
spellings pipelines already use. All of them build one ``PackOptions`` and run the one
pipeline (``build.pipeline``); defaults given to a packer apply to each of its packs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..dataset.validate_file import ValidationReport
from ..errors import OptionError
from .inputs import InputsArg
from .options import PackOptions, ProgressCallback, load_schema_option
from .pipeline import pack as run_pack
from .pipeline import plan as run_plan
from .results import PackPlan, PackResult
from .writer import Writer


def pack(
    inputs: InputsArg | Iterable[Any],
    output: str | os.PathLike[str],
    *,
    options: PackOptions | None = None,
    progress: ProgressCallback | None = None,
    dry_run: bool = False,
    **pack_options: Any,
) -> PackResult | PackPlan:
    """Pack JSONL inputs (paths, URLs, globs, ``-`` for stdin), or records made in Python (any
    iterable of dicts: see ``Writer``), into ``output``: one packed file, or a sharded dataset
    folder with ``shard_size=`` or ``records_per_shard=``.

    Options as ``PackOptions`` (``compression``, ``level``, ``block_size``, ``dtypes``,
    ``schema``, ``on_error``, ``rejects``, ``meta``, ``workers``, ``validate``, ``force``, ...),
    spelled as people type them (``block_size="64K"``). ``dry_run`` returns the plan only.
    """
    if not _are_paths(inputs):
        if dry_run:
            raise OptionError("a dry run plans inputs read from files, not records")
        with Writer(output, options=options, **pack_options) as writer:
            writer.write_many(inputs)  # type: ignore[arg-type]
            return writer.close()
    if options is None:
        options = PackOptions.create(**pack_options)
    elif pack_options:
        options = options.replace(**pack_options)
    paths: InputsArg = inputs  # type: ignore[assignment]
    if dry_run:
        return run_plan(paths, output, options)
    return run_pack(paths, output, options, progress=progress)


def _are_paths(inputs: Any) -> bool:
    """Paths, URLs or globs (one, or a list of them), rather than records made in Python."""
    if isinstance(inputs, (str, os.PathLike)):
        return True
    if isinstance(inputs, (list, tuple)):
        return bool(inputs) and all(isinstance(item, (str, os.PathLike)) for item in inputs)
    return False


class DatasetPacker:
    """Packs JSONL into shardpack's binary format (and validates packed data).

    Defaults set here apply to every ``pack`` call; each call may override them.
    """

    def __init__(self, **defaults: Any) -> None:
        PackOptions.create(**defaults)  # fail fast on a bad default
        self.defaults = defaults

    def pack(
        self,
        input_path: InputsArg,
        output_path: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
        rejects_path: str | os.PathLike[str] | None = None,
        zstd_dictionary: bool | None = None,
        **options: Any,
    ) -> PackResult:
        """Pack one or more JSONL inputs (``-`` for stdin) into ``output_path``.

        ``schema`` (a JSON Schema or its file) rejects non-compliant records; without it a
        schema is inferred. ``on_error="skip"`` leaves bad lines out and lists them in
        ``rejects_path`` (default ``OUTPUT.rejects.jsonl``). Empty output fails unless
        ``allow_empty``. ``meta`` adds user provenance (``{"teacher": "..."}`` or
        ``["teacher=..."]``). When the output exists, validates, and was built from the same
        inputs (by sha256) with the same options, nothing is done (``result.up_to_date``)
        unless ``force``. ``shard_size`` or ``records_per_shard`` write a sharded dataset
        folder. See docs/BUILD.md and docs/VALIDATION.md.
        """
        merged = {**self.defaults, **{k: v for k, v in options.items() if v is not None}}
        if rejects_path is not None:
            merged["rejects"] = rejects_path
        if zstd_dictionary is not None:
            merged["dictionary"] = zstd_dictionary
        return run_pack(input_path, output_path, PackOptions.create(**merged), progress=progress)

    def validate(
        self,
        path: str | os.PathLike[str],
        *,
        deep: bool = False,
        schema: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> ValidationReport:
        """Check a packed file, or a sharded dataset (its folder or manifest.json, local or a
        URL) as ``shardpack validate`` does; returns a ValidationReport (``.ok``,
        ``.problems``, counts).

        ``deep`` decodes every record (and re-checks the stored schema); ``schema`` checks the
        records against that schema instead, and implies ``deep``.
        """
        # here: a folder's validation loads the remote-reading stack, which a pack never needs
        from ..dataset.validate_folder import validate_any

        return validate_any(
            os.fspath(path),
            deep=deep,
            storage_options=storage_options,
            schema=load_schema_option(schema),
        )


class ShardedPacker(DatasetPacker):
    """Packs JSONL into a sharded dataset folder (local path or fsspec URL): a ``DatasetPacker``
    whose packs take ``shard_size`` or ``records_per_shard``."""

    def pack(  # type: ignore[override]
        self,
        inputs: InputsArg,
        output: str | os.PathLike[str],
        *,
        shard_size: int | str | None = None,
        records_per_shard: int | None = None,
        progress: ProgressCallback | None = None,
        **options: Any,
    ) -> PackResult:
        """Pack ``inputs`` (paths, URLs, globs) into the dataset folder ``output``.

        ``shard_size`` is the target packed size of a shard (e.g. "512M"; shards come out close
        to it, cut at unit boundaries); ``records_per_shard`` makes every shard but the last
        hold exactly that many records. With ``resume`` (default) a re-run after an
        interruption keeps the finished shards that validate.
        """
        return super().pack(
            inputs,
            output,
            shard_size=shard_size,
            records_per_shard=records_per_shard,
            progress=progress,
            **options,
        )


ShardedPackResult = PackResult  # the earlier name of a sharded pack's result

__all__ = ["DatasetPacker", "PackResult", "ShardedPackResult", "ShardedPacker", "pack"]
