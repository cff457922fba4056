"""``--timeout`` and ``--retries`` of the commands that read packed data at URLs, and the
``SHARDPACK_TIMEOUT_S`` / ``SHARDPACK_RETRIES`` environment variables that set the same for the
command line and the Python API alike.

Against an endpoint that accepts connections and never answers (a stalled store), every command
fails within seconds, with exit 1 and one line naming the URL, instead of after minutes of
30-second attempts; bad values are usage errors (exit 2); and a normal read with the flags still
works against a real S3-compatible server (moto), with the settings reaching every reader.
"""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import shardpack
from shardpack import DatasetPacker, ShardedPacker
from shardpack.cli.main import main
from shardpack.errors import OptionError
from shardpack.storage.fetch import Fetcher
from shardpack.storage.remote_options import RETRIES_ENV, TIMEOUT_ENV, RemoteOptions

from .conftest import moto_s3, write_jsonl

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")
pytest.importorskip("boto3")

FLAGS = ["--timeout", "0.2", "--retries", "0"]
QUICK_S = 15.0  # a stalled store fails within this: about 3 s (s3fs's own backoff between
# its tries), more on a busy machine; without the settings it takes minutes (30 s per attempt)
KILLED_AFTER_S = 45.0
COMMANDS = [  # every command that reads packed data that may be at a URL
    ["info", "s3://stalled/ds"],
    ["head", "s3://stalled/ds"],
    ["schema", "s3://stalled/ds"],
    ["validate", "s3://stalled/ds"],
    ["unpack", "s3://stalled/ds", "-o", "out.jsonl"],
    ["diff", "s3://stalled/ds", "s3://stalled/other"],
    ["merge", "s3://stalled/ds", "-o", "merged"],
]


@pytest.fixture(autouse=True)
def _no_settings_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    monkeypatch.delenv(RETRIES_ENV, raising=False)


# -- a store that never answers -------------------------------------------------------------------


class StalledEndpoint:
    """A server on loopback that accepts every connection and never answers on it."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._server.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="stalled-endpoint", daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(connection)  # held open, never read from or written to

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()
        for connection in self._held:
            connection.close()


@dataclass
class Stalled:
    args: list[str]  # after ``shardpack``
    url: str  # what the error must name
    most_connections: int  # tries: 1 (--retries 0) of shardpack's requests, 5 of s3fs's own
    env: dict[str, str] = field(default_factory=dict)  # added to the environment


ENV_ONLY = {TIMEOUT_ENV: "0.2", RETRIES_ENV: "0"}
STALLED = {
    # requests s3fs makes itself (the folder check of a file URL, a glob's listing): s3fs tries
    # each up to 5 times on its own, whatever --retries says
    "info-file": Stalled(["info", "s3://stalled/one.packed", *FLAGS], "s3://stalled/one.packed", 5),
    "validate": Stalled(
        ["validate", "s3://stalled/one.packed", *FLAGS], "s3://stalled/one.packed", 5
    ),
    "validate-glob": Stalled(
        ["validate", "s3://stalled/ds/*.packed", *FLAGS], "s3://stalled/ds/*", 5
    ),
    "merge": Stalled(
        ["merge", "s3://stalled/ds", "-o", "{tmp}/merged", *FLAGS], "s3://stalled/ds", 5
    ),
    # shardpack's own range requests (a dataset's manifest): tried once
    "head": Stalled(["head", "s3://stalled/ds", *FLAGS], "s3://stalled/ds", 1),
    "unpack": Stalled(
        ["unpack", "s3://stalled/ds", "-o", "{tmp}/x.jsonl", *FLAGS], "s3://stalled/ds", 1
    ),
    "diff": Stalled(["diff", "s3://stalled/ds", "s3://stalled/ds2", *FLAGS], "s3://stalled/ds", 1),
    # the flags win over the environment
    "schema": Stalled(
        ["schema", "s3://stalled/ds", *FLAGS],
        "s3://stalled/ds",
        1,
        {TIMEOUT_ENV: "600", RETRIES_ENV: "9"},
    ),
    # the environment alone
    "env-info-file": Stalled(
        ["info", "s3://stalled/one.packed"], "s3://stalled/one.packed", 5, ENV_ONLY
    ),
    "env-head": Stalled(["head", "s3://stalled/ds"], "s3://stalled/ds", 1, ENV_ONLY),
}

# Each run waits, once imported, until every run is ready, then times itself: the runs start
# side by side, and the time their imports take on a busy machine is not the command's.
RUN = """
import os, sys, time
import s3fs
from shardpack.cli.main import main
import shardpack
open(sys.argv[1] + ".ready", "w").close()
while not os.path.exists(os.path.join(os.path.dirname(sys.argv[1]), "go")):
    time.sleep(0.01)
