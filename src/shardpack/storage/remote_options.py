"""How remote datasets are read: one typed, picklable settings object (``RemoteOptions``) that
``shardpack.open`` and the torch datasets pass down to the byte-range reader."""

from __future__ import annotations

import os
from typing import Annotated, Any

import msgspec

from ..errors import OptionError

CACHE_DIR_ENV = "SHARDPACK_CACHE_DIR"  # opt in to the shared disk cache without code changes

Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
_LOWEST = {  # the smallest value each numeric setting accepts
    "cache_bytes": 1,
    "memory_cache_bytes": 0,
    "readahead_bytes": 0,
    "request_bytes": 1,
    "coalesce_gap_bytes": 0,
    "concurrency": 1,
    "timeout_s": 1e-9,
    "retries": 0,
    "backoff_s": 0,
}


class RemoteOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Settings for reading packed data at fsspec URLs (``s3://``, ``gs://``...).

    - ``storage_options``: passed to fsspec (credentials, ``endpoint_url``...).
    - ``cache_dir``: a local folder for the disk cache that every process of the machine
      shares (DataLoader workers, ranks); ``None`` = no disk cache, unless the
      ``SHARDPACK_CACHE_DIR`` environment variable names one. ``cache_bytes`` bounds it.
    - ``memory_cache_bytes``: a per-process LRU of fetched blocks (as stored); 0 = none.
    - ``readahead_bytes``: most bytes fetched ahead of the reader (in flight or waiting).
    - ``request_bytes``: largest single range request; neighbouring blocks are merged up to
      it, and with a disk cache it is the unit fetched for a block a shuffled epoch needs.
    - ``coalesce_gap_bytes``: blocks this close are fetched in one request (the gap is read
      and dropped) when no disk cache keeps the blocks in between.
    - ``concurrency``: range requests in flight at once, per process.
    - ``timeout_s``, ``retries``, ``backoff_s``: each request is abandoned after ``timeout_s``
      and retried (timeouts, dropped connections, throttling, 5xx) up to ``retries`` times,
      waiting ``backoff_s * 2**attempt`` (with jitter, at most 10 s) in between.
    """

    storage_options: dict[str, Any] = {}
    cache_dir: str | None = None
    cache_bytes: Positive = 32 << 30
    memory_cache_bytes: NonNegative = 0
    readahead_bytes: NonNegative = 64 << 20
    request_bytes: Positive = 8 << 20
    coalesce_gap_bytes: NonNegative = 512 << 10
    concurrency: Positive = 32
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    retries: NonNegative = 5
    backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 0.1

    def __post_init__(self) -> None:
        # msgspec checks the annotated bounds on decode only: check them when built directly
        for name in self.__struct_fields__:
            value, low = getattr(self, name), _LOWEST.get(name)
            if low is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
                raise OptionError(f"RemoteOptions.{name} must be a number >= {low}, got {value!r}")
        if not isinstance(self.storage_options, dict):
            raise OptionError("RemoteOptions.storage_options must be a dict")

    @property
    def disk_cache_dir(self) -> str | None:
        """The disk cache folder in force: ``cache_dir``, else ``$SHARDPACK_CACHE_DIR``."""
        folder = self.cache_dir if self.cache_dir is not None else os.environ.get(CACHE_DIR_ENV)
        return os.path.expanduser(folder) if folder else None


def resolve_remote(
    remote: RemoteOptions | None,
    *,
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    memory_cache_bytes: int | None = None,
) -> RemoteOptions:
    """``remote`` (or the defaults) with the separately given settings filled in; a setting
    given both ways must agree."""
    base = remote if remote is not None else RemoteOptions()
    changes: dict[str, Any] = {}
    if storage_options:
        if base.storage_options and base.storage_options != storage_options:
            raise OptionError("storage_options given twice (directly and in remote=) and differ")
        changes["storage_options"] = dict(storage_options)
    if cache_dir is not None:
        changes["cache_dir"] = os.fspath(cache_dir)
    if memory_cache_bytes:
        changes["memory_cache_bytes"] = memory_cache_bytes
    return msgspec.structs.replace(base, **changes) if changes else base
