"""Checks of a written pack before it reaches its name: ``--validate`` deep-validates a file under
its temporary name, and every ``--dtype`` must have matched a float array field of the pack."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..dataset.validate_file import ValidationReport, validate_path
from ..errors import OptionError
from ..format.metadata import ArrayField


def check_written(tmp_path: Path, output: str) -> ValidationReport:
    """Deep-validate the complete file under its temporary name; raise so it is never committed."""
    report = validate_path(tmp_path, deep=True)
    report.paths = [output]
    for problem in report.problems:
        problem.path = output
    report.raise_if_failed()
    return report


def check_dtypes_matched(
    dtypes: Mapping[str, str],
    lossy: Mapping[str, str],
    arrays: Mapping[str, ArrayField],
    records: int,
) -> None:
    """Raise when a ``--dtype FIELD=...`` matched no float array field of the whole pack (its
    final metadata's ``lossy`` fields): a misspelt field would leave its arrays float32 without a
    word. A field missing from some inputs or shards is fine; a pack without records (allowed
    empty) has no fields to match."""
    missed = sorted(set(dtypes) - set(lossy))
    if not missed or records == 0:
        return
    floats = [path for path, field in arrays.items() if "float" in field.dtype]
    known = f"float array fields: {', '.join(floats[:8])}" if floats else "no float array field"
    raise OptionError(
        f"--dtype {', '.join(f'{path}={dtypes[path]}' for path in missed)}: no float array "
        f"field of that name in the packed records ({known})"
    )
