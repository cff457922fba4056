"""Dataset statistics: gathered in one pass while packing, merged across units and shards."""

from .collector import StatsCollector, token_field
from .fields import FieldStats, merge_stats
from .histogram import LengthHistogram, block_size_stats

__all__ = [
    "FieldStats",
    "LengthHistogram",
    "StatsCollector",
    "block_size_stats",
    "merge_stats",
    "token_field",
]
