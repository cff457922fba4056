"""Comparing two packed datasets: counts, schema, statistics and content.

Content is decided from the content hashes the files record (footer claims, no block read) when
both datasets cut their records into files the same way; a dataset's hash depends on where its
shard boundaries are, so datasets split differently (one file against four shards, 500 against
800 records per shard) are compared by their records instead: every block is read, checked and
its records' digests hashed in order across files, which gives the content hash a single-file
pack of those records would have. ``verify`` reads the records always, and refuses files whose
footer claims other records than their blocks hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import xxhash

from ..errors import FormatError
from ..packfile.reader import PackedFile
from .dataset import Dataset
from .identity import record_digests


def diff_datasets(a: Dataset, b: Dataset, *, verify: bool = False) -> dict[str, Any]:
    """What differs between two datasets; ``same_content``: the same records in the same order.

    ``compared`` says how that was decided: ``"record counts"`` (they differ), ``"content
    hashes"`` (the recorded per-file hashes, for datasets split into files alike) or
    ``"records"`` (every block read: different splits, or ``verify``)."""
    meta_a, meta_b = a.metadata, b.metadata
    differences: list[dict[str, Any]] = []

    def compare(what: str, left: Any, right: Any) -> None:
        if left != right:
            differences.append({"what": what, "a": left, "b": right})

    files_a, files_b = a.files, b.files
    compare("records", len(a), len(b))
    if len(a) != len(b):
        same, how = False, "record counts"
    elif verify or [len(f) for f in files_a] != [len(f) for f in files_b]:
        with a.scanned_files() as scanned:  # remote shards fetched whole, ahead of hashing
            hash_a = records_hash(scanned, verify)
        with b.scanned_files() as scanned:
            hash_b = records_hash(scanned, verify)
        same, how = hash_a == hash_b, "records"
        compare("records hash", hash_a, hash_b)
    else:
        # the same split: equal file hashes in order are equal records (a dataset's own hash
        # would differ between a file and a one-shard folder of it: it hashes the file hashes)
        same = [f.metadata.content_hash for f in files_a] == [
            f.metadata.content_hash for f in files_b
        ]
        how = "content hashes"
    if not same:
        compare("content_hash", a.content_hash, b.content_hash)
    if meta_a.schema is not None and meta_b.schema is not None:
        # a folder packed without --schema records none (inferred schemas are per shard): no
        # schema on one side is not a difference
        compare("schema", meta_a.schema, meta_b.schema)
    compare(
        "array dtypes",
        {k: v.dtype for k, v in meta_a.arrays.items()},
        {k: v.dtype for k, v in meta_b.arrays.items()},
    )
    compare("lossy fields", meta_a.lossy, meta_b.lossy)
    fields_a = meta_a.stats.fields if meta_a.stats else {}
    fields_b = meta_b.stats.fields if meta_b.stats else {}
    for path in sorted(set(fields_a) | set(fields_b)):
        left, right = fields_a.get(path), fields_b.get(path)
        if left is None or right is None:
            compare(f"field {path}", "present" if left else None, "present" if right else None)
            continue
        compare(f"field {path} count", left.present, right.present)
        compare(f"field {path} types", left.types, right.types)
    # codec, block size and the split into files never change content: reported, not differences
    packing = {
        "codec": [meta_a.codec, meta_b.codec],
        "block_size": [meta_a.block_size, meta_b.block_size],
        "files": [len(files_a), len(files_b)],
    }
    return {
        "a": a.paths,
        "b": b.paths,
        "same_content": same,
        "compared": how,
        "differences": differences,
        "packing": packing,
    }


def records_hash(files: Iterable[PackedFile], verify: bool = False) -> str:
    """xxh3_128 over the record digests of ``files`` in order (every block read, its checksum
    checked on read): the content hash one file of these records would have, whatever the split.
    ``verify``: also FormatError for a file whose records hash to other than its footer claims."""
    whole = xxhash.xxh3_128()
    for packed in files:
        own = xxhash.xxh3_128()
        for block in range(packed.block_count):
            view = packed.view_block(block)
            try:
                digests = record_digests(view)
            except ValueError as exc:
                raise packed.corrupt_error(block, f"bad block layout: {exc}") from None
            whole.update(digests)
            own.update(digests)
        found = "xxh3_128:" + own.hexdigest()
        if verify and found != packed.metadata.content_hash:
            raise FormatError(
                f"records hash to {found}, but the footer claims "
                f"{packed.metadata.content_hash} (blocks replaced or edited)",
                path=packed.path,
            )
    return "xxh3_128:" + whole.hexdigest()
