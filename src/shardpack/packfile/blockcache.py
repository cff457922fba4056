"""The reader's cache of decoded blocks: least recently used first out, bounded by a count and by
raw bytes (the newest block always stays), so a crafted file of blocks at the format's size cap
cannot make an open file hold gigabytes."""

from __future__ import annotations

from collections import OrderedDict

from ..format.block import BlockView

CACHE_MAX_BYTES = 256 << 20  # one block at the format's cap


class DecodedBlocks(OrderedDict[int, BlockView]):
    """Block number -> parsed block, bounded by a count and by raw bytes."""

    def __init__(self, max_blocks: int, max_bytes: int = CACHE_MAX_BYTES) -> None:
        super().__init__()
        self.max_blocks = max(1, max_blocks)
        self.max_bytes = max_bytes
        self.bytes = 0

    def get_recent(self, block: int) -> BlockView | None:
        """The cached block (now the most recent), or None."""
        view = self.get(block)
        if view is not None:
            self.move_to_end(block)
        return view

    def put(self, block: int, view: BlockView) -> None:
        self[block] = view
        self.bytes += len(view.raw)
        while len(self) > self.max_blocks or (self.bytes > self.max_bytes and len(self) > 1):
            self.bytes -= len(self.popitem(last=False)[1].raw)

    def clear(self) -> None:
        super().clear()
        self.bytes = 0
