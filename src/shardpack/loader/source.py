"""What the torch datasets read: picklable handles on packed data that open lazily in each
process, what is done to each record on the way out (fields kept, tokens cut, the user's
transform), the dataset-wide block map, and this process's rank in torch.distributed."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "shardpack.torch needs PyTorch: pip install 'shardpack[torch]' (or any torch build)"
    ) from exc

from ..dataset.dataset import Dataset, open_dataset
from ..errors import OptionError
from ..packfile.reader import PackedFile
from ..storage.remote_options import RemoteOptions, resolve_remote

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Dataset


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) of the default torch.distributed group, or (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_columns(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise OptionError(f"columns must be a list of field names, got {columns!r}")
    if not columns:
        raise OptionError("columns is empty: give at least one field name, or None for all")
    return list(columns)


class DataHandle:
    """One source: paths (or an open Dataset) that open on first use in each process; the
    open files never pickle."""

    def __init__(
        self,
        source: Source,
        *,
        verify: bool,
        cache_blocks: int,
        storage_options: dict[str, Any] | None = None,
        remote: RemoteOptions | None = None,
    ) -> None:
        self._dataset: Dataset | None = None
        self.storage_options = storage_options
        # how remote data is read (fsspec options, caches, read-ahead); travels to workers
        self.remote = resolve_remote(remote, storage_options=storage_options)
        if isinstance(source, (str, os.PathLike)):
            self.source: str | list[str] = os.fspath(source)
        elif hasattr(source, "files"):
            # an already-open Dataset-like object: reuse it here, reopen its files elsewhere
            self.source = [os.fspath(f.path) for f in source.files]
            verify = all(getattr(f, "verify", verify) for f in source.files) and verify
            self._dataset = source  # type: ignore[assignment]
        else:
            try:
                self.source = [os.fspath(p) for p in source]
            except TypeError:
                raise OptionError(f"not a packed data source: {source!r}") from None
            if not self.source:
                raise OptionError("no packed files given")
        self.verify = verify
        self.cache_blocks = cache_blocks

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_dataset"] = None  # memory maps stay behind; each process reopens from paths
        return state

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = open_dataset(
                self.source, verify=self.verify, cache_blocks=self.cache_blocks, remote=self.remote
            )
        return self._dataset

    @property
    def files(self) -> list[PackedFile]:
        return self.dataset.files

    def field_names(self) -> set[str] | None:
        """Every field path the files' statistics name, or None when a file has none."""
        names: set[str] = set()
        for f in self.files:
            stats = f.metadata.stats
            if stats is None or not stats.fields:
                return None
            names.update(stats.fields)
        return names

    def prefetch(self, blocks: Any) -> None:
        """Remote data: fetch these (file, block) pairs ahead, in this order (Dataset.prefetch)."""
        self.dataset.prefetch(blocks)

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None


def require_known_columns(handles: Sequence[DataHandle], columns: list[str] | None) -> None:
    """OptionError for a column no record of any source has (a typo would give empty records)."""
    if columns is None:
        return
    known: set[str] = set()
    for handle in handles:
        names = handle.field_names()
        if names is None:
            return  # files without statistics: nothing to check against
        known |= names
    tops = {name.split(".", 1)[0] for name in known} | known
    missing = [c for c in columns if c not in tops]
    if missing:
        raise OptionError(
            f"columns: no record has field {missing[0]!r} (columns={columns}; fields: "
            f"{', '.join(sorted(n for n in tops if '.' not in n))})"
        )


class RecordFinisher:
    """What happens to a record on its way out: fields kept (``columns``; a field a record
    lacks is left out), arrays cut to ``truncate_to`` tokens, then the user's ``transform``."""

    def __init__(
        self,
        *,
        columns: list[str] | None,
        transform: Callable[[Any], Any] | None,
        token_field: str | None = None,
        truncate_to: int | None = None,
    ) -> None:
        self.columns = columns
        self.transform = transform
        self.token_field = token_field
        self.truncate_to = truncate_to

    def finish(self, record: Any, record_id: int) -> Any:
        if self.columns is not None:
            if not isinstance(record, dict):
                raise OptionError(
                    f"record {record_id} is a {type(record).__name__}, not an object: "
                    "columns= needs object records"
                )
            record = {name: record[name] for name in self.columns if name in record}
        if self.truncate_to is not None and self.token_field is not None:
            record = truncate_tokens(record, self.token_field, self.truncate_to)
        return self.transform(record) if self.transform is not None else record


def truncate_tokens(record: Any, token_field: str, limit: int) -> Any:
    """``record`` with every top-level array as long as its ``token_field`` cut to ``limit``
    (per-token fields such as top-k ids and log-probs are cut with the tokens)."""
    if not isinstance(record, dict):
        return record
    tokens = record.get(token_field)
    length = len(tokens) if isinstance(tokens, (np.ndarray, list)) else None
    if length is None or length <= limit:
        return record
    out = dict(record)
    for key, value in record.items():
        if isinstance(value, (np.ndarray, list)) and len(value) == length:
            out[key] = value[:limit]
    return out


class RecordSource:
    """A map-style source: one handle and its finisher (``columns`` must exist)."""

    def __init__(
        self,
        source: Source,
        *,
        columns: Sequence[str] | None,
        transform: Callable[[Any], Any] | None,
        verify: bool,
        cache_blocks: int,
        storage_options: dict[str, Any] | None = None,
        remote: RemoteOptions | None = None,
    ) -> None:
        names = check_columns(columns)
        self.handle = DataHandle(
            source,
            verify=verify,
            cache_blocks=cache_blocks,
            storage_options=storage_options,
            remote=remote,
        )
        self.finisher = RecordFinisher(columns=names, transform=transform)
        require_known_columns([self.handle], names)

    @property
    def dataset(self) -> Dataset:
        return self.handle.dataset

    def block_counts(self) -> np.ndarray:
        counts = [np.asarray(f.index["record_count"], dtype=np.int64) for f in self.handle.files]
        return np.concatenate(counts) if counts else np.zeros(0, np.int64)

    def finish(self, record: Any, record_id: int) -> Any:
        return self.finisher.finish(record, record_id)

    def close(self) -> None:
        self.handle.close()


class BlockMap:
    """Dataset-wide block and record numbers -> (file, block in file, record in file)."""

    def __init__(self, files: list[PackedFile]) -> None:
        self.files = files
        blocks = [f.block_count for f in files]
        records = [len(f) for f in files]
        self.file_first_block = np.concatenate(([0], np.cumsum(blocks))).astype(np.int64)
        self.file_first_record = np.concatenate(([0], np.cumsum(records))).astype(np.int64)
        self.block_file = np.repeat(np.arange(len(files)), blocks)
        counts = [np.asarray(f.index["record_count"], dtype=np.int64) for f in files]
        all_counts = np.concatenate(counts) if counts else np.zeros(0, np.int64)
        self.block_first = np.concatenate(([0], np.cumsum(all_counts)))[:-1].astype(np.int64)

    def block_of(self, record_ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.block_first, record_ids, side="right") - 1
