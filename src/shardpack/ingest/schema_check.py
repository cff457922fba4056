"""JSON Schema (draft 2020-12) for records: loading a schema, and checking records that hold
numpy arrays against it.

Records are checked as they are stored: numeric lists are already typed numpy arrays. A standard
validator would walk an array of 100,000 numbers one by one (~0.3 s per KD record), so the
checker treats arrays as JSON arrays and evaluates the common item keywords (``type``, ``minimum``,
``maximum``, nested ``items``/``minItems``/``maxItems``) with vectorised numpy; any other keyword
that meets an array sees it as a plain list, so results are those of the standard validator.

Kept apart from schema inference (``schema``): importing jsonschema takes ~75 ms, which every
CLI call and ``import shardpack`` paid though only packs and checks with a schema use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import ml_dtypes
import numpy as np
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from ..errors import OptionError, SchemaError
from .schema_infer import DRAFT_2020_12

REASON_CHARS = 200  # a reason quoting a 100,000-number array must stay one readable line

# keywords that only describe; they never fail an instance
_ANNOTATIONS = frozenset(
    {"title", "description", "$comment", "default", "examples", "deprecated", "readOnly"}
    | {"writeOnly", "$id", "$schema", "$anchor", "$defs", "definitions"}
)
# keywords that handle a numpy array instance correctly as they are (all others see a list)
_ARRAY_SAFE = frozenset(
    {"type", "items", "minItems", "maxItems", "$ref", "$dynamicRef", "allOf", "anyOf", "oneOf"}
    | {"not", "if", "then", "else", "properties", "patternProperties", "additionalProperties"}
    | {"required", "minProperties", "maxProperties", "propertyNames", "dependentRequired"}
    | {"dependentSchemas", "unevaluatedProperties", "minLength", "maxLength", "pattern"}
    | {"format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)
_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def load_schema(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a JSON Schema file; an unusable schema is an OptionError naming the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            schema = json.loads(file.read())
    except OSError as exc:
        raise OptionError(f"cannot read schema {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise OptionError(f"schema {path} is not valid JSON: {exc}") from exc
    return check_schema(schema, where=path)


def check_schema(schema: Any, *, where: str = "schema") -> dict[str, Any]:
    """``schema`` if it is a valid draft 2020-12 JSON Schema object, else an OptionError."""
    if not isinstance(schema, dict):
        raise OptionError(f"{where}: a schema must be a JSON object")
    declared = schema.get("$schema", DRAFT_2020_12)
    if not isinstance(declared, str) or declared.rstrip("#") != DRAFT_2020_12:
        raise OptionError(f"{where}: shardpack uses JSON Schema {DRAFT_2020_12}, not {declared}")
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise OptionError(f"{where}: not a valid JSON Schema: {_short(exc.message)}") from None
    return schema


# ---- checking records that hold numpy arrays -----------------------------------------------


def _plain(instance: Any) -> Any:
    """A numpy array as the nested list of Python scalars it stands for."""
    if isinstance(instance, np.ndarray):
        if instance.dtype.itemsize == 2 and instance.dtype.kind != "i":
            instance = instance.astype(np.float32)  # float16/bfloat16 have no Python scalar
        return instance.tolist()
    return instance


def _on_plain(keyword: Any) -> Any:
    """Wrap a keyword function so a numpy array instance reaches it as a plain list."""

    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        return keyword(validator, value, _plain(instance), schema)

    return check


def _numeric(array: np.ndarray) -> np.ndarray:
    if array.dtype == _BFLOAT16 or array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def _scalar_mask(schema: Mapping[str, Any], array: np.ndarray) -> np.ndarray | None:
    """Per element of ``array``: does it satisfy ``schema``? None when not decidable cheaply."""
    ok = np.ones(array.shape, dtype=bool)
    kind = "b" if array.dtype.kind == "b" else ("f" if array.dtype.kind in "fV" else "i")
    values = _numeric(array)
    for key, expected in schema.items():
        if key in _ANNOTATIONS or key.startswith("x-"):
            continue
        if key == "type":
            names = {expected} if isinstance(expected, str) else set(expected)
            if kind == "b":
                ok &= "boolean" in names
            elif "number" in names or (kind == "i" and "integer" in names):
                pass
            elif kind == "f" and "integer" in names:
                # draft 2020-12 counts 1.0 as an integer
                with np.errstate(invalid="ignore"):
                    ok &= np.isfinite(values) & (np.floor(values) == values)
            else:
                ok &= False
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if kind == "b" or isinstance(expected, bool) or not isinstance(expected, (int, float)):
                continue  # booleans are not numbers: these keywords ignore them
            with np.errstate(invalid="ignore"):
                if key == "minimum":
                    ok &= ~(values < expected)
                elif key == "maximum":
                    ok &= ~(values > expected)
                elif key == "exclusiveMinimum":
                    ok &= ~(values <= expected)
                else:
                    ok &= ~(values >= expected)
        elif key in _NOT_FOR_NUMBERS:
            continue
        else:
            return None
    return ok


def _rows_mask(schema: Any, array: np.ndarray, axis: int) -> np.ndarray | None:
    """Per sub-array ``array[i0, ..., i(axis-1)]``: does it satisfy ``schema``? None = unknown."""
    shape = array.shape[:axis]
    if schema is True or schema == {}:
        return np.ones(shape, dtype=bool)
    if schema is False:
        return np.zeros(shape, dtype=bool)
    if not isinstance(schema, Mapping):
        return None
    if axis == array.ndim:
        return _scalar_mask(schema, array)
    length = array.shape[axis]
    ok = np.ones(shape, dtype=bool)
    for key, expected in schema.items():
        if key in _ANNOTATIONS or key.startswith("x-"):
            continue
        if key == "type":
            names = {expected} if isinstance(expected, str) else set(expected)
            ok &= "array" in names
        elif key == "minItems":
            ok &= length >= expected
        elif key == "maxItems":
            ok &= length <= expected
        elif key == "items":
            inner = _rows_mask(expected, array, axis + 1)
            if inner is None:
                return None
            ok &= inner.all(axis=-1)
        elif key in _NOT_FOR_ARRAYS:
            continue
        else:
            return None
    return ok


# keywords that ignore arrays altogether (they apply to objects, strings or numbers)
_NOT_FOR_ARRAYS = frozenset(
    {"properties", "patternProperties", "additionalProperties", "required", "minProperties"}
    | {"maxProperties", "propertyNames", "dependentRequired", "dependentSchemas", "minLength"}
    | {"maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum"}
    | {"exclusiveMaximum", "multipleOf", "unevaluatedProperties"}
)
# keywords that ignore numbers and booleans (they apply to objects, strings or arrays)
_NOT_FOR_NUMBERS = frozenset(
    {"properties", "patternProperties", "additionalProperties", "required", "minProperties"}
    | {"maxProperties", "propertyNames", "dependentRequired", "dependentSchemas", "minLength"}
    | {"maxLength", "pattern", "format", "unevaluatedProperties", "unevaluatedItems", "items"}
    | {"prefixItems", "contains", "minContains", "maxContains", "uniqueItems", "minItems"}
    | {"maxItems"}
)


def _items(validator: Any, items: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """``items`` that checks a numpy array in one vectorised pass when it can."""
    if not isinstance(instance, np.ndarray):
        yield from _STANDARD_ITEMS(validator, items, instance, schema)
        return
    if "prefixItems" not in schema and len(instance):
        mask = _rows_mask(items, instance, 1)
        if mask is not None:
            if mask.all():
                return
            # report exactly what the standard validator says about the first failing item
            first = int(np.argmin(mask))
            yield from validator.descend(
                instance=_plain(instance[first : first + 1])[0], schema=items, path=first
            )
            return
    yield from _STANDARD_ITEMS(validator, items, _plain(instance), schema)


_STANDARD_ITEMS = Draft202012Validator.VALIDATORS["items"]

ArrayAwareValidator = validators.extend(
    Draft202012Validator,
    validators={
        **{
            key: _on_plain(function)
            for key, function in Draft202012Validator.VALIDATORS.items()
            if key not in _ARRAY_SAFE
        },
        "items": _items,
    },
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
        "array", lambda _checker, instance: isinstance(instance, (list, np.ndarray))
    ),
)


class RecordChecker:
    """Checks records (plain JSON values or decoded records with arrays) against one schema."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = dict(schema)
        self._validator = ArrayAwareValidator(self.schema)

    def first_error(self, record: Any) -> ValidationError | None:
        """The most relevant violation of ``record``, or None if it complies."""
        errors = self._validator.iter_errors(record)
        try:
            first = next(errors)
        except StopIteration:
            return None
        except RecursionError:  # a $ref loop ({"$ref": "#"}), or a record nested very deep
            return ValidationError("the schema recurses too deeply to check this record")
        # best_match prefers the deepest, most specific error; cap how many it weighs
        candidates = [first]
        try:
            for error in errors:
                candidates.append(error)
                if len(candidates) >= 16:
                    break
        except RecursionError:
            pass  # weigh the errors found so far
        return best_match(candidates)

    def check(self, record: Any, *, path: str | None = None, line: int | None = None) -> None:
        """Raise SchemaError (file:line, JSON path, reason) unless ``record`` complies."""
        error = self.first_error(record)
        if error is not None:
            raise SchemaError(
                _short(error.message), path=path, line=line, json_path=error.json_path
            )


def _short(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."
