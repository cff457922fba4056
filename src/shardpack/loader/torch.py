"""PyTorch datasets over packed data: block-friendly shuffling, rank/worker partitioning, resume.

The only module of shardpack that imports torch (``pip install 'shardpack[torch]'``). Datasets
hold paths and options only: files open lazily in whichever process iterates (each DataLoader
worker), so they pickle cheaply. Epoch order and partitioning live in ``shardpack.sampling``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "shardpack.torch needs PyTorch: pip install 'shardpack[torch]' (or any torch build)"
    ) from exc

from .collate import Collater
from .iterable import PackedIterableDataset, resume_state_from_loader
from .mapstyle import BlockShuffleSampler, PackedDataset

__all__ = [
    "BlockShuffleSampler",
    "PackedDataset",
    "PackedIterableDataset",
    "PadCollate",
    "make_loader",
    "resume_state_from_loader",
]


class PadCollate(Collater):
    """Collate for DataLoader: records -> tensors, variable-length arrays padded per batch.

    Options as ``shardpack.collate.Collater`` (``pad_value``, ``pad_values`` per field,
    ``side``, ``pad_to_multiple_of``, ``with_lengths``). The padded batch is built once in
    numpy and handed to torch without another copy (``torch.from_numpy``).
    """

    def __call__(self, records: Sequence[Any]) -> Any:
        return _to_torch(super().__call__(records))


def _to_torch(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _tensor(value)
    if isinstance(value, dict):
        return {key: _to_torch(item) for key, item in value.items()}
    return value


def _tensor(array: np.ndarray) -> torch.Tensor:
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: same bits as torch.bfloat16
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint16)).view(torch.bfloat16)
    if not array.flags.writeable:  # views into a read-only block: torch wants its own memory
        array = array.copy()
    return torch.from_numpy(array)


def make_loader(
    dataset: PackedIterableDataset,
    batch_size: int,
    *,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    stateful: bool | None = None,
    **kwargs: Any,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` whose batches do not depend on ``num_workers``.

    Sets the dataset's ``batch_size`` to the loader's, pads with ``PadCollate()`` unless given
    another collate, and returns torchdata's StatefulDataLoader when it is installed (or
    ``stateful=True``), a plain DataLoader otherwise (or ``stateful=False``).
    """
    dataset.batch_size = batch_size
    loader_class: Any = torch.utils.data.DataLoader
    if stateful is not False:
        try:
            from torchdata.stateful_dataloader import StatefulDataLoader
        except ImportError:
            if stateful:
                raise ImportError(
                    "stateful=True needs torchdata: pip install 'shardpack[torch]' torchdata"
                ) from None
        else:
            loader_class = StatefulDataLoader
    loader: torch.utils.data.DataLoader[Any] = loader_class(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_fn if collate_fn is not None else PadCollate(),
        **kwargs,
    )
    return loader
