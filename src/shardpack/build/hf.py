"""``shardpack.from_hf``: a Hugging Face ``datasets.Dataset`` or ``IterableDataset`` packed
through the ``Writer``, read as Arrow tables (no Python dict per row from ``datasets``), its
typed list columns kept in their own types as a Parquet input's are (``ingest.arrow_values``).

    shardpack.from_hf(load_from_disk("kd"), "kd.packed", compression="zstd")
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import OptionError
from .options import PackOptions
from .results import PackResult
from .writer import Writer

HF_SOURCE = "<hf dataset>"  # how errors and rejects name where a row came from
HF_BATCH_ROWS = 1000


def from_hf(
    dataset: Any,
    output: str | os.PathLike[str],
    *,
    batch_rows: int = HF_BATCH_ROWS,
    options: PackOptions | None = None,
    **pack_options: Any,
) -> PackResult:
    """Pack the rows of ``dataset`` (a ``datasets.Dataset`` or ``IterableDataset``, in its
    order, after any ``select``/``shuffle``/``filter``) into ``output``, with the options of
    ``pack`` (``compression=``, ``shard_size=``, ``records_per_shard=``, ``meta=``, ...)."""
    if not hasattr(dataset, "with_format") or not hasattr(dataset, "iter"):
        raise OptionError(
            f"from_hf takes a datasets.Dataset or IterableDataset, not a {type(dataset).__name__}"
        )
    if batch_rows <= 0:
        raise OptionError(f"batch_rows must be positive, got {batch_rows}")
    from ..ingest.arrow_values import table_records  # its tables come with pyarrow

    tables = dataset.with_format("arrow").iter(batch_size=batch_rows)
    with Writer(output, options=options, **pack_options) as writer:
        for table in tables:
            writer.write_many(table_records(table, HF_SOURCE))
        return writer.close()
