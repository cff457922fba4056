"""validate, unpack and head on data at URLs, against a real S3-compatible server (moto) on
loopback: a single packed file at a URL is validated (and its damage named by block), errors of
the store are named for what they are, unpack uploads to a URL, and head reads only what it
prints."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shardpack
from shardpack import DatasetPacker, ShardedPacker
from shardpack.cli.main import main
from shardpack.dataset.validate_file import validate_path
from shardpack.dataset.validate_folder import validate_any
from shardpack.storage.fetch import Fetcher

from .conftest import moto_s3

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
pytest.importorskip("boto3")

BUCKET = "checks"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, text_jsonl: Path) -> Iterator[dict[str, Any]]:
    """The bucket holding ``one.packed`` (a single file, also kept locally) and ``ds`` (a
    dataset of four shards); the boto3 client and the storage options."""
    with moto_s3(BUCKET) as (client, options):
        folder = tmp_path_factory.mktemp("remote_validate")
        local = folder / "one.packed"
        DatasetPacker().pack(text_jsonl, local)
        client.put_object(Bucket=BUCKET, Key="one.packed", Body=local.read_bytes())
        client.put_object(Bucket=BUCKET, Key="in/text.jsonl", Body=text_jsonl.read_bytes())
        ShardedPacker(storage_options=options, workers=1).pack(
            "s3://checks/in/text.jsonl", "s3://checks/ds", records_per_shard=500
        )
        yield {"client": client, "options": options, "local": local}


@pytest.fixture
def cli_s3(s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The CLI reaches the moto server as with FSSPEC_S3_ENDPOINT_URL and AWS_* set."""
    import fsspec.config

    monkeypatch.setitem(fsspec.config.conf, "s3", dict(s3["options"]))
    return s3


# -- 1. validate: a single packed file at a URL --------------------------------------------------


def test_a_single_packed_file_at_a_url_validates(s3: dict[str, Any]) -> None:
    options, local = s3["options"], s3["local"]
    expected = validate_path(local, deep=True)
    report = DatasetPacker().validate("s3://checks/one.packed", deep=True, storage_options=options)
    assert report.ok, [str(p) for p in report.problems]
    assert (report.files_checked, report.blocks_checked, report.records_checked) == (
        1,
        expected.blocks_checked,
        expected.records_checked,
    )
    shard = validate_any("s3://checks/ds/shard-00001.packed", storage_options=options)
    assert shard.ok and shard.files_checked == 1 and shard.blocks_checked > 0


