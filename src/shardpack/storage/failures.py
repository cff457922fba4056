"""What a failed storage request means: transient (retried) or not, and in words for the user
(``not found``, ``access denied``, ``cannot connect``, ``timed out``), as the ``RemoteError``
that names the URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ObjectChangedError, RemoteError
from .urls import reason_of

_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}


def status_of_error(exc: BaseException) -> tuple[int, str] | None:
    """(HTTP status, error code) of a botocore ClientError (or an error caused by one)."""
    for error in (exc, exc.__cause__):
        response = getattr(error, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return int(status or 0), str(response["Error"].get("Code", ""))
    return None


def http_status(exc: BaseException) -> int:
    status = status_of_error(exc.__cause__) if exc.__cause__ is not None else None
    return status[0] if status is not None else 0


def is_transient(exc: BaseException, url: str) -> bool:
    if isinstance(exc, (ObjectChangedError, FileNotFoundError, PermissionError)):
        return False
    status = status_of_error(exc)
    if status is not None:
        code, name = status
        return code >= 500 or code == 429 or name in _THROTTLED
    import asyncio

    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError, OSError)):
        return True
    # botocore's and aiohttp's connection errors are not all OSErrors
    return type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp")


_CONNECT_ERRORS = {"ConnectionError", "ClientConnectionError", "ClientConnectorError"}
_STORAGE_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "fsspec")


def failure_reason(exc: BaseException) -> str | None:
    """Why a storage request failed, in words: ``not found``, ``access denied``, ``cannot
    connect (...)``, ``timed out`` or ``request failed: ...``; None when ``exc`` is no storage
    error (a bug, or an error of ours, is not disguised as one)."""
    status = status_of_error(exc)
    code, name = status if status is not None else (0, "")
    text = reason_of(exc)
    if isinstance(exc, FileNotFoundError) or code == 404 or name in ("NoSuchKey", "NoSuchBucket"):
        bucket = name == "NoSuchBucket" or "bucket does not exist" in text.lower()
        if not bucket and isinstance(exc.__cause__, Exception):
            bucket = type(exc.__cause__).__name__ == "NoSuchBucket"
        return "not found (no such bucket)" if bucket else "not found"
    if isinstance(exc, PermissionError) or code == 403 or name in ("AccessDenied", "Forbidden"):
        return "access denied"
    import asyncio

    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, ConnectionError) or names & _CONNECT_ERRORS:
        return f"cannot connect ({text})"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "ReadTimeoutError" in names:
        return "timed out"
    if status is not None or isinstance(exc, OSError):
        return f"request failed: {text}"
    if type(exc).__module__.split(".")[0] in _STORAGE_MODULES:
        return f"request failed: {type(exc).__name__}: {text}"
    return None


def as_remote_error(exc: Exception, url: str, what: str) -> Exception:
    """``exc`` from a storage request about ``url`` as a RemoteError that names the URL and
    says why (``what``: what was being done), or ``exc`` itself when it is no storage error."""
    if isinstance(exc, RemoteError):
        return exc
    reason = failure_reason(exc)
    return exc if reason is None else RemoteError(f"{what}: {reason}", path=url)


@contextmanager
def remote_errors(url: str, what: str) -> Iterator[None]:
    """Storage failures inside become a RemoteError naming ``url`` (``as_remote_error``); any
    other error passes as it is."""
    try:
        yield
    except Exception as exc:
        error = as_remote_error(exc, url, what)
        if error is exc:
            raise
        raise error from exc


def as_fetch_error(exc: BaseException, url: str) -> Exception:
    if isinstance(exc, (ObjectChangedError, RemoteError)):
        return exc
    status = status_of_error(exc)
    if status is not None and (status[0] == 412 or status[1] == "PreconditionFailed"):
        return ObjectChangedError(
            "changed while being read (If-Match failed: the object was replaced): "
            "reopen the dataset",
            path=url,
        )
    if (status is not None and status[0] == 404) or isinstance(exc, FileNotFoundError):
        return RemoteError(f"not found: {reason_of(exc)}", path=url)
    import asyncio

    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return RemoteError("request timed out (after its retries)", path=url)
    reason = failure_reason(exc)
    if reason is not None and reason.startswith(("access denied", "cannot connect")):
        return RemoteError(reason, path=url)
    return RemoteError(f"request failed: {reason_of(exc)}", path=url)
