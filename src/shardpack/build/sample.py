"""What the driver learns from the first megabytes before packing: a zstd dictionary for the
whole dataset, and how many units make a shard of the target packed size. Both depend only on
the input's first bytes and the options, so every worker count and engine agrees on them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

from ..codecs import get_codec
from .options import EncodeOptions, PackOptions
from .planning import UnitSpec
from .units import Unit, UnitEncoder, read_unit

DICTIONARY_SAMPLE_BYTES = 4096  # zstd trains best on many small samples
DICTIONARY_TRAIN_BYTES = 8 * 1024 * 1024  # of input: the first units, whatever their size
RATIO_SAMPLE_BYTES = 4 * 1024 * 1024  # of input, encoded to measure packed bytes per input byte


def take_sample(
    units: Iterator[UnitSpec], budget: int, storage_options: dict[str, Any] | None
) -> tuple[list[Unit], Iterator[UnitSpec]]:
    """The lines of the first units (about ``budget`` bytes of input), read here, and all the
    units again (the sampled ones first)."""
    taken: list[UnitSpec] = []
    sample: list[Unit] = []
    seen = 0
    for spec in units:
        taken.append(spec)
        unit, start, end, _ = read_unit(spec, storage_options)
        sample.append(unit)
        seen += end - start
        if seen >= budget:
            break
    return sample, itertools.chain(taken, units)


def train_dictionary(sample: list[Unit], options: PackOptions) -> dict[str, Any]:
    """The zstd codec settings with a dictionary trained on the sample's raw blocks."""
    raw = UnitEncoder(dataclasses.replace(options.encode_options(), codec={"id": "none"}))
    pieces = [
        block.stored[i : i + DICTIONARY_SAMPLE_BYTES]
        for unit in sample
        for block in raw.encode(unit).blocks
        for i in range(0, len(block.stored), DICTIONARY_SAMPLE_BYTES)
    ]
    codec = get_codec(options.compression, options.level)
    codec.train(pieces)
    return codec.to_dict()


def units_per_shard(
    sample: list[Unit], options: EncodeOptions, shard_bytes: int, unit_bytes: int
) -> int:
    """Units per shard so that shards come out near ``shard_bytes`` packed, from the packed size
    of the sample (shards are cut at unit boundaries: about a unit's worth of precision)."""
    encoder = UnitEncoder(options)
    taken = stored = 0
    for unit in sample:
        encoded = encoder.encode(unit)
        taken += encoded.input_bytes
        stored += sum(len(block.stored) for block in encoded.blocks)
    return shard_units(taken, stored, shard_bytes, unit_bytes)


def shard_units(taken: int, stored: int, shard_bytes: int, unit_bytes: int) -> int:
    """Units per shard from ``taken`` input bytes that packed into ``stored`` bytes."""
    ratio = max(stored / taken, 1e-3) if taken else 1.0
    return max(1, round(shard_bytes / ratio / unit_bytes))
