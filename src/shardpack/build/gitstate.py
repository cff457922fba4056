"""The git state of an input, read from the repository's files: shardpack never runs git.

``git status`` runs whatever the repository's own config names (``core.fsmonitor``, clean and
smudge filters), so packing a file from someone else's repository would execute their program.
Reading ``.git`` instead gives the commit (``HEAD``, loose refs, ``packed-refs``) and whether
the input itself differs from what the index records for it (by size and stat data, then by its
blob hash, as git decides). Every read is bounded; anything unexpected means "no git state".
"""

from __future__ import annotations

import hashlib
import mmap
import os
import stat
import struct
from typing import Any

MAX_SMALL_FILE_BYTES = 64 * 1024  # HEAD, a loose ref, a gitdir pointer
MAX_PACKED_REFS_BYTES = 64 * 1024 * 1024
MAX_INDEX_BYTES = 1024 * 1024 * 1024
MAX_SYMREF_DEPTH = 5
_HASH_LENGTHS = {40: 20, 64: 32}  # hex digits of a commit id -> bytes of an index entry's hash
_ENTRY_STAT = struct.Struct(">10I")  # ctime s/ns, mtime s/ns, dev, ino, mode, uid, gid, size


def git_state(path: str) -> dict[str, Any] | None:
    """``{"repository", "commit", "dirty"}`` for an input inside a git work tree, else None.

    ``dirty`` says whether the input differs from the version git's index records for it (an
    untracked input is dirty too); changes to other files of the repository are not looked at.
    """
    if path == "-" or "://" in path:
        return None
    absolute = os.path.abspath(path)
    found = _find_repository(os.path.dirname(absolute))
    if found is None:
        return None
    top, git_dir, common_dir = found
    commit = _head_commit(git_dir, common_dir)
    if commit is None:
        return None
    relative = _relative_to(absolute, top)
    dirty = True
    if relative is not None:
        dirty = _differs_from_index(absolute, relative, git_dir, _HASH_LENGTHS[len(commit)])
    return {"repository": top, "commit": commit, "dirty": dirty}


def _find_repository(folder: str) -> tuple[str, str, str] | None:
    """(work tree top, git dir, common dir) of the repository holding ``folder``, if any."""
    while True:
        dot_git = os.path.join(folder, ".git")
        if os.path.isdir(dot_git):
            return folder, dot_git, _common_dir(dot_git)
        if os.path.isfile(dot_git):  # a worktree or submodule: "gitdir: <path>"
            text = _read_small(dot_git)
            if text is None or not text.startswith("gitdir:"):
                return None
            git_dir = os.path.join(folder, text.removeprefix("gitdir:").strip())
            return (folder, git_dir, _common_dir(git_dir)) if os.path.isdir(git_dir) else None
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _common_dir(git_dir: str) -> str:
    """Where refs live: a linked worktree's git dir names the main one in ``commondir``."""
    text = _read_small(os.path.join(git_dir, "commondir"))
    if text is None:
        return git_dir
    common = os.path.join(git_dir, text.strip())
    return common if os.path.isdir(common) else git_dir


def _head_commit(git_dir: str, common_dir: str) -> str | None:
    """The commit id HEAD stands for, following symbolic refs; None when it cannot be read."""
    text = _read_small(os.path.join(git_dir, "HEAD"))
    for _ in range(MAX_SYMREF_DEPTH):
        if text is None:
            return None
        text = text.strip()
        if not text.startswith("ref:"):
            return text.lower() if _is_commit_id(text) else None
        ref = text.removeprefix("ref:").strip()
        if not ref.startswith("refs/") or ".." in ref.split("/"):
            return None
        loose = _read_small(os.path.join(common_dir, *ref.split("/")))
        text = loose if loose is not None else _packed_ref(common_dir, ref)
    return None


def _packed_ref(common_dir: str, ref: str) -> str | None:
    path = os.path.join(common_dir, "packed-refs")
    data = _read_regular(path, MAX_PACKED_REFS_BYTES)
    if data is None:
        return None
    wanted = ref.encode("utf-8")
    for line in data.splitlines():
        commit, _, name = line.partition(b" ")
        if name == wanted:
            return commit.decode("ascii", "replace")
    return None


def _is_commit_id(text: str) -> bool:
    return len(text) in _HASH_LENGTHS and all(c in "0123456789abcdefABCDEF" for c in text)


