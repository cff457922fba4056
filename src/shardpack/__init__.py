"""shardpack: pack JSONL training data into fast, checked, block-compressed binary datasets.

from shardpack import DatasetPacker
DatasetPacker().pack(input_path="kd_mix.jsonl", output_path="kd_mix.packed", compression="lz4")
ds = shardpack.open("kd_mix.packed"); ds[0]; len(ds); ds.iter_batches(8)
shardpack.pack("rows/*.parquet", "rows.packed"); ds.to_arrow(); ds.to_pandas(); ds.to_hf()
shardpack.from_hf(hf_dataset, "hf.packed")
"""

from __future__ import annotations

from ._version import __version__
from .build.dask import pack_distributed
from .build.hf import from_hf
from .build.options import PackOptions
from .build.packer import DatasetPacker, ShardedPacker, pack
from .build.results import PackPlan, PackResult
from .build.writer import Writer
from .codecs import Codec, available_codecs, get_codec, register_codec
from .dataset.dataset import Dataset, open_dataset
from .errors import (
    CodecError,
    CorruptBlockError,
    FormatError,
    InputError,
    ManifestError,
    ObjectChangedError,
    OptionError,
    RemoteError,
    SchemaError,
    ShardpackError,
    UnknownCodecError,
)
from .storage.remote_options import RemoteOptions

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
    "ObjectChangedError",
    "OptionError",
    "PackOptions",
    "PackPlan",
    "PackResult",
    "RemoteError",
    "RemoteOptions",
    "SchemaError",
    "ShardedPacker",
    "ShardpackError",
    "UnknownCodecError",
    "Writer",
    "__version__",
    "available_codecs",
    "from_hf",
    "get_codec",
    "open",
    "open_dataset",
    "pack",
    "pack_distributed",
    "register_codec",
]
