"""Native strings (format 1.2): a str value that is not ASCII is stored as CPython holds it in
memory (extension EXT_NATIVE_STR: a kind byte of 1, 2 or 4, then the characters, that many bytes
each, little-endian), so a reader makes it with one copy instead of decoding UTF-8. On text in
Chinese, Japanese or Cyrillic decoding UTF-8 is most of a scan's time (docs/DECISIONS.md).

A string is stored natively only where that takes at most 1.5 times its UTF-8 bytes: Chinese
(3 UTF-8 bytes a character, 2 native) and Cyrillic go native, an English text with one curly
quote or emoji stays UTF-8 rather than double in size. Map keys and ASCII strings stay msgpack
strings.

The C module ``_speedups`` writes and reads them fast; without it (no compiler at install) the
functions here write the same bytes and read the same values, slower.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from .dtypes import EXT_NATIVE_STR

Ext = msgspec.msgpack.Ext
ExtHook = Callable[[int, Any], Any]
RegionDecoder = Callable[[Any, int, int, ExtHook], Any]
BlockDecoder = Callable[[Any, int, ExtHook, frozenset[str] | None], list[Any] | None]
# a block's records as (keys, each key's values), where all are objects of those keys in order
BlockColumns = tuple[tuple[str, ...], list[list[Any]]]
ColumnsDecoder = Callable[[Any, int, ExtHook], BlockColumns | None]


class Speedups(NamedTuple):
    """The C module's functions (see ``c_decoder``, ``c_block_decoder``,
    ``c_columns_decoder`` and ``nativize``)."""

    decode: RegionDecoder
    decode_block: BlockDecoder
    decode_block_columns: ColumnsDecoder
    nativize: Callable[[bytes], bytes]


speedups: Speedups | None
try:
    from . import _speedups
except ImportError:  # built without a C compiler: the fallbacks below
    speedups = None
else:
    speedups = Speedups(
        _speedups.decode, _speedups.decode_block, _speedups.decode_block_columns, _speedups.nativize
    )


def speedups_built() -> bool:
    """Whether the C module is there (``shardpack info --json`` and the tests report it)."""
    return speedups is not None


def native_string(text: str) -> Ext | None:
    """``text`` (not ASCII, no surrogates) as a native-string extension, or None where that would
    take more than 1.5 times its UTF-8 bytes."""
    try:
        kind, chars = 1, text.encode("latin-1")
    except UnicodeEncodeError:
        kind, chars = 2, text.encode("utf-16-le")
        if len(chars) != 2 * len(text):  # characters past U+FFFF came out as pairs
            kind, chars = 4, text.encode("utf-32-le")
    if 2 * len(chars) > 3 * len(text.encode("utf-8")):
        return None
    return Ext(EXT_NATIVE_STR, bytes((kind,)) + chars)


_warned_slow = False


def _warn_slow() -> None:
    global _warned_slow
    _warned_slow = True
    warnings.warn(
        "shardpack's C modules are not built: native strings (format 1.2) are decoded in Python, "
        "about 3x slower on non-ASCII text. Install a C compiler and Python's headers, then "
        "reinstall shardpack (shardpack --version tells).",
        RuntimeWarning,
        stacklevel=2,
    )


def str_from_native(data: bytes | memoryview) -> str:
    """A native-string extension's str. ValueError for what the writer never makes: an unknown
    kind, a length that is no multiple of it, surrogates, code points past U+10FFFF. Warns
    once where the C module is not built: text with many native strings reads slowly."""
    if speedups is None and not _warned_slow:
        _warn_slow()
    if len(data) < 1:
        raise ValueError("native string without its kind byte")
    kind, chars = data[0], bytes(data[1:])
    if kind == 1:
        return chars.decode("latin-1")
    if kind not in (2, 4):
        raise ValueError(f"native string of unknown kind {kind}")
    if len(chars) % kind:
        raise ValueError(f"native string of kind {kind} holds {len(chars)} bytes")
    try:
        text = chars.decode("utf-16-le" if kind == 2 else "utf-32-le")
    except UnicodeDecodeError:
        raise ValueError("native string holds an invalid code point") from None
    if kind == 2 and 2 * len(text) != len(chars):  # a surrogate pair: no UCS-2 character
        raise ValueError("native string holds a surrogate")
    return text


def nativize(payload: bytes) -> bytes:
    """A record payload (msgspec's msgpack) with its non-ASCII str values as native strings;
    ``payload`` itself when none changes."""
    if speedups is not None:
        return speedups.nativize(payload)
    return _nativize_python(payload)


def c_decoder() -> RegionDecoder | None:
    """The C decoder, or None where it is not built: ``decode(buffer, begin, end, ext_hook)``
    is the msgpack value in ``buffer[begin:end]``, native strings made by one copy, other
    extensions through ``ext_hook(code, bytes)`` (as msgspec's decoder, which takes no buffer
    range and cannot make native strings without a Python call each)."""
    return None if speedups is None else speedups.decode


def c_block_decoder() -> BlockDecoder | None:
    """The C decoder of a whole raw block, or None where it is not built:
    ``decode_block(raw, count, ext_hook, wanted)`` is the block's records (each cut to the keys
    in ``wanted`` unless it is None, the other values stepped over unbuilt), or None for a block
    with an arena (arrays: ``BlockView`` decodes those). ValueError for any inconsistency,
    a record that is no object included: the caller decodes the block again through
    ``BlockView``, which names the fault."""
    return None if speedups is None else speedups.decode_block


def c_columns_decoder() -> ColumnsDecoder | None:
    """The C decoder of a whole raw block into columns, or None where it is not built:
    ``decode_block_columns(raw, count, ext_hook)`` is ``(keys, each key's values)`` where every
    record is an object of the same keys in the same order (no dict made), else None (a block
    with an arena too). ValueError for any inconsistency, as ``c_block_decoder``."""
    return None if speedups is None else speedups.decode_block_columns


def _keep_ext(code: int, data: memoryview) -> Ext:
    return Ext(code, bytes(data))


def _nativize_python(payload: bytes) -> bytes:
    changed = False

    def walk(value: Any) -> Any:
        nonlocal changed
        kind = type(value)
        if kind is str:
            if value.isascii():
                return value
            native = native_string(value)
            if native is None:
                return value
            changed = True
            return native
        if kind is dict:
            return {key: walk(item) for key, item in value.items()}
        if kind is list:
            return [walk(item) for item in value]
        return value

    converted = walk(msgspec.msgpack.decode(payload, ext_hook=_keep_ext))
    # re-encoding msgspec's own output gives its bytes back, but for the strings changed
    return msgspec.msgpack.encode(converted) if changed else payload
