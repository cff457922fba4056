"""``shardpack pack``: JSONL, Parquet or Arrow IPC in, a packed file or a sharded folder out."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..codecs import available_codecs
from ..errors import OptionError, ShardpackError
from .output import print_json, progress_bar, show_progress

# The library's messages name its options as Python spells them; here they name the flags.
_FLAG_SPELLINGS = (
    (re.compile(r"\bon_error=['\"]skip['\"]"), "--on-error skip"),
    (re.compile(r"(?<![\w./-])allow_empty(=True)?(?![\w./-])"), "--allow-empty"),
    (re.compile(r"\ba shard size or records per shard\b"), "--shard-size or --records-per-shard"),
)


@contextmanager
def _flag_spellings() -> Iterator[None]:
    """Re-raise a library error with the command's flags in its message, keeping its type (and
    so its exit status) and its traceback (``--debug``)."""
    try:
        yield
    except ShardpackError as exc:
        message = str(exc)
        for python, flag in _FLAG_SPELLINGS:
            message = python.sub(flag, message)
        if message != str(exc):
            exc.args = (message,)
        raise


def _parse_dtypes(pairs: tuple[str, ...]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        field, sep, dtype = pair.partition("=")
        if not sep or not field or not dtype:
            raise OptionError(
                f"--dtype expects FIELD=DTYPE (e.g. teacher_topk_logprobs=float16), got {pair!r}"
            )
        result[field] = dtype
    return result


def _input_size(paths: list[str]) -> int | None:
    try:
        return sum(os.path.getsize(p) for p in paths)
    except OSError:
        return None  # stdin or something unsized


@click.command()
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option(
    "--input",
    "-i",
    "extra_inputs",
    multiple=True,
    metavar="PATH",
    help="An input (same as a positional INPUT; may repeat). '-' reads stdin.",
)
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="OUT",
    help="The packed file to write (a folder with --shard-size/--records-per-shard).",
)
@click.option(
    "--compression",
    "-c",
    type=click.Choice(available_codecs(), case_sensitive=False),
    default="lz4",
    show_default=True,
    help="Block codec.",
)
@click.option("--level", type=int, default=None, help="Compression level (zstd -7..22, lz4 0..12).")
@click.option(
    "--block-size",
    default=None,
    help="Raw bytes per block before compression (e.g. 64K, 1M). Default: 32K for lz4, 64K "
    "for zstd and none.",
)
@click.option(
    "--dtype",
    "dtypes",
    multiple=True,
    metavar="FIELD=DTYPE",
    help="Lossy opt-in: store FIELD's float arrays as float16, bfloat16 or float32.",
)
@click.option(
    "--workers",
    "-j",
    type=int,
    default=0,
    show_default=True,
    help="Worker processes (0 = every core this process may use: its CPU affinity). "
    "Output is identical for any value.",
)
@click.option(
    "--shard-size",
    default=None,
    metavar="SIZE",
    help="Write a sharded dataset folder OUT with shards of about SIZE packed bytes (e.g. 512M).",
)
@click.option(
    "--records-per-shard",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Write a sharded dataset folder OUT with at most N records per shard.",
)
@click.option(
    "--dask",
    "dask_address",
    default=None,
    metavar="ADDRESS",
    help="Sharded packs: run one task per shard on the Dask scheduler at ADDRESS.",
)
@click.option(
    "--no-resume",
    is_flag=True,
    help="Sharded packs: repack every shard instead of keeping finished ones of a previous run.",
)
@click.option(
    "--validate", is_flag=True, help="Re-read and deep-validate the output before success."
)
@click.option(
    "--schema",
    "schema_path",
    metavar="SCHEMA.json",
    help="JSON Schema (2020-12) every record must meet; stored in OUT. Default: inferred.",
)
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="skip: leave bad lines out and list them in the rejects file.",
)
@click.option("--rejects", metavar="PATH", help="Rejects file (default OUT.rejects.jsonl).")
@click.option("--allow-empty", is_flag=True, help="Write OUT even when no record is left.")
@click.option(
    "--meta",
    "meta",
    multiple=True,
    metavar="KEY=VALUE",
    help="User provenance stored in OUT (e.g. teacher=..., generator=...). May repeat.",
)
@click.option(
    "--shuffle/--no-shuffle",
    default=None,
    help="Store numeric arrays as byte planes: smaller, slightly slower to read "
    "(default: on for zstd, off for lz4/none).",
)
@click.option(
    "--dictionary",
    "zstd_dictionary",
    is_flag=True,
    help="zstd only: train a dictionary on the first 8 MiB and store it in OUT.",
)
@click.option(
    "--strings",
    type=click.Choice(["native", "utf8"]),
    default="native",
    show_default=True,
    help="native: non-ASCII text stored as Python holds it, fast to read (format 1.2); utf8: "
    "readable by shardpack before 1.2 too.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Rebuild even when OUT is up to date (same input hashes and options).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the plan (inputs, units, shards, workers) and write nothing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def pack(
    inputs: tuple[str, ...],
    extra_inputs: tuple[str, ...],
    output: str,
    compression: str,
    level: int | None,
    block_size: str | None,
    dtypes: tuple[str, ...],
    workers: int,
    shard_size: str | None,
    records_per_shard: int | None,
    dask_address: str | None,
    no_resume: bool,
    validate: bool,
    schema_path: str | None,
    on_error: str,
    rejects: str | None,
    allow_empty: bool,
    meta: tuple[str, ...],
    shuffle: bool | None,
    zstd_dictionary: bool,
    strings: str,
    force: bool,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Pack JSONL files (.jsonl, .jsonl.gz, .jsonl.zst, or - for stdin), Parquet or Arrow IPC
    (Feather v2) files into OUT.

    INPUT and OUT may be fsspec URLs (s3://, gs://, ...) and INPUT may be a glob. Parquet and
    Arrow files are known by their content; their typed list columns keep their types.
    """
    from ..build.options import PackOptions
    from ..build.packer import pack as run_pack
    from ..build.results import PackPlan

    paths = list(inputs) + list(extra_inputs)
    if not paths:
        raise click.UsageError("give at least one INPUT (or --input PATH)")
    with _flag_spellings():
        options = PackOptions.create(
            compression=compression.lower(),
            level=level,
            block_size=block_size,
            dtypes=_parse_dtypes(dtypes),
            shuffle=shuffle,
            dictionary=zstd_dictionary,
            strings=strings,
            schema=schema_path,
            on_error=on_error,
            rejects=rejects,
            allow_empty=allow_empty,
            meta=list(meta),
            shard_size=shard_size,
            records_per_shard=records_per_shard,
            workers=workers,
            validate=validate,
            force=force,
            resume=not no_resume,
        )
        if dry_run:
            planned = run_pack(paths, output, options=options, dry_run=True)
            assert isinstance(planned, PackPlan)
            _print_plan(planned, as_json)
            return
        if dask_address is not None:
            from ..build.dask import pack_distributed

            result = pack_distributed(paths, output, address=dask_address, options=options)
        else:
            show = show_progress(quiet or as_json)
            with progress_bar("packing", _input_size(paths), show) as advance:
                done = run_pack(
                    paths, output, options=options, progress=lambda done, _records: advance(done)
                )
            assert not isinstance(done, PackPlan)
            result = done
    if as_json:
        print_json(result.summary())
    elif not quiet:
        _print_result(result)


