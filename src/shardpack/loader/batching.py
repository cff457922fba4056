"""Batches by token budget, and sequence packing: an epoch's positions cut into batches from
the records' token counts alone (pure numpy, no record is read).

The epoch (in its shuffled order) is cut into spans of ``sort_window`` positions; inside a span
records are sorted by length so that a batch holds records of similar length (little padding),
and the span's batches are shuffled again so that short and long batches alternate. The plan is
global: every rank computes the same batches and takes its share of *batches*, so ranks run the
same number of steps and resuming with another world size stays exact.
"""

from __future__ import annotations

import bisect
import itertools
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import OptionError

OVERSIZE_MODES = ("alone", "truncate")
DEFAULT_SORT_WINDOW = 2048
_TAG_BATCHES = 3


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise OptionError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TokenBudget:
    """Batches of at most ``max_tokens`` padded tokens (records x the longest ``token_field``).

    A record longer than ``max_tokens`` is a batch of its own (``oversize="alone"``, with a
    warning) or cut to ``max_tokens`` (``"truncate"``: every top-level array as long as its
    ``token_field`` is cut). ``pad_to_multiple_of`` counts the padded length as the collate
    rounds it.
    """

    max_tokens: int
    token_field: str = "input_ids"
    sort_window: int = DEFAULT_SORT_WINDOW
    oversize: str = "alone"
    pad_to_multiple_of: int = 1

    def __post_init__(self) -> None:
        _positive("max_tokens", self.max_tokens)
        _positive("sort_window", self.sort_window)
        _positive("pad_to_multiple_of", self.pad_to_multiple_of)
        if not isinstance(self.token_field, str) or not self.token_field:
            raise OptionError(f"token_field must be a field name, got {self.token_field!r}")
        if self.oversize not in OVERSIZE_MODES:
            raise OptionError(
                f"oversize must be one of {', '.join(OVERSIZE_MODES)}; got {self.oversize!r}"
            )

    @property
    def truncate_to(self) -> int | None:
        return self.max_tokens if self.oversize == "truncate" else None


@dataclass(frozen=True)
class SequencePacking:
    """Records concatenated into sequences of ``seq_len`` tokens, ``batch_size`` sequences per
    batch; a record longer than ``seq_len`` is cut to it."""

    seq_len: int
    batch_size: int
    token_field: str = "input_ids"
    sort_window: int = DEFAULT_SORT_WINDOW

    def __post_init__(self) -> None:
        _positive("seq_len", self.seq_len)
        _positive("batch_size", self.batch_size)
        _positive("sort_window", self.sort_window)
        if not isinstance(self.token_field, str) or not self.token_field:
            raise OptionError(f"token_field must be a field name, got {self.token_field!r}")

    @property
    def truncate_to(self) -> int:
        return self.seq_len


Batching = TokenBudget | SequencePacking


