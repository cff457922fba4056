"""The ``shardpack`` command: parse arguments, call the library, print. Nothing else.

Exit status: 0 success, 1 bad data (invalid input, damaged or failing packed files), 2 bad usage.
Errors are one line on stderr (``--debug`` shows the traceback). Progress bars appear only when
stderr is a terminal and ``CI`` is not set; ``--json`` prints machine-readable results on stdout.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from .._version import __version__
from ..codecs import available_codecs
from ..errors import OptionError, ShardpackError

EXIT_OK, EXIT_BAD_DATA, EXIT_USAGE = 0, 1, 2


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"shardpack: error: {message}", err=True)
    raise SystemExit(code)


class _Group(click.Group):
    """Turns library errors into one line on stderr and the documented exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except OptionError as exc:
            if debug:
                raise
            _fail(str(exc), EXIT_USAGE)
        except ShardpackError as exc:
            if debug:
                raise
            _fail(str(exc), EXIT_BAD_DATA)
        except BrokenPipeError:
            sys.stderr.close()  # e.g. `shardpack head ... | head -1`
            raise SystemExit(EXIT_OK) from None
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except OSError as exc:
            if debug:
                raise
            _fail(
                f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", EXIT_BAD_DATA
            )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shardpack")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def cli(debug: bool) -> None:
    """Pack JSONL datasets into fast, checked binary files, and read them back."""


