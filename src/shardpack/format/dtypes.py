"""The typed values of the format: extension type codes, dtype codes (part of the file format:
never renumber, only append), and the opt-in lossy storage types."""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np

EXT_ARRAY = 1
EXT_BIGINT = 2  # decimal ASCII digits of an integer outside [-2**63, 2**64)
EXT_RAW_STR = 3  # a str with unpaired surrogates, as UTF-8 with 'surrogatepass'
EXT_NATIVE_STR = 4  # format 1.2: a str as CPython holds it (kind byte, then its characters)

ARRAY_ALIGN = 8

# dtype codes are part of the file format: never renumber, only append
DTYPE_BY_CODE: dict[int, np.dtype] = {
    1: np.dtype(np.bool_),
    2: np.dtype("<i4"),
    3: np.dtype("<i8"),
    4: np.dtype("<u8"),
    5: np.dtype("<f4"),
    6: np.dtype("<f8"),
    7: np.dtype("<f2"),
    8: np.dtype(ml_dtypes.bfloat16),
    # format 1.1: what Python records bring with them (packs of JSON never make these)
    9: np.dtype("i1"),
    10: np.dtype("u1"),
    11: np.dtype("<i2"),
    12: np.dtype("<u2"),
    13: np.dtype("<u4"),
}
CODE_BY_DTYPE = {dtype: code for code, dtype in DTYPE_BY_CODE.items()}
DTYPE_NAMES = {dtype: dtype.name for dtype in DTYPE_BY_CODE.values()}

# the opt-in lossy storage types a field's float arrays can be forced to
LOSSY_DTYPES = {
    "float16": DTYPE_BY_CODE[7],
    "bfloat16": DTYPE_BY_CODE[8],
    "float32": DTYPE_BY_CODE[5],
}


ARRAY_HEADERS = [struct.Struct(f"<BB{n}I") for n in range(33)]  # code, ndim, dims (1.1: ndim 0)
MAX_NDIM = 32
DTYPE_BY_NAME = {dtype.name: dtype for dtype in DTYPE_BY_CODE.values()}
