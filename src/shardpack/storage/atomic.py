"""Files that appear at their path only when complete: write beside it, then rename over it.

Every output of shardpack (packed files, shards, manifests, rejects, unpacked JSONL) goes
through here, so a crash leaves either the old file or nothing at the destination.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..errors import OptionError


def temp_beside(target: Path) -> tuple[int, Path]:
    """An open descriptor and the path of a new hidden temporary file next to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    return fd, Path(tmp)


def temp_target(name: str) -> str | None:
    """The name of the file a ``temp_beside`` temp file called ``name`` was made for
    (``.NAME.<random>.tmp`` -> NAME), or None if ``name`` is not such a temp file."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    return name[1:].rsplit(".", 2)[0]


def refuse_inputs_as_output(
    output: str | os.PathLike[str], inputs: Iterable[str], what: str
) -> None:
    """OptionError if ``output`` is (a path or hard link to) one of ``inputs``: writing it would
    destroy the data being read. URLs and stdin are never local files, so never match."""
    target = Path(output)
    if not target.exists():
        return
    for path in inputs:
        if path == "-" or "://" in path:
            continue
        try:
            if target.samefile(path):
                raise OptionError(f"{what} {output} is one of the inputs; refusing to overwrite it")
        except OSError:
            continue


def discard(file: object, tmp: Path) -> None:
    """Close ``file`` (if open) and remove the temporary ``tmp``, even when closing fails (a
    full disk fails the final flush too): a failed write must not leave its temp file."""
    try:
        if not getattr(file, "closed", True):
            file.close()  # type: ignore[attr-defined]
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(target: Path, mode: str = "wb", **open_args: Any) -> Iterator[IO[Any]]:
    """``target`` open for writing under a temporary name beside it: on a clean exit flushed,
    fsynced and renamed over ``target``; on an exception removed, so nothing appears there."""
    fd, tmp = temp_beside(target)
    file = os.fdopen(fd, mode, **open_args)
    try:
        yield file
        file.flush()
        os.fsync(file.fileno())
        file.close()
        move_into_place(tmp, target)
    except BaseException:
        discard(file, tmp)
        raise


def move_into_place(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the usual file permissions and rename it over ``target``, durably."""
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
