"""``--validate``: a written file is deep-validated under its temporary name, before it is moved
into place, so that a file that fails never reaches its path."""

from __future__ import annotations

from pathlib import Path

from ..dataset.validate_file import ValidationReport, validate_path


def check_written(tmp_path: Path, output: str) -> ValidationReport:
    """Deep-validate the complete file under its temporary name; raise so it is never committed."""
    report = validate_path(tmp_path, deep=True)
    report.paths = [output]
    for problem in report.problems:
        problem.path = output
    report.raise_if_failed()
    return report
