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

from ..errors import OptionError
from .batching import DEFAULT_SORT_WINDOW, SequencePacking, TokenBudget
from .collate import Collater, Padded
from .iterable import PackedIterableDataset
from .mapstyle import BlockShuffleSampler, PackedDataset
from .packing import SequenceCollater
from .state import resume_state_from_loader
from .tensors import TensorBatch

__all__ = [
    "BlockShuffleSampler",
    "PackCollate",
    "PackedDataset",
    "PackedIterableDataset",
    "PadCollate",
    "TensorBatch",
    "make_loader",
    "resume_state_from_loader",
]


class PadCollate(Collater):
    """Collate for DataLoader: records -> tensors, variable-length arrays padded per batch.

    Options as ``shardpack.loader.collate.Collater`` (``pad_value``, ``pad_values`` per field,
    ``side``, ``pad_to_multiple_of``, ``with_lengths``, ``missing``: records without some
    fields). The batch is a ``TensorBatch``: a dict whose tensors are views of one buffer,
    written once (padding included), sent from a worker as one shared-memory storage, pinned
    and moved to a device in one copy (``batch.to(device)``).
    """

    deferred = True  # padded arrays are written straight into the batch's buffer

    def __call__(self, records: Sequence[Any]) -> Any:
        return _to_torch(super().__call__(records))


class PackCollate(SequenceCollater):
    """Collate for sequence packing (``make_loader(..., seq_len=N)``): rows of records ->
    ``[rows, seq_len]`` tensors with ``segment_ids`` and ``position_ids`` (see
    ``shardpack.loader.packing.SequenceCollater``), as a ``TensorBatch``."""

    def __call__(self, rows: Sequence[Sequence[Any]]) -> Any:
        return _to_torch(super().__call__(rows))


def _to_torch(value: Any) -> Any:
    if isinstance(value, dict):
        return TensorBatch.from_tree(value)
    if isinstance(value, Padded):
        value = value.to_numpy()
    if isinstance(value, np.ndarray):
        return TensorBatch.from_tree({"": value})[""]
    return value


def make_loader(
    dataset: PackedIterableDataset,
    batch_size: int | None = None,
    *,
    max_tokens: int | None = None,
    seq_len: int | None = None,
    token_field: str = "input_ids",
    sort_window: int = DEFAULT_SORT_WINDOW,
    oversize: str = "alone",
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    stateful: bool | None = None,
    **kwargs: Any,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` whose batches do not depend on ``num_workers``.

    Batches of ``batch_size`` records; or, with ``max_tokens``, batches of at most that many
    padded tokens of ``token_field`` (records of similar length sorted together within
    ``sort_window`` positions; ``oversize`` = "alone" or "truncate" for longer records); or,
    with ``seq_len``, ``batch_size`` sequences of ``seq_len`` tokens, records packed end to
    end (``PackCollate``). The pre-pass and the epoch's plan run here, before workers start.

    Pads with ``PadCollate()`` unless given another collate, and returns torchdata's
    StatefulDataLoader when it is installed (or ``stateful=True``), a plain DataLoader otherwise
    (or ``stateful=False``).
    """
    if not isinstance(dataset, PackedIterableDataset):
        raise OptionError(
            f"make_loader takes a PackedIterableDataset, got {type(dataset).__name__}"
        )
    if max_tokens is not None and seq_len is not None:
        raise OptionError("give max_tokens (token budgets) or seq_len (packing), not both")
    if max_tokens is not None:
        if batch_size is not None:
            raise OptionError("max_tokens sets the batch sizes: leave batch_size out")
        collate = collate_fn if collate_fn is not None else PadCollate()
        multiple = getattr(collate, "pad_to_multiple_of", None) or 1
        dataset.use_batching(TokenBudget(max_tokens, token_field, sort_window, oversize, multiple))
    elif seq_len is not None:
        if batch_size is None:
            raise OptionError("seq_len needs batch_size: the sequences per batch")
        collate = (
            collate_fn if collate_fn is not None else PackCollate(seq_len, token_field=token_field)
        )
        dataset.use_batching(SequencePacking(seq_len, batch_size, token_field, sort_window))
    else:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"batch_size must be a positive integer, got {batch_size!r}")
        collate = collate_fn if collate_fn is not None else PadCollate()
        dataset.use_batching(None)
        dataset.batch_size = batch_size
    if kwargs.get("persistent_workers") and num_workers > 0 and dataset.shuffle:
        raise OptionError(
            "persistent_workers=True: set_epoch() would not reach the workers' copies of the "
            "dataset, and every epoch would repeat the first one's order; leave it out"
        )
    dataset.prepare()
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
        batch_size=batch_size if dataset.batching is None else None,
        num_workers=num_workers,
        collate_fn=collate,
        **kwargs,
    )
    return loader
