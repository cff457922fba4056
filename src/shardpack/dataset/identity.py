"""Which records a packed file holds: the content hash recomputed from its bytes, a shard checked
against its manifest entry on open, and a dataset held to a content hash pinned by its user.

A footer's ``content_hash`` is a claim (crafted files can claim anything); comparing claims is
cheap and catches swapped, replaced and stale shards. Pinning (``open(expected_hash=...)``)
also recomputes every file's hash from the records on disk, so a file that only claims the
pinned hash is refused too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import xxhash

from ..errors import FormatError, ManifestError
from ..format.block import BlockView
from ..packfile.reader import PackedFile

if TYPE_CHECKING:  # locate loads the remote stack, which a local open never needs
    from .locate import PackedLocation


def record_digests(view: BlockView) -> bytes:
    """Each record's content digest as the packer computed it (payload bytes, then its arena
    range), as little-endian u64s: what a file's content hash is computed over."""
    digests = np.empty(view.count, dtype="<u8")
    for j in range(view.count):
        payload, arena = view.record_bytes(j)
        digest = xxhash.xxh3_64(payload)
        digest.update(arena)
        digests[j] = digest.intdigest()
    return digests.tobytes()


def recompute_content_hash(packed: PackedFile) -> str:
    """The content hash of the records in ``packed``'s blocks (every block read and checked)."""
    content = xxhash.xxh3_128()
    for block in range(packed.block_count):
        view = packed.view_block(block)
        try:
            content.update(record_digests(view))
        except ValueError as exc:
            raise packed.corrupt_error(block, f"bad block layout: {exc}") from None
    return "xxh3_128:" + content.hexdigest()


def check_shard(
    packed: PackedFile,
    where: PackedLocation,
    *,
    entry_number: int,
    listed: Sequence[tuple[str, str]] = (),
) -> None:
    """ManifestError unless ``packed`` is the shard its manifest entry (``where``: entry
    ``entry_number``) describes: its footer's content hash, its size and its record count.
    ``listed``: (file, content hash) of every entry, to name the shard whose records it holds
    instead."""
    content_hash, size, records = where.content_hash, where.size, where.records
    claimed = packed.metadata.content_hash
    if content_hash is not None and claimed != content_hash:
        twins = [name for name, other in listed if other == claimed]
        if twins:
            raise ManifestError(
                f"{packed.path}: holds the records of {twins[0]}, not those of manifest entry "
                f"{entry_number} (shards swapped?)"
            )
        raise ManifestError(
            f"{packed.path}: content hash {claimed} differs from manifest entry {entry_number}'s "
            f"{content_hash} (shard replaced, or from another dataset?)"
        )
    if size is not None and packed.size != size:
        raise ManifestError(
            f"{packed.path}: is {packed.size} bytes but manifest entry {entry_number} lists "
            f"{size} (shard replaced or truncated?)"
        )
    if records is not None and len(packed) != records:
        raise ManifestError(
            f"{packed.path}: holds {len(packed)} records but the manifest lists {records} "
            "(shards swapped or replaced?)"
        )


def check_pinned(files: Iterable[PackedFile], found: str, expected: str, where: str) -> None:
    """FormatError unless the dataset's claimed hash ``found`` is ``expected`` and every file's
    records hash to what its footer claims (so the claims can be trusted). ``files`` is only
    iterated once the claim matches: a dataset's full scan (``ShardSlots.scan``), so that remote
    shards are streamed ahead in pieces (the read-ahead window's), hashed as they arrive."""
    if found != expected:
        raise FormatError(
            f"content hash is {found}, not the pinned {expected} (other data than expected)",
            path=where,
        )
    for packed in files:
        actual = recompute_content_hash(packed)
        if actual != packed.metadata.content_hash:
            raise FormatError(
                f"records hash to {actual}, but the footer claims {packed.metadata.content_hash} "
                "(blocks replaced: not the pinned data)",
                path=packed.path,
            )