def _show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def _progress_bar(label: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A callback advancing a progress bar to ``done`` units; a no-op when disabled."""
    if not enabled:
        yield lambda done: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn()]
    columns += [TransferSpeedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=True, console=_stderr_console()) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


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


@cli.command()
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
    with _progress_bar("packing", _input_size(paths), _show_progress(quiet or as_json)) as advance:
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
        _print_json(summary)
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
        summary |= {"output_bytes": one.entry.bytes, "content_hash": one.entry.content_hash}
        if as_json:
            _print_json(summary)
        elif not quiet:
            click.echo(f"packed {one.entry.records} records into {output}")
        return
    with _progress_bar("packing", _input_size(paths), _show_progress(quiet or as_json)) as advance:
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
        _print_json(summary)
    elif not quiet:
        reused = (
            f", {result.shards_reused} kept from a previous run" if result.shards_reused else ""
        )
        click.echo(
            f"packed {result.record_count} records into {summary['shards']} shards in "
            f"{result.output_path} ({result.output_bytes:,} bytes, {result.ratio:.3f} of input, "
            f"{result.seconds:.2f} s{reused})" + (", validated" if validate else "")
        )


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="DATASET...")
@click.option("--output", "-o", required=True, help="The new dataset folder (path or URL).")
@click.option("--json", "as_json", is_flag=True, help="Print the new manifest's totals as JSON.")
def merge(inputs: tuple[str, ...], output: str, as_json: bool) -> None:
    """Merge packed datasets into one dataset folder, keeping every shard byte for byte."""
    from ..dataset.merge import merge_datasets

    manifest = merge_datasets(list(inputs), output)
    totals = manifest.to_dict()["totals"]
    if as_json:
        _print_json({"output": output, **totals})
    else:
        click.echo(
            f"merged {len(inputs)} datasets into {output}: {totals['shards']} shards, "
            f"{totals['records']} records"
        )


@cli.command()
@click.argument("packed")
@click.option("--output", "-o", required=True, help="JSONL file to write ('-' for stdout).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def unpack(packed: str, output: str, quiet: bool) -> None:
    """Write the records of PACKED back out as JSONL."""
    from ..dataset.dataset import open_dataset
    from ..dataset.export import write_jsonl

    with open_dataset(packed) as ds:
        show = _show_progress(quiet) and output != "-"
        sources = [packed, *ds.paths]
        if os.path.isdir(packed):
            sources.append(os.path.join(packed, "manifest.json"))
        with _progress_bar("unpacking", len(ds), show) as advance:
            count = write_jsonl(ds, output, progress=advance, sources=sources)
    if not quiet and output != "-":
        click.echo(f"wrote {count} records to {output}", err=True)


@cli.command()
@click.argument("packed")
@click.option("--json", "as_json", is_flag=True, help="Print the full metadata as JSON.")
def info(packed: str, as_json: bool) -> None:
    """Describe PACKED: records, blocks, codec, sizes, fields."""
    from ..dataset.dataset import open_dataset
    from ..dataset.describe import describe

    with open_dataset(packed) as ds:
        facts = describe(ds)
    if as_json:
        _print_json(facts)
        return
    from .render import render_info

    render_info(facts)


@cli.command()
@click.argument("packed")
@click.option(
    "-n",
    "--records",
    "count",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="How many records to print.",
)
def head(packed: str, count: int) -> None:
    """Print the first records of PACKED as JSON lines."""
    from ..dataset.dataset import open_dataset
    from ..dataset.export import dumps_record

    with open_dataset(packed) as ds:
        for i, record in enumerate(ds):
            if i >= count:
                break
            click.echo(dumps_record(record))


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--deep",
    is_flag=True,
    help="Also decode every record, check arrays and content hash, re-check the stored schema.",
)
@click.option(
    "--schema",
    "schema_path",
    metavar="SCHEMA.json",
    help="Check every record against this JSON Schema instead (implies --deep).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate(paths: tuple[str, ...], deep: bool, schema_path: str | None, as_json: bool) -> None:
    """Check packed files or sharded datasets: header, footer, index and every block's checksum;
    for a dataset also the manifest against its shards (missing, extra, swapped or truncated
    shards are named). Exit 1 if invalid."""
    from ..dataset.locate import is_dataset
    from ..dataset.validate_file import validate_path
    from ..dataset.validate_folder import validate_dataset
    from ..ingest.schema_check import load_schema

    schema = load_schema(schema_path) if schema_path is not None else None
    reports = [
        validate_dataset(path, deep=deep)
        if is_dataset(path)
        else validate_path(path, deep=deep, schema=schema)
        for path in paths
    ]
    ok = all(report.ok for report in reports)
    if as_json:
        _print_json(reports[0].to_dict() if len(reports) == 1 else [r.to_dict() for r in reports])
    else:
        for report in reports:
            for problem in report.problems:
                click.echo(f"INVALID {problem}", err=True)
            if report.ok:
                click.echo(
                    f"OK {report.paths[0]}: {report.blocks_checked} blocks"
                    + (f", {report.records_checked} records decoded" if deep else "")
                )
    raise SystemExit(EXIT_OK if ok else EXIT_BAD_DATA)


@cli.command()
@click.argument("packed")
def schema(packed: str) -> None:
    """Print PACKED's JSON Schema (stored, or inferred from its records), ready for --schema."""
    from ..dataset.dataset import open_dataset
    from ..ingest.schema_infer import infer_schema

    with open_dataset(packed) as ds:
        stored = ds.metadata.get("schema")
        _print_json(stored if stored is not None else infer_schema(ds))


@cli.command()
@click.argument("packed")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--jsonl",
    type=click.Path(exists=True, dir_okay=False),
    help="The original JSONL: also measure json.loads / orjson.loads on it, side by side.",
)
@click.option(
    "--repeats",
    "-r",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Repeats per measurement; medians are reported.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="DataLoader worker processes for the batches/s figure.",
)
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory subprocess runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw the comparison to a PNG file.")
def bench(
    packed: str,
    batch_size: int,
    jsonl: str | None,
    repeats: int,
    workers: int,
    no_memory: bool,
    as_json: bool,
    plot: str | None,
) -> None:
    """Measure loading PACKED (and its original JSONL with --jsonl): speed, latency, memory."""
    from ..bench.loading import benchmark_loading
    from .render import render_bench

    report = benchmark_loading(
        packed,
        batch_size=batch_size,
        jsonl=jsonl,
        repeats=repeats,
        num_workers=workers,
        measure_memory=not no_memory,
    )
    if plot:
        from .render import plot_bench

        plot_bench(report.to_dict(), plot)
    if as_json:
        _print_json(report.to_dict())
    else:
        render_bench(report.to_dict())


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def diff(a: str, b: str, as_json: bool) -> None:
    """Compare two packed datasets (counts, schema, statistics, content hash).

    Exit 0 when their content is the same (codec and block size may differ), 1 when it differs.
    """
    from ..dataset.dataset import open_dataset
    from ..dataset.diff import diff_datasets

    with open_dataset(a) as left, open_dataset(b) as right:
        result = diff_datasets(left, right)
    if as_json:
        _print_json(result)
    else:
        verdict = "same content" if result["same_content"] else "content differs"
        click.echo(f"{verdict}: {a} vs {b}")
        for item in result["differences"]:
            click.echo(f"  {item['what']}: {item['a']!r} != {item['b']!r}")
    raise SystemExit(EXIT_OK if result["same_content"] else EXIT_BAD_DATA)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    try:
        cli.main(args=argv, prog_name="shardpack", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        click.echo(f"shardpack: usage error: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except click.exceptions.Abort:
        click.echo("shardpack: aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"shardpack: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return EXIT_OK
