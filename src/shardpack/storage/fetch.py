"""Range requests to object stores: many at once, each with a timeout, retried with backoff on
transient errors, and pinned to the object version seen first, so that an object replaced while
it is read is an error (``ObjectChangedError``), never a mix of two versions.

On S3 (s3fs) each request is a ``GetObject`` with ``Range`` and ``If-Match: <ETag>`` (and the
``VersionId`` on versioned buckets) sent through s3fs's own aiobotocore client, on fsspec's event
loop; the first response tells the ETag and, for a suffix range, the object size. Other fsspec
filesystems are read with ``cat_file`` from a thread pool, pinned by ``fs.info`` at open.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ObjectChangedError, RemoteError, ShardpackError
from .failures import as_fetch_error, http_status, is_transient
from .locks import ForkSafeLock
from .remote_options import RemoteOptions
from .stall import stall_bound
from .urls import reason_of, url_to_fs

if TYPE_CHECKING:
    import asyncio

MAX_BACKOFF_S = 10.0
STREAM_CHUNK = 1 << 20  # most bytes of a streamed response handed over at once


class ObjectPin:
    """The version of one remote object a reader committed to: its ETag (and VersionId on a
    versioned bucket), set by the first response and checked against every later one."""

    def __init__(self, url: str, etag: str | None = None, version_id: str | None = None) -> None:
        self.url = url
        self.etag = etag
        self.version_id = version_id
        self.size: int | None = None
        self._lock = ForkSafeLock()

    @property
    def token(self) -> str:
        """What identifies this version in cache keys."""
        return f"{self.etag or ''}|{self.version_id or ''}"

    def observe(self, etag: str | None, version_id: str | None, size: int | None) -> None:
        with self._lock:
            if etag and self.etag and etag != self.etag:
                raise ObjectChangedError(
                    f"changed while being read (ETag {self.etag} at open, now {etag}): "
                    "reopen the dataset",
                    path=self.url,
                )
            if version_id in ("null", ""):
                version_id = None
            self.etag = self.etag or etag
            self.version_id = self.version_id or version_id
            if size is not None:
                self.size = size


class StreamSink(Protocol):
    """Where a streamed range goes (``Fetcher.stream``): bytes ``[start, end)`` of ``url``, an
    object of ``size`` bytes, written in order; ``received`` of them so far (a retry resumes
    there)."""

    url: str
    start: int
    end: int
    size: int
    pin: ObjectPin
    received: int

    def responded(self) -> None:
        """The first response has arrived: ``pin`` holds its version."""

    def write(self, chunk: bytes) -> None:
        """The next ``len(chunk)`` bytes, from ``received`` on."""


class FetchStats:
    """Requests and bytes, counted as responses arrive (thread-safe)."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.retries = 0
        self._lock = ForkSafeLock()

    def count(self, nbytes: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += nbytes

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1


class Fetcher:
    """Issues range requests for the remote sources of one dataset in one process.

    ``start < 0`` asks for the last ``-start`` bytes (the object size comes with them on S3).
    At most ``options.concurrency`` requests are in flight; every other one waits its turn.
    """

    def __init__(self, options: RemoteOptions) -> None:
        self.options = options
        self.stats = FetchStats()
        self._pid = os.getpid()
        self._filesystems: dict[str, tuple[Any, str, bool]] = {}
        self._semaphore: asyncio.Semaphore | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = ForkSafeLock()

    def _check_process(self) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: nothing of the parent's I/O
            self._pid = os.getpid()
            self._filesystems, self._semaphore, self._pool = {}, None, None

    def filesystem(self, url: str) -> tuple[Any, str, bool]:
        """(fsspec filesystem, path inside it, whether it is S3 through s3fs), made once per
        URL and process (fsspec filesystems cannot cross a fork)."""
        self._check_process()
        known = self._filesystems.get(url)
        if known is None:
            options = dict(self.options.storage_options)
            if url.startswith(("s3://", "s3a://")):
                # aiobotocore pools 10 connections by default: let requests run side by side
                config = dict(options.get("config_kwargs") or {})
                config.setdefault("max_pool_connections", self.options.concurrency)
                options["config_kwargs"] = config
            fs, path = url_to_fs(url, options)
            known = (fs, path, hasattr(fs, "get_s3") and hasattr(fs, "split_path"))
            with self._lock:
                self._filesystems[url] = known
        return known

    def describe(self, url: str, pin: ObjectPin) -> None:
        """Pin a non-S3 object by its listing (etag, generation or mtime) and learn its size."""
        fs, path, _ = self.filesystem(url)
        try:
            info = fs.info(path)
        except FileNotFoundError as exc:
            raise RemoteError(f"not found: {reason_of(exc)}", path=url) from exc
        except OSError as exc:
            raise RemoteError(f"cannot stat: {reason_of(exc)}", path=url) from exc
        keys = ("ETag", "etag", "generation", "mtime", "LastModified")
        token = next((str(info[k]) for k in keys if k in info), None)
        pin.observe(token, None, int(info["size"]) if "size" in info else None)

    def submit(
        self,
        url: str,
        start: int,
        end: int | None,
        pin: ObjectPin,
        counter: FetchStats | None = None,
    ) -> Future[bytes]:
        """Start fetching bytes ``[start, end)`` of ``url`` (``start < 0``: the last bytes;
        ``end=None``: to the end of the object)."""
        fs, path, is_s3 = self.filesystem(url)
        if is_s3:
            import asyncio  # here: 40 ms that a local pack or read never needs

            coroutine = self._retrying_async(lambda: self._s3_get(fs, path, start, end, pin), url)
            future: Future[bytes] = asyncio.run_coroutine_threadsafe(coroutine, fs.loop)
        else:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.options.concurrency, "shardpack-fetch")
                pool = self._pool
            future = pool.submit(self._retrying_sync, fs, path, start, end, pin, url)
        return _counted(future, self.stats, counter)

    def fetch(
        self,
        url: str,
        start: int,
        end: int | None,
        pin: ObjectPin,
        counter: FetchStats | None = None,
    ) -> bytes:
        return self.submit(url, start, end, pin, counter).result()

    def read_object(self, url: str) -> bytes | None:
        """A whole (small) object in one request, e.g. a manifest; None if there is none."""
        try:
            return self.fetch(url, 0, None, ObjectPin(url))
        except RemoteError as exc:
            if isinstance(exc.__cause__, FileNotFoundError) or http_status(exc) == 404:
                return None
            raise

    def stream(self, sink: StreamSink, counter: FetchStats | None = None) -> Future[None]:
        """Start fetching ``sink``'s range (S3 only) into ``sink`` as it arrives, in one
        request: the reader can use the first bytes while the rest is on its way. A
        request that fails or stalls (no bytes for ``timeout_s``) is resumed from the bytes
        received, pinned to the version of the first response (``If-Match``); ``retries``
        counts the tries in a row that brought nothing. Cancelling the future drops the
        request."""
        import asyncio

        fs, path, is_s3 = self.filesystem(sink.url)
        if not is_s3:
            raise RemoteError("only S3 objects are streamed", path=sink.url)
        coroutine = self._s3_stream(fs, path, sink, counter)
        return asyncio.run_coroutine_threadsafe(coroutine, fs.loop)

    def fetch_many(
        self,
        url: str,
        ranges: Sequence[tuple[int, int]],
        pin: ObjectPin,
        counter: FetchStats | None = None,
    ) -> list[bytes]:
        """Several ranges of one object side by side (one round trip)."""
        futures = [self.submit(url, start, end, pin, counter) for start, end in ranges]
        return [future.result() for future in futures]

    # -- S3 ------------------------------------------------------------------------------------

    async def _s3_get(
        self, fs: Any, path: str, start: int, end: int | None, pin: ObjectPin
    ) -> bytes:
        byte_range = None
        if start < 0:
            byte_range = f"bytes=-{-start}"
        elif end is not None:
            byte_range = f"bytes={start}-{end - 1}"
        response, _ = await _s3_get_object(fs, path, byte_range, pin)
        body = response["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()
        return data

    async def _s3_stream(
        self, fs: Any, path: str, sink: StreamSink, counter: FetchStats | None
    ) -> None:
        import asyncio

        options = self.options
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(options.concurrency)
        failures = 0
        while True:
            before = sink.received
            try:
                async with self._semaphore:
                    await self._s3_stream_once(fs, path, sink, counter)
                return
            except ShardpackError:
                raise  # the object is not the one expected: retrying cannot help
            except Exception as exc:
                failures = 0 if sink.received > before else failures + 1
                if not is_transient(exc, sink.url) or failures > options.retries:
                    raise as_fetch_error(exc, sink.url) from exc
                self.stats.count_retry()
            await asyncio.sleep(_backoff(options.backoff_s, failures))

    async def _s3_stream_once(
        self, fs: Any, path: str, sink: StreamSink, counter: FetchStats | None
    ) -> None:
        """One request for ``sink``'s bytes from ``received`` on, read as they arrive; each
        wait (the response, then every chunk) bounded by ``timeout_s``."""
        url, length = sink.url, sink.end - sink.start
        byte_range = f"bytes={sink.start + sink.received}-{sink.end - 1}"
        got = 0
        async with stall_bound(self.options.timeout_s) as stalled:
            # pinned once a response came: a resumed request never gets another version
            response, size = await _s3_get_object(fs, path, byte_range, sink.pin)
            if size is None:  # no Content-Range: the whole object
                size = int(response.get("ContentLength", -1))
                sink.pin.observe(None, None, size)
            if size != sink.size:
                from ..errors import ManifestError

                raise ManifestError(
                    f"{url}: the object is {size} bytes but the manifest says {sink.size} "
                    "(shard replaced?)"
                )
            sink.responded()
            body = response["Body"]
            try:
                while sink.received < length:
                    stalled()
                    chunk = await body.read(min(STREAM_CHUNK, length - sink.received))
                    if not chunk:
                        at = sink.start + sink.received
                        raise ConnectionError(f"the response ended at byte {at}")
                    got += len(chunk)
                    sink.write(chunk)
            finally:
                body.close()
                for counts in (self.stats, counter):
                    if counts is not None:
                        counts.count(got)

    async def _retrying_async(
        self, attempt: Callable[[], Coroutine[Any, Any, bytes]], url: str
    ) -> bytes:
        import asyncio

        options = self.options
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(options.concurrency)
        for tries in range(options.retries + 1):
            try:
                async with self._semaphore:
                    return await asyncio.wait_for(attempt(), options.timeout_s)
            except Exception as exc:
                if not is_transient(exc, url) or tries == options.retries:
                    raise as_fetch_error(exc, url) from exc
                self.stats.count_retry()
            await asyncio.sleep(_backoff(options.backoff_s, tries))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- other filesystems ---------------------------------------------------------------------

    def _retrying_sync(
        self, fs: Any, path: str, start: int, end: int | None, pin: ObjectPin, url: str
    ) -> bytes:
        import time

        options = self.options
        for tries in range(options.retries + 1):
            try:
                if start < 0:
                    if pin.size is None:
                        self.describe(url, pin)
                    size = int(pin.size or 0)
                    start, end = max(0, size + start), size
                return bytes(fs.cat_file(path, start=start, end=end))
            except Exception as exc:
                if not is_transient(exc, url) or tries == options.retries:
                    raise as_fetch_error(exc, url) from exc
                self.stats.count_retry()
            time.sleep(_backoff(options.backoff_s, tries))
        raise AssertionError("unreachable")  # pragma: no cover


async def _s3_get_object(
    fs: Any, path: str, byte_range: str | None, pin: ObjectPin
) -> tuple[dict[str, Any], int | None]:
    """One ``GetObject`` through s3fs's client: of ``byte_range`` (a ``Range`` header, or None
    for all of it), of the version ``pin`` holds (``VersionId``, ``If-Match``: a replaced
    object answers 412, never new bytes). The response's version goes into ``pin``; returns the
    response and the object size its ``Content-Range`` tells (None without one)."""
    bucket, key, version = fs.split_path(path)
    await fs.set_session()
    client = await fs.get_s3(bucket)
    request: dict[str, Any] = {"Bucket": bucket, "Key": key, **fs.req_kw}
    if byte_range is not None:
        request["Range"] = byte_range
    if pin.version_id or version:
        request["VersionId"] = pin.version_id or version
    if pin.etag:
        request["IfMatch"] = pin.etag
    response = await client.get_object(**request)
    total = str(response.get("ContentRange") or "").rpartition("/")[2]
    size = int(total) if total.isdigit() else None
    pin.observe(response.get("ETag"), response.get("VersionId"), size)
    return response, size


def _counted(future: Future[bytes], *counters: FetchStats | None) -> Future[bytes]:
    def count(done: Future[bytes]) -> None:
        if not done.cancelled() and done.exception() is None:
            for counter in counters:
                if counter is not None:
                    counter.count(len(done.result()))

    future.add_done_callback(count)
    return future


def _backoff(base: float, tries: int) -> float:
    return float(min(MAX_BACKOFF_S, base * 2**tries) * (0.5 + random.random() / 2))
