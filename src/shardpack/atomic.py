"""Files that appear at their path only when complete: write beside it, then rename over it.

Every output of shardpack (packed files, shards, manifests, rejects, unpacked JSONL) goes
through here, so a crash leaves either the old file or nothing at the destination.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temp_beside(target: Path) -> tuple[int, Path]:
    """An open descriptor and the path of a new hidden temporary file next to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    return fd, Path(tmp)


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
