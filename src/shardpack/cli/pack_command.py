"""``shardpack pack``: JSONL in, a packed file or a sharded dataset folder out."""

from __future__ import annotations

import os
from typing import Any

import click

from ..codecs import available_codecs
from ..errors import OptionError
from .output import print_json, progress_bar, show_progress


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
    help="Worker processes (0 = all cores). Output is identical for any value.",
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
    "--force",
    is_flag=True,
    help="Rebuild even when OUT is up to date (same input hashes and options).",
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
    force: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Pack JSONL files (.jsonl, .jsonl.gz, .jsonl.zst, or - for stdin) into OUT.

    INPUT and OUT may be fsspec URLs (s3://, gs://, ...) and INPUT may be a glob.
    """
    from ..build.packer import DatasetPacker
    from ..build.planning import expand_inputs
    from ..storage.urls import is_url

    paths = list(inputs) + list(extra_inputs)
    if not paths:
        raise click.UsageError("give at least one INPUT (or --input PATH)")
    paths = expand_inputs(paths)
    if (
        shard_size is not None
        or records_per_shard is not None
        or is_url(output)
        or any(is_url(p) for p in paths)
    ):
        unsupported = [
            flag
            for flag, used in (
                ("--schema", schema_path is not None),
                ("--on-error skip", on_error != "fail"),
                ("--rejects", rejects is not None),
                ("--allow-empty", allow_empty),
                ("--meta", bool(meta)),
                ("--dictionary", zstd_dictionary),
                ("--force", force),
            )
            if used
        ]
        if unsupported:
            raise click.UsageError(
                f"{', '.join(unsupported)}: not supported yet for sharded or remote packs "
                "(pack a single local file, or leave the option out)"
            )
        _pack_sharded(
            paths,
            output,
            shard_size=shard_size,
            records_per_shard=records_per_shard,
            resume=not no_resume,
            dask_address=dask_address,
            options={
                "compression": compression.lower(),
                "level": level,
                "block_size": block_size,
                "dtypes": _parse_dtypes(dtypes),
                "workers": workers,
                "shuffle": shuffle,
            },
            validate=validate,
            as_json=as_json,
            quiet=quiet,
        )
        return
    packer = DatasetPacker()
    with progress_bar("packing", _input_size(paths), show_progress(quiet or as_json)) as advance:
        result = packer.pack(
            paths,
            output,
            compression=compression.lower(),
            level=level,
            block_size=block_size,
            dtypes=_parse_dtypes(dtypes),
            workers=workers,
            validate=validate,
            progress=lambda done, _records: advance(done),
            schema=schema_path,
            on_error=on_error,
            rejects_path=rejects,
            allow_empty=allow_empty,
            meta=list(meta),
            force=force,
            zstd_dictionary=zstd_dictionary,
            shuffle=shuffle,
        )
    summary = {
        "output": result.output_path,
        "records": result.record_count,
        "blocks": result.block_count,
        "input_bytes": result.input_bytes,
        "output_bytes": result.output_bytes,
        "ratio": round(result.ratio, 4),
        "seconds": round(result.seconds, 3),
        "content_hash": result.content_hash,
        "validated": bool(validate),
        "rejected": result.rejected_count,
        "rejects_path": result.rejects_path,
        "up_to_date": result.up_to_date,
    }
    if as_json:
        print_json(summary)
    elif result.up_to_date:
        if not quiet:
            click.echo(f"up to date: {result.output_path} ({result.record_count} records)")
    elif not quiet:
        mb_s = result.input_bytes / 1e6 / result.seconds if result.seconds else 0.0
        click.echo(
            f"packed {result.record_count} records into {result.output_path} "
            f"({result.output_bytes:,} bytes, {result.ratio:.3f} of input, "
            f"{result.seconds:.2f} s, {mb_s:.0f} MB/s)" + (", validated" if validate else "")
        )
        if result.rejects_path is not None:
            click.echo(f"rejected {result.rejected_count} lines, listed in {result.rejects_path}")


def _pack_sharded(
    paths: list[str],
    output: str,
    *,
    shard_size: str | None,
    records_per_shard: int | None,
    resume: bool,
    dask_address: str | None,
    options: dict[str, Any],
    validate: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    from ..build.sharded import ShardedPacker, pack_file

    if dask_address is not None:
        from ..build.dask import pack_distributed

        options = {key: value for key, value in options.items() if key != "workers"}
        result = pack_distributed(
            paths,
            output,
            address=dask_address,
            shard_size=shard_size,
            records_per_shard=records_per_shard,
            resume=resume,
            validate=validate,
            **options,
        )
        _print_sharded(result, validate, as_json, quiet)
        return

    packer = ShardedPacker(**options)
    if shard_size is None and records_per_shard is None:  # URLs, one packed file
        one = pack_file(packer, paths, output)
        if validate:
            from ..dataset.validate_folder import validate_dataset

            validate_dataset(output, deep=True).raise_if_failed()
        summary = {"output": output, "records": one.entry.records, "blocks": one.entry.blocks}
        summary |= {"output_bytes": one.entry.size, "content_hash": one.entry.content_hash}
        if as_json:
            print_json(summary)
        elif not quiet:
            click.echo(f"packed {one.entry.records} records into {output}")
        return
    with progress_bar("packing", _input_size(paths), show_progress(quiet or as_json)) as advance:
        result = packer.pack(
            paths,
            output,
            shard_size=shard_size,
            records_per_shard=records_per_shard,
            resume=resume,
            validate=validate,
            progress=lambda done, _records: advance(done),
        )
    _print_sharded(result, validate, as_json, quiet)


def _print_sharded(result: Any, validate: bool, as_json: bool, quiet: bool) -> None:
    summary = {
        "output": result.output_path,
        "shards": len(result.manifest.shards),
        "shards_packed": result.shards_packed,
        "shards_reused": result.shards_reused,
        "records": result.record_count,
        "input_bytes": result.input_bytes,
        "output_bytes": result.output_bytes,
        "ratio": round(result.ratio, 4),
        "seconds": round(result.seconds, 3),
        "content_hash": result.content_hash,
        "validated": bool(validate),
    }
    if as_json:
        print_json(summary)
    elif not quiet:
        reused = (
            f", {result.shards_reused} kept from a previous run" if result.shards_reused else ""
        )
        click.echo(
            f"packed {result.record_count} records into {summary['shards']} shards in "
            f"{result.output_path} ({result.output_bytes:,} bytes, {result.ratio:.3f} of input, "
            f"{result.seconds:.2f} s{reused})" + (", validated" if validate else "")
        )
