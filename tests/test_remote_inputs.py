"""Remote inputs and outputs on S3 (moto on loopback, through s3fs): inputs the planner reads are
hashed for provenance, sniffing an input's format reads a few bytes, storage failures are one
named line, and the lock beside a remote output survives interrupts."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardpack import DatasetPacker, ShardedPacker
from shardpack.build.inputs import resolve_inputs
from shardpack.errors import InputError, OptionError, RemoteError
from shardpack.storage import output_lock
from shardpack.storage.output_lock import lock_location

from .conftest import latency_s3, load_benchmark_module, moto_s3

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
pytest.importorskip("boto3")

s3_latency = load_benchmark_module("s3_latency")


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[Any, dict[str, Any]]]:
    with moto_s3("data") as found:
        yield found


@pytest.fixture(scope="module")
def counted() -> Iterator[Any]:
    """moto behind the request-logging middleware of benchmarks/s3_latency.py, no latency."""
    with latency_s3("data", 0) as server:
        yield server


def _lines(count: int, pad: int = 40) -> bytes:
    return b"".join(
        json.dumps({"i": i, "text": f"line {i} " + "x" * (pad + i % 17)}).encode() + b"\n"
        for i in range(count)
    )


# --- 1: inputs the planner reads are hashed, remote ones too -------------------------------


@pytest.mark.parametrize(
    ("key", "compress", "records_per_shard"),
    [("plain.jsonl", False, 700), ("zipped.jsonl.gz", True, None), ("zipped2.jsonl.gz", True, 700)],
)
def test_remote_inputs_read_by_the_planner_are_hashed_and_a_rerun_is_up_to_date(
    s3: Any, key: str, compress: bool, records_per_shard: int | None
) -> None:
    client, options = s3
    body = _lines(2000)
    stored = gzip.compress(body, mtime=0) if compress else body
    client.put_object(Bucket="data", Key=f"raw/{key}", Body=stored)
    packer = ShardedPacker(storage_options=options, workers=1)
    out = f"s3://data/ds-{key}"

    def pack() -> Any:
        if records_per_shard:
            return packer.pack(f"s3://data/raw/{key}", out, records_per_shard=records_per_shard)
        return packer.pack(f"s3://data/raw/{key}", out, shard_size="64K")

    first = pack()
    (source,) = first.manifest.provenance.inputs
    assert (source.size, source.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert source.lines == 2000
    again = pack()
    assert again.up_to_date


def test_a_remote_input_is_hashed_once_with_records_per_shard(s3: Any, monkeypatch: Any) -> None:
    """The planner reads (and hashes) it: the hashing threads leave it alone."""
    from shardpack.build import hashing

    client, options = s3
    body = _lines(500)
    client.put_object(Bucket="data", Key="raw/once.jsonl", Body=body)
    hashed: list[str] = []
    real = hashing.hash_file

    def spy(location: str, storage_options: Any = None) -> Any:
        hashed.append(location)
        return real(location, storage_options)

    monkeypatch.setattr(hashing, "hash_file", spy)
    result = ShardedPacker(storage_options=options, workers=1).pack(
        "s3://data/raw/once.jsonl", "s3://data/ds-once", records_per_shard=100
    )
    assert hashed == []
    assert result.manifest.provenance.inputs[0].sha256 == hashlib.sha256(body).hexdigest()


# --- 2: sniffing an input's format reads its first bytes only -------------------------------


def test_sniffing_a_remote_input_fetches_a_few_bytes(counted: Any) -> None:
    client = s3_latency.boto_client(counted.endpoint)
    big = _lines(40_000, pad=60)  # ~4 MiB: s3fs's default block would fetch all of it
    client.put_object(Bucket="data", Key="sniff/big.jsonl", Body=big)
    counted.reset_log()
    (file,) = resolve_inputs(
        "s3://data/sniff/big.jsonl", s3_latency.storage_options(counted.endpoint)
    )
    assert (file.size, file.stream) == (len(big), False)
    sent = sum(r.sent for r in counted.requests(None))
    assert sent < 64 << 10, [(r.method, r.range, r.sent) for r in counted.requests(None)]


def test_packing_a_remote_gzip_input_fetches_it_about_once(counted: Any, tmp_path: Path) -> None:
    client = s3_latency.boto_client(counted.endpoint)
    stored = gzip.compress(_lines(40_000, pad=60), compresslevel=1, mtime=0)
    client.put_object(Bucket="data", Key="sniff/big.jsonl.gz", Body=stored)
    counted.reset_log()
    result = DatasetPacker(storage_options=s3_latency.storage_options(counted.endpoint)).pack(
        "s3://data/sniff/big.jsonl.gz", tmp_path / "big.packed"
    )
    assert result.metadata.provenance.inputs[0].sha256 == hashlib.sha256(stored).hexdigest()
    sent = sum(r.sent for r in counted.requests(None, "data/sniff/"))
    assert sent < len(stored) + (64 << 10), (sent, len(stored))


# --- 3: storage failures are one line naming the URL ----------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["s3://bucket/raw/*.jsonl", "-o", "{tmp}/x.packed"],
        ["{input}", "-o", "s3://bucket/d.packed"],
    ],
    ids=["glob-listing", "output-lock"],
)
def test_an_unreachable_endpoint_is_a_one_line_error(
    args: list[str], tmp_path: Path, text_jsonl: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",
        }
        argv = [a.format(tmp=tmp_path, input=text_jsonl) for a in args]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "shardpack", "pack", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0], done.stderr
    assert ("s3://bucket/raw/*.jsonl" if "glob" in args[0] else "s3://bucket/") in lines[0]
    assert elapsed < 60


def test_a_missing_remote_input_says_not_found(s3: Any, tmp_path: Path) -> None:
    _, options = s3
    with pytest.raises(
        InputError, match=r"s3://data/raw/none\.jsonl: cannot open input: not found"
    ):
        DatasetPacker(storage_options=options).pack("s3://data/raw/none.jsonl", tmp_path / "x")
    with pytest.raises(InputError, match=r"s3://nobucket/a\.jsonl: .*not found \(no such bucket"):
        resolve_inputs("s3://nobucket/a.jsonl", options)


def test_a_missing_output_bucket_says_not_found(s3: Any, text_jsonl: Path) -> None:
    _, options = s3
    with pytest.raises(RemoteError, match=r"s3://nobucket/\.d\.packed\.lock: .*not found"):
        DatasetPacker(storage_options=options).pack(text_jsonl, "s3://nobucket/d.packed")


# --- 4: the remote lock survives interrupts --------------------------------------------------


def _lock_key(output: str) -> str:
    return lock_location(output).removeprefix("s3://data/")


def _exists(client: Any, key: str) -> bool:
    return "Contents" in client.list_objects_v2(Bucket="data", Prefix=key)


@pytest.mark.parametrize("when", ["read-back", "release"])
def test_an_interrupt_never_leaves_the_remote_lock_behind(
    s3: Any, text_jsonl: Path, monkeypatch: Any, when: str
) -> None:
    client, options = s3
    output = f"s3://data/locked-{when}.packed"
    reads = {"n": 0}
    real_url_to_fs = output_lock.url_to_fs

    class Interrupting:  # the lock's filesystem, one of whose reads is interrupted
        def __init__(self, fs: Any) -> None:
            self._fs = fs

        def __getattr__(self, name: str) -> Any:
            return getattr(self._fs, name)

        def cat_file(self, path: str, *args: Any, **kwargs: Any) -> Any:
            reads["n"] += 1
            # read 1: is it free; read 2: the read-back after writing; read 3: the release's
            if reads["n"] == (2 if when == "read-back" else 3):
                raise KeyboardInterrupt
            return self._fs.cat_file(path, *args, **kwargs)

    def url_to_fs(url: str, storage_options: Any = None) -> tuple[Any, str]:
        fs, path = real_url_to_fs(url, storage_options)
        return Interrupting(fs), path

    monkeypatch.setattr(output_lock, "url_to_fs", url_to_fs)
    with pytest.raises(KeyboardInterrupt):
        DatasetPacker(storage_options=options).pack(text_jsonl, output)
    assert reads["n"] >= 3  # read again after the interrupt
    assert not _exists(client, _lock_key(output))
    monkeypatch.setattr(output_lock, "url_to_fs", real_url_to_fs)
    again = DatasetPacker(storage_options=options).pack(text_jsonl, output, meta={"run": "2"})
    assert again.record_count > 0 and not _exists(client, _lock_key(output))


def test_a_remote_lock_of_a_dead_process_of_this_host_is_stale(s3: Any, text_jsonl: Path) -> None:
    client, options = s3
    output = "s3://data/stale.packed"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    holder = f"{output_lock.LOCK_PREFIX}: pid {dead.stdout.strip()} on {socket.gethostname()}"
    client.put_object(Bucket="data", Key=_lock_key(output), Body=f"{holder} since x UTC token a\n")
    assert DatasetPacker(storage_options=options).pack(text_jsonl, output).record_count > 0
    assert not _exists(client, _lock_key(output))
    # a live process's lock, or another host's, is respected
    for holder in (
        f"{output_lock.LOCK_PREFIX}: pid 1 on {socket.gethostname()}",
        f"{output_lock.LOCK_PREFIX}: pid 12345 on another-host.example",
    ):
        client.put_object(Bucket="data", Key=_lock_key(output), Body=f"{holder} since x UTC\n")
        with pytest.raises(OptionError, match="being written by another pack"):
            DatasetPacker(storage_options=options).pack(text_jsonl, output)
    client.delete_object(Bucket="data", Key=_lock_key(output))


def test_storage_failures_are_said_in_words() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from shardpack.storage.failures import as_remote_error, failure_reason

    def client_error(status: int, code: str) -> ClientError:
        response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(response, "GetObject")  # type: ignore[arg-type]

    assert failure_reason(PermissionError("Forbidden")) == "access denied"
    assert failure_reason(client_error(403, "AccessDenied")) == "access denied"
    assert failure_reason(FileNotFoundError("bucket/raw/none.jsonl")) == "not found"
    assert failure_reason(FileNotFoundError("The specified bucket does not exist")) == (
        "not found (no such bucket)"
    )
    assert failure_reason(client_error(404, "NoSuchBucket")) == "not found (no such bucket)"
    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b")
    assert (failure_reason(refused) or "").startswith("cannot connect")
    assert failure_reason(KeyError("a bug")) is None
    error = as_remote_error(PermissionError("Forbidden"), "s3://b/x", "cannot list")
    assert isinstance(error, RemoteError) and str(error) == "s3://b/x: cannot list: access denied"
