"""Encoding units on all cores, in order: workers read their own units from the inputs (only
byte ranges travel to them, or the bytes of a stream the driver read), so the driver neither
reads nor pickles plain inputs. Output is byte-identical to encoding the units one by one.

Workers never outlive the pack: an interrupted or failed pack terminates them, and each worker
exits by itself within a second when its driver dies (SIGKILL, out of memory).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from ..errors import ShardpackError
from ..ingest.columnar import JSONL
from .inputs import InputFile
from .options import EncodeOptions, PackOptions
from .planning import UnitSpec
from .units import UNITS_PER_GROUP, EncodedUnit, UnitEncoder, encode_group, unit_groups

# Units go to workers a group at a time (``units.UNITS_PER_GROUP``, ~8 MiB of input per task):
# 1 MiB units one per task cost a 2-core KD pack ~10% in futures, pickling and stalls; the
# worker still encodes them one by one, so its memory stays that of one small unit.
ORPHAN_CHECK_SECONDS = 0.5
ABORT_GRACE_SECONDS = 3.0  # an interrupted pack lets running groups finish this long
_encoder: UnitEncoder | None = None
T = TypeVar("T")
_storage_options: dict[str, Any] | None = None


def workers_needed(options: PackOptions, files: list[InputFile]) -> int:
    """The workers asked for, or one when the input is a single group of units (what a worker
    takes at a time): a pool would then start (~40 ms) for no parallel work."""
    wanted = options.worker_count()
    if (
        wanted <= 1
        or options.records_per_shard
        or any(f.stream or f.size is None or f.kind != JSONL for f in files)
    ):
        return wanted
    total = sum(f.size or 0 for f in files)
    one_group = options.unit_bytes * UNITS_PER_GROUP
    if total <= one_group and (options.shard_size is None or total <= options.shard_size):
        return 1
    return wanted


def _init_worker(options: EncodeOptions, storage_options: dict[str, Any] | None) -> None:
    global _encoder, _storage_options
    # Ctrl-C reaches the whole process group: the driver decides, and terminates its workers;
    # a forked worker must not run the driver's own SIGTERM handler when it is terminated, not
    # even while it starts (trust: a pack that failed at once printed a worker's traceback)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _encoder = UnitEncoder(options)
    _storage_options = storage_options
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    """A driver killed without cleanup (SIGKILL, OOM) leaves its workers to the init process
    (a forkserver, the workers' parent then, exits with its driver)."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(1)


def _encode_batch(specs: list[UnitSpec]) -> list[EncodedUnit]:
    """In a worker: read and encode a group of units, one by one."""
    if _encoder is None:
        raise RuntimeError("worker not initialised")  # only reachable through misuse
    return encode_group(_encoder, specs, _storage_options)


def _ready() -> int:
    return os.getpid()


class LocalExecutor:
    """Encodes units in this process (one worker) or in a pool of worker processes.

    ``start`` spawns every worker up front (so that the pack may start threads of its own
    afterwards and workers still fork cleanly); ``close`` shuts the pool down, terminating the
    workers when the pack did not finish."""

    def __init__(self, workers: int, storage_options: dict[str, Any] | None = None) -> None:
        self.workers = max(1, workers)
        self.storage_options = storage_options
        self._pool: cf.ProcessPoolExecutor | None = None
        self._pending: deque[cf.Future[list[EncodedUnit]]] = deque()
        self._options: EncodeOptions | None = None
        self._encoder: UnitEncoder | None = None
        self._retiring: threading.Thread | None = None

    def start(self, options: EncodeOptions, *, fork: bool = True) -> None:
        """``fork=False`` starts workers from a clean interpreter even when forking looks safe
        (a caller's program may run threads that Python does not see, as torch does)."""
        self._options = options
        if self.workers <= 1:
            return
        self._pool = cf.ProcessPoolExecutor(
            self.workers,
            mp_context=_worker_context(fork),
            initializer=_init_worker,
            initargs=(options, self.storage_options),
        )
        ready = [self._pool.submit(_ready) for _ in range(self.workers)]
        for future in ready:
            _result(future)  # every worker is up before the pack starts threads of its own

    def encode(self, specs: Iterable[UnitSpec]) -> Iterator[EncodedUnit]:
        """Encoded units, in order; at most a few groups in flight (bounded memory)."""
        for group in unit_groups(specs):
            yield from self.push(group)
        finished = self.drain()
        self.retire()
        yield from finished

    def retire(self) -> None:
        """No more work: the workers start exiting now, while the driver finishes the output
        (on 16 cores, stopping 16 workers took ~0.1 s, a fifth of a 300 MB pack); ``close``
        waits for them."""
        if self._pool is not None and self._retiring is None and not self._pending:
            retiring = threading.Thread(
                target=self._pool.shutdown, name="shardpack-workers-exit", daemon=True
            )
            retiring.start()  # kept only once started: ``close`` joins it, even after a signal
            self._retiring = retiring

    def push(self, group: list[UnitSpec]) -> list[EncodedUnit]:
        """Hand a group of units over; returns the units finished so far, in order (all of
        them in this process; with a pool, once more than two groups a worker are waiting)."""
        if self._options is None:
            raise RuntimeError("start the executor first")
        if self._retiring is not None:
            raise RuntimeError("the workers were retired: every unit was handed over already")
        if self._pool is None:
            if self._encoder is None:
                self._encoder = UnitEncoder(self._options)
            return encode_group(self._encoder, group, self.storage_options)
        self._pending.append(self._pool.submit(_encode_batch, group))
        done: list[EncodedUnit] = []
        while len(self._pending) > 2 * self.workers:
            done += self._oldest()
        return done

    def drain(self) -> list[EncodedUnit]:
        """Every unit still being encoded, in order."""
        done: list[EncodedUnit] = []
        while self._pending:
            done += self._oldest()
        return done

    def _oldest(self) -> list[EncodedUnit]:
        # waited for while still pending: an interrupt now must find it there, for ``close``
        # to wait for it or end its worker
        finished: list[EncodedUnit] = _result(self._pending[0])
        self._pending.popleft()
        return finished

    def close(self, *, abort: bool = False) -> None:
        """Shut the pool down; ``abort`` (an error, Ctrl-C, SIGTERM) terminates the workers
        first instead of letting them finish what they hold."""
        if self._retiring is not None:  # every unit came back: the workers are exiting
            self._retiring.join()
            self._retiring = self._pool = None
        if self._pool is not None:
            _stop(self._pool, self._pending, abort)
            self._pool = None


def _result(future: cf.Future[T]) -> T:
    try:
        return future.result()
    except cf.process.BrokenProcessPool:
        raise ShardpackError(
            "a worker process died (killed, or out of memory?); run the pack again to resume"
        ) from None


def _stop(pool: cf.ProcessPoolExecutor, pending: deque[cf.Future[Any]], abort: bool) -> None:
    # Groups not started yet are dropped; the running ones (a fraction of a second each) may
    # finish: a worker killed while it writes its result would leave the pool's reader thread
    # waiting forever for the rest of that message (and the interpreter, at exit, for it).
    for future in pending:
        future.cancel()
    if not abort:
        pool.shutdown(wait=True)
        return
    running = [future for future in pending if not future.cancelled()]
    stuck, later = _wait_out_the_grace(running)
    if not stuck:
        pool.shutdown(wait=True)
    else:
        # A worker still busy after the grace period is stuck (a hung read?): end this pool's
        # workers, never the caller's other child processes. (Python 3.11's pool then prints a
        # traceback of its own thread for the groups cancelled above.)
        processes = list((getattr(pool, "_processes", None) or {}).values())  # no public list
        for child in processes:
            child.terminate()
        for child in processes:
            child.join(timeout=5)
        pool.shutdown(wait=False)
    if later is not None:
        raise later


def _wait_out_the_grace(
    running: list[cf.Future[Any]],
) -> tuple[set[cf.Future[Any]], BaseException | None]:
    """The groups still running after ``ABORT_GRACE_SECONDS``, and a signal that arrived
    meanwhile (Ctrl-C pressed again, SIGTERM after Ctrl-C): it neither cuts the grace short (a
    worker killed mid-result hangs the pool) nor extends it, nor leaves the stuck workers
    running (the interpreter's exit would wait for them); it is raised once they are ended."""
    ends = time.monotonic() + ABORT_GRACE_SECONDS
    later: BaseException | None = None
    while True:
        try:
            timeout = max(0.0, ends - time.monotonic())
            return cf.wait(running, timeout=timeout).not_done, later
        except Exception:
            raise  # not a signal: nothing to wait out
        except BaseException as exc:  # a signal handler raised it (KeyboardInterrupt, SIGTERM)
            if later is None:
                later = exc


def _worker_context(fork: bool = True) -> multiprocessing.context.BaseContext:
    """How worker processes start: forked when that is safe, else from a clean interpreter.

    A forkserver starts a fresh interpreter that imports shardpack and numpy first: ~0.5 s
    before the first unit is encoded, a fifth of a 300 MB pack on 2 cores. Forking takes
    milliseconds, but is only safe while this process runs no other thread (a thread holding a
    lock at the fork would leave it locked in the child forever); the pack starts its own
    threads only once every worker is running.
    """
    if fork and sys.platform == "linux" and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if os.name == "posix":
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["shardpack.build.workers"])  # import once, fork workers
        return context
    return multiprocessing.get_context("spawn")
