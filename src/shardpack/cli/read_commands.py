"""The commands that read packed data: info, head, schema, unpack, diff, merge, validate."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .output import EXIT_BAD_DATA, EXIT_OK, print_json, progress_bar, show_progress

if TYPE_CHECKING:
    from ..storage.remote_options import RemoteOptions

Command = TypeVar("Command", bound=Callable[..., Any])


class _Seconds(click.FloatRange):
    """A number of seconds > 0 (``nan`` and ``inf`` are refused too)."""

    name = "float"

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return seconds


def remote_settings(command: Command) -> Command:
    """``--timeout`` and ``--retries``: how long reading data at a URL may wait, and how often
    it tries again (``RemoteOptions.timeout_s`` and ``retries``)."""
    command = click.option(
        "--retries",
        type=click.IntRange(min=0),
        metavar="N",
        help="Data at URLs: retry a failed or timed-out request up to N times "
        "(default: $SHARDPACK_RETRIES, else 5).",
    )(command)
    return click.option(
        "--timeout",
        type=_Seconds(),
        metavar="SECONDS",
        help="Data at URLs: give up on a request that gets no answer for SECONDS "
        "(default: $SHARDPACK_TIMEOUT_S, else 30).",
    )(command)


def _remote(timeout: float | None, retries: int | None, **settings: Any) -> RemoteOptions | None:
    """The settings data at URLs is read with: the flags given, the environment or the defaults
    for the rest (None: all of them from there)."""
    given: dict[str, Any] = dict(settings)
    if timeout is not None:
        given["timeout_s"] = timeout
    if retries is not None:
        given["retries"] = retries
    if not given:
        return None
    from ..storage.remote_options import RemoteOptions

    return RemoteOptions(**given)


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="DATASET...")
@click.option("--output", "-o", required=True, help="The new dataset folder (path or URL).")
@click.option("--json", "as_json", is_flag=True, help="Print the new manifest's totals as JSON.")
@remote_settings
def merge(
    inputs: tuple[str, ...],
    output: str,
    as_json: bool,
    timeout: float | None,
    retries: int | None,
) -> None:
    """Merge packed datasets into one dataset folder, keeping every shard byte for byte."""
    from ..dataset.merge import merge_datasets

    manifest = merge_datasets(list(inputs), output, remote=_remote(timeout, retries))
    totals = manifest.to_dict()["totals"]
    if as_json:
        print_json({"output": output, **totals})
    else:
        click.echo(
            f"merged {len(inputs)} datasets into {output}: {totals['shards']} shards, "
            f"{totals['records']} records"
        )


@click.command()
@click.argument("packed")
@click.option(
    "--output",
    "-o",
    required=True,
    help="File to write: JSONL ('-' for stdout), or Parquet (.parquet, .pq) or Arrow IPC "
    "(.arrow, .feather) by its extension.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@remote_settings
def unpack(
    packed: str, output: str, quiet: bool, timeout: float | None, retries: int | None
) -> None:
    """Write the records of PACKED back out as JSONL, Parquet or Arrow IPC (to a file, or to
    a URL: written locally, then uploaded once, whole)."""
    from ..dataset.dataset import open_dataset
    from ..storage.urls import is_remote

    if output.startswith("file://"):
        output = output.removeprefix("file://")
    with open_dataset(packed, remote=_remote(timeout, retries)) as ds:
        show = show_progress(quiet) and output != "-"
        sources = [packed, *ds.paths]
        if os.path.isdir(packed):
            sources.append(os.path.join(packed, "manifest.json"))
        with progress_bar("unpacking", len(ds), show) as advance:
            if is_remote(output):
                count = _unpack_to_url(ds, output, advance, sources)
            else:
                count = _unpack_to(ds, output, advance, sources)
    if not quiet and output != "-":
        click.echo(f"wrote {count} records to {output}", err=True)


def _unpack_to(ds: Any, output: str, advance: Callable[[int], None], sources: list[str]) -> int:
    from ..dataset.export import write_jsonl

    if output != "-" and _is_table_path(output):
        from ..dataset.arrow_export import write_table_file

        return write_table_file(ds, output, progress=advance, sources=sources)
    return write_jsonl(ds, output, progress=advance, sources=sources)


def _unpack_to_url(ds: Any, output: str, advance: Callable[[int], None], sources: list[str]) -> int:
    """Write to a local temporary file, then upload it in one piece: the object appears whole
    when the upload completes, and a failed unpack leaves nothing at ``output``."""
    import tempfile

    from ..errors import OptionError
    from ..storage.failures import remote_errors
    from ..storage.urls import url_to_fs

    if output.rstrip("/") in {source.rstrip("/") for source in sources}:
        raise OptionError(f"unpack output {output} is one of the inputs; refusing to overwrite it")
    if output.endswith("/"):
        raise OptionError(f"unpack output {output} must name a file, not a folder")
    fs, path = url_to_fs(output)
    name = output.rpartition("/")[2]
    with tempfile.TemporaryDirectory(prefix="shardpack-unpack-") as folder:
        local = os.path.join(folder, name)  # the same name: its extension picks the format
        count = _unpack_to(ds, local, advance, sources)
        with remote_errors(output, "upload failed"):  # botocore's errors are not OSErrors
            fs.put_file(local, path)
    return count


def _is_table_path(output: str) -> bool:
    from ..dataset.arrow_export import is_table_path

    return is_table_path(output)


@click.command()
@click.argument("packed")
@click.option("--json", "as_json", is_flag=True, help="Print the full metadata as JSON.")
@remote_settings
def info(packed: str, as_json: bool, timeout: float | None, retries: int | None) -> None:
    """Describe PACKED: records, blocks, codec, sizes, fields."""
    from ..dataset.dataset import open_dataset
    from ..dataset.describe import describe

    with open_dataset(packed, remote=_remote(timeout, retries)) as ds:
        facts, meta = describe(ds), ds.metadata
    if as_json:
        print_json(facts)
        return
    from .render import render_info

    render_info(facts, meta)


@click.command()
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
@remote_settings
def head(packed: str, count: int, timeout: float | None, retries: int | None) -> None:
    """Print the first records of PACKED as JSON lines."""
    from ..dataset.dataset import open_dataset
    from ..dataset.export import dumps_record

    # records by index, not a scan: a scan fetches whole shards ahead (up to readahead_bytes),
    # this reads only the blocks that hold the first records (remote: the first shard's footer
    # and those blocks, one request each; nothing ahead)
    with open_dataset(packed, remote=_remote(timeout, retries, readahead_bytes=0)) as ds:
        for i in range(min(count, len(ds))):
            click.echo(dumps_record(ds[i]))


@click.command()
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
@remote_settings
def validate(
    paths: tuple[str, ...],
    deep: bool,
    schema_path: str | None,
    as_json: bool,
    timeout: float | None,
    retries: int | None,
) -> None:
    """Check packed files or sharded datasets: header, footer, index and every block's checksum;
    for a dataset also the manifest against its shards (missing, extra, swapped or truncated
    shards are named). Exit 1 if invalid."""
    from ..dataset.validate_folder import validate_any
    from ..ingest.schema_check import load_schema
    from ..storage.globs import expand_globs
    from ..storage.remote_options import resolve_remote
    from ..storage.urls import is_remote

    schema = load_schema(schema_path) if schema_path is not None else None
    remote = _remote(timeout, retries)
    if any(is_remote(path) for path in paths):  # listing a glob's matches is bounded too
        remote = resolve_remote(remote).for_urls(paths)
    # globs expand as for info and head (quoted, or a shell that left them alone): a path that
    # exists is never a pattern; one that matches nothing is bad usage, not an invalid file
    found = expand_globs(
        paths,
        (remote.storage_options or None) if remote is not None else None,
        folders=True,
        what="packed file or dataset",
    )
    reports = [validate_any(path, deep=deep, schema=schema, remote=remote) for path in found]
    ok = all(report.ok for report in reports)
    if as_json:
        print_json(reports[0].to_dict() if len(reports) == 1 else [r.to_dict() for r in reports])
    else:
        for report in reports:
            for problem in report.problems:
                click.echo(f"INVALID {problem}", err=True)
            if report.ok:
                click.echo(
                    f"OK {report.paths[0]}: {report.blocks_checked} blocks"
                    + (f", {report.records_checked} records decoded" if report.deep else "")
                )
    raise SystemExit(EXIT_OK if ok else EXIT_BAD_DATA)


@click.command()
@click.argument("packed")
@remote_settings
def schema(packed: str, timeout: float | None, retries: int | None) -> None:
    """Print PACKED's JSON Schema (stored, or inferred from its records), ready for --schema."""
    from ..dataset.dataset import open_dataset
    from ..ingest.schema_infer import infer_schema

    with open_dataset(packed, remote=_remote(timeout, retries)) as ds:
        stored = ds.metadata.schema
        print_json(stored if stored is not None else infer_schema(ds))


