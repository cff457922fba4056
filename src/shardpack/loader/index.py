"""The pre-pass over a source: which records a ``filter`` keeps and how many tokens each holds.

One pass decodes every block once; the result (a few bytes per record) is all the epoch order,
token budgets and sequence packing need, so the order stays a pure function of it. With a cache
folder the result is stored under a key made of the data's identity (paths, sizes, record
counts, content hashes), the filter's code and the token field, and reused by later runs and
by other ranks sharing the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OptionError
from ..packfile.reader import PackedFile
from ..storage.atomic import discard, move_into_place, temp_beside
from .plan import SourceIndex

INDEX_VERSION = 1
Predicate = Callable[[Any], Any]


def record_length(record: Any, field: str) -> int:
    """Length (first axis) of ``record[field]``; 0 when the record lacks it."""
    if not isinstance(record, dict):
        return 0
    value = record.get(field)
    if value is None:
        return 0
    if isinstance(value, np.ndarray):
        return int(value.shape[0]) if value.ndim else 1
    if isinstance(value, (list, tuple, str)):
        return len(value)
    return 1


def predicate_fingerprint(predicate: Predicate) -> str:
    """What identifies a filter across runs: its code (functions and lambdas), else its
    pickled state (callable objects), else its type's name."""
    code = getattr(predicate, "__code__", None)
    if code is not None:
        parts = [code.co_code, repr(code.co_consts).encode(), repr(code.co_names).encode()]
        name = f"{getattr(predicate, '__module__', '')}.{getattr(predicate, '__qualname__', '')}"
        return hashlib.sha256(b"\0".join([name.encode(), *parts])).hexdigest()[:32]
    try:
        return hashlib.sha256(pickle.dumps(predicate)).hexdigest()[:32]
    except Exception:
        return type(predicate).__qualname__


def index_key(
    files: Sequence[PackedFile], predicate: Predicate | None, token_field: str | None
) -> str:
    identity = {
        "version": INDEX_VERSION,
        "files": [[f.path, f.size, len(f), f.metadata.content_hash] for f in files],
        "filter": None if predicate is None else predicate_fingerprint(predicate),
        "token_field": token_field,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:40]


def build_index(
    files: Sequence[PackedFile],
    *,
    predicate: Predicate | None = None,
    token_field: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> SourceIndex:
    """The ``SourceIndex`` of ``files``: block counts always; kept ids with a ``predicate``
    (called on every record as stored, before ``columns`` and ``transform``); token counts of
    ``token_field`` when given."""
    counts = [np.asarray(f.index["record_count"], dtype=np.int64) for f in files]
    block_counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    if predicate is None and token_field is None:
        return SourceIndex(block_counts)
    path = None
    if cache_dir is not None:
        path = os.path.join(os.fspath(cache_dir), index_key(files, predicate, token_field) + ".npz")
        cached = _load(path, block_counts)
        if cached is not None:
            return cached
    keep = np.ones(int(block_counts.sum()), dtype=bool) if predicate is not None else None
    lengths = np.zeros(int(block_counts.sum()), dtype=np.int32) if token_field else None
    record_id = 0
    for packed in files:
        for block in range(packed.block_count):
            # token counts alone: decode only the token field (where the reader can)
            wanted = [token_field] if predicate is None and token_field else None
            for record in packed.block_records(block, columns=wanted):
                if keep is not None:
                    try:
                        keep[record_id] = bool(predicate(record))  # type: ignore[misc]
                    except Exception as exc:
                        _note(exc, f"shardpack: in the filter, on record {record_id}")
                        raise
                if lengths is not None:
                    lengths[record_id] = record_length(record, token_field)  # type: ignore[arg-type]
                record_id += 1
    kept = None if keep is None else np.flatnonzero(keep).astype(np.int64)
    index = SourceIndex(block_counts, kept=kept, lengths=lengths)
    if path is not None:
        _store(path, index)
    return index


def _note(exc: BaseException, text: str) -> None:
    add_note = getattr(exc, "add_note", None)  # Python 3.11+
    if add_note is not None:
        add_note(text)


def _load(path: str, block_counts: np.ndarray) -> SourceIndex | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if not np.array_equal(data["block_counts"], block_counts):
                return None
            kept = data["kept"] if "kept" in data.files else None
            lengths = data["lengths"] if "lengths" in data.files else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        raise OptionError(f"index cache {path} is unreadable ({exc}): delete it") from exc
    return SourceIndex(block_counts, kept=kept, lengths=lengths)


def _store(path: str, index: SourceIndex) -> None:
    arrays: dict[str, Any] = {"block_counts": index.block_counts}
    if index.kept is not None:
        arrays["kept"] = index.kept
    if index.lengths is not None:
        arrays["lengths"] = index.lengths
    # written aside and renamed: another rank reading the folder never sees half a file
    fd, tmp = temp_beside(Path(path))
    out = os.fdopen(fd, "wb")
    try:
        np.savez(out, **arrays)
        out.close()
        move_into_place(tmp, Path(path))
    except BaseException:
        discard(out, tmp)
        raise
