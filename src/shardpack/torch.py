"""PyTorch datasets and loaders over packed data (``pip install 'shardpack[torch]'``).

The public home of the training loader; the implementation lives in ``shardpack.loader``.
"""

from .loader.torch import (
    BlockShuffleSampler,
    PackCollate,
    PackedDataset,
    PackedIterableDataset,
    PadCollate,
    TensorBatch,
    make_loader,
    resume_state_from_loader,
)

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
