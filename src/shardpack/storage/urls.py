"""URLs: which paths are fsspec URLs, and the filesystem behind one. fsspec is an optional extra
(``pip install 'shardpack[remote]'``), imported only when a URL is used."""

from __future__ import annotations

import re
from typing import Any

from ..errors import OptionError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(path: Any) -> bool:
    """True for ``scheme://...`` strings (including ``file://``), false for plain local paths."""
    return isinstance(path, str) and bool(_URL.match(path))


def is_remote(path: Any) -> bool:
    """True for URLs other than ``file://`` (those name local files)."""
    return is_url(path) and not path.startswith("file://")


def url_to_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and in-filesystem path for ``url``."""
    try:
        import fsspec
    except ImportError:
        raise OptionError(
            f"{url}: URLs need fsspec (pip install 'shardpack[remote]'; s3fs/gcsfs for s3/gs)"
        ) from None
    try:
        fs, fs_path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        return fs, str(fs_path)
    except (ImportError, ValueError) as exc:
        raise OptionError(f"{url}: cannot use this URL: {exc}") from None


def reason_of(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
