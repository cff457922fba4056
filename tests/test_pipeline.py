"""One pack pipeline for every path: identical bytes for any worker count, one fingerprint for
"up to date" and "resume", a dry run, work that runs where it is claimed to, and packs that end
cleanly when interrupted (SIGTERM, Ctrl-C, a killed driver) and then resume."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import shardpack
from shardpack import DatasetPacker, ShardedPacker
from shardpack.build.options import PackOptions
from shardpack.build.outputs import PLAN_NAME
from shardpack.build.pipeline import plan
from shardpack.cli.main import main as cli_main
from shardpack.dataset.manifest import MANIFEST_NAME

from .conftest import gen_kd_mix, write_jsonl

EPOCH = "1700000000"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class Stop(Exception):
    """Raised by ``stop_midway`` to interrupt a pack."""


def stop_midway(done_bytes: int, records: int) -> None:
    """A progress callback that interrupts a pack once it has passed 900 records."""
    if records > 900:
        raise Stop


def test_any_worker_count_writes_the_same_bytes_and_says_who_encoded(
    kd_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    units = 32 * 1024  # ~90 units in ~12 groups: both workers get some, even on a busy machine
    for layout in ({}, {"shard_size": "300K"}, {"records_per_shard": 30}):
        name = "-".join(f"{k}{v}" for k, v in layout.items()) or "single"
        results = {}
        for workers in (1, 2):
            out = tmp_path / f"{name}-{workers}" / ("out.packed" if not layout else "ds")
            results[workers] = shardpack.pack(
                kd_jsonl, out, workers=workers, unit_bytes=units, **layout
            )
        one, two = results[1], results[2]
        assert one.content_hash == two.content_hash
        if layout:
            assert _files(Path(one.output_path)) == _files(Path(two.output_path))  # + manifest
            assert len(one.manifest.shards) >= 3
        else:
            assert Path(one.output_path).read_bytes() == Path(two.output_path).read_bytes()
        # the work ran where it is said to: in this process, or in two worker processes
        assert {w for ws in one.workers.values() for w in ws} == {f"pid {os.getpid()}"}
        pids = {w for ws in two.workers.values() for w in ws}
        assert len(pids) == 2 and f"pid {os.getpid()}" not in pids


def test_one_fingerprint_decides_up_to_date_and_resume(text_jsonl: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(text_jsonl.read_bytes())
    out = tmp_path / "ds"

    with pytest.raises(Stop):
        ShardedPacker().pack(source, out, records_per_shard=250, progress=stop_midway)
    assert (out / PLAN_NAME).exists() and not (out / MANIFEST_NAME).exists()
    # another byte shuffle changes the bytes: nothing may be kept (it was, before)
    other = ShardedPacker(compression="zstd", shuffle=False).pack(
        source, out, records_per_shard=250
    )
    assert other.shards_reused == 0
    with pytest.raises(Stop):
        ShardedPacker(compression="zstd").pack(
            source, out, records_per_shard=250, progress=stop_midway
        )
    resumed = ShardedPacker(compression="zstd").pack(source, out, records_per_shard=250)
    assert resumed.shards_reused >= 2 and resumed.shards_packed + resumed.shards_reused == 8
    # the same pack again is up to date; touching an input without changing it keeps it so
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = ShardedPacker(compression="zstd").pack(source, out, records_per_shard=250)
    assert again.up_to_date and again.content_hash == resumed.content_hash
    single = tmp_path / "one.packed"
    DatasetPacker().pack(source, single, meta={"a": "1"})
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert DatasetPacker().pack(source, single, meta={"a": "1"}).up_to_date
    assert not DatasetPacker().pack(source, single, meta={"a": "2"}).up_to_date  # meta decides


def test_an_input_of_one_group_of_units_starts_no_worker_pool(
    text_jsonl: Path, kd_jsonl: Path, tmp_path: Path
) -> None:
    """A pool's start-up would double a small pack's time and run no work in parallel."""
    small = shardpack.pack(text_jsonl, tmp_path / "small.packed", workers=2)
    assert {w for ws in small.workers.values() for w in ws} == {f"pid {os.getpid()}"}
    assert plan(text_jsonl, str(tmp_path / "x.packed"), PackOptions.create(workers=2)).workers == 1
    big = shardpack.pack(kd_jsonl, tmp_path / "big.packed", workers=2, unit_bytes=64 * 1024)
    # encoded in the pool, not here (which of its two workers took the groups is the
    # scheduler's choice: on a busy machine one may take them all)
    encoders = {w for ws in big.workers.values() for w in ws}
    assert encoders and f"pid {os.getpid()}" not in encoders


def test_a_resume_after_touching_unchanged_inputs_keeps_finished_shards(
    text_jsonl: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(text_jsonl.read_bytes())
    out = tmp_path / "ds"

    with pytest.raises(Stop):
        ShardedPacker(workers=1).pack(
            source, out, records_per_shard=None, shard_size="40K", progress=stop_midway
        )
    plan = json.loads((out / PLAN_NAME).read_text())
    assert plan["fingerprint"]  # recorded once the input was hashed
    os.utime(source, ns=(time.time_ns(), time.time_ns() + 10**9))  # same content, new mtime
    resumed = ShardedPacker(workers=1).pack(source, out, shard_size="40K")
    assert resumed.shards_reused >= 2
    source.write_bytes(source.read_bytes().replace(b"a", b"b", 1))  # new content: nothing kept
    with pytest.raises(Stop):
        ShardedPacker(workers=1).pack(source, out, shard_size="40K", progress=stop_midway)
    with source.open("ab") as extra:
        extra.write(b"\n")
    assert ShardedPacker(workers=1).pack(source, out, shard_size="40K").shards_reused == 0


def test_workers_exit_while_the_driver_seals_the_output(
    kd_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once every unit is back the workers stop at once, not after the output is sealed (on 16
    cores stopping them took ~0.1 s of a 0.5 s pack); the pack still waits for them."""
    from shardpack.build import pipeline, workers

    before = {child.pid for child in psutil.Process().children(recursive=True)}
    pool: list[int] = []
    alive_when_sealing: list[int] = []
    start, finish = workers.LocalExecutor.start, pipeline._Run._finish

    def starting(self: workers.LocalExecutor, *args: Any, **kwargs: Any) -> None:
        start(self, *args, **kwargs)
        # forked workers, or (when this process runs threads) a forkserver's: not the server
        # (their parent) nor the resource tracker that starts beside it
        new = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
        pool.extend(
            c.pid
            for c in new
            if not c.children() and "resource_tracker" not in " ".join(c.cmdline())
        )

    def sealing(self: pipeline._Run, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + 10
        while any(map(_alive, pool)) and time.monotonic() < deadline:
            time.sleep(0.01)
        alive_when_sealing.extend(pid for pid in pool if _alive(pid))
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(workers.LocalExecutor, "start", starting)
    monkeypatch.setattr(pipeline._Run, "_finish", sealing)
    shardpack.pack(kd_jsonl, tmp_path / "o.packed", workers=2, unit_bytes=64 * 1024)
    assert len(pool) == 2
    assert alive_when_sealing == []
    assert not any(map(_alive, pool))


def test_an_aborted_pack_ends_its_own_workers_only(kd_jsonl: Path, tmp_path: Path) -> None:
    """A library call that fails midway terminates its pool, not the caller's other child
    processes, and leaves no thread of its pool behind."""
    import multiprocessing
    import threading

    bystander = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    bystander.start()
    threads = threading.active_count()
    children = {child.pid for child in psutil.Process().children()}  # the bystander, a tracker
    try:

        class Stop(Exception):
            pass

        def stop(done_bytes: int, records: int) -> None:
            if records:
                raise Stop

        with pytest.raises(Stop):
            shardpack.pack(
                kd_jsonl, tmp_path / "o.packed", workers=2, unit_bytes=64 * 1024, progress=stop
            )
        assert bystander.is_alive()
        assert threading.active_count() == threads
        assert {child.pid for child in psutil.Process().children()} == children
    finally:
        bystander.terminate()
        bystander.join()


def test_dry_run_prints_the_plan_and_writes_nothing(kd_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = [sys.executable, "-m", "shardpack", "pack", str(kd_jsonl), "-o", str(out)]
    proc = subprocess.run(
        [*args, "--shard-size", "400K", "--dry-run", "--json", "-j", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["sharded"] and plan["workers"] == 2 and plan["engine"] == "local"
    assert plan["units"] >= len(plan["shards"]) >= 3
    assert sum(s["input_bytes"] for s in plan["shards"]) == kd_jsonl.stat().st_size
    assert not out.exists()
    text = subprocess.run(
        [*args, "--records-per-shard", "20", "--dry-run"], capture_output=True, text=True
    )
    assert "shard-00000.packed" in text.stdout and "read by the workers" in text.stdout
    assert not out.exists()


@pytest.fixture(scope="module")
def big_kd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough input that a slow pack (zstd level 22) is still running when it is signalled."""
    path = tmp_path_factory.mktemp("big") / "kd.jsonl"
    gen_kd_mix.generate(path, target_bytes=16_000_000, seed=3, top_k=8, vocab_size=32_000)
    return path


def _slow_pack(source: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "shardpack", "pack", str(source), "-o", str(out),
        "--records-per-shard", "8", "--compression", "zstd", "--level", "22", "--block-size", "1M",
        "-j", "2",
    ]  # fmt: skip


def _start_and_wait_for_workers(
    args: list[str], out: Path, *, session: bool = False
) -> tuple[subprocess.Popen[str], list[int]]:
    """``session``: in a process group of its own, which a terminal's Ctrl-C signals whole."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=session
    )
    deadline = time.monotonic() + 60
    driver = psutil.Process(proc.pid)
    while time.monotonic() < deadline:
        # the workers (forked: the driver's command line), not multiprocessing's helpers
        workers = [c for c in driver.children() if c.cmdline() == driver.cmdline()]
        if len(workers) >= 2 and list(out.glob("shard-*.packed")):
            return proc, [c.pid for c in workers]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the pack did not start its workers")


def _communicate_or_show_stacks(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """``proc.communicate``; a command still running after ``timeout`` has every thread's
    stack printed (SIGUSR1) and is killed with its children, and the test fails with them."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for member in family:
            with contextlib.suppress(psutil.Error):
                member.send_signal(signal.SIGUSR1)
        time.sleep(1)
        for member in family:
            with contextlib.suppress(psutil.Error):
                member.kill()
        try:  # orphaned workers may still hold the pipes: never wait on them for ever
            stdout, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            stdout, stderr = "", "(its output pipes are still held open: orphaned workers?)"
        raise AssertionError(f"still running after {timeout} s:\n{stderr}\n{stdout}") from None


def _gone(pids: list[int], seconds: float) -> bool:
    """Whether every process in ``pids`` has ended, waiting up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.parametrize(("how", "code", "words", "group"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM)", False),
    (signal.SIGINT, 130, "interrupted", False),
    (signal.SIGINT, 130, "interrupted", True),  # Ctrl-C at a terminal: workers get it too
])  # fmt: skip
def test_a_signal_ends_every_worker_and_the_pack_resumes(
    how: signal.Signals, code: int, words: str, group: bool, big_kd: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    proc, workers = _start_and_wait_for_workers(_slow_pack(big_kd, out), out, session=group)
    if group:
        os.killpg(proc.pid, how)  # no traceback from a worker: they leave it to the driver
    else:
        proc.send_signal(how)
    _, stderr = _communicate_or_show_stacks(proc, timeout=30)
    assert proc.returncode == code
    assert stderr.strip() == f"shardpack: error: {words}"
    # ended by the driver before it exits (not later, by noticing that it is gone)
    assert _gone(workers, 0), "worker processes outlived the pack"
    assert not list(out.glob(".*.tmp")) and (out / PLAN_NAME).exists()
    again = subprocess.run([*_slow_pack(big_kd, out), "--json"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["shards_reused"] >= 1 and summary["records"] == len(shardpack.open(out))


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux: /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigusr1_prints_the_stacks_of_a_pack_that_seems_stuck(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "shardpack", "pack", "-", "-o", str(tmp_path / "x.packed")]
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None
    proc.stdin.write('{"a": 1}\n')  # the pack now waits for more of its input
    proc.stdin.flush()
    deadline = time.monotonic() + 20
    while not _catches(proc.pid, signal.SIGUSR1):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"no SIGUSR1 handler: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    proc.stdin.write('{"a": 2}\n')
    stdout, stderr = _communicate_or_show_stacks(proc, timeout=60)  # closes stdin
    assert proc.returncode == 0, stderr
    assert "Current thread" in stderr and "most recent call first" in stderr
    assert "packed 2 records" in stdout


def test_a_sigterm_after_the_command_ends_is_not_raised_into_exit_handlers() -> None:
    """A command hands SIGTERM back when it ends: a signal during interpreter exit must not
    raise into the exit handlers (they print a traceback, and the process exits 0)."""
    before = signal.getsignal(signal.SIGTERM)
    assert cli_main(["--version"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_a_cleanup_that_hangs_after_sigterm_still_ends_the_process(
    big_kd: Path, tmp_path: Path
) -> None:
    """The last resort, for a bug: ending the workers hangs forever (here on purpose); the
    process prints its threads' stacks and exits 1 after the deadline, and its workers, now
    orphans, exit by themselves."""
    out = tmp_path / "ds"
    hanging = (
        "import importlib, sys, time\n"
        "from shardpack.build import workers\n"
        "cli = importlib.import_module('shardpack.cli.main')\n"
        "cli.CLEANUP_DEADLINE_SECONDS = 2.0\n"
        "workers._stop = lambda *args: time.sleep(3600)\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    args = [sys.executable, "-c", hanging, *_slow_pack(big_kd, out)[3:]]
    proc, workers = _start_and_wait_for_workers(args, out)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = _communicate_or_show_stacks(proc, timeout=30)
    assert proc.returncode == 1 and 2 <= time.monotonic() - started < 15
    assert "Timeout (0:00:02)!" in stderr and "in <lambda>" in stderr
    assert _gone(workers, 5), "the orphaned workers kept running"
    again = subprocess.run([*_slow_pack(big_kd, out), "--json"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr  # the same command resumes
    assert json.loads(again.stdout)["records"] == len(shardpack.open(out))


@pytest.mark.slow
def test_workers_exit_when_their_driver_is_killed(big_kd: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    proc, workers = _start_and_wait_for_workers(_slow_pack(big_kd, out), out)
    proc.kill()
    _communicate_or_show_stacks(proc, timeout=30)
    assert _gone(workers, 5), "workers of a killed driver kept running"
    again = subprocess.run([*_slow_pack(big_kd, out), "--json"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["shards_reused"] >= 1


def test_single_file_pack_of_an_empty_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(shardpack.InputError, match="holds no records"):
        DatasetPacker().pack(empty, tmp_path / "x.packed")
    result = DatasetPacker().pack(empty, tmp_path / "x.packed", allow_empty=True)
    assert result.record_count == 0 and len(shardpack.open(result.output_path)) == 0
    write_jsonl(tmp_path / "one.jsonl", [{"a": 1}])
    folder = ShardedPacker().pack(
        [empty, tmp_path / "one.jsonl"], tmp_path / "ds", records_per_shard=5
    )
    assert [e.records for e in folder.manifest.shards] == [1]


# the unreachable writer's file is closed by the garbage collector, which warns
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("layout", [{}, {"shard_size": "300K"}], ids=["single", "sharded"])
def test_an_interrupt_between_creating_a_file_and_holding_it_leaves_no_temp_file(
    kd_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: dict[str, Any]
) -> None:
    """A signal can land after a shard's writer made its temp file and before the pack holds
    the writer (no abort can reach it then): the failed pack still removes it."""
    from shardpack.build import pipeline

    make_sink = pipeline._Run._sink
    made: list[int] = []

    def interrupted(self: pipeline._Run, shard: int) -> Any:
        sink = make_sink(self, shard)  # its temp file exists now
        made.append(shard)
        if len(made) == 2 or not layout:
            raise KeyboardInterrupt  # as Ctrl-C or the CLI's SIGTERM handler would, here
        return sink

    monkeypatch.setattr(pipeline._Run, "_sink", interrupted)
    out = tmp_path / ("ds" if layout else "o.packed")
    with pytest.raises(KeyboardInterrupt):
        shardpack.pack(kd_jsonl, out, workers=1, **layout)
    folder = out if layout else tmp_path
    assert list(folder.glob(".*.tmp")) == []
    assert made


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_just_after_the_rejects_file_is_made_leaves_no_temp_file(
    kd_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardpack.build import pipeline

    real = pipeline.RejectsWriter

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)  # its temp file exists now, and nothing holds it
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "RejectsWriter", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shardpack.pack(kd_jsonl, tmp_path / "o.packed", workers=1, on_error="skip")
    assert list(tmp_path.glob(".*.tmp")) == []


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("layout", [{}, {"shard_size": "300K"}], ids=["single", "sharded"])
@pytest.mark.parametrize(
    ("failure", "raised"),
    [(KeyboardInterrupt(), KeyboardInterrupt), (OSError("stuck"), RuntimeError)],
    ids=["interrupt", "error"],
)
def test_a_second_interrupt_during_the_cleanup_still_removes_every_temp_file(
    kd_jsonl: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    layout: dict[str, Any],
    failure: BaseException,
    raised: type[BaseException],
) -> None:
    """A pack that fails cleans up (workers, the output's and the rejects' temp files). A second
    Ctrl-C (or a SIGTERM after the first) that lands while the workers are being stopped must
    not skip the rest of the cleanup: it is raised once every step has run. A step's own error
    skips nothing either, and the error that ended the pack is the one reported."""
    from shardpack.build import pipeline, workers

    close = workers.LocalExecutor.close

    def sealing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the pack failed")

    def interrupted_close(self: workers.LocalExecutor, *, abort: bool = False) -> None:
        close(self, abort=abort)
        if abort:
            raise failure  # as the second signal's handler would, here

    monkeypatch.setattr(pipeline._Run, "_finish", sealing)
    monkeypatch.setattr(workers.LocalExecutor, "close", interrupted_close)
    lines = kd_jsonl.read_text().splitlines()
    source = write_jsonl(tmp_path / "in.jsonl", [])
    source.write_text("\n".join([*lines[:3], "{bad", *lines[3:]]) + "\n")
    out = tmp_path / "out" / ("ds" if layout else "o.packed")
    out.parent.mkdir()
    with pytest.raises(raised):
        shardpack.pack(source, out, workers=1, on_error="skip", **layout)
    left = [p.name for p in (tmp_path / "out").rglob("*")]
    assert [name for name in left if name.endswith(".tmp")] == [], left
    assert not (tmp_path / "out" / "o.packed").exists()
