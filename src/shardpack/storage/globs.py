"""Globs over local paths and fsspec URLs, expanded the same way for ``pack``'s inputs and
``open``'s datasets: each pattern's matches sorted, the patterns in the order given, and a
pattern that matches nothing an error (a typo must not silently read less data)."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

from ..errors import OptionError
from .failures import remote_errors
from .urls import is_url, url_to_fs

PathArg = str | os.PathLike[str]


def expand_globs(
    items: PathArg | Sequence[PathArg],
    storage_options: dict[str, Any] | None = None,
    *,
    folders: bool = False,
    what: str = "input",
) -> list[str]:
    """Paths and URLs with globs (``*``, ``?``, ``[..]``, ``**``) expanded, in order.

    A pattern matches files; with ``folders`` also folders (dataset folders), and only folders
    when it ends with ``/``. A local path that exists as written is never a pattern, and ``-``
    (stdin) is kept as it is."""
    listed = [items] if isinstance(items, (str, os.PathLike)) else list(items)
    if not listed:
        raise OptionError(f"no {what} given")
    result: list[str] = []
    for item in listed:
        text = os.fspath(item)
        if not glob.has_magic(text) or text == "-" or (not is_url(text) and os.path.exists(text)):
            result.append(text)
            continue
        only_folders = folders and text.endswith("/")
        pattern = text.rstrip("/") if only_folders else text
        if is_url(pattern):
            fs, fs_pattern = url_to_fs(pattern, storage_options)
            with remote_errors(text, f"cannot list the {what}s matching it"):
                found = [
                    fs.unstrip_protocol(p)
                    for p in sorted(fs.glob(fs_pattern))
                    if _wanted(fs.isfile(p), fs.isdir(p), folders, only_folders)
                ]
        else:
            found = sorted(
                p
                for p in glob.glob(pattern, recursive=True)
                if _wanted(os.path.isfile(p), os.path.isdir(p), folders, only_folders)
            )
        if not found:
            raise OptionError(f"no {what} matches {text!r}")
        result.extend(found)
    return result


def _wanted(is_file: bool, is_dir: bool, folders: bool, only_folders: bool) -> bool:
    if only_folders:
        return is_dir
    return is_file or (folders and is_dir)