@click.command()
@click.argument("a")
@click.argument("b")
@click.option(
    "--verify",
    is_flag=True,
    help="Read every block of both (checksums, records hashed) instead of trusting the content "
    "hashes their files record.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@remote_settings
def diff(
    a: str, b: str, verify: bool, as_json: bool, timeout: float | None, retries: int | None
) -> None:
    """Compare two packed datasets (counts, content, schema, statistics).

    Content is compared by the content hashes the files record, without reading blocks; datasets
    split into files differently, or with --verify, by reading and hashing their records. Exit 0
    when their content is the same (codec, block size and sharding may differ), 1 when it
    differs or a block is damaged.
    """
    from ..dataset.dataset import open_dataset
    from ..dataset.diff import diff_datasets

    remote = _remote(timeout, retries)
    with open_dataset(a, remote=remote) as left, open_dataset(b, remote=remote) as right:
        result = diff_datasets(left, right, verify=verify)
    if as_json:
        print_json(result)
    else:
        verdict = "same content" if result["same_content"] else "content differs"
        click.echo(f"{verdict}: {a} vs {b} (compared {result['compared']})")
        for item in result["differences"]:
            click.echo(f"  {item['what']}: {item['a']!r} != {item['b']!r}")
    raise SystemExit(EXIT_OK if result["same_content"] else EXIT_BAD_DATA)
