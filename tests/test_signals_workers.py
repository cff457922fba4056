"""Signals and the worker pool: Ctrl-C at a terminal is the driver's alone to handle, an aborted
pack ends workers stuck in a unit before it returns, and the cleanup deadline counts from the
first signal, however many follow."""

from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from .conftest import write_jsonl
from .test_pipeline import _alive, _catches, _communicate_or_show_stacks, _gone

T = TypeVar("T")
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc, forked workers"
)

# Runs a pack whose units never finish: each worker that takes a group notes its pid in a folder
# and hangs (a read that never returns). Forked workers inherit the patch. ``library``: the
# group of unit 0 fails instead, once another worker is stuck, and the script reports which
# stuck workers are still alive when the pack has raised. ``cli``: the command, to be signalled;
# the file ``grace`` beside the folder is made when the aborted pack starts waiting for the
# units still running.
STUCK = r"""
import json, os, sys, time
from pathlib import Path
import psutil
from shardpack.build import workers

how, stuck = sys.argv[1], Path(sys.argv[2])

def encode_group(encoder, specs, storage_options=None):
    if how == "library" and specs[0].index == 0:
        while not any(stuck.iterdir()):
            time.sleep(0.01)
        raise ValueError("a bad unit")
    (stuck / str(os.getpid())).touch()
    while True:
        time.sleep(3600)

workers.encode_group = encode_group
if how == "cli":
    from shardpack.cli.main import main
    wait = workers.cf.wait
    def waiting(*args, **kwargs):
        (stuck.parent / "grace").touch()
        return wait(*args, **kwargs)
    workers.cf.wait = waiting
    sys.exit(main(sys.argv[3:]))

import shardpack
try:
    shardpack.pack(sys.argv[3], sys.argv[4], workers=2, unit_bytes=1024)
except ValueError as exc:
    error = str(exc)
else:
    error = None
pids = sorted(int(p.name) for p in stuck.iterdir())
def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
alive_pids = [pid for pid in pids if alive(pid)]
print(json.dumps({"error": error, "stuck": pids, "alive": alive_pids}), flush=True)
if alive_pids:
    os._exit(0)  # the interpreter's exit would wait for them for ever
"""

# A pack whose cleanup after a signal never ends, whatever signals arrive (a bug, on purpose),
# with a short cleanup deadline; the file named first is made once the cleanup hangs.
HANGING_CLEANUP = r"""
import importlib, sys, time
from pathlib import Path
from shardpack.build import workers
cli = importlib.import_module("shardpack.cli.main")

def stop(*args):
    Path(sys.argv[1]).touch()
    while True:
        try:
            time.sleep(3600)
        except BaseException:
            pass

cli.CLEANUP_DEADLINE_SECONDS = 2.0
workers._stop = stop
sys.exit(cli.main(sys.argv[2:]))
"""


