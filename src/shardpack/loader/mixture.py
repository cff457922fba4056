"""Weighted mixtures: how many samples each source gives an epoch, and which source each epoch
position reads. Pure numpy, a function of (sample counts, seed, epoch) alone.

The epoch is cut into chunks of ``chunk`` positions. The number of positions of each source
among the first ``P`` positions is the largest-remainder apportionment of ``P`` by the sources'
sample counts, evaluated at every chunk boundary; inside a chunk the sources' samples are
spread by jittered strata (seed, epoch, chunk). So any stretch of positions holds each source's
share to within a few samples, and any position's source is found from its chunk alone
(random access, constant memory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import OptionError
from .sampling import groups

MIX_CHUNK = 4096
_TAG_MIX = 2


def check_weights(weights: Sequence[float], sources: int) -> list[float]:
    """Validated mixture weights: one positive finite number per source."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise OptionError(f"weights must be a list of numbers, got {weights!r}")
    if len(weights) != sources:
        raise OptionError(f"weights: {len(weights)} given for {sources} sources")
    out = []
    for n, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)):
            raise OptionError(f"weights[{n}] must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight <= 0:
            raise OptionError(f"weights[{n}] must be positive and finite, got {weight!r}")
        out.append(float(weight))
    return out


def apportion(total: int, weights: Sequence[float]) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``weights`` that sum to ``total``
    (largest remainders, ties to the first source)."""
    w = np.asarray(weights, dtype=np.float64)
    quotas = total * (w / w.sum())
    shares = np.floor(quotas).astype(np.int64)
    rest = total - int(shares.sum())
    order = np.argsort(-(quotas - shares), kind="stable")
    shares[order[:rest]] += 1
    return np.asarray(shares, dtype=np.int64)


class MixtureOrder:
    """Which source (and which of that source's samples) each position of an epoch reads.

    ``samples[s]`` positions of the epoch go to source ``s``; ``sources_at(positions)`` returns
    the source of each position and its index ``q`` among that source's positions this epoch
    (``0 <= q < samples[s]``, in epoch order).
    """

    def __init__(
        self,
        samples: Sequence[int] | np.ndarray,
        *,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        chunk: int = MIX_CHUNK,
    ) -> None:
        counts = np.asarray(samples, dtype=np.int64)
        if counts.ndim != 1 or len(counts) == 0 or (counts < 0).any():
            raise OptionError(f"mixture sample counts must be non-negative, got {samples!r}")
        self.samples = counts
        self.total = int(counts.sum())
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        used = counts[counts > 0]
        # a chunk holds at least one sample of every source (on average), which keeps the
        # apportionment at chunk boundaries monotone: no source's count ever goes down
        smallest = int(used.min()) if len(used) else 1
        self.chunk = max(1, min(max(chunk, -(-self.total // smallest)), self.total))
        bounds = np.append(np.arange(0, self.total, self.chunk, dtype=np.int64), self.total)
        self.cumulative = _apportion_rows(bounds, counts)  # [chunks + 1, sources]
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None

    @property
    def chunk_count(self) -> int:
        return len(self.cumulative) - 1

    def chunk_labels(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, index within the chunk's positions of that source) per position of ``chunk``."""
        if self._cached is not None and self._cached[0] == chunk:
            return self._cached[1], self._cached[2]
        counts = self.cumulative[chunk + 1] - self.cumulative[chunk]
        sources = np.arange(len(counts), dtype=np.int64)
        # jittered strata: the k-th of a source's c samples in the chunk sits at a random time
        # in [k/c, (k+1)/c), and the chunk reads samples by time. Random, yet any stretch of
        # positions holds each source's share to within a couple of samples.
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch, _TAG_MIX, chunk])
            jitter = rng.random(int(counts.sum()))
        else:
            jitter = np.full(int(counts.sum()), 0.5)
        strata = np.concatenate([np.arange(c, dtype=np.float64) for c in counts.tolist()])
        scale = np.repeat(np.maximum(counts, 1), counts).astype(np.float64)
        labels = np.repeat(sources, counts)[np.argsort((strata + jitter) / scale, kind="stable")]
        by_source = np.argsort(labels, kind="stable")
        firsts = np.concatenate(([0], np.cumsum(counts)))[:-1]
        within = np.empty(len(labels), dtype=np.int64)
        within[by_source] = np.arange(len(labels)) - firsts[labels[by_source]]
        self._cached = (chunk, labels, within)
        return labels, within

    def sources_at(self, positions: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(source, index among the source's positions this epoch) of each epoch position."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.total):
            raise IndexError(f"epoch positions must lie in [0, {self.total})")
        source = np.empty_like(positions)
        index = np.empty_like(positions)
        for chunk, where in groups(positions // self.chunk):
            labels, within = self.chunk_labels(chunk)
            offsets = positions[where] - chunk * self.chunk
            source[where] = labels[offsets]
            index[where] = self.cumulative[chunk, labels[offsets]] + within[offsets]
        return source, index


def _apportion_rows(bounds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Largest-remainder shares of each ``bounds[j]`` by ``counts`` (exact integer arithmetic)."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros((len(bounds), len(counts)), dtype=np.int64)
    if total < 2**31:
        products = bounds[:, None] * counts[None, :]
    else:  # products past int64: Python integers
        products = np.array([[int(b) * int(c) for c in counts] for b in bounds], dtype=object)
    base = (products // total).astype(np.int64)
    remainder = (products % total).astype(np.float64)
    rest = bounds - base.sum(axis=1)
    order = np.argsort(-remainder, axis=1, kind="stable")
    bonus = np.zeros_like(base)
    rows = np.arange(len(bounds))[:, None]
    bonus[rows, order] = (np.arange(len(counts))[None, :] < rest[:, None]).astype(np.int64)
    return np.asarray(base + bonus, dtype=np.int64)