def test_cli_validates_remote_files_and_a_glob_of_shards(
    cli_s3: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["validate", "s3://checks/one.packed", "s3://checks/ds/*.packed"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    assert out.count("OK s3://checks/") == 5 and "OK s3://checks/ds/shard-00003.packed" in out


def test_a_damaged_remote_file_is_named_by_its_block(s3: dict[str, Any], tmp_path: Path) -> None:
    client, options, local = s3["client"], s3["options"], s3["local"]
    data = bytearray(local.read_bytes())
    data[5000] ^= 0xFF  # inside block 0
    client.put_object(Bucket=BUCKET, Key="bad.packed", Body=bytes(data))
    (tmp_path / "bad.packed").write_bytes(bytes(data))
    expected = [str(p) for p in validate_path(tmp_path / "bad.packed").problems]
    report = validate_any("s3://checks/bad.packed", storage_options=options)
    found = [str(p) for p in report.problems]
    assert found == [
        p.replace(str(tmp_path / "bad.packed"), "s3://checks/bad.packed") for p in expected
    ]
    assert report.problems[0].block == 0 and "checksum mismatch" in found[0]
    client.put_object(Bucket=BUCKET, Key="short.packed", Body=bytes(data[:3000]))
    short = validate_any("s3://checks/short.packed", storage_options=options).problems
    assert [p.path for p in short] == ["s3://checks/short.packed"]
    assert "truncated" in short[0].message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("s3://checks/nothing.packed", "NoSuchKey"),
        ("s3://no-such-bucket/one.packed", "NoSuchBucket"),
        ("s3://no-such-bucket/ds", "NoSuchBucket"),
    ],
)
def test_a_missing_remote_file_or_bucket_is_reported_as_not_found(
    s3: dict[str, Any], url: str, reason: str
) -> None:
    report = validate_any(url, storage_options=s3["options"])
    assert [p.path for p in report.problems] == [url]
    assert report.problems[0].message.startswith("not found") and reason in str(report.problems[0])
    assert "No such file or directory" not in str(report.problems[0])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_store_is_one_error_line_not_an_internal_error(
    s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fsspec.config

    options = dict(s3["options"])
    options["endpoint_url"] = f"http://127.0.0.1:{_closed_port()}"
    options["config_kwargs"] = {"retries": {"max_attempts": 1}, "connect_timeout": 2}
    with pytest.raises(shardpack.RemoteError, match=r"s3://checks/one\.packed: cannot connect"):
        validate_any("s3://checks/one.packed", storage_options=options)
    monkeypatch.setitem(fsspec.config.conf, "s3", options)
    assert main(["validate", "s3://checks/one.packed"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("shardpack: error: s3://checks/one.packed: cannot connect")
    assert "internal error" not in err and len(err.strip().splitlines()) == 1


# -- 2. unpack to a URL --------------------------------------------------------------------------


def test_unpack_to_a_url_uploads_the_file_and_writes_nothing_local(
    cli_s3: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, local = cli_s3["client"], cli_s3["local"]
    monkeypatch.chdir(tmp_path)
    assert main(["unpack", str(local), "-o", str(tmp_path / "local.jsonl"), "-q"]) == 0
    code = main(["unpack", "s3://checks/one.packed", "-o", "s3://checks/rt/one.jsonl"])
    assert code == 0, capsys.readouterr().err
    assert "wrote 2000 records to s3://checks/rt/one.jsonl" in capsys.readouterr().err
    body = client.get_object(Bucket=BUCKET, Key="rt/one.jsonl")["Body"].read()
    assert body == (tmp_path / "local.jsonl").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.jsonl"]  # no ./s3:/ folder
    # a folder URL, or the input itself, is refused as bad usage (and nothing is written)
    assert main(["unpack", "s3://checks/one.packed", "-o", "s3://checks/rt/"]) == 2
    assert main(["unpack", "s3://checks/one.packed", "-o", "s3://checks/one.packed"]) == 2
    assert client.head_object(Bucket=BUCKET, Key="one.packed")["ContentLength"] == len(
        local.read_bytes()
    )


# -- 3. head reads only what it prints -----------------------------------------------------------


def test_head_of_a_remote_dataset_reads_only_the_first_shards_block(
    cli_s3: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text_jsonl: Path,
) -> None:
    requests: list[tuple[str, int, int | None]] = []
    submit = Fetcher.submit

    def counted(self: Fetcher, url: str, start: int, end: int | None, *args: Any) -> Any:
        requests.append((url, start, end))
        return submit(self, url, start, end, *args)

    monkeypatch.setattr(Fetcher, "submit", counted)
    client = cli_s3["client"]
    size = client.head_object(Bucket=BUCKET, Key="ds/shard-00000.packed")["ContentLength"]
    first = json.loads(text_jsonl.read_text("utf-8").splitlines()[0])
    cache = tmp_path / "cache"
    for cache_dir in (None, cache):  # no disk cache, then one (it must not fill up either)
        if cache_dir is not None:
            monkeypatch.setenv("SHARDPACK_CACHE_DIR", str(cache_dir))
        requests.clear()
        assert main(["head", "-n", "1", "s3://checks/ds"]) == 0
        assert json.loads(capsys.readouterr().out) == first
        urls = {url for url, _, _ in requests}
        assert urls <= {"s3://checks/ds/manifest.json", "s3://checks/ds/shard-00000.packed"}
        ranges = [(s, e) for url, s, e in requests if url.endswith("shard-00000.packed")]
        fetched = sum(e - s for s, e in ranges if s >= 0 and e is not None)
        assert len(ranges) <= 3 and fetched < size / 2, ranges  # header, footer, one block
    cached = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert cached < size / 2  # the disk cache holds that block (and the footer), no more


def test_a_store_that_fails_to_answer_is_an_error_not_an_invalid_file(
    s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the folder check (here skipped), a GET that cannot connect raises: no verdict."""
    from shardpack.dataset import validate_folder

    monkeypatch.setattr(validate_folder, "is_dataset", lambda *_: False)
    monkeypatch.setattr("shardpack.storage.fetch._backoff", lambda *_: 0.0)  # retries, quickly
    options = dict(s3["options"])
    options["endpoint_url"] = f"http://127.0.0.1:{_closed_port()}"
    options["config_kwargs"] = {"retries": {"max_attempts": 1}, "connect_timeout": 2}
    with pytest.raises(shardpack.RemoteError, match=r"s3://checks/one\.packed: .*connect") as got:
        validate_any("s3://checks/one.packed", storage_options=options)
    assert "unexpected keyword" not in str(got.value)


# -- a store that fails is no verdict on the data -------------------------------------------------


@pytest.fixture(scope="module")
def faulty(text_jsonl: Path) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A dataset of four shards behind the request-logging server, which can make chosen
    requests fail: the server and the storage options that reach it."""
    from .conftest import latency_s3, load_benchmark_module

    s3_latency = load_benchmark_module("s3_latency")
    with latency_s3("faulty", 0) as server:
        options = s3_latency.storage_options(server.endpoint)
        ShardedPacker(storage_options=options, workers=1).pack(
            text_jsonl, "s3://faulty/ds", records_per_shard=500
        )
        yield server, options


@pytest.mark.parametrize(
    ("method", "key"),
    [("HEAD", "shard-00001.packed"), ("GET", "manifest.json"), ("GET", "shard-00002.packed")],
)
def test_a_store_that_fails_is_a_remote_error_not_a_damaged_dataset(
    faulty: tuple[Any, dict[str, Any]], method: str, key: str
) -> None:
    """A shard's existence check or the manifest's read answered by a server error (as a
    timeout would be) used to be reported as damage: "missing shard", or a manifest that
    "cannot be read". validate has no verdict then: a RemoteError naming the object."""
    from shardpack.errors import RemoteError
    from shardpack.storage.remote_options import RemoteOptions

    from .conftest import load_benchmark_module

    server, options = faulty
    s3_latency = load_benchmark_module("s3_latency")
    remote = RemoteOptions(storage_options=options, retries=0, backoff_s=0)
    assert validate_any("s3://faulty/ds", remote=remote).ok
    fault = s3_latency.Fault(lambda r: r.method == method and r.path.endswith(key), 1000, 0, 500)
    server.inject(fault)
    try:
        with pytest.raises(RemoteError, match=key):
            validate_any("s3://faulty/ds", remote=remote)
    finally:
        fault.count = 0
    assert validate_any("s3://faulty/ds", remote=remote).ok