class BatchPlan:
    """An epoch's batches: batch ``b`` reads epoch positions ``positions(b)``, record ``i`` of it
    going to row ``rows(b)[i]`` (its own row for token budgets; its sequence when packing)."""

    def __init__(
        self, lengths: np.ndarray, spec: Batching, *, seed: int, epoch: int, shuffle: bool
    ) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        self.spec = spec
        self.oversize = 0
        groups: list[np.ndarray] = []  # epoch positions of each batch (or each sequence)
        window = spec.sort_window
        for span, first in enumerate(range(0, len(lengths), window)):
            span_lengths = lengths[first : first + window]
            if isinstance(spec, SequencePacking):
                # best-fit decreasing: longest records first, each into the fullest sequence
                # with room; then the records regrouped by sequence
                order = np.argsort(-span_lengths, kind="stable")
                bins = _best_fit(span_lengths[order], spec.seq_len)
                order = order[np.argsort(bins, kind="stable")]
                cuts = [0, *np.cumsum(np.bincount(bins)).tolist()]
            else:
                order = np.argsort(span_lengths, kind="stable")
                cuts = self._budget_cuts(span_lengths[order], spec)
            pairs = list(itertools.pairwise(cuts))
            if shuffle and len(pairs) > 1:
                rng = np.random.default_rng([seed, epoch, _TAG_BATCHES, span])
                pairs = [pairs[g] for g in rng.permutation(len(pairs)).tolist()]
            groups += [first + order[a:b] for a, b in pairs]
        if isinstance(spec, SequencePacking):
            per_batch = spec.batch_size
            batches = [groups[i : i + per_batch] for i in range(0, len(groups), per_batch)]
            positions = [np.concatenate(batch) for batch in batches]
            rows = [np.repeat(np.arange(len(b)), [len(g) for g in b]) for b in batches]
        else:
            positions = groups
            rows = [np.arange(len(g)) for g in groups]
        sizes = [len(p) for p in positions]
        self._starts = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
        self._positions = np.concatenate(positions) if positions else np.zeros(0, np.int64)
        self._rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        if self.oversize and isinstance(spec, TokenBudget) and spec.oversize == "alone":
            warnings.warn(
                f"{self.oversize} records are longer than max_tokens={spec.max_tokens} "
                f"({spec.token_field}): each is a batch of its own (oversize='truncate' cuts them)",
                stacklevel=2,
            )

    def _budget_cuts(self, sorted_lengths: np.ndarray, spec: TokenBudget) -> list[int]:
        """Batch boundaries over ascending lengths: as many records as fit the budget."""
        budget, multiple = spec.max_tokens, spec.pad_to_multiple_of
        padded = -(-np.maximum(sorted_lengths, 1) // multiple) * multiple
        if spec.oversize == "truncate":
            padded = np.minimum(padded, -(-budget // multiple) * multiple)
        cuts, i, n = [0], 0, len(padded)
        while i < n:
            most = max(1, budget // int(padded[i]))
            window = padded[i : i + most]
            # (records so far) x (longest so far) grows with every record: the last that fits
            fits = int(np.searchsorted(np.arange(1, len(window) + 1) * window, budget, "right"))
            if fits == 0:
                fits = 1
                self.oversize += 1
            i += fits
            cuts.append(i)
        return cuts

    def __len__(self) -> int:
        return len(self._starts) - 1

    def positions(self, batch: int) -> np.ndarray:
        return self._positions[self._starts[batch] : self._starts[batch + 1]]

    def rows(self, batch: int) -> np.ndarray:
        return self._rows[self._starts[batch] : self._starts[batch + 1]]

    def padded_tokens(self, lengths: np.ndarray) -> tuple[int, int]:
        """(real tokens, padded tokens) over the whole plan, for records of ``lengths``."""
        real = padded = 0
        for b in range(len(self)):
            got = lengths[self.positions(b)]
            if isinstance(self.spec, SequencePacking):
                got = np.minimum(got, self.spec.seq_len)
                real += int(got.sum())
                padded += int(self.rows(b).max() + 1) * self.spec.seq_len
            else:
                if self.spec.oversize == "truncate":
                    got = np.minimum(got, self.spec.max_tokens)
                real += int(got.sum())
                padded += len(got) * int(got.max())
        return real, padded


def _best_fit(lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """The sequence of each record (longest first): the fullest sequence it still fits in, else a
    new one (best-fit decreasing; rooms kept sorted, so each record costs one bisection)."""
    rooms: list[int] = []  # room << 32 | sequence, sorted: the fullest sequences first
    bins = np.empty(len(lengths), dtype=np.int64)
    count = 0
    for i, length in enumerate(np.minimum(lengths, seq_len).tolist()):
        at = bisect.bisect_left(rooms, length << 32)
        if at < len(rooms):
            key = rooms.pop(at)
            room, sequence = key >> 32, key & 0xFFFFFFFF
        else:
            room, sequence = seq_len, count
            count += 1
        bins[i] = sequence
        bisect.insort(rooms, (room - length) << 32 | sequence)
    return bins
