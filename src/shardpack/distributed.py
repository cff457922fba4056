"""Deprecated import path: Dask packing is ``shardpack.pack_distributed``."""

from ._deprecated import forwarder

__getattr__ = forwarder(
    "shardpack.distributed",
    {
        "pack_distributed": "shardpack:pack_distributed",
        "pack_shard": "shardpack.build.dask:pack_shard",
    },
)
