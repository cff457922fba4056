"""The checks a pack runs around its core loop: schema option, rejects file, empty output,
the stored schema, and re-validating the written file before it is moved into place."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..ingest.rejects import ON_ERROR_CHOICES, Rejection, RejectsWriter, default_rejects_path
from ..ingest.schema_infer import SchemaInferrer
from ..storage.atomic import refuse_inputs_as_output
from .units import EncodeOptions


def resolve_schema(
    schema: Mapping[str, Any] | str | os.PathLike[str] | None,
) -> dict[str, Any] | None:
    """A checked JSON Schema from a dict or a file path (None stays None)."""
    if schema is None:
        return None
    from ..ingest.schema_check import (  # jsonschema: only when a schema is given
        check_schema,
        load_schema,
    )

    if isinstance(schema, Mapping):
        return check_schema(dict(schema))
    return load_schema(schema)


class _NoRejects:
    """Stands in for the rejects file when bad lines fail the pack."""

    count = 0
    final_path: str | None = None

    def write(self, rejections: list[Rejection]) -> None:
        assert not rejections  # units only reject under on_error="skip"

    def commit(self) -> None:
        pass

    def __enter__(self) -> _NoRejects:
        return self

    def __exit__(self, *_: object) -> None:
        pass


class _Rejects(RejectsWriter):
    @property
    def final_path(self) -> str:
        return os.fspath(self.path)

    def __enter__(self) -> _Rejects:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()


def open_rejects(
    output: str,
    rejects_path: str | os.PathLike[str] | None,
    on_error: str,
    inputs: Sequence[str] = (),
) -> _Rejects | _NoRejects:
    """Where skipped lines go: a rejects file under ``skip``, nowhere under ``fail``."""
    from ..errors import OptionError

    if on_error not in ON_ERROR_CHOICES:
        raise OptionError(
            f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}, got {on_error!r}"
        )
    if on_error == "fail":
        if rejects_path is not None:
            raise OptionError("a rejects file only applies with on_error='skip'")
        return _NoRejects()
    target = os.fspath(rejects_path) if rejects_path is not None else default_rejects_path(output)
    if Path(target).resolve() == Path(output).resolve():
        raise OptionError("the rejects file cannot be the output file")
    refuse_inputs_as_output(target, inputs, "rejects file")
    return _Rejects(target)


def check_not_empty(records: int, rejected: int, inputs: list[str], allow_empty: bool) -> None:
    """An empty dataset is almost always a mistake (wrong file, every line rejected): refuse it."""
    if records == 0 and not allow_empty:
        where = ", ".join(inputs)
        if rejected:
            raise InputError(
                f"all {rejected} input lines were rejected; nothing packed", path=where
            )
        raise InputError("input holds no records (pass allow_empty to pack it anyway)", path=where)


def schema_metadata(
    options: EncodeOptions, inferred: SchemaInferrer, rejected: int
) -> dict[str, Any]:
    """The schema fields of the file's metadata: the user's schema, or the inferred one."""
    return {
        "schema": dict(options.schema) if options.schema is not None else inferred.to_schema(),
        "schema_source": "user" if options.schema is not None else "inferred",
        "on_error": options.on_error,
        "rejected_lines": rejected,
    }


def check_written(tmp_path: Path, output: str) -> Any:
    """Deep-validate the complete file under its temporary name; raise so it is never committed."""
    from ..dataset.validate_file import validate_path

    report = validate_path(tmp_path, deep=True)
    report.paths = [output]
    for problem in report.problems:
        problem.path = output
    report.raise_if_failed()
    return report
