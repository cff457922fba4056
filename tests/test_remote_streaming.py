"""A full scan reads each shard as its one response streams in (issue #17): the first records come
before the shard has arrived, and a response that breaks or stalls midway is resumed from the
bytes received, pinned to the version the scan started with. Against a real S3-compatible server
(moto behind benchmarks/s3_latency.py on loopback, through s3fs), which can pause or cut a
response after a given number of bytes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shardpack
from shardpack.dataset.manifest import shard_name
from shardpack.errors import ObjectChangedError, RemoteError
from shardpack.storage import stall

from .conftest import (
    footer_range,
    latency_s3,
    load_benchmark_module,
    manifest_of,
    piece_bounds,
    scan_requests,
    upload_folder,
)
from .conftest import record_digest as digest
from .conftest import s3_settings as settings

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
pytest.importorskip("boto3")

s3_latency = load_benchmark_module("s3_latency")


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with latency_s3("data", 20) as srv:
        yield srv


@pytest.fixture(scope="module")
def expected(local_ds: Path) -> list[str]:
    with shardpack.open(local_ds) as ds:
        return [digest(r) for r in ds]


def whole_request_of(prefix: str, shard: int, size: int) -> Any:
    """Matches the scan's request for all of shard ``shard``."""
    path = f"/data/{prefix}/{shard_name(shard)}"
    return lambda r: r.path == path and r.range == f"bytes=0-{size - 1}"


def test_the_first_records_come_while_the_first_shard_is_still_arriving(
    server: Any, local_ds: Path, expected: list[str]
) -> None:
    """The first shard's response pauses for 3 s after a third of its bytes: the records in that
    third are read before the pause ends, and the scan then completes with every record."""
    url = upload_folder(server, local_ds, "first")
    first = manifest_of(local_ds).shards[0]
    pause_s = 3.0
    server.inject(
        s3_latency.Fault(
            whole_request_of("first", 0, first.size), 1, pause_s, after_bytes=first.size // 3
        )
    )
    with shardpack.open(url, remote=settings(server)) as ds:
        start = time.perf_counter()
        records = iter(ds)
        assert digest(next(records)) == expected[0]
        assert time.perf_counter() - start < pause_s / 2  # not after the whole shard
        seen = [expected[0]] + [digest(r) for r in records]
        assert time.perf_counter() - start >= pause_s  # the rest did wait for the pause
        stats = ds.remote_stats()
    assert seen == expected
    assert stats is not None and stats.retries == 0  # a pause shorter than the timeout
    _, footers = scan_requests(server, "first", local_ds)
    assert shard_name(0) in {r.path.rpartition("/")[2] for r in footers}  # its footer alone


