"""Deprecated import path: Dask packing is ``shardpack.pack_distributed``."""

from ._deprecated import forwarder

__getattr__ = forwarder(
    "shardpack.distributed",
    {
        "pack_distributed": "shardpack:pack_distributed",
        "dask_runner": "shardpack.build.dask:dask_runner",
    },
)
