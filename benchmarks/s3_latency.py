"""A real S3-compatible server (moto) on loopback with latency on every request: what the remote
tests and benchmarks read from.

A WSGI middleware in front of moto's app waits ``latency_ms`` before handling each request (every
request, data or metadata, pays it, as a round trip to S3 does), logs every request (method, key,
Range header, status) and can stall or fail the next matching requests to test timeouts and
retries. It is served by cheroot's thread pool, which keeps connections alive as S3 does (moto's
own werkzeug server closes every connection after one request; it is the fallback when cheroot
is not installed). In-process (tests): ``S3Server(latency_ms=20).start()``. As its own process
(benchmarks, so the server does not share the reader's interpreter):

    python benchmarks/s3_latency.py --port 0 --latency-ms 20   # prints the endpoint URL

``--bandwidth-mb-s N`` (``S3Server(bandwidth_mb_s=N)``) also paces each response body to N MB/s,
as S3 serves one connection at about 100 MB/s: a body then arrives over time, not at once
(moto itself builds a whole object's response before sending its first byte).

``GET /_latency/log`` returns the request counts as JSON and ``POST /_latency/reset`` clears them
(both answered by the middleware, not counted).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

CREDENTIALS = {"key": "test", "secret": "test"}


@dataclass
class Request:
    method: str
    path: str  # /bucket/key
    range: str | None  # the Range header, e.g. "bytes=0-15"
    status: int = 0
    sent: int = 0  # bytes of the response body
    if_match: str | None = None  # the If-Match header: the ETag the reader pinned

    @property
    def range_start(self) -> int | None:
        if not self.range or not self.range.startswith("bytes=") or self.range[6:7] == "-":
            return None
        return int(self.range[6:].partition("-")[0])

    @property
    def range_bytes(self) -> int | None:
        if not self.range or not self.range.startswith("bytes="):
            return None
        first, _, last = self.range[6:].partition("-")
        if not first:
            return int(last)
        return int(last) - int(first) + 1


@dataclass
class Fault:
    """Do something to the next ``count`` requests that ``match``."""

    match: Callable[[Request], bool]
    count: int
    stall_s: float = 0.0  # wait this long before answering
    status: int = 0  # answer with this HTTP status instead of moto's
    # Mid-body instead: send this many bytes of the body, then stall ``stall_s``, call ``then``
    # (e.g. replace the object), and cut the connection if ``cut``, else send the rest.
    after_bytes: int | None = None
    cut: bool = False
    then: Callable[[], None] | None = None


@dataclass
class LatencyMiddleware:
    app: Callable[..., Iterable[bytes]]
    latency_s: float
    bandwidth: float = 0.0  # bytes per second of each response body; 0: as fast as it goes
    log: list[Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_latency/"):
            return self._control(environ, path, start_response)
        time.sleep(self.latency_s)
        request = Request(environ["REQUEST_METHOD"], path, environ.get("HTTP_RANGE"))
        request.if_match = environ.get("HTTP_IF_MATCH")
        with self.lock:
            self.log.append(request)
            fault = next((f for f in self.faults if f.count > 0 and f.match(request)), None)
            if fault is not None:
                fault.count -= 1
        if fault is not None and fault.stall_s and fault.after_bytes is None:
            time.sleep(fault.stall_s)
        if fault is not None and fault.status:
            request.status = fault.status
            start_response(f"{fault.status} Injected", [("Content-Type", "application/xml")])
            code = "SlowDown" if fault.status == 503 else "InternalError"
            return [f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()]

        def recording_start_response(status: str, headers: Any, *args: Any) -> Any:
            request.status = int(status.split(" ", 1)[0])
            return start_response(status, headers, *args)

        body = self.app(environ, recording_start_response)
        if fault is not None and fault.after_bytes is not None:
            body = _mid_body(body, fault)
        if self.bandwidth:
            body = _paced(body, self.bandwidth)
        return _counting(body, request)

    def _control(
        self, environ: dict[str, Any], path: str, start_response: Callable[..., Any]
    ) -> list[bytes]:
        with self.lock:
            if path == "/_latency/reset":
                self.log.clear()
            body = json.dumps(summary(self.log)).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]


def _close(body: Iterable[bytes]) -> None:
    """Close a WSGI body that one of the wrappers below took over (PEP 3333: its ``close``)."""
    close = getattr(body, "close", None)
    if close is not None:
        close()


PACE_CHUNK = 64 * 1024


def _paced(body: Iterable[bytes], bandwidth: float) -> Iterable[bytes]:
    """``body`` in pieces of at most 64 KiB, none sent before its time at ``bandwidth``."""
    start, sent = time.perf_counter(), 0
    try:
        for chunk in body:
            for at in range(0, len(chunk), PACE_CHUNK):
                piece = chunk[at : at + PACE_CHUNK]
                wait = start + sent / bandwidth - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                sent += len(piece)
                yield piece
    finally:
        _close(body)


class CutConnection(ConnectionAbortedError):
    """Raised inside a response body to drop the connection mid-body."""


def _mid_body(body: Iterable[bytes], fault: Fault) -> Iterable[bytes]:
    left = int(fault.after_bytes or 0)
    try:
        for chunk in body:
            if 0 <= left < len(chunk):
                if left:
                    yield chunk[:left]
                time.sleep(fault.stall_s)
                if fault.then is not None:
                    fault.then()
                if fault.cut:
                    raise CutConnection("injected: connection cut mid-body")
                chunk, left = chunk[left:], -1
            elif left >= 0:
                left -= len(chunk)
            yield chunk
    finally:
        _close(body)


def _counting(body: Iterable[bytes], request: Request) -> Iterable[bytes]:
    try:
        for chunk in body:
            request.sent += len(chunk)
            yield chunk
    finally:
        _close(body)


def summary(log: Iterable[Request]) -> dict[str, Any]:
    """Counts of a request log: all requests, GETs with a Range, whole-object GETs, bytes."""
    log = list(log)
    gets = [r for r in log if r.method == "GET"]
    ranged = [r for r in gets if r.range]
    return {
        "requests": len(log),
        "range_gets": len(ranged),
        "whole_gets": len(gets) - len(ranged),
        "other": len(log) - len(gets),
        "range_bytes": sum(r.range_bytes or 0 for r in ranged),
        "bytes_sent": sum(r.sent for r in log),
    }


class S3Server:
    """moto behind ``LatencyMiddleware``, served by threads on 127.0.0.1."""

    def __init__(self, latency_ms: float = 20.0, port: int = 0, bandwidth_mb_s: float = 0) -> None:
        self.middleware = LatencyMiddleware(
            DomainDispatcherApplication(create_backend_app), latency_ms / 1000, bandwidth_mb_s * 1e6
        )
        self._port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None

    def start(self) -> S3Server:
        try:
            from cheroot import wsgi
        except ImportError:
            wsgi = None
        if wsgi is not None:
            server = wsgi.Server(("127.0.0.1", self._port), self.middleware, numthreads=64)
            server.prepare()  # binds: the port is known from here on
            self._server, self._address = server, server.bind_addr[:2]
            target = server.serve
        else:
            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
            fallback: BaseWSGIServer = make_server(
                "127.0.0.1", self._port, self.middleware, True, request_handler=MotoRequestHandler
            )
            self._server, self._address = fallback, fallback.server_address[:2]
            target = fallback.serve_forever
        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            stop = getattr(self._server, "shutdown", None) or self._server.stop
            stop()
        if self._thread is not None:
            self._thread.join()

    @property
    def endpoint(self) -> str:
        assert self._address is not None, "start() first"
        host, port = self._address
        return f"http://{host}:{port}"

    @property
    def latency_ms(self) -> float:
        return self.middleware.latency_s * 1000

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self.middleware.latency_s = value / 1000

    def requests(self, method: str | None = "GET", key_prefix: str = "") -> list[Request]:
        """Requests logged so far (of ``method``, for keys under ``/key_prefix``)."""
        with self.middleware.lock:
            return [
                r
                for r in self.middleware.log
                if (method is None or r.method == method) and r.path.startswith("/" + key_prefix)
            ]

    def reset_log(self) -> None:
        with self.middleware.lock:
            self.middleware.log.clear()

    def inject(self, fault: Fault) -> None:
        with self.middleware.lock:
            self.middleware.faults.append(fault)


def storage_options(endpoint: str) -> dict[str, Any]:
    """s3fs options for a server at ``endpoint``."""
    return {
        **CREDENTIALS,
        "endpoint_url": endpoint,
        "client_kwargs": {"region_name": "us-east-1"},
        "use_listings_cache": False,
    }


def boto_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDENTIALS["key"],
        aws_secret_access_key=CREDENTIALS["secret"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--bandwidth-mb-s", type=float, default=0.0, help="per response; 0: no cap")
    args = parser.parse_args()
    server = S3Server(args.latency_ms, args.port, args.bandwidth_mb_s).start()
    print(server.endpoint, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
        sys.exit(0)


if __name__ == "__main__":
    main()