def _waiting_pack(
    args: list[str], *, session: bool = False
) -> tuple[subprocess.Popen[str], list[int]]:
    """A ``pack -`` with two workers, given one line: it then waits for more of its input, and
    its workers for work. Returned once both workers are initialised (their SIGTERM is back to
    the default, the last thing a forked worker's initializer changes about signals) and the
    driver has read the line: it reads its input only once its workers are running, so it is
    past forking them too (a signal landing in the fork's own handlers is lost: Python ignores
    an exception raised there)."""
    proc = subprocess.Popen(
        [*args, "-j", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=session,
    )
    assert proc.stdin is not None
    proc.stdin.write('{"a": 1}\n')
    proc.stdin.flush()
    driver = psutil.Process(proc.pid)

    def ready() -> list[int]:
        try:
            # the workers (forked: the driver's command line), not multiprocessing's helpers
            workers = [c.pid for c in driver.children() if c.cmdline() == driver.cmdline()]
            if (
                len(workers) == 2
                and not any(_catches(pid, signal.SIGTERM) for pid in workers)
                and _unread(proc) == 0
            ):
                return workers
        except (psutil.Error, FileNotFoundError):
            pass  # a child that just started or ended
        return []

    return proc, _wait_for(ready, proc, "the pack did not start its workers")


def _unread(proc: subprocess.Popen[str]) -> int:
    """How many bytes written to ``proc``'s stdin it has not read yet."""
    assert proc.stdin is not None
    unread = array.array("i", [0])
    fcntl.ioctl(proc.stdin.fileno(), termios.FIONREAD, unread)
    return unread[0]


def _wait_for(found: Callable[[], T], proc: subprocess.Popen[str], what: str) -> T:
    """``found()`` once it is true (within a minute, while ``proc`` runs), else a failure with
    what ``proc`` printed (and its threads' stacks, when it is still running)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        result = found()
        if result:
            return result
        time.sleep(0.02)
    stdout, stderr = _communicate_or_show_stacks(proc, timeout=0 if proc.poll() is None else 10)
    raise AssertionError(f"{what} (exit status {proc.returncode}):\n{stderr}\n{stdout}")


def test_ctrl_c_at_a_terminal_leaves_waiting_workers_silent(tmp_path: Path) -> None:
    """Ctrl-C at a terminal signals the whole process group. Workers ignore it and leave it to
    the driver, which ends them: a worker waiting for work (here both, while the pack waits for
    its input) would otherwise die of it at once, each printing a traceback."""
    out = tmp_path / "x.packed"
    args = [sys.executable, "-m", "shardpack", "pack", "-", "-o", str(out)]
    proc, workers = _waiting_pack(args, session=True)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = _communicate_or_show_stacks(proc, timeout=60)
    assert stderr.strip() == "shardpack: error: interrupted"
    assert proc.returncode == 130
    assert _gone(workers, 0), "worker processes outlived the pack"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_pack_ends_workers_stuck_in_a_unit_before_it_raises(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": "x" * 100, "i": i} for i in range(400)])
    stuck = tmp_path / "stuck"
    stuck.mkdir()
    out = tmp_path / "o.packed"
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK, "library", str(stuck), str(source), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = _communicate_or_show_stacks(proc, timeout=60)
    assert proc.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["error"] == "a bad unit", stderr
    assert report["stuck"], "no worker was stuck: the test proves nothing"
    assert report["alive"] == [], "workers stuck in a unit outlived the failed pack"
    assert _gone(report["stuck"], 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "stuck"]


def _stuck_command(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    """``pack -`` with two workers, one of them stuck in the one unit of its input (a stream:
    a pool of workers for however little input); returned once it is stuck."""
    stuck = tmp_path / "stuck"
    stuck.mkdir()
    source = write_jsonl(tmp_path / "in.jsonl", [{"a": i} for i in range(100)])
    out = tmp_path / "o.packed"
    args = [sys.executable, "-c", STUCK, "cli", str(stuck), "pack", "-", "-o", str(out), "-j", "2"]
    with source.open("rb") as stdin:
        proc = subprocess.Popen(
            args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    pids = _wait_for(
        lambda: [int(p.name) for p in stuck.iterdir()], proc, "no worker took the unit"
    )
    return proc, pids


def _assert_ended(proc: subprocess.Popen[str], pids: list[int], code: int, line: str) -> None:
    """``proc`` exits with ``code`` and its one line, the stuck workers ended before it exited."""
    _, stderr = _communicate_or_show_stacks(proc, timeout=60)
    still = [pid for pid in pids if _alive(pid)]
    assert _gone(pids, 5)  # (orphans exit by themselves: no process left behind either way)
    assert proc.returncode == code, stderr
    # (the one line; Python 3.11's pool may add a traceback of its own threads after it)
    assert f"shardpack: error: {line}" in stderr.splitlines(), stderr
    assert still == [], "workers stuck in a unit outlived the command"


def test_sigterm_ends_workers_stuck_in_a_unit_before_the_command_exits(tmp_path: Path) -> None:
    """SIGTERM (a timeout, SLURM) while a worker hangs in a unit: the command ends it after the
    grace period instead of waiting on it (for ever), and exits 143."""
    proc, pids = _stuck_command(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _assert_ended(proc, pids, 143, "terminated (SIGTERM)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grace", "in.jsonl", "stuck"]


def test_a_signal_during_the_grace_period_still_ends_stuck_workers(tmp_path: Path) -> None:
    """SIGTERM, then Ctrl-C while the pack gives its running units their grace period: the
    later signal is raised once the stuck worker is ended, instead of cutting its ending short
    (the interpreter's exit then waited for the worker until the cleanup deadline)."""
    proc, pids = _stuck_command(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _wait_for((tmp_path / "grace").exists, proc, "the pack did not wait for its running unit")
    proc.send_signal(signal.SIGINT)
    _assert_ended(proc, pids, 130, "interrupted")


def test_repeated_signals_do_not_postpone_the_cleanup_deadline(tmp_path: Path) -> None:
    """Ctrl-C pressed again and again, or a SIGTERM after it, while the cleanup hangs: the
    process still ends the deadline after the first signal (2 s here)."""
    hangs = tmp_path / "hangs"
    args = [
        sys.executable,
        "-c",
        HANGING_CLEANUP,
        str(hangs),
        "pack",
        "-",
        "-o",
        str(tmp_path / "x.packed"),
    ]
    proc, workers = _waiting_pack(args)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _wait_for(hangs.exists, proc, "the cleanup did not start")  # later signals land in it
    signals = [signal.SIGINT, signal.SIGTERM]
    sent = 1
    # signals every 0.2 s for up to 20 s: a deadline each one restarted would never come
    while proc.poll() is None and time.monotonic() - started < 20:
        time.sleep(0.2)
        proc.send_signal(signals[sent % 2])  # nothing once it has ended (Popen polls first)
        sent += 1
    ended_while_signalled = proc.poll() is not None
    _, stderr = _communicate_or_show_stacks(proc, timeout=30)
    assert _gone(workers, 5), "the orphaned workers kept running"
    assert ended_while_signalled, f"still running {sent} signals and 20 s after the first"
    assert proc.returncode == 1 and "Timeout (0:00:02)!" in stderr, stderr
    assert sent >= 3  # signals did arrive after the first, during the cleanup


def test_the_grace_wait_lets_an_error_through_instead_of_waiting_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a signal (KeyboardInterrupt, the CLI's SIGTERM) is held until the stuck workers are
    ended; any other error from the wait is raised as it comes, not retried as if it were a
    signal (which, for an error that recurs, spins until the deadline)."""
    from concurrent import futures

    from shardpack.build import workers

    real_wait, calls = futures.wait, []

    def failing_once(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the wait broke")
        return real_wait([], timeout=0)

    monkeypatch.setattr(workers.cf, "wait", failing_once)
    with pytest.raises(RuntimeError, match="the wait broke"):
        workers._wait_out_the_grace([])
    assert calls == [1]


# main() run in a program that goes on after an interrupted command (a notebook, a test): the
# interrupt's cleanup deadline (1 s here) must not kill that program later; for a process that
# exits with the command (exiting=True: `shardpack`, `python -m shardpack`) it stays armed.
IN_PROCESS = r"""
import importlib, os, signal, sys, time
from shardpack.build import pipeline
cli = importlib.import_module("shardpack.cli.main")
cli.CLEANUP_DEADLINE_SECONDS = 1.0

def interrupted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: its handler arms the deadline
    time.sleep(5)

pipeline._Run._finish = interrupted
source, out, exiting = sys.argv[1], sys.argv[2], sys.argv[3] == "exiting"
status = cli.main(["pack", source, "-o", out, "-q", "-j", "1"], exiting=exiting)
print("returned", status, flush=True)
time.sleep(3)
print("alive", flush=True)
"""


@pytest.mark.parametrize("exiting", [False, True], ids=["program-goes-on", "process-exits"])
def test_an_interrupted_command_does_not_kill_the_program_that_called_main(
    tmp_path: Path, exiting: bool
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"i": i} for i in range(10)])
    args = [sys.executable, "-c", IN_PROCESS, str(source), str(tmp_path / "o.packed")]
    args.append("exiting" if exiting else "goes-on")
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[0] == "returned 130", (done.stdout, done.stderr)
    if exiting:  # the deadline also bounds what follows, up to the interpreter's exit
        assert done.returncode == 1 and "alive" not in done.stdout, done.stdout
        assert "Timeout (0:00:01)!" in done.stderr
    else:
        assert done.returncode == 0 and done.stdout.splitlines()[1] == "alive", done.stderr
