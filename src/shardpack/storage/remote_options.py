"""How remote datasets are read: one typed, picklable settings object (``RemoteOptions``) that
``shardpack.open`` and the torch datasets pass down to the byte-range reader."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec

from ..errors import OptionError
from .urls import is_remote

CACHE_DIR_ENV = "SHARDPACK_CACHE_DIR"  # opt in to the shared disk cache without code changes
TIMEOUT_ENV = "SHARDPACK_TIMEOUT_S"  # timeout_s when not given (the command line's --timeout)
RETRIES_ENV = "SHARDPACK_RETRIES"  # retries when not given (the command line's --retries)
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 5

Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


def _timeout_default() -> float:
    """``timeout_s`` when not given: ``$SHARDPACK_TIMEOUT_S``, else 30 s."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise OptionError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return value


def _retries_default() -> int:
    """``retries`` when not given: ``$SHARDPACK_RETRIES``, else 5."""
    text = os.environ.get(RETRIES_ENV, "").strip()
    if not text:
        return DEFAULT_RETRIES
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise OptionError(f"{RETRIES_ENV} must be a whole number >= 0, got {text!r}")
    return value


def check_environment() -> None:
    """OptionError naming ``SHARDPACK_TIMEOUT_S`` or ``SHARDPACK_RETRIES`` if either is set to
    something it cannot be (the command line checks them before any command runs)."""
    _timeout_default()
    _retries_default()


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
      waiting ``backoff_s * 2**attempt`` (with jitter, at most 10 s) in between. When not
      given, ``timeout_s`` and ``retries`` come from ``SHARDPACK_TIMEOUT_S`` and
      ``SHARDPACK_RETRIES`` if set (read when the settings are made), else 30 s and 5.
    """

    storage_options: dict[str, Any] = {}
    cache_dir: str | None = None
    cache_bytes: Positive = 32 << 30
    memory_cache_bytes: NonNegative = 0
    readahead_bytes: NonNegative = 64 << 20
    request_bytes: Positive = 8 << 20
    coalesce_gap_bytes: NonNegative = 512 << 10
    concurrency: Positive = 32
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] = msgspec.field(
        default_factory=_timeout_default
    )
    retries: NonNegative = msgspec.field(default_factory=_retries_default)
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

    def for_urls(self, urls: Iterable[str | os.PathLike[str]]) -> RemoteOptions:
        """These settings for reading ``urls``. On S3 (every remote URL an ``s3://`` one), a
        ``timeout_s`` or ``retries`` other than the default also goes into botocore's
        configuration (``storage_options["config_kwargs"]``: connect and read timeouts, total
        attempts), so that the requests s3fs makes itself (folder checks, listings, manifests,
        whole shards) are bounded as shardpack's range requests are. Otherwise unchanged."""
        remote = [os.fspath(url) for url in urls if is_remote(os.fspath(url))]
        changed = (self.timeout_s != DEFAULT_TIMEOUT_S, self.retries != DEFAULT_RETRIES)
        if not remote or not any(changed) or not all(map(_is_s3, remote)):
            return self
        config = dict(self.storage_options.get("config_kwargs") or _configured_s3_config())
        if changed[0]:  # tightened, never loosened: s3fs's own are 5 s and 15 s
            connect, read = _s3fs_timeouts()
            connect = float(config.get("connect_timeout", connect))
            read = float(config.get("read_timeout", read))
            config["connect_timeout"] = min(self.timeout_s, connect)
            config["read_timeout"] = min(self.timeout_s, read)
        if changed[1]:
            profile = self.storage_options.get("profile")
            mode = (config.get("retries") or {}).get("mode") or _retry_mode(profile)
            config["retries"] = {"mode": mode, "total_max_attempts": self.retries + 1}
        storage_options = {**self.storage_options, "config_kwargs": config}
        return msgspec.structs.replace(self, storage_options=storage_options)


def _is_s3(url: str) -> bool:
    return url.startswith(("s3://", "s3a://"))


def _retry_mode(profile: str | None) -> str:
    """botocore's retry mode (``AWS_RETRY_MODE``, the profile's ``retry_mode``, else legacy),
    given in ``config_kwargs`` as botocore would fill it in: it fills it into the dict it is
    given, which would change ``storage_options`` after the fact (and fsspec's cache key)."""
    try:
        import botocore.session  # type: ignore[import-untyped]

        session = botocore.session.Session(profile=profile)
        return str(session.get_config_variable("retry_mode") or "legacy")
    except Exception:  # no botocore, a broken config file, an unknown profile: s3fs says which
        return "legacy"


def _s3fs_timeouts() -> tuple[float, float]:
    """s3fs's own connect and read timeouts (``S3FileSystem.connect_timeout``, ``read_timeout``)."""
    try:
        from s3fs import S3FileSystem
    except ImportError:
        return 5.0, 15.0
    return float(S3FileSystem.connect_timeout), float(S3FileSystem.read_timeout)


def _configured_s3_config() -> dict[str, Any]:
    """botocore settings that fsspec's configuration (``FSSPEC_S3_CONFIG_KWARGS``, its config
    files) gives s3fs: ``config_kwargs`` in ``storage_options`` would replace them, not add to
    them."""
    try:
        import fsspec.config
    except ImportError:
        return {}  # opening the URL says that fsspec is missing
    found: dict[str, Any] = {}
    for protocol in ("s3", "s3a"):
        found.update(fsspec.config.conf.get(protocol, {}).get("config_kwargs") or {})
    return found


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