@pytest.mark.parametrize("native_timeout", [True, False], ids=["asyncio.timeout", "py310"])
def test_a_response_cut_or_stalled_midway_resumes_where_it_stopped(
    server: Any,
    local_ds: Path,
    expected: list[str],
    native_timeout: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shard 1's response is cut after 100,000 bytes and shard 2's stalls for longer than the
    timeout: each is asked for again from the bytes it had received, with the ETag of the first
    response (If-Match), and the records are those of the dataset. The stall is found by a
    timeout that each chunk restarts: the whole scan takes longer than one timeout."""
    if not native_timeout:  # the Python 3.10 path: a timer that cancels the request
        monkeypatch.setattr(stall, "NATIVE_TIMEOUT", False)
    prefix = f"resume{int(native_timeout)}"
    url = upload_folder(server, local_ds, prefix)
    client = s3_latency.boto_client(server.endpoint)
    shards = manifest_of(local_ds).shards
    cut_at, stall_at = 100_000, 50_000
    server.inject(
        s3_latency.Fault(
            whole_request_of(prefix, 1, shards[1].size), 1, 0.0, after_bytes=cut_at, cut=True
        )
    )
    server.inject(
        s3_latency.Fault(whole_request_of(prefix, 2, shards[2].size), 1, 6.0, after_bytes=stall_at)
    )
    # a timeout with room for a loaded machine's answers, a stall well past it
    remote = settings(server, timeout_s=2.0, retries=1, backoff_s=0.01)
    server.reset_log()
    with shardpack.open(url, remote=remote) as ds:
        start = time.perf_counter()
        assert [digest(r) for r in ds] == expected
        elapsed = time.perf_counter() - start
        stats = ds.remote_stats()
    assert elapsed < 5.0  # the stalled response was given up after 2 s, not waited out
    assert stats is not None and stats.retries >= 2  # those two (a loaded machine may add)
    requests = [r for r in server.requests("GET", f"data/{prefix}/") if r.range]
    for shard, at in ((1, cut_at), (2, stall_at)):
        entry = shards[shard]
        tries = [r for r in requests if r.path.endswith(entry.file)]
        tries = [r for r in tries if r.range != footer_range(entry)]
        whole = [r for r in tries if r.range_start == 0]
        resumed = [r for r in tries if r.range_start != 0]
        assert len(whole) == 1 and len(resumed) == 1, tries
        assert whole[0].range == f"bytes=0-{entry.size - 1}"
        # from exactly the bytes received (all that was sent before the cut or the stall)
        assert resumed[0].range == f"bytes={at}-{shards[shard].size - 1}"
        etag = client.head_object(Bucket="data", Key=f"{prefix}/{shard_name(shard)}")["ETag"]
        assert resumed[0].if_match.strip('"') == etag.strip('"')


def test_a_shard_replaced_while_its_response_is_resumed_is_never_mixed_in(
    server: Any, local_ds: Path, expected: list[str]
) -> None:
    """Shard 0 is replaced at the moment its response is cut: the resumed request carries the
    first response's ETag, the store refuses it, and the scan stops with an error naming the
    shard after only the records of the bytes received before the cut."""
    url = upload_folder(server, local_ds, "swap")
    client = s3_latency.boto_client(server.endpoint)
    shards = manifest_of(local_ds).shards
    replacement = (local_ds / shard_name(1)).read_bytes()

    def replace() -> None:
        client.put_object(Bucket="data", Key=f"swap/{shard_name(0)}", Body=replacement)

    fault = s3_latency.Fault(
        whole_request_of("swap", 0, shards[0].size),
        1,
        0.0,
        after_bytes=shards[0].size // 2,
        cut=True,
        then=replace,
    )
    server.inject(fault)
    seen: list[str] = []
    remote = settings(server, retries=2, backoff_s=0.01)
    with (
        shardpack.open(url, remote=remote) as ds,
        pytest.raises(ObjectChangedError, match=r"shard-00000\.packed"),
    ):
        for record in ds:
            seen.append(digest(record))
    assert seen == expected[: len(seen)] and len(seen) < shards[0].records
    # the store itself refused the resumed request: it carried the first response's ETag
    [resumed] = [r for r in server.requests("GET", "data/swap/") if r.if_match]
    assert resumed.path.endswith(shard_name(0)) and resumed.status == 412


def test_a_response_that_keeps_failing_is_an_error_naming_the_shard(
    server: Any, local_ds: Path
) -> None:
    """Every try of shard 0 is cut before its first byte: after its retries the scan fails with
    a RemoteError naming the shard, instead of hanging or returning part of it."""
    url = upload_folder(server, local_ds, "broken")
    shards = manifest_of(local_ds).shards
    path = f"/data/broken/{shard_name(0)}"
    server.inject(
        s3_latency.Fault(
            lambda r: (
                r.path == path
                and bool(r.range)
                and r.range.endswith(f"-{shards[0].size - 1}")
                and not r.range.startswith(f"bytes={shards[0].footer_offset}-")
            ),
            10,
            0.0,
            after_bytes=0,
            cut=True,
        )
    )
    with shardpack.open(url, remote=settings(server, retries=2, backoff_s=0.01)) as ds:
        with pytest.raises(RemoteError, match=r"shard-00000\.packed"):
            for _ in ds:
                pass
        stats = ds.remote_stats()
    assert stats is not None and stats.retries == 2


@pytest.mark.parametrize("native", [True, False], ids=["asyncio.timeout", "py310"])
def test_the_stall_timeout_is_pushed_back_by_each_chunk(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks every 0.1 s for 0.8 s pass a 0.5 s bound; a 1.5 s gap after them does not."""
    import asyncio

    monkeypatch.setattr(stall, "NATIVE_TIMEOUT", native)

    async def stream(gaps: list[float]) -> int:
        chunks = 0
        async with stall.stall_bound(0.5) as stalled:
            for gap in gaps:
                stalled()
                await asyncio.sleep(gap)
                chunks += 1
        return chunks

    assert asyncio.run(stream([0.1] * 8)) == 8
    with pytest.raises(TimeoutError):
        asyncio.run(stream([0.1] * 3 + [1.5]))


def test_a_shard_larger_than_request_bytes_is_asked_for_in_pieces_side_by_side(
    server: Any, local_ds: Path, expected: list[str]
) -> None:
    """With ``request_bytes`` of 64 KiB each shard is asked for in pieces of equal size that tile
    it exactly, all sent before the first has arrived (the store serves them side by side); a
    piece cut midway is resumed alone, and the records are those of the dataset."""
    url = upload_folder(server, local_ds, "pieces")
    shards = manifest_of(local_ds).shards
    step = 64 << 10
    assert all(e.size > 3 * step for e in shards)
    tiles = {e.file: piece_bounds(e.size, step) for e in shards}
    path = f"/data/pieces/{shard_name(0)}"
    start, end = tiles[shard_name(0)][1]
    second = f"bytes={start}-{end - 1}"
    resumed_range = f"bytes={start + 1000}-{end - 1}"
    cut = lambda r: r.path == path and r.range == second  # noqa: E731
    server.inject(s3_latency.Fault(cut, 1, 0.5, after_bytes=1000, cut=True))
    server.reset_log()
    remote = settings(server, request_bytes=step, backoff_s=0.01)
    with shardpack.open(url, remote=remote) as ds:
        assert [digest(r) for r in ds] == expected
        stats = ds.remote_stats()
    assert stats is not None and stats.retries == 1 and stats.direct == 0
    requests = [r for r in server.requests("GET", "data/pieces/") if r.range]
    for entry in shards:
        tries = [
            r for r in requests if r.path.endswith(entry.file) and r.range != footer_range(entry)
        ]
        resumed = [r for r in tries if r.range == resumed_range and entry.file == shard_name(0)]
        pieces = sorted(
            (r.range_start, r.range_start + r.range_bytes) for r in tries if r not in resumed
        )
        assert pieces == tiles[entry.file]
        if entry.file == shard_name(0):  # the cut piece, from the byte it had reached, pinned
            assert len(resumed) == 1 and resumed[0].if_match
    # every piece of shard 0 was asked for before its cut piece was resumed: side by side
    log = [r for r in requests if r.path == path]
    resumed_at = next(i for i, r in enumerate(log) if r.range == resumed_range)
    assert len(
        [
            r
            for r in log[:resumed_at]
            if r.range in {f"bytes={a}-{b - 1}" for a, b in tiles[shard_name(0)]}
        ]
    ) == len(tiles[shard_name(0)])


def test_a_response_slower_than_the_timeout_is_not_abandoned_while_bytes_keep_coming(
    server: Any, local_ds: Path, expected: list[str]
) -> None:
    """At 0.2 MB/s each shard takes ~1.4 s to arrive, in 64 KiB pieces every ~0.33 s: a 1 s
    timeout bounds each wait, not the response, so the scan completes with no retry."""
    url = upload_folder(server, local_ds, "slow")
    assert min(e.size for e in manifest_of(local_ds).shards) > 1.0 * 200_000
    # retries for the open only: a loaded machine may take a second to start a client
    with shardpack.open(url, remote=settings(server, timeout_s=1.0, retries=2)) as ds:
        assert len(ds.files) == len(manifest_of(local_ds).shards)  # opened at full speed
        opened = ds.remote_stats()
        server.middleware.bandwidth = 200_000  # then only the scan's streams are slow
        try:
            assert [digest(r) for r in ds] == expected
        finally:
            server.middleware.bandwidth = 0
        scanned = ds.remote_stats()
    assert opened is not None and scanned is not None
    assert scanned.retries == opened.retries  # no stream abandoned
    assert scanned.requests == opened.requests + len(manifest_of(local_ds).shards)


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_a_streamed_scan_with_read_ahead_and_batches_reads_every_record(
    server: Any, tmp_path: Path, codec: str
) -> None:
    """Shards in 64 KiB pieces, scanned with ``read_ahead=True`` (zstd: blocks read and
    decompressed on a worker thread, which then drops the pieces; lz4: read on the scanning
    thread, decompressed on the native one, as no local file is there to read) and by
    ``iter_batches``: the records are the local dataset's."""
    from shardpack import ShardedPacker

    source = Path(__file__).resolve().parents[1] / "data" / "gsm8k_sample.jsonl"
    folder = tmp_path / "ds"
    ShardedPacker().pack(source, folder, compression=codec, shard_size=200_000)
    with shardpack.open(folder) as ds:
        local = [digest(r) for r in ds]
    url = upload_folder(server, folder, codec)
    remote = settings(server, request_bytes=64 << 10)
    with shardpack.open(url, remote=remote, read_ahead=True) as ds:
        assert [digest(r) for r in ds] == local
        assert [digest(r) for batch in ds.iter_batches(100) for r in batch] == local
        stats = ds.remote_stats()
    assert stats is not None and stats.direct == 0
