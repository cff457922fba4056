"""One writer per output: a pack (or merge) holds a lock beside its output, a packed file or a
dataset folder, for its whole run, so a second one into the same place is refused instead of
mixing two datasets in one folder or replacing a file being written.

Local outputs: ``.NAME.lock`` in the output's folder, held with ``flock`` (released by the
kernel if the process dies, so a killed pack never blocks the next one) and removed on release;
on file systems without ``flock`` the file's exclusive creation is the lock. URLs: a lock object
beside the output, created if absent and checked to be ours (object stores have no atomic
create through fsspec, so two packs starting in the same instant may both proceed); one left by a
killed pack on the same host (its process gone) is stale and replaced; one left by a pack
killed on another host must be removed by hand, as the refusal says. The lock object is removed
even when an interrupt (Ctrl-C, SIGTERM) lands while it is being written, read back or released.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import OptionError
from .failures import failure_reason, remote_errors
from .urls import is_remote, url_to_fs

LOCK_PREFIX = "shardpack lock"  # first words of every lock file: never remove anything else
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def lock_location(output: str) -> str:
    """Where the lock of ``output`` lives: ``.NAME.lock`` beside it (a path or a URL)."""
    if is_remote(output):
        parent, _, name = output.rstrip("/").rpartition("/")
        if parent.endswith(":/"):  # a bucket root: the lock goes inside
            return f"{output.rstrip('/')}/.shardpack.lock"
        return f"{parent}/.{name}.lock"
    target = Path(os.path.abspath(output.removeprefix("file://")))
    return os.fspath(target.parent / f".{target.name}.lock")


class OutputLock:
    """The lock of one output, for writers that live across calls (``shardpack.Writer``):
    ``acquire`` (OptionError if another pack holds it), then ``release`` (idempotent)."""

    def __init__(self, output: str, storage_options: dict[str, Any] | None = None) -> None:
        self.output = output
        self.storage_options = storage_options
        self._held: Any = None

    def acquire(self) -> OutputLock:
        if is_remote(self.output):
            held = _remote_lock(self.output, lock_location(self.output), self.storage_options)
            held.__enter__()
            self._held = held
            return self
        path = Path(lock_location(self.output))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._held = (path, _acquire(path, self.output))
        return self

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if isinstance(held, tuple):
            _release(*held)
        else:
            held.__exit__(None, None, None)


@contextmanager
def output_lock(output: str, storage_options: dict[str, Any] | None = None) -> Iterator[None]:
    """Hold the lock of ``output`` for the ``with`` block; OptionError if another pack holds it."""
    lock = OutputLock(output, storage_options).acquire()
    try:
        yield
    finally:
        lock.release()


def _holder() -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    return f"{LOCK_PREFIX}: pid {os.getpid()} on {socket.gethostname()} since {stamp} UTC\n"


def _busy(output: str, lock: str, holder: str) -> OptionError:
    who = holder.removeprefix(LOCK_PREFIX + ": ").strip() or "another process"
    return OptionError(
        f"output {output} is being written by another pack ({who}); wait for it, or remove "
        f"{lock} if no pack is running"
    )


def _acquire(path: Path, output: str) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace")
            os.close(fd)
            raise _busy(output, os.fspath(path), holder) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _NO_FLOCK:
                raise
            return _acquire_exclusive(path, output)
        # a holder removes the file before it lets go: the file locked must still be the one
        # at the path, else lock the new one
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(fd)
        if current is None or (current.st_ino, current.st_dev) != (opened.st_ino, opened.st_dev):
            os.close(fd)
            continue
        content = os.pread(fd, 200, 0)
        if content and not content.startswith(LOCK_PREFIX.encode()):
            os.close(fd)
            raise OptionError(f"{path} exists and is not a shardpack lock; move it away")
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder().encode(), 0)
        return fd


def _acquire_exclusive(path: Path, output: str) -> int:
    """The lock where ``flock`` is not supported: creating the file is taking it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        try:
            holder = path.read_text("utf-8", "replace")[:200]
        except OSError:
            holder = ""
        raise _busy(output, os.fspath(path), holder) from None
    os.pwrite(fd, _holder().encode(), 0)
    return fd


def _release(path: Path, fd: int) -> None:
    try:
        current = os.stat(path)
        opened = os.fstat(fd)
        if (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev):
            path.unlink()  # while still held: whoever opened it meanwhile retries
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _remote_lock(output: str, lock: str, storage_options: dict[str, Any] | None) -> Iterator[None]:
    fs, lock_path = url_to_fs(lock, storage_options)
    token = _holder().rstrip("\n") + f" token {uuid.uuid4().hex}\n"

    def call(what: str, request: Callable[[], Any]) -> Any:
        with remote_errors(lock, what):  # not found, denied, cannot connect: named, one line
            return request()

    def read() -> str:
        try:
            return bytes(fs.cat_file(lock_path)).decode("utf-8", "replace")
        except FileNotFoundError as exc:
            if failure_reason(exc) != "not found":  # no bucket, rather than no lock
                raise
            return ""

    def release(quiet: bool) -> None:
        _remote_release(
            token,
            lambda: call("cannot read the lock", read),
            lambda: call("cannot remove the lock", lambda: fs.rm_file(lock_path)),
            quiet,
        )

    held = call("cannot read the lock", read)
    if held and _stale(held):
        call("cannot remove a stale lock", lambda: fs.rm_file(lock_path))
    elif held:
        raise _busy(output, lock, held.split(" token ")[0])
    try:
        call("cannot write the lock", lambda: fs.pipe_file(lock_path, token.encode()))
    except Exception:
        raise  # not written
    except BaseException:  # interrupted: the lock may be written, take it away again
        release(quiet=True)
        raise
    try:  # from here on the lock object is ours: however this ends, it is removed
        current = call("cannot read the lock", read)
        if current != token:  # another pack wrote its own in the same instant
            raise _busy(output, lock, current.split(" token ")[0])
        yield
    except BaseException:
        release(quiet=True)
        raise
    release(quiet=False)


def _remote_release(
    token: str, read: Callable[[], str], remove: Callable[[], Any], quiet: bool
) -> None:
    """Delete the lock object if it is still ours. An interrupt (Ctrl-C, SIGTERM) landing on
    the way does not leave it behind: the request is made again, the interrupt raised after;
    ``quiet``: another error is on its way out, a failure here is not reported over it."""
    interrupt: BaseException | None = None

    def uninterrupted(request: Callable[[], Any]) -> Any:
        nonlocal interrupt
        tries = 0
        while True:
            try:
                return request()
            except Exception:
                raise
            except BaseException as exc:  # KeyboardInterrupt, the CLI's Terminated
                interrupt, tries = interrupt or exc, tries + 1
                if tries == 3:  # interrupted again and again: give up
                    raise

    try:
        if uninterrupted(read) == token:
            uninterrupted(remove)
    except Exception:
        if not quiet:
            raise
    if interrupt is not None:
        raise interrupt


def _stale(held: str) -> bool:
    """Whether a lock object was left by a pack of this host whose process is gone (killed):
    like a local lock, whose ``flock`` dies with its process, it does not block the next pack.
    A live process, or another host's, always holds it."""
    match = re.match(rf"{LOCK_PREFIX}: pid (\d+) on (\S+) since ", held)
    if match is None or match.group(2) != socket.gethostname():
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's
        return False
    return False