started = time.monotonic()
try:
    if sys.argv[2:] == ["--python-api"]:
        shardpack.open("s3://stalled/one.packed")
    else:
        sys.exit(main(sys.argv[2:]))
finally:
    print(time.monotonic() - started)
"""


@dataclass
class Outcome:
    code: int | None  # None: still running after KILLED_AFTER_S (killed)
    stderr: str
    seconds: float  # the command's own time
    connections: int  # accepted by its stalled endpoint


@pytest.fixture(scope="module")
def stalled_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Each of STALLED (and the Python API under ENV_ONLY, ``env-api``) against an endpoint of
    its own that never answers, run side by side in fresh processes."""
    tmp = tmp_path_factory.mktemp("stalled")
    runs = {name: (run.args, {**run.env}) for name, run in STALLED.items()}
    runs["env-api"] = (["--python-api"], ENV_ONLY)
    endpoints = {name: StalledEndpoint() for name in runs}

    def run(name: str) -> Outcome:
        args, extra = runs[name]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp),
            "PYTHONDONTWRITEBYTECODE": "1",
            "FSSPEC_S3_ENDPOINT_URL": endpoints[name].url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            **extra,
        }
        argv = [str(tmp / name), *(a.format(tmp=tmp) for a in args)]
        try:
            done = subprocess.run(
                [sys.executable, "-c", RUN, *argv],
                env=env,
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=KILLED_AFTER_S,
            )
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
            return Outcome(None, err, KILLED_AFTER_S, endpoints[name].connections)
        seconds = float(done.stdout.split()[-1]) if done.stdout.strip() else -1.0
        return Outcome(done.returncode, done.stderr, seconds, endpoints[name].connections)

    try:
        with ThreadPoolExecutor(len(runs)) as pool:
            futures = {name: pool.submit(run, name) for name in runs}
            waiting = set(runs)
            while waiting:  # every run imported (or already over)
                waiting = {
                    name
                    for name in waiting
                    if not (tmp / f"{name}.ready").exists() and not futures[name].done()
                }
                time.sleep(0.02)
            (tmp / "go").touch()
            return {name: future.result() for name, future in futures.items()}
    finally:
        for endpoint in endpoints.values():
            endpoint.close()


@pytest.mark.parametrize("name", list(STALLED))
def test_a_stalled_store_fails_within_seconds_in_one_line_naming_the_url(
    stalled_runs: dict[str, Outcome], name: str
) -> None:
    outcome, expected = stalled_runs[name], STALLED[name]
    assert outcome.code is not None, f"still waiting after {KILLED_AFTER_S} s: {outcome.stderr}"
    assert outcome.code == 1, outcome.stderr
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in outcome.stderr, outcome.stderr
    assert lines[0].startswith(f"shardpack: error: {expected.url}"), lines[0]
    assert "timed out" in lines[0], lines[0]
    assert outcome.seconds < QUICK_S, (outcome.seconds, lines[0])
    assert outcome.connections <= expected.most_connections, outcome.connections


