"""The codec contract and the registry that maps codec ids to classes.

Contract: ``encode(raw) -> stored`` and ``decode(stored, raw_size) -> raw`` are pure functions of
their input and the codec's settings; ``decode`` must never return more than ``raw_size`` bytes
and must raise ``CodecError`` (never crash or over-allocate) on damaged input. Settings
round-trip through ``to_dict``/``from_dict`` and are stored in the file's metadata.
``decode_batch`` decodes several blocks; a codec that does it in one call
releasing the GIL throughout sets ``batch_releases_gil``, and a full scan with read-ahead then
decodes the next batch on a worker thread while the current one is turned into records. A codec
that can start a batch on a native thread of its own (``native_batches``, ``start_batch``) needs
no worker thread at all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from ..errors import OptionError, UnknownCodecError


class PendingBlocks(Protocol):
    """A batch being decoded on a native thread (``Codec.start_batch``)."""

    def result(self) -> list[Any]:
        """The raw blocks, once decoded (waits without the GIL). ``CodecError`` if one is
        damaged."""
        ...

    def block(self, index: int) -> Any:
        """Raw block ``index`` as soon as it is decoded (waits without the GIL, decoding blocks
        no thread has taken yet meanwhile); ``CodecError`` if a block up to it is damaged.
        ``result()`` afterwards still waits for the threads to be done with the batch."""
        ...

    def stop(self) -> None:
        """No more blocks decoded; returns once no thread writes into the batch's buffers."""
        ...


class Codec(ABC):
    """Compresses and decompresses whole blocks."""

    codec_id: ClassVar[str]
    # decode_batch runs as one call that holds no GIL: worth a worker thread on a full scan
    batch_releases_gil: ClassVar[bool] = False
    # start_batch decodes on a native thread that never needs the GIL: no worker thread needed
    native_batches: ClassVar[bool] = False
    # start_read also reads and checks a local file's blocks on that thread
    native_reads: ClassVar[bool] = False

    @abstractmethod
    def encode(self, raw: bytes | memoryview) -> bytes:
        """Compress one block."""

    @abstractmethod
    def decode(self, stored: bytes | memoryview, raw_size: int) -> bytes | memoryview:
        """Decompress one block whose uncompressed size is ``raw_size``."""

    def decode_batch(
        self, stored: Sequence[bytes | memoryview], raw_sizes: Sequence[int]
    ) -> list[Any]:
        """Decode several blocks (``decode`` for each); returns one buffer per block. Raises
        ``CodecError`` if any is damaged."""
        return [
            self.decode(block, raw_size) for block, raw_size in zip(stored, raw_sizes, strict=True)
        ]

    def start_batch(
        self, stored: Sequence[bytes | memoryview], raw_sizes: Sequence[int], out: Any = None
    ) -> PendingBlocks:
        """Start decoding several blocks on a native thread and return at once (only where
        ``native_batches``). With ``out`` (a writable buffer) the blocks are written into it
        back to back and come back as views of it. ``CodecError`` for a size the stored bytes
        could never hold."""
        raise NotImplementedError(f"{self.codec_id} has no native batches")

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
        """``start_batch`` for blocks of a local file lying together from ``offset`` on: the
        native thread reads ``len(stored)`` bytes into ``stored`` (block j at ``starts[j]``),
        checks each block's checksum (unless None), then decodes it into ``out`` (only where
        ``native_reads``)."""
        raise NotImplementedError(f"{self.codec_id} has no native reads")

    def to_dict(self) -> dict[str, Any]:
        """The codec id and settings, as recorded in the packed file."""
        return {"id": self.codec_id}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> Codec:
        return cls()

    def train(self, samples: list[bytes]) -> None:  # noqa: B027 - optional hook
        """Optionally learn from sample blocks before encoding (e.g. a compression dictionary)."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "id")
        return f"{type(self).__name__}({settings})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.to_dict().items())))


_REGISTRY: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make ``cls`` available under ``cls.codec_id``."""
    _REGISTRY[cls.codec_id] = cls
    return cls


def available_codecs() -> list[str]:
    """The ids of all registered codecs, sorted."""
    return sorted(_REGISTRY)


def get_codec(config: str | dict[str, Any], level: int | None = None) -> Codec:
    """A codec from an id (``"zstd"``) or a recorded config (``{"id": "zstd", "level": 3}``)."""
    if isinstance(config, str):
        config = {"id": config} if level is None else {"id": config, "level": level}
    if not isinstance(config, dict) or not isinstance(config.get("id"), str):
        raise OptionError(f"codec config must name an id, got {config!r}")
    codec_id = config["id"].lower()
    try:
        cls = _REGISTRY[codec_id]
    except KeyError:
        raise UnknownCodecError(
            f"unknown codec {config['id']!r}; available: {', '.join(available_codecs())}"
        ) from None
    return cls.from_dict(config)
