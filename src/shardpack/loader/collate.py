"""Records -> one batch of numpy arrays: variable-length arrays padded to the batch's longest.

No torch here: ``shardpack.torch.PadCollate`` turns the result into tensors without copying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import OptionError

PAD_SIDES = ("right", "left")


def pad_arrays(
    arrays: Sequence[np.ndarray],
    *,
    pad_value: float = 0,
    side: str = "right",
    multiple_of: int | None = None,
) -> np.ndarray:
    """Stack arrays of one ndim into one array, padding each axis to the longest.

    The first axis (the sequence) is padded on ``side`` and rounded up to ``multiple_of``;
    further axes (e.g. top-k) are padded at their end. One copy: into a fresh, writable array.
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
    if all(list(a.shape) == shape for a in arrays):
        return np.stack(arrays).astype(dtype, copy=False)
    out = np.full([len(arrays), *shape], pad_value, dtype=dtype)
    for i, a in enumerate(arrays):
        if a.ndim == 0:
            out[i] = a
            continue
        rest = tuple(slice(0, n) for n in a.shape[1:])
        first = slice(0, a.shape[0]) if side == "right" else slice(shape[0] - a.shape[0], shape[0])
        index: tuple[Any, ...] = (i, first, *rest)
        out[index] = a
    return out


class Collater:
    """Batches records (objects of numpy arrays, numbers, text) into numpy arrays and lists.

    Per field: numpy arrays are padded (``pad_values`` by field name or dotted path, else
    ``pad_value``); empty lists count as empty arrays; booleans, integers and floats become
    arrays (bool, int64, float64); anything else (text, null, mixed lists) stays a list.
    ``with_lengths`` adds ``<field>_lengths`` (first-axis lengths) next to each array field.
    """

    def __init__(
        self,
        *,
        pad_value: float = 0,
        pad_values: Mapping[str, float] | None = None,
        side: str = "right",
        pad_to_multiple_of: int | None = None,
        with_lengths: bool = False,
    ) -> None:
        if side not in PAD_SIDES:
            raise OptionError(f"pad side must be 'right' or 'left', got {side!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise OptionError(f"pad_to_multiple_of must be >= 1, got {pad_to_multiple_of}")
        self.pad_value = pad_value
        self.pad_values = dict(pad_values or {})
        self.side = side
        self.pad_to_multiple_of = pad_to_multiple_of
        self.with_lengths = with_lengths

    def __call__(self, records: Sequence[Any]) -> Any:
        if not records:
            raise OptionError("cannot collate an empty batch")
        return self._collate(list(records), "")

    def _collate(self, values: list[Any], path: str) -> Any:
        first = values[0]
        if isinstance(first, dict):
            keys = list(first)
            for n, value in enumerate(values):
                if not isinstance(value, dict) or list(value) != keys:
                    found = list(value) if isinstance(value, dict) else type(value).__name__
                    raise OptionError(
                        f"record {n} of the batch differs at {path or '$'}: expected fields "
                        f"{keys}, found {found}"
                    )
            out: dict[str, Any] = {}
            for key in keys:
                field = f"{path}.{key}" if path else key
                column = [value[key] for value in values]
                out[key] = self._collate(column, field)
                if self.with_lengths and _arrays(column) is not None:
                    out[f"{key}_lengths"] = np.array([_length(v) for v in column], dtype=np.int64)
            return out
        arrays = _arrays(values)
        if arrays is not None:
            pad = self.pad_values.get(path, self.pad_values.get(path.rsplit(".", 1)[-1], None))
            return pad_arrays(
                arrays,
                pad_value=self.pad_value if pad is None else pad,
                side=self.side,
                multiple_of=self.pad_to_multiple_of,
            )
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
