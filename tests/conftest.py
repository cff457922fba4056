"""Shared fixtures: small real and synthetic JSONL inputs, and a strict JSON comparison."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GSM8K_SAMPLE = ROOT / "data" / "gsm8k_sample.jsonl"


def load_script(path: Path, name: str) -> Any:
    """The script at ``path`` imported as module ``name`` (its folder is no package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_benchmark_module(name: str) -> Any:
    """``benchmarks/<name>.py`` imported as module ``name``."""
    return load_script(ROOT / "benchmarks" / f"{name}.py", name)


def golden_script(version: str) -> Any:
    """``tests/golden/v<version>/make_golden.py``: the records its golden files hold."""
    folder = Path(__file__).parent / "golden" / f"v{version}"
    return load_script(folder / "make_golden.py", f"make_golden_{version.replace('.', '_')}")


gen_kd_mix = load_benchmark_module("gen_kd_mix")


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def kd_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small uniform knowledge-distillation mix (about 3 MB, a few dozen distill records,
    all with the same fields)."""
    path = tmp_path_factory.mktemp("kd") / "kd_mix.jsonl"
    gen_kd_mix.generate(
        path, target_bytes=3_000_000, seed=1, top_k=8, vocab_size=32_000, mix="uniform"
    )
    return path


@pytest.fixture(scope="session")
def kd_mixed_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small mixed KD mix as the demo makes it (about 2 MB): chat and instruct records (text
    only) beside distill records (token ids, top-k ids and log-probs), optional fields."""
    path = tmp_path_factory.mktemp("kd_mixed") / "kd_mix.jsonl"
    gen_kd_mix.generate(path, target_bytes=2_000_000, seed=3, top_k=8, vocab_size=32_000)
    return path


@pytest.fixture(scope="session")
def text_jsonl() -> Path:
    return GSM8K_SAMPLE


@pytest.fixture(scope="module")
def local_ds(tmp_path_factory: pytest.TempPathFactory, kd_jsonl: Path, text_jsonl: Path) -> Path:
    """A local dataset of both inputs in shards of about 300 KB (several blocks each), for the
    remote tests to upload; packed once per module that asks for it."""
    from shardpack import ShardedPacker

    folder = tmp_path_factory.mktemp("local_ds") / "ds"
    ShardedPacker(workers=1).pack([kd_jsonl, text_jsonl], folder, shard_size="300K")
    return folder


def plain(value: Any) -> Any:
    """A decoded record with numpy arrays turned into Python lists (elements as Python scalars)."""
    if isinstance(value, np.ndarray):
        if value.dtype.itemsize == 2 and value.dtype.kind != "i":
            value = value.astype(np.float32)
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def assert_same_json(actual: Any, expected: Any, where: str = "$") -> None:
    """Strict equality: same types (int is not float, bool is not int), key order, float bits."""
    actual = plain(actual)
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: keys/order differ"
        for key in expected:
            assert_same_json(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{where}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_json(a, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        same = (math.isnan(actual) and math.isnan(expected)) or (
            actual == expected and math.copysign(1, actual) == math.copysign(1, expected)
        )
        assert same, f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def file_size_limit(nbytes: int) -> Any:
    """A subprocess ``preexec_fn`` under which writing past ``nbytes`` fails with EFBIG, as on
    a full disk (SIGXFSZ ignored, so the process sees the error instead of being killed)."""

    def limit() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return limit


@contextmanager
def latency_s3(bucket: str, latency_ms: float) -> Iterator[Any]:
    """moto behind the middleware of ``benchmarks/s3_latency.py`` (``latency_ms`` before every
    request, each one logged) holding an empty ``bucket``: its ``S3Server``."""
    s3_latency = sys.modules.get("s3_latency") or load_benchmark_module("s3_latency")
    server = s3_latency.S3Server(latency_ms=latency_ms).start()
    try:
        s3_latency.boto_client(server.endpoint).create_bucket(Bucket=bucket)
        yield server
    finally:
        server.stop()


def upload_folder(server: Any, folder: Path, prefix: str, bucket: str = "data") -> str:
    """A dataset folder's files under ``s3://<bucket>/<prefix>/`` of a ``latency_s3`` server,
    uploaded without its latency (restored after): the URL."""
    s3_latency = sys.modules.get("s3_latency") or load_benchmark_module("s3_latency")
    client = s3_latency.boto_client(server.endpoint)
    latency, server.latency_ms = server.latency_ms, 0
    try:
        for path in sorted(folder.iterdir()):
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())
    finally:
        server.latency_ms = latency
    return f"s3://{bucket}/{prefix}"


def record_digest(record: Any) -> str:
    """A record as comparable text: arrays as lists, keys sorted."""
    return json.dumps(plain(record), sort_keys=True)


def s3_settings(server: Any, **changes: Any) -> Any:
    """``RemoteOptions`` that reach a ``latency_s3`` server, with ``changes``."""
    from shardpack.storage.remote_options import RemoteOptions

    s3_latency = sys.modules.get("s3_latency") or load_benchmark_module("s3_latency")
    return RemoteOptions(storage_options=s3_latency.storage_options(server.endpoint), **changes)


def manifest_of(folder: Path) -> Any:
    from shardpack.dataset.manifest import MANIFEST_NAME, Manifest

    return Manifest.from_json((folder / MANIFEST_NAME).read_bytes())


def footer_range(entry: Any) -> str:
    """The Range header of a request for exactly the footer of a shard (its manifest entry)."""
    return f"bytes={entry.footer_offset}-{entry.size - 1}"


def piece_bounds(size: int, step: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` of each piece a scan asks for of a file of ``size`` bytes: equal
    pieces of at most ``step`` bytes, tiling it."""
    n = -(-size // step)
    return [(size * k // n, size * (k + 1) // n) for k in range(n)]


def scan_requests(server: Any, prefix: str, folder: Path) -> tuple[list[Any], list[Any]]:
    """The ranged GETs a full scan of the dataset in ``folder`` made under ``prefix``: its
    requests for whole shards, exactly one per shard, and the footer requests of the shards it
    reached before all of their bytes had arrived (it reads a shard as it streams in), at most
    one per shard, each exactly the shard's footer."""
    entries = {entry.file: entry for entry in manifest_of(folder).shards}
    ranged = [r for r in server.requests("GET", f"data/{prefix}/") if r.range]
    whole = [r for r in ranged if r.range.startswith("bytes=0-")]
    footers = [r for r in ranged if not r.range.startswith("bytes=0-")]
    name = lambda request: request.path.rpartition("/")[2]  # noqa: E731
    assert sorted(map(name, whole)) == sorted(entries)
    assert all(r.range == f"bytes=0-{entries[name(r)].size - 1}" for r in whole)
    assert len(set(map(name, footers))) == len(footers)
    for r in footers:
        entry = entries[name(r)]
        assert r.range == footer_range(entry), r
    return whole, footers


@contextmanager
def moto_s3(bucket: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A real S3-compatible server (moto) on loopback holding an empty ``bucket``: a boto3
    client of it and the fsspec storage options that reach it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        client.create_bucket(Bucket=bucket)
        options = {
            "key": "test",
            "secret": "test",
            "endpoint_url": endpoint,
            "client_kwargs": {"region_name": "us-east-1"},
            "use_listings_cache": False,
        }
        yield client, options
    finally:
        server.stop()


# Optional components the suite exercises for real; locally a missing one skips its tests, but in
# CI (CI=true, after `make test` installed every extra) a missing one fails the run instead.
REQUIRED_IN_CI = (
    "torch",
    "torchdata",
    "distributed",
    "moto.server",
    "s3fs",
    "boto3",
    "matplotlib",
    "pyarrow",
    "pandas",
    "datasets",
)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not os.environ.get("CI"):
        return
    missing = [
        name for name in REQUIRED_IN_CI if importlib.util.find_spec(name.split(".")[0]) is None
    ]
    if missing:
        raise pytest.UsageError(
            f"CI run without {', '.join(missing)}: install the extras (make venv)"
        )


def assert_a_forked_child_finishes(path: Path, expected: list[Any], **options: Any) -> None:
    """A scan with ``options`` forked after 3 records: the child (without the parent's threads)
    and the parent each read the rest, and both get ``expected``."""
    import select
    import signal
    import warnings

    import shardpack

    with shardpack.open(path, **options) as ds:
        records = iter(ds)
        first = [next(records) for _ in range(3)]
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with a thread running
            pid = os.fork()
        if pid == 0:  # the child: no worker thread here, the scan must still finish
            os.close(read)
            ok = first + list(records) == expected
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
        os.close(write)
        answered, _, _ = select.select([read], [], [], 60)
        if not answered:  # the child hangs (waiting for a thread it does not have)
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        answer = os.read(read, 1) if answered else b""
        os.close(read)
        assert answer == b"1"
        assert first + list(records) == expected
