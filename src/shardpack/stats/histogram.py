"""Log-linear length histograms: 16 sub-buckets per power of two (percentiles within ~6%), exact
min, max and total, merged by addition so any split of the records gives the same result."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..format.metadata import BlockSizes, LengthSummary

SUB_BUCKETS = 16  # per power of two: relative bucket width 1/16


def bucket_of(length: int) -> int:
    """Histogram bucket of a non-negative length: exact below 32, log-linear above."""
    if length < 2 * SUB_BUCKETS:
        return length
    shift = length.bit_length() - 5  # keep 5 significant bits: 16 sub-buckets per octave
    return 2 * SUB_BUCKETS + (shift - 1) * SUB_BUCKETS + (length >> shift) - SUB_BUCKETS


def bucket_bounds(bucket: int) -> tuple[int, int]:
    """The [low, high] lengths that fall into ``bucket``."""
    if bucket < 2 * SUB_BUCKETS:
        return bucket, bucket
    shift, mantissa = divmod(bucket - 2 * SUB_BUCKETS, SUB_BUCKETS)
    low = (mantissa + SUB_BUCKETS) << (shift + 1)
    return low, low + (1 << (shift + 1)) - 1


def buckets_of(lengths: np.ndarray) -> np.ndarray:
    """``bucket_of`` for many non-negative lengths at once."""
    lengths = lengths.astype(np.int64)
    bits = np.zeros(len(lengths), dtype=np.int64)
    positive = lengths > 0
    bits[positive] = np.floor(np.log2(lengths[positive])).astype(np.int64) + 1
    shift = np.maximum(bits - 5, 1)
    logarithmic = 2 * SUB_BUCKETS + (shift - 1) * SUB_BUCKETS + (lengths >> shift) - SUB_BUCKETS
    return np.where(lengths < 2 * SUB_BUCKETS, lengths, logarithmic)


class LengthHistogram:
    """Counts of lengths in log-linear buckets, with exact min, max and total.

    ``add`` only appends to a pending list (it runs once per string per record, so it must be
    cheap); the pending lengths are bucketed with numpy when the histogram is next read or merged.
    """

    __slots__ = ("_pending", "buckets", "count", "max", "min", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None
        self._pending: list[int] = []

    def add(self, length: int) -> None:
        self._pending.append(length)

    def add_all(self, lengths: Any) -> None:
        self._pending.extend(lengths)

    def flush(self) -> None:
        """Bucket the pending lengths."""
        if not self._pending:
            return
        lengths = np.array(self._pending, dtype=np.int64)
        self._pending = []
        values, counts = np.unique(buckets_of(lengths), return_counts=True)
        buckets = self.buckets
        for b, n in zip(values.tolist(), counts.tolist(), strict=True):
            buckets[b] = buckets.get(b, 0) + n
        low, high = int(lengths.min()), int(lengths.max())
        self.min = low if self.min is None else min(self.min, low)
        self.max = high if self.max is None else max(self.max, high)
        self.count += len(lengths)
        self.total += int(lengths.sum())

    def __getstate__(self) -> dict[str, Any]:
        self.flush()  # travel between processes as buckets, not as a list of lengths
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def merge(self, other: LengthHistogram) -> None:
        self.flush()
        other.flush()
        for b, n in other.buckets.items():
            self.buckets[b] = self.buckets.get(b, 0) + n
        self.count += other.count
        self.total += other.total
        if other.min is not None and (self.min is None or other.min < self.min):
            self.min = other.min
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max

    def percentile(self, q: float) -> int | None:
        """Nearest-rank q-th percentile, as the upper bound of its bucket (capped at the max)."""
        self.flush()
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                return min(bucket_bounds(b)[1], self.max or 0)
        return self.max

    @classmethod
    def from_summary(cls, summary: LengthSummary) -> LengthHistogram:
        """Rebuild a histogram from ``to_summary`` output (exactly: buckets are stored whole)."""
        hist = cls()
        for low, _high, n in summary.histogram or []:
            b = bucket_of(low)
            hist.buckets[b] = hist.buckets.get(b, 0) + n
        hist.count = summary.count
        hist.total = summary.total or 0
        hist.min = summary.min
        hist.max = summary.max
        return hist

    def to_summary(self, *, with_histogram: bool = True) -> LengthSummary:
        self.flush()
        if not self.count:
            return LengthSummary(count=0)
        return LengthSummary(
            count=self.count,
            total=self.total,
            min=self.min,
            mean=self.total / self.count,
            max=self.max,
            p50=self.percentile(50),
            p95=self.percentile(95),
            p99=self.percentile(99),
            histogram=[(*bucket_bounds(b), n) for b, n in sorted(self.buckets.items())]
            if with_histogram
            else None,
        )


def block_size_stats(raw_sizes: list[int], stored_sizes: list[int]) -> BlockSizes:
    """Per-block raw and stored sizes, summarised (without histograms)."""
    raw = LengthHistogram()
    stored = LengthHistogram()
    raw.add_all(raw_sizes)
    stored.add_all(stored_sizes)
    return BlockSizes(
        raw=raw.to_summary(with_histogram=False), stored=stored.to_summary(with_histogram=False)
    )
