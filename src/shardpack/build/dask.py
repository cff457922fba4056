"""Packing on a Dask cluster: the driver plans, each shard is one task that reads its own units
and writes its own shard (the same bytes a local pack writes), and the driver keeps the ledger
and writes the manifest last. Dask is an optional extra (``pip install 'shardpack[dask]'``);
nothing else in shardpack imports it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dataset.manifest import shard_name
from ..errors import InputError, OptionError, ShardpackError
from ..storage.folder import open_storage
from .hashing import hash_file
from .inputs import InputsArg
from .ledger import Ledger
from .options import EncodeOptions, PackOptions
from .planning import UnitSpec
from .results import PackResult
from .sink import ShardResult, ShardSink
from .units import EncodedUnit, UnitEncoder, encode_group, unit_groups, worker_name

if TYPE_CHECKING:
    from .pipeline import _Run


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise OptionError(
            "packing on Dask needs dask.distributed: pip install 'shardpack[dask]'"
        ) from None
    return distributed


def pack_shard(
    specs: Sequence[UnitSpec],
    options: EncodeOptions,
    folder: str,
    index: int,
    storage_options: dict[str, Any] | None = None,
    validate: bool = False,
) -> tuple[ShardResult | None, list[EncodedUnit]]:
    """A Dask task: encode one shard's units and write the shard. Returns its result (None when
    it holds no record, or a unit failed) and a light report of each unit for the ledger."""
    encoder = UnitEncoder(options)
    sink = ShardSink(
        options, index=index, storage=open_storage(folder, storage_options), name=shard_name(index)
    )
    reports: list[EncodedUnit] = []
    try:
        for group in unit_groups(specs):
            try:
                encoded_group = encode_group(encoder, group, storage_options)
            except InputError as exc:
                raise InputError(
                    f"{exc.reason} (on Dask worker {worker_name()})", path=group[0].source
                ) from None
            for encoded in encoded_group:
                reports.append(_report(encoded))
                if encoded.failure is not None:
                    sink.abort()
                    return None, reports
                sink.add(encoded)
        if sink.records == 0:
            sink.abort()
            return None, reports
        check = None
        if validate:
            from .checks import check_written

            check = lambda tmp: check_written(tmp, shard_name(index))  # noqa: E731
        return sink.finish(check=check), reports
    except BaseException:
        sink.abort()
        raise


def hash_input(
    location: str, storage_options: dict[str, Any] | None = None
) -> tuple[str, int, str]:
    """A Dask task: an input's sha256 for provenance, read by the worker rather than by the
    driver (a cluster pack of many inputs would otherwise funnel every byte through it), as
    its hex digest, its size and the worker that hashed it."""
    try:
        digest = hash_file(location, storage_options)
        return digest.sha256.hexdigest(), digest.size, worker_name()
    except InputError as exc:
        raise InputError(f"{exc.reason} (on Dask worker {worker_name()})", path=location) from None


def hash_submitter(client: Any, storage_options: dict[str, Any] | None) -> Callable[[str], Any]:
    """Submits ``hash_input`` for one input location; returns its future."""
    return lambda location: client.submit(hash_input, location, storage_options, pure=False)


def _report(encoded: EncodedUnit) -> EncodedUnit:
    """What the driver needs of a unit encoded on a worker: not its blocks."""
    return EncodedUnit(
        [],
        np.zeros(encoded.records, np.uint64),
        {},
        {},
        encoded.input_bytes,
        rejects=encoded.rejects,
        spec=_without_data(encoded.spec),
        start=encoded.start,
        end=encoded.end,
        lines=encoded.lines,
        failure=encoded.failure,
        worker=encoded.worker,
    )


def _without_data(spec: UnitSpec | None) -> UnitSpec | None:
    import dataclasses

    return None if spec is None else dataclasses.replace(spec, data=None)


def _shards(units: Iterator[UnitSpec]) -> Iterator[tuple[int, list[UnitSpec]]]:
    """Consecutive units grouped by shard, each group as soon as it is complete."""
    current: list[UnitSpec] = []
    for unit in units:
        if current and unit.shard != current[0].shard:
            yield current[0].shard, current
            current = []
        current.append(unit)
    if current:
        yield current[0].shard, current


def run_shards(
    run: _Run, units: Iterator[UnitSpec], ledger: Ledger, reused: dict[int, ShardResult]
) -> list[ShardResult]:
    """Every shard as one task on ``run.client``'s cluster, at most two per worker in flight;
    results are accounted in shard order (line numbers need every unit before)."""
    _distributed()  # a clear error when dask.distributed is missing
    client = run.client
    folder = os.path.abspath(run.output) if not run.layout.storage.is_remote else run.output  # type: ignore[union-attr]
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    pending: deque[tuple[int, Any]] = deque()
    results: list[ShardResult] = []

    def settle(index: int, future: Any) -> None:
        if future is None:
            ledger.add_reused(reused[index])
            results.append(reused[index])
            return
        result, reports = future.result()  # re-raises a task's error with its own message
        for report in reports:
            ledger.add(report)
        if result is not None:
            results.append(result)

    try:
        for index, group in _shards(units):
            if index in reused:
                pending.append((index, None))
            else:
                future = client.submit(
                    pack_shard,
                    group,
                    run.encode_options(),
                    folder,
                    index,
                    run.storage_options,
                    run.options.validate,
                    key=f"shardpack-{shard_name(index)}-{os.urandom(4).hex()}",
                    pure=False,
                    retries=2,
                )
                pending.append((index, future))
            while len(pending) > 2 * workers or (pending and pending[0][1] is None):
                settle(*pending.popleft())
        while pending:
            settle(*pending.popleft())
    finally:
        for _, future in pending:
            if future is not None:
                future.cancel()
    for index in sorted(set(reused) - {r.index for r in results}):
        ledger.add_reused(reused[index])
        results.append(reused[index])
    return sorted(results, key=lambda r: r.index)


def pack_distributed(
    inputs: InputsArg,
    output: str | os.PathLike[str],
    *,
    client: Any = None,
    address: str | None = None,
    options: PackOptions | None = None,
    **pack_options: Any,
) -> PackResult:
    """Pack ``inputs`` into the sharded dataset ``output`` on a Dask cluster.

    Give a ``client`` or a scheduler ``address``. ``output`` (and every input) must be reachable
    from every worker: an object-store URL, or a shared file system (local paths are made
    absolute before tasks leave). The shards are byte-identical to a local pack of the same
    inputs and options.
    """
    from .pipeline import pack

    distributed = _distributed()
    if options is None:
        options = PackOptions.create(**pack_options)
    elif pack_options:
        options = options.replace(**pack_options)
    own_client = client is None
    if own_client:
        if address is None:
            raise OptionError("pack_distributed needs a Dask client or a scheduler address")
        client = distributed.Client(address)
    try:
        return pack(inputs, output, options, client=client)
    except ShardpackError:
        raise
    finally:
        if own_client:
            client.close()