def test_the_environment_bounds_the_python_api_too(stalled_runs: dict[str, Outcome]) -> None:
    outcome = stalled_runs["env-api"]
    assert outcome.code == 1, outcome.stderr
    last = outcome.stderr.strip().splitlines()[-1]
    assert last.startswith("shardpack.errors.RemoteError: s3://stalled/one.packed: timed out")
    assert outcome.seconds < QUICK_S, (outcome.seconds, last)
    assert outcome.connections <= 5, outcome.connections


# -- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_reading_command_documents_and_checks_both_flags(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command[0], "--help"]) == 0
    out = capsys.readouterr().out
    assert "--timeout SECONDS" in out and TIMEOUT_ENV in out
    assert "--retries N" in out and RETRIES_ENV in out
    bad = [
        ("--timeout", "0"),
        ("--timeout", "-1"),
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--timeout", "soon"),
        ("--retries", "-1"),
        ("--retries", "1.5"),
    ]
    for flag, value in bad:
        assert main([*command, flag, value]) == 2, (flag, value)
        err = capsys.readouterr().err
        assert err.startswith(f"shardpack: usage error: Invalid value for '{flag}'"), err
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("name", "value"),
    [(TIMEOUT_ENV, "soon"), (TIMEOUT_ENV, "0"), (TIMEOUT_ENV, "nan"), (RETRIES_ENV, "-1")],
)
def test_a_malformed_environment_value_is_a_usage_error_naming_it(
    name: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import fsspec.config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(fsspec.config.conf, "s3", _unreachable())
    monkeypatch.setenv(name, value)
    with pytest.raises(OptionError, match=f"^{name} must be"):
        RemoteOptions()
    with pytest.raises(OptionError, match=f"^{name} must be"):
        shardpack.open("s3://stalled/ds")  # refused before any request
    for command in COMMANDS:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.startswith(f"shardpack: error: {name} must be "), err
        assert repr(value) in err and len(err.strip().splitlines()) == 1, err


def _unreachable() -> dict[str, Any]:
    """fsspec settings of an S3 endpoint where nothing listens (nothing is to reach it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"endpoint_url": f"http://127.0.0.1:{port}", "key": "test", "secret": "test"}


def test_given_settings_beat_the_environment_which_beats_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (RemoteOptions().timeout_s, RemoteOptions().retries) == (30.0, 5)
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    monkeypatch.setenv(RETRIES_ENV, " 1 ")
    assert (RemoteOptions().timeout_s, RemoteOptions().retries) == (2.5, 1)
    assert RemoteOptions(timeout_s=7.0, retries=3).timeout_s == 7.0
    given = RemoteOptions(retries=0)
    assert (given.timeout_s, given.retries) == (2.5, 0)
    monkeypatch.setenv(TIMEOUT_ENV, "9")  # a copy (a DataLoader worker's) keeps what was read
    assert pickle.loads(pickle.dumps(given)).timeout_s == 2.5


def test_s3fs_gets_the_settings_only_when_they_are_not_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    urls = ["s3://b/ds", "local/file.packed"]
    plain = RemoteOptions(storage_options={"anon": True})
    assert plain.for_urls(urls) is plain
    tight = RemoteOptions(storage_options={"anon": True}, timeout_s=2.0, retries=1)
    assert tight.for_urls(["gs://b/ds"]) is tight  # other stores: shardpack's requests only
    assert tight.for_urls(["s3://b/ds", "gs://b/ds"]) is tight
    bounded = tight.for_urls(urls).storage_options
    assert bounded == {
        "anon": True,
        "config_kwargs": {
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
            "retries": {"mode": "legacy", "total_max_attempts": 2},
        },
    }
    own = {"max_pool_connections": 4, "retries": {"mode": "standard", "max_attempts": 9}}
    mine = RemoteOptions(storage_options={"config_kwargs": own}, retries=0).for_urls(urls)
    assert mine.storage_options["config_kwargs"] == {
        "max_pool_connections": 4,
        "retries": {"mode": "standard", "total_max_attempts": 1},
    }
    assert mine.for_urls(urls) == mine
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")  # botocore's mode, as botocore finds it
    adaptive = tight.for_urls(urls).storage_options["config_kwargs"]["retries"]
    assert adaptive == {"mode": "adaptive", "total_max_attempts": 2}
    # a timeout above s3fs's own never loosens them; one between them tightens the read only
    loose = RemoteOptions(storage_options={"anon": True}, timeout_s=60.0).for_urls(urls)
    assert loose.storage_options["config_kwargs"] == {"connect_timeout": 5, "read_timeout": 15}
    middle = RemoteOptions(storage_options={"anon": True}, timeout_s=10.0).for_urls(urls)
    assert middle.storage_options["config_kwargs"] == {"connect_timeout": 5, "read_timeout": 10}


def test_retries_with_a_broken_aws_config_or_an_unknown_profile_do_not_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry mode comes from the profile the storage options name; a config file botocore
    cannot parse, or a profile it does not know, is s3fs's to report when it connects (one
    line), not an internal error while the settings are made."""
    (tmp_path / "config").write_text("[profile fast]\nretry_mode = standard\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.delenv("AWS_RETRY_MODE", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    def mode(storage_options: dict[str, Any]) -> str:
        made = RemoteOptions(storage_options=storage_options, retries=1).for_urls(["s3://b/k"])
        return str(made.storage_options["config_kwargs"]["retries"]["mode"])

    assert mode({"profile": "fast"}) == "standard" and mode({}) == "legacy"
    assert mode({"profile": "nosuch"}) == "legacy"
    (tmp_path / "config").write_text("[broken\n")
    assert mode({}) == "legacy"


# -- a store that answers ---------------------------------------------------------------------------

RECORDS = [{"id": i, "text": f"record {i}", "tokens": list(range(i % 7))} for i in range(30)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """moto holding ``one.packed`` (a single file) and ``ds`` (three shards) of RECORDS."""
    folder = tmp_path_factory.mktemp("answering")
    source = write_jsonl(folder / "records.jsonl", RECORDS)
    with moto_s3("real") as (client, options):
        DatasetPacker().pack(source, folder / "one.packed")
        client.put_object(
            Bucket="real", Key="one.packed", Body=(folder / "one.packed").read_bytes()
        )
        ShardedPacker(storage_options=options, workers=1).pack(
            source, "s3://real/ds", records_per_shard=10
        )
        yield {"options": options}


@dataclass
class Seen:
    """What the reads of a command were made with: shardpack's readers' settings, and the
    fsspec options of every S3 filesystem opened."""

    readers: list[RemoteOptions] = field(default_factory=list)
    filesystems: list[dict[str, Any]] = field(default_factory=list)

    def check(self, timeout_s: float, retries: int, readers: bool = True) -> None:
        assert self.filesystems and (self.readers or not readers), (self.filesystems, readers)
        for options in self.readers:
            assert (options.timeout_s, options.retries) == (timeout_s, retries), options
        for options in self.filesystems:  # s3fs's own requests: botocore's settings
            config = options.get("config_kwargs") or {}
            # tightened, never loosened: s3fs's own are 5 s (connect) and 15 s (read)
            assert config.get("connect_timeout") == min(timeout_s, 5)
            assert config.get("read_timeout") == min(timeout_s, 15)
            assert (config.get("retries") or {}).get("total_max_attempts") == retries + 1

    def clear(self) -> None:
        self.readers.clear()
        self.filesystems.clear()


@pytest.fixture
def seen(store: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Seen:
    """The CLI reaching moto (as with FSSPEC_S3_ENDPOINT_URL and AWS_* set), every reader and
    S3 filesystem it makes recorded."""
    import fsspec.config
    import fsspec.core

    monkeypatch.setitem(fsspec.config.conf, "s3", dict(store["options"]))
    seen = Seen()
    make_fetcher, make_fs = Fetcher.__init__, fsspec.core.url_to_fs

    def fetcher(self: Fetcher, options: RemoteOptions) -> None:
        seen.readers.append(options)
        make_fetcher(self, options)

    def filesystem(url: str, **options: Any) -> Any:
        if url.startswith("s3://"):
            seen.filesystems.append(options)
        return make_fs(url, **options)

    monkeypatch.setattr(Fetcher, "__init__", fetcher)
    monkeypatch.setattr(fsspec.core, "url_to_fs", filesystem)
    return seen


def test_a_normal_read_with_the_flags_works_and_reads_with_them(
    seen: Seen, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--timeout", "7.5", "--retries", "2"]

    def run(*args: str, readers: bool = True) -> str:
        seen.clear()
        code = main([*args, *flags])
        out, err = capsys.readouterr()
        assert code == 0 and err == "", (args, err)
        seen.check(7.5, 2, readers)
        return out

    assert json.loads(run("info", "--json", "s3://real/ds"))["records"] == len(RECORDS)
    head = run("head", "-n", "2", "s3://real/ds").splitlines()
    assert [json.loads(line) for line in head] == RECORDS[:2]
    assert json.loads(run("schema", "s3://real/one.packed"))["type"] == "object"
    out = run("validate", "s3://real/one.packed", "s3://real/ds/*.packed")
    assert out.count("OK s3://real/") == 4, out
    out = run("validate", "s3://real/ds", readers=False)  # shards read whole by s3fs
    assert out.startswith("OK s3://real/ds"), out
    assert run("diff", "s3://real/one.packed", "s3://real/ds").startswith("same content")
    unpacked = tmp_path / "back.jsonl"
    run("unpack", "s3://real/ds", "-o", str(unpacked), "-q")
    assert [json.loads(line) for line in unpacked.read_text().splitlines()] == RECORDS
    run("merge", "s3://real/ds", "s3://real/one.packed", "-o", "s3://real/merged")
    assert len(shardpack.open("s3://real/merged")) == 2 * len(RECORDS)


def test_the_environment_sets_them_for_a_normal_read_too(
    seen: Seen, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, "6.5")
    monkeypatch.setenv(RETRIES_ENV, "1")
    assert main(["head", "-n", "1", "s3://real/ds"]) == 0
    assert json.loads(capsys.readouterr().out) == RECORDS[0]
    seen.check(6.5, 1)
    seen.clear()
    with shardpack.open("s3://real/one.packed") as ds:  # the Python API
        assert ds[29] == RECORDS[29]
    seen.check(6.5, 1)


def test_a_malformed_environment_value_fails_a_pack_to_a_url_instead_of_repacking(
    store: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The up-to-date check of a packed file at a URL reads it with these settings: a
    malformed value there is the user's error, not "no output yet" (which re-packed and
    uploaded the file again on every run, silently)."""
    source = write_jsonl(tmp_path / "records.jsonl", RECORDS)
    url, options = "s3://real/again.packed", store["options"]
    shardpack.pack(source, url, storage_options=options, workers=1)
    assert shardpack.pack(source, url, storage_options=options, workers=1).up_to_date
    monkeypatch.setenv(TIMEOUT_ENV, "5s")
    with pytest.raises(OptionError, match=f"^{TIMEOUT_ENV} must be"):
        shardpack.pack(source, url, storage_options=options, workers=1)


@pytest.mark.parametrize("name", [TIMEOUT_ENV, RETRIES_ENV])
def test_a_malformed_environment_value_fails_local_commands_alike(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked once, before any command runs: whether a local command failed used to depend on
    whether it happened to build remote settings (``info ds/`` exit 2, ``info x.packed`` exit
    0)."""
    source = write_jsonl(tmp_path / "records.jsonl", RECORDS)
    packed = tmp_path / "x.packed"
    assert main(["pack", str(source), "-o", str(packed), "-q"]) == 0
    monkeypatch.setenv(name, "soon")
    again = ["pack", str(source), "-o", str(tmp_path / "y.packed"), "-q"]
    for command in (["info", str(packed)], ["validate", str(packed)], again):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.startswith(f"shardpack: error: {name} must be "), err
