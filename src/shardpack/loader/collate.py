"""Records -> one batch of numpy arrays: variable-length arrays padded to the batch's longest.

No torch here: ``shardpack.torch.PadCollate`` writes the batch into one buffer and hands it to
torch as tensors over that buffer (one copy in all).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import OptionError

PAD_SIDES = ("right", "left")


@dataclass(frozen=True)
class Padded:
    """A padded batch of arrays not yet written anywhere: its ``shape`` and ``dtype``, and
    ``fill(out)`` to write it into memory the caller chose (one buffer for a whole batch)."""

    arrays: Sequence[np.ndarray]
    shape: tuple[int, ...]
    dtype: np.dtype
    pad_value: float
    side: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def fill(self, out: np.ndarray) -> np.ndarray:
        """Write the padded batch into ``out`` (shape and dtype as announced)."""
        length = self.shape[1] if len(self.shape) > 1 else 0
        if all(a.shape == self.shape[1:] for a in self.arrays):
            for i, a in enumerate(self.arrays):
                out[i] = a
            return out
        out.fill(self.pad_value)
        for i, a in enumerate(self.arrays):
            if a.ndim == 0:
                out[i] = a
                continue
            rest = tuple(slice(0, n) for n in a.shape[1:])
            if self.side == "right":
                first = slice(0, a.shape[0])
            else:
                first = slice(length - a.shape[0], length)
            index: tuple[Any, ...] = (i, first, *rest)
            out[index] = a
        return out

    def to_numpy(self) -> np.ndarray:
        return self.fill(np.empty(self.shape, dtype=self.dtype))


def plan_padding(
    arrays: Sequence[np.ndarray],
    *,
    pad_value: float = 0,
    side: str = "right",
    multiple_of: int | None = None,
) -> Padded:
    """How arrays of one ndim stack into one, each axis padded to the longest.

    The first axis (the sequence) is padded on ``side`` and rounded up to ``multiple_of``;
    further axes (e.g. top-k) are padded at their end.
    """
    if side not in PAD_SIDES:
        raise OptionError(f"pad side must be 'right' or 'left', got {side!r}")
    ndims = {a.ndim for a in arrays}
    if len(ndims) != 1:
        raise OptionError(f"cannot batch arrays of different ranks {sorted(ndims)}")
    dtype = np.result_type(*[a.dtype for a in arrays])
    shape = [max(a.shape[axis] for a in arrays) for axis in range(arrays[0].ndim)]
    if multiple_of and shape:
        shape[0] = -(-shape[0] // multiple_of) * multiple_of
    return Padded(list(arrays), (len(arrays), *shape), np.dtype(dtype), pad_value, side)


def pad_arrays(
    arrays: Sequence[np.ndarray],
    *,
    pad_value: float = 0,
    side: str = "right",
    multiple_of: int | None = None,
) -> np.ndarray:
    """Stack arrays of one ndim into one array, padding each axis to the longest (see
    ``plan_padding``). One copy: into a fresh, writable array."""
    return plan_padding(arrays, pad_value=pad_value, side=side, multiple_of=multiple_of).to_numpy()


MISSING_MODES = ("mask", "list", "error")


class _Absent:
    """Marks a field a record lacks (None is a value records may hold)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


