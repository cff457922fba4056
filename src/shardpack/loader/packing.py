"""Sequence packing: rows of records -> fixed-length token sequences with their boundaries.

No torch here: ``shardpack.torch.PackCollate`` turns the result into tensors without copying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import OptionError


class SequenceCollater:
    """Packs each row (a list of records) into one sequence of ``seq_len`` tokens.

    Per-token fields (top-level arrays as long as the record's ``token_field``: token ids,
    top-k ids and log-probs, masks) are concatenated along the tokens and padded to
    ``seq_len`` (``pad_values`` per field, else ``pad_value``): ``[rows, seq_len, ...]``.
    ``segment_ids`` (``[rows, seq_len]``, int32) numbers the records of a row from 1, padding
    is 0; ``position_ids`` restarts at 0 with every record (for attention that must not cross
    records). A per-token field that some records lack gets ``<field>_present`` (bool, per token).
    Other fields become lists (one list per row, one value per record).
    """

    def __init__(
        self,
        seq_len: int,
        *,
        token_field: str = "input_ids",
        pad_value: float = 0,
        pad_values: Mapping[str, float] | None = None,
    ) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise OptionError(f"seq_len must be a positive integer, got {seq_len!r}")
        self.seq_len = seq_len
        self.token_field = token_field
        self.pad_value = pad_value
        self.pad_values = dict(pad_values or {})

    def __call__(self, rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
        if not rows or not all(isinstance(row, (list, tuple)) for row in rows):
            raise OptionError("PackCollate takes rows of records (make_loader(..., seq_len=N))")
        records = [r for row in rows for r in row]
        if not all(isinstance(r, dict) for r in records):
            raise OptionError("sequence packing needs object records")
        lengths = [min(self._length(r), self.seq_len) for r in records]
        token_fields = self._token_fields(records)
        shape = (len(rows), self.seq_len)
        out: dict[str, Any] = {}
        for key, template in token_fields.items():
            dtype = np.result_type(
                *[r[key].dtype for r in records if isinstance(r.get(key), np.ndarray)]
            )
            pad = self.pad_values.get(key, self.pad_value)
            out[key] = np.full((*shape, *template.shape[1:]), pad, dtype=dtype)
            if any(key not in r for r in records):
                out[f"{key}_present"] = np.zeros(shape, dtype=np.bool_)
        segments = np.zeros(shape, dtype=np.int32)
        positions = np.zeros(shape, dtype=np.int64)
        n = 0
        for r, row in enumerate(rows):
            offset = 0
            for segment, record in enumerate(row, start=1):
                length = min(lengths[n], self.seq_len - offset)
                n += 1
                span = slice(offset, offset + length)
                for key in token_fields:
                    if isinstance(record.get(key), np.ndarray):
                        out[key][r, span] = record[key][:length]
                        if f"{key}_present" in out:
                            out[f"{key}_present"][r, span] = True
                segments[r, span] = segment
                positions[r, span] = np.arange(length)
                offset += length
        out["segment_ids"] = segments
        out["position_ids"] = positions
        others = [k for r in records for k in r if k not in token_fields]
        for key in dict.fromkeys(others):
            out[key] = [[record.get(key) for record in row] for row in rows]
        return out

    def _length(self, record: dict[str, Any]) -> int:
        tokens = record.get(self.token_field)
        return len(tokens) if isinstance(tokens, (np.ndarray, list)) else 0

    def _token_fields(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Fields whose arrays run along the tokens in every record that has them, each with
        an example array (their trailing shape must agree)."""
        found: dict[str, np.ndarray] = {}
        refused: set[str] = set()
        for record in records:
            tokens = record.get(self.token_field)
            length = len(tokens) if isinstance(tokens, (np.ndarray, list)) else None
            for key, value in record.items():
                if isinstance(value, list) and not value and length == 0:
                    continue  # an empty list: an empty array of unknown dtype, aligned with none
                aligned = (
                    isinstance(value, np.ndarray)
                    and value.ndim >= 1
                    and length is not None
                    and value.shape[0] == length
                )
                if not aligned:
                    refused.add(key)
                elif key in found and found[key].shape[1:] != value.shape[1:]:
                    raise OptionError(
                        f"cannot pack field {key!r}: per-token shapes {found[key].shape[1:]} "
                        f"and {value.shape[1:]} differ"
                    )
                else:
                    found.setdefault(key, value)
        if self.token_field in refused or self.token_field not in found:
            raise OptionError(
                f"sequence packing needs {self.token_field!r} as a numeric array in the records"
            )
        return {k: v for k, v in found.items() if k not in refused}
