"""Read-ahead on native threads: the C module ``_native_batch`` (built with the package from
LZ4's and zstd's own C code) decompresses a batch of lz4 or zstd blocks on threads that never
take the GIL, while the scan turns the batch before into records. Without the C module there is
no native read-ahead (zstd then falls back to a Python worker thread)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import Any, ClassVar

from ..errors import CodecError
from .base import PendingBlocks

try:
    from . import _native_batch
except ImportError:  # built without a C compiler
    _native_batch = None  # type: ignore[assignment]

BUILT = _native_batch is not None


class NativeBatch:
    """A batch on its native threads; the C module's errors as CodecError."""

    __slots__ = ("_codec_id", "_out", "_pending", "_sizes", "_starts")

    def __init__(self, codec_id: str, pending: Any, out: Any, sizes: Sequence[int]) -> None:
        self._codec_id = codec_id
        self._pending = pending
        self._out = out
        self._sizes = sizes
        self._starts: list[int] | None = None  # where each block lies in out

    def result(self) -> list[Any]:
        try:
            blocks: list[Any] | None = self._pending.result()
        except ValueError as exc:  # a block that failed its checksum, its read or the codec
            raise CodecError(f"{self._codec_id} batch failed: {exc}") from None
        if blocks is not None:
            return blocks
        whole, starts = memoryview(self._out), self._block_starts()
        return [whole[starts[j] : starts[j] + size] for j, size in enumerate(self._sizes)]

    def block(self, index: int) -> Any:
        try:
            own = self._pending.wait_block(index)  # bytes of its own, where no out was given
        except ValueError as exc:
            raise CodecError(f"{self._codec_id} batch failed: {exc}") from None
        if own is not None:
            return own
        start = self._block_starts()[index]
        return memoryview(self._out)[start : start + self._sizes[index]]

    def stop(self) -> None:
        self._pending.stop()

    def _block_starts(self) -> list[int]:
        if self._starts is None:
            self._starts = list(accumulate(self._sizes, initial=0))
        return self._starts


class NativeReadAhead:
    """``Codec.start_batch`` and ``Codec.start_read`` on the C module, for a codec it knows by
    its id ("lz4", "zstd"), which says how many threads a batch gets and which dictionary it
    needs. Listed before ``Codec`` among the bases."""

    codec_id: ClassVar[str]
    native_batches = native_reads = BUILT

    def native_threads(self) -> int:
        """Threads a batch is shared among (the scanning thread joins in when it would wait):
        one by default, as lz4 decompresses in half the time records take to build."""
        return 1

    def native_dictionary(self) -> bytes | None:
        return None

    def start_batch(
        self, stored: Sequence[bytes | memoryview], raw_sizes: Sequence[int], out: Any = None
    ) -> PendingBlocks:
        return self._started(
            lambda c: c.start(
                self._native_id(c),
                list(stored),
                list(raw_sizes),
                out,
                self.native_threads(),
                self.native_dictionary(),
            ),
            out,
            raw_sizes,
        )

    def start_read(
        self,
        fd: int,
        offset: int,
        stored: memoryview,
        starts: list[int],
        stored_sizes: list[int],
        raw_sizes: list[int],
        checksums: list[int] | None,
        out: Any,
    ) -> PendingBlocks:
        return self._started(
            lambda c: c.read(
                self._native_id(c),
                fd,
                offset,
                stored,
                starts,
                stored_sizes,
                raw_sizes,
                checksums,
                out,
                self.native_threads(),
                self.native_dictionary(),
            ),
            out,
            raw_sizes,
        )

    def _started(
        self, start: Callable[[Any], Any], out: Any, raw_sizes: Sequence[int]
    ) -> PendingBlocks:
        """A batch started by ``start(the C module)``; its refusals as CodecError."""
        if _native_batch is None:
            raise NotImplementedError(
                f"{self.codec_id} read-ahead needs the C module, which is not built"
            )
        try:
            pending = start(_native_batch)
        except ValueError as exc:  # a size the stored bytes could never hold
            raise CodecError(str(exc)) from None
        return NativeBatch(self.codec_id, pending, out, raw_sizes)

    def _native_id(self, module: Any) -> int:
        return int(getattr(module, self.codec_id.upper()))