def _relative_to(path: str, top: str) -> str | None:
    relative = os.path.relpath(path, top)
    if relative.startswith(".."):
        real = os.path.relpath(os.path.realpath(path), os.path.realpath(top))
        relative = real if not real.startswith("..") else ""
    return relative.replace(os.sep, "/") or None


def _differs_from_index(path: str, relative: str, git_dir: str, hash_bytes: int) -> bool:
    """Whether ``path`` differs from its index entry (True when untracked or unreadable)."""
    entry = _index_entry(os.path.join(git_dir, "index"), relative.encode("utf-8"), hash_bytes)
    if entry is None:
        return True
    values, blob_id, index_mtime = entry
    try:
        info = os.stat(path)
    except OSError:
        return True
    size = values[9]
    if size != info.st_size & 0xFFFFFFFF:
        return True
    mtime = (values[2], values[3])
    same_stat = mtime == (int(info.st_mtime) & 0xFFFFFFFF, info.st_mtime_ns % 1_000_000_000)
    # git's rule: a file changed in the same second the index was written may look unchanged
    racy = int(info.st_mtime) >= index_mtime
    if same_stat and not racy:
        return False
    return _blob_id(path, info.st_size, hash_bytes) != blob_id


def _blob_id(path: str, size: int, hash_bytes: int) -> bytes | None:
    """git's object id of the file's content (sha1 or sha256 of ``blob <size>\\0<content>``)."""
    digest = hashlib.sha1(usedforsecurity=False) if hash_bytes == 20 else hashlib.sha256()
    digest.update(b"blob %d\0" % size)
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 22):
                digest.update(chunk)
    except OSError:
        return None
    return digest.digest()


def _index_entry(
    index_path: str, wanted: bytes, hash_bytes: int
) -> tuple[tuple[int, ...], bytes, int] | None:
    """(stat fields, blob id, index mtime) of ``wanted`` in a version 2-4 index, else None."""
    try:
        fd = os.open(index_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not 12 <= info.st_size <= MAX_INDEX_BYTES:
            return None
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as data:
            return _scan_index(data, wanted, hash_bytes, int(info.st_mtime))
    except (OSError, ValueError, struct.error, IndexError):
        return None
    finally:
        os.close(fd)


def _scan_index(
    data: Any, wanted: bytes, hash_bytes: int, index_mtime: int
) -> tuple[tuple[int, ...], bytes, int] | None:
    signature, version, count = struct.unpack_from(">4sII", data, 0)
    if signature != b"DIRC" or version not in (2, 3, 4):
        return None
    position, previous = 12, b""
    fixed = _ENTRY_STAT.size + hash_bytes + 2
    for _ in range(count):
        start = position
        values = _ENTRY_STAT.unpack_from(data, position)
        blob_id = bytes(data[position + 40 : position + 40 + hash_bytes])
        (flags,) = struct.unpack_from(">H", data, position + 40 + hash_bytes)
        position += fixed
        if version >= 3 and flags & 0x4000:
            position += 2  # extended flags
        if version == 4:
            strip, position = _varint(data, position)
            end = data.find(b"\0", position)
            if end < 0 or strip > len(previous):
                return None
            name = previous[: len(previous) - strip] + bytes(data[position:end])
            position = end + 1
        else:
            end = data.find(b"\0", position)
            if end < 0:
                return None
            name = bytes(data[position:end])
            position = start + ((end - start) // 8 + 1) * 8  # NUL-padded to a multiple of 8
        previous = name
        if name == wanted and not flags & 0x3000:  # stage 0: not a merge conflict
            return values, blob_id, index_mtime
        if name > wanted:
            return None  # entries are sorted by name
    return None


def _varint(data: Any, position: int) -> tuple[int, int]:
    """git's offset varint (index v4 path compression)."""
    byte = data[position]
    value = byte & 0x7F
    position += 1
    while byte & 0x80:
        byte = data[position]
        value = ((value + 1) << 7) | (byte & 0x7F)
        position += 1
    return value, position


def _read_small(path: str) -> str | None:
    data = _read_regular(path, MAX_SMALL_FILE_BYTES)
    return None if data is None else data.decode("utf-8", "replace")


def _read_regular(path: str, limit: int) -> bytes | None:
    """A regular file's bytes if it has at most ``limit`` of them (never a FIFO or device)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        with open(path, "rb") as file:
            return file.read(limit + 1)[:limit]
    except OSError:
        return None
