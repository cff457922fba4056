"""Deprecated import path: sharded packing is ``shardpack.ShardedPacker`` (``shardpack.build``)."""

from ._deprecated import forwarder

__getattr__ = forwarder(
    "shardpack.sharding",
    {
        "ShardedPacker": "shardpack:ShardedPacker",
        "ShardedPackResult": "shardpack:PackResult",
        "PLAN_NAME": "shardpack.build.outputs:PLAN_NAME",
    },
)
