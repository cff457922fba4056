"""``shardpack bench``: loading speed, latency and memory of a packed dataset beside its JSONL."""

from __future__ import annotations

import click

from .output import print_json


@click.command()
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
        print_json(report.to_dict())
    else:
        render_bench(report.to_dict())