class Collater:
    """Batches records (objects of numpy arrays, numbers, text) into numpy arrays and lists.

    Per field: numpy arrays are padded (``pad_values`` by field name or dotted path, else
    ``pad_value``); empty lists count as empty arrays; booleans, integers and floats become
    arrays (bool, int64, float64); anything else (text, null, mixed lists) stays a list.
    ``with_lengths`` adds ``<field>_lengths`` (first-axis lengths) next to each array field.

    Records need not have the same fields (``missing``): with ``"mask"`` (default) a field that
    some records of the batch lack is batched as if they held an empty array (all padding), a
    zero or ``None`` (text), and ``<field>_present`` (bool, one per record) says who has it; a
    field no record of the batch has is not in the batch. ``"list"`` makes such a field a list
    with ``None`` for the records that lack it; ``"error"`` refuses the batch.
    """

    # True: padded arrays come back as ``Padded`` (written later into one batch buffer)
    deferred = False

    def __init__(
        self,
        *,
        pad_value: float = 0,
        pad_values: Mapping[str, float] | None = None,
        side: str = "right",
        pad_to_multiple_of: int | None = None,
        with_lengths: bool = False,
        missing: str = "mask",
    ) -> None:
        if side not in PAD_SIDES:
            raise OptionError(f"pad side must be 'right' or 'left', got {side!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise OptionError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        if missing not in MISSING_MODES:
            raise OptionError(f"missing must be one of {', '.join(MISSING_MODES)}; got {missing!r}")
        self.pad_value = pad_value
        self.pad_values = dict(pad_values or {})
        self.side = side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.with_lengths = with_lengths
        self.missing = missing

    def __call__(self, records: Sequence[Any]) -> Any:
        if not records:
            raise OptionError("cannot collate an empty batch")
        return self._collate(list(records), "")

    def _collate(self, values: list[Any], path: str) -> Any:
        if isinstance(values[0], dict):
            return self._collate_objects(values, path)
        arrays = _arrays(values)
        if arrays is not None:
            pad = self.pad_values.get(path, self.pad_values.get(path.rsplit(".", 1)[-1], None))
            padded = plan_padding(
                arrays,
                pad_value=self.pad_value if pad is None else pad,
                side=self.side,
                multiple_of=self.pad_to_multiple_of,
            )
            return padded if self.deferred else padded.to_numpy()
        kinds = {type(v) for v in values}
        if kinds == {bool}:
            return np.array(values, dtype=np.bool_)
        if kinds == {int}:
            try:
                return np.array(values, dtype=np.int64)
            except OverflowError:
                return values  # big integers stay Python ints
        if kinds <= {int, float} and float in kinds:
            return np.array(values, dtype=np.float64)
        return values

    def _collate_objects(self, values: list[Any], path: str) -> dict[str, Any]:
        keys = list(values[0])
        for n, value in enumerate(values):
            if not isinstance(value, dict) or (self.missing == "error" and list(value) != keys):
                found = list(value) if isinstance(value, dict) else type(value).__name__
                raise OptionError(
                    f"record {n} of the batch differs at {path or '$'}: expected fields "
                    f"{keys}, found {found}"
                    + (
                        " (PadCollate(missing='mask') batches records without some fields)"
                        if isinstance(value, dict)
                        else ""
                    )
                )
            if len(value) != len(keys) or list(value) != keys:
                keys += [key for key in value if key not in keys]
        out: dict[str, Any] = {}
        for key in keys:
            field = f"{path}.{key}" if path else key
            column = [value.get(key, ABSENT) for value in values]
            present = [v is not ABSENT for v in column]
            if all(present):
                out[key] = self._collate(column, field)
            elif self.missing == "list":
                out[key] = [None if v is ABSENT else v for v in column]
                continue
            else:
                column = _fill_absent(column)
                out[key] = self._collate(column, field)
                out[f"{key}_present"] = np.array(present, dtype=np.bool_)
            if self.with_lengths and _arrays(column) is not None:
                out[f"{key}_lengths"] = np.array([_length(v) for v in column], dtype=np.int64)
        return out


def _fill_absent(column: list[Any]) -> list[Any]:
    """Stand-ins for absent values, shaped like the present ones: an empty array (all padding),
    an empty object (its fields absent in turn), zero, False, or None."""
    present = [v for v in column if v is not ABSENT]
    first = present[0]
    if isinstance(first, np.ndarray) or _arrays(present) is not None:
        template = next(v for v in present if isinstance(v, np.ndarray))
        filler: Any = np.zeros((0, *template.shape[1:]), dtype=template.dtype)
    elif isinstance(first, dict) and all(isinstance(v, dict) for v in present):
        return [{} if v is ABSENT else v for v in column]
    elif all(type(v) is bool for v in present):
        filler = False
    elif all(type(v) in (int, float) for v in present):
        filler = 0
    else:
        filler = None
    return [filler if v is ABSENT else v for v in column]


def _arrays(values: list[Any]) -> list[np.ndarray] | None:
    """The values as arrays if they are arrays (empty lists allowed among them), else None."""
    template = next((v for v in values if isinstance(v, np.ndarray)), None)
    if template is None:
        return None
    out = []
    for v in values:
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, list) and not v:
            # empty numeric lists are stored as plain [] (no dtype to keep): an empty array here
            out.append(np.zeros((0, *template.shape[1:]), dtype=template.dtype))
        else:
            return None
    return out


def _length(value: Any) -> int:
    return int(value.shape[0]) if isinstance(value, np.ndarray) and value.ndim else len(value)
