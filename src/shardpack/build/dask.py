"""Packing on a Dask cluster: the driver plans the shards, each shard is one Dask task running the
engine-free ``pack_shard``, and the driver writes the manifest last. Dask is an optional extra
(``pip install 'shardpack[dask]'``); nothing else in shardpack imports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import OptionError
from .planning import ShardTask
from .resume import ShardResult
from .sharded import Runner, ShardedPacker, ShardedPackResult, pack_shard
from .units import EncodeOptions


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise OptionError(
            "packing on Dask needs dask.distributed: pip install 'shardpack[dask]'"
        ) from None
    return distributed


def dask_runner(client: Any, *, retries: int = 2) -> Runner:
    """A runner that packs each shard as one task on ``client``'s cluster.

    ``pack_shard`` writes under a temporary name and renames (or uploads) at the end, so a task
    retried after a lost worker cannot leave half a shard behind.
    """
    distributed = _distributed()

    def run(
        tasks: list[ShardTask],
        options: EncodeOptions,
        output: str,
        storage_options: dict[str, Any] | None,
    ) -> Iterator[ShardResult]:
        futures = [
            client.submit(
                pack_shard,
                task,
                options,
                output,
                storage_options,
                key=f"shardpack-{task.name}-{os.urandom(4).hex()}",
                pure=False,
                retries=retries,
            )
            for task in tasks
        ]
        try:
            for future in distributed.as_completed(futures):
                yield future.result()  # re-raises a task's error with its own message
        finally:
            for future in futures:
                future.cancel()

    return run


def pack_distributed(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    client: Any = None,
    address: str | None = None,
    shard_size: int | str | None = None,
    records_per_shard: int | None = None,
    resume: bool = True,
    validate: bool = False,
    storage_options: dict[str, Any] | None = None,
    **packer_options: Any,
) -> ShardedPackResult:
    """Pack ``inputs`` into the sharded dataset ``output`` on a Dask cluster.

    Give a ``client`` or a scheduler ``address``. ``output`` must be reachable from every worker
    (an object-store URL, or a shared file system). The shards are byte-identical to a local
    ``ShardedPacker`` pack of the same inputs and options.
    """
    distributed = _distributed()
    own_client = client is None
    if own_client:
        if address is None:
            raise OptionError("pack_distributed needs a Dask client or a scheduler address")
        client = distributed.Client(address)
    try:
        packer = ShardedPacker(storage_options=storage_options, **packer_options)
        return packer.pack(
            inputs,
            output,
            shard_size=shard_size,
            records_per_shard=records_per_shard,
            resume=resume,
            validate=validate,
            runner=dask_runner(client),
        )
    finally:
        if own_client:
            client.close()
