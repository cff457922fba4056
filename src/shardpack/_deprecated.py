"""Old import paths kept working: each name resolves to its new home with a DeprecationWarning
that names that home. Used by the shim modules the docs of earlier versions showed."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def forwarder(old_module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__``: ``moved`` maps each old name to ``"new.module:name"``."""

    def __getattr__(name: str) -> Any:
        target = moved.get(name)
        if target is None:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module_name, _, attribute = target.partition(":")
        warnings.warn(
            f"{old_module}.{name} moved: use {module_name}.{attribute}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module_name), attribute)

    return __getattr__
