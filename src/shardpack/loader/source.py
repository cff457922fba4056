"""What the torch datasets read: a picklable handle on packed data that opens lazily in each
process, the dataset-wide block map, and this process's rank in torch.distributed."""

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


class RecordSource:
    """The picklable part of a dataset: where the data is, which fields, which transform.

    Opens the data on first use in each process and never pickles the open files.
    """

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
        self._dataset: Dataset | None = None
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
            self.source = [os.fspath(p) for p in source]
            if not self.source:
                raise OptionError("no packed files given")
        if columns is not None:
            if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
                raise OptionError(f"columns must be a list of field names, got {columns!r}")
            columns = list(columns)
        self.columns: list[str] | None = columns
        self.transform = transform
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

    def block_counts(self) -> np.ndarray:
        """Records per block over all files, files in order (dataset-wide block numbers)."""
        counts = [np.asarray(f.index["record_count"], dtype=np.int64) for f in self.files]
        return np.concatenate(counts) if counts else np.zeros(0, np.int64)

    def read_ahead(self, blocks: Any) -> None:
        """Remote data: fetch these (file, block) pairs ahead, in this order (see Dataset)."""
        self.dataset.read_ahead(blocks)

    def stop_read_ahead(self) -> None:
        if self._dataset is not None:
            self._dataset.stop_read_ahead()

    def finish(self, record: Any, record_id: int) -> Any:
        """Column selection, then the user's transform."""
        if self.columns is not None:
            if not isinstance(record, dict):
                raise OptionError(
                    f"record {record_id} is a {type(record).__name__}, not an object: "
                    "columns= needs object records"
                )
            try:
                record = {name: record[name] for name in self.columns}
            except KeyError as exc:
                raise OptionError(
                    f"record {record_id} has no field {exc.args[0]!r} (columns={self.columns})"
                ) from None
        return self.transform(record) if self.transform is not None else record

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None


class BlockMap:
    """Dataset-wide block and record numbers -> (file, block in file, record in file)."""

    def __init__(self, files: list[PackedFile]) -> None:
        self.files = files
        blocks = [f.block_count for f in files]
        records = [len(f) for f in files]
        self.file_first_block = np.concatenate(([0], np.cumsum(blocks))).astype(np.int64)
        self.file_first_record = np.concatenate(([0], np.cumsum(records))).astype(np.int64)
        self.block_file = np.repeat(np.arange(len(files)), blocks)
