"""shardpack: pack JSONL training data into fast, checked, block-compressed binary datasets.

from shardpack import DatasetPacker
DatasetPacker().pack(input_path="kd_mix.jsonl", output_path="kd_mix.packed", compression="lz4")
ds = shardpack.open("kd_mix.packed"); ds[0]; len(ds); ds.iter_batches(8)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .codecs import Codec, available_codecs, get_codec, register_codec
from .dataset import Dataset, open_dataset
from .errors import (
    CodecError,
    CorruptBlockError,
    FormatError,
    InputError,
    ManifestError,
    OptionError,
    SchemaError,
    ShardpackError,
    UnknownCodecError,
)
from .pack import DatasetPacker, PackResult

open = open_dataset

__all__ = [
    "Codec",
    "CodecError",
    "CorruptBlockError",
    "Dataset",
    "DatasetPacker",
    "FormatError",
    "InputError",
    "ManifestError",
    "OptionError",
    "PackResult",
    "SchemaError",
    "ShardpackError",
    "UnknownCodecError",
    "__version__",
    "available_codecs",
    "get_codec",
    "open",
    "open_dataset",
    "register_codec",
]
