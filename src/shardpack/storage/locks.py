"""A lock that a forked child gets fresh. DataLoader workers are forked from processes that may
be reading (a background thread fetching, opening a shard): a lock held at that moment would
stay held forever in the child, so the child's first use would hang."""

from __future__ import annotations

import os
import threading
from types import TracebackType


class ForkSafeLock:
    """``with lock:`` as with ``threading.Lock``, re-made in each new process."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __enter__(self) -> bool:
        if self._pid != os.getpid():
            self._pid, self._lock = os.getpid(), threading.Lock()
        return self._lock.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._lock.release()
