"""Deprecated import path: sharded packing is ``shardpack.ShardedPacker`` (``shardpack.build``)."""

from ._deprecated import forwarder

__getattr__ = forwarder(
    "shardpack.sharding",
    {
        "ShardedPacker": "shardpack:ShardedPacker",
        "ShardedPackResult": "shardpack.build.sharded:ShardedPackResult",
        "PLAN_NAME": "shardpack.build.sharded:PLAN_NAME",
        "pack_shard": "shardpack.build.sharded:pack_shard",
    },
)