def _print_result(result: Any) -> None:
    if result.up_to_date:
        click.echo(f"up to date: {result.output_path} ({result.record_count} records)")
        return
    mb_s = result.input_bytes / 1e6 / result.seconds if result.seconds else 0.0
    where = result.output_path
    if result.manifest is not None:
        reused = (
            f", {result.shards_reused} kept from a previous run" if result.shards_reused else ""
        )
        where = f"{len(result.manifest.shards)} shards in {where}"
    else:
        reused = ""
    click.echo(
        f"packed {result.record_count} records into {where} ({result.output_bytes:,} bytes, "
        f"{result.ratio:.3f} of input, {result.seconds:.2f} s, {mb_s:.0f} MB/s{reused})"
        + (", validated" if result.validation is not None else "")
    )
    if result.rejects_path is not None:
        click.echo(f"rejected {result.rejected_count} lines, listed in {result.rejects_path}")


def _print_plan(plan: Any, as_json: bool) -> None:
    if as_json:
        print_json(plan.summary())
        return
    kind = "sharded dataset" if plan.sharded else "packed file"
    click.echo(f"plan for {plan.output} ({kind}){' - up to date' if plan.up_to_date else ''}")
    for path, size, stream in plan.inputs:
        how = "read by the driver" if stream else "read by the workers"
        click.echo(f"  input {path}: {'?' if size is None else f'{size:,}'} bytes, {how}")
    click.echo(
        f"  {plan.units} units of up to {plan.unit_bytes:,} input bytes, "
        f"{plan.workers or 'Dask'} workers ({plan.engine})"
    )
    for shard in plan.shards:
        click.echo(f"  {shard.name}: {shard.units} units, {shard.input_bytes:,} input bytes")
