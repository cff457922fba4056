"""The exception tree of shardpack: every error the library raises on purpose is one of these.

    ShardpackError
    ├── FormatError (also ValueError)      not a packed file, unsupported version, damaged footer
    │   └── CorruptBlockError              a block whose checksum, size or content is wrong
    ├── InputError (also ValueError)       a bad JSONL line: .path, .line, .column, .excerpt
    ├── SchemaError (also ValueError)      a record that breaks the schema: .path, .line, .json_path
    ├── CodecError                         compression or decompression failed
    │   └── UnknownCodecError              a codec id that is not registered, with an install hint
    ├── ManifestError (also ValueError)    a sharded dataset's manifest is damaged or unsafe
    ├── OptionError (also ValueError)      an option value that makes no sense (size, dtype)
    └── RemoteError (also OSError)         a remote read failed (after its retries): .path
        └── ObjectChangedError             a remote object was replaced while it was being read

Errors always name where: the file, and the block, line or record when there is one.
"""

from __future__ import annotations


class ShardpackError(Exception):
    """Base class of every error shardpack raises on purpose."""

    def __reduce__(self) -> tuple[object, ...]:
        # keyword-only constructors cannot be re-called from args: rebuild from the state, so
        # errors raised in worker processes (pool, Dask) reach the caller intact
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(
    cls: type[ShardpackError], args: tuple[object, ...], state: dict[str, object]
) -> Exception:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class FormatError(ShardpackError, ValueError):
    """The bytes are not a valid packed file (bad magic, version, footer or index)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class CorruptBlockError(FormatError):
    """A block failed its checksum, size check or decoding."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None,
        block: int,
        offset: int | None = None,
        first_record: int | None = None,
        record_count: int | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        self.block = block
        self.offset = offset
        self.first_record = first_record
        self.record_count = record_count
        self.expected = expected
        self.actual = actual
        where = f"block {block}"
        if first_record is not None and record_count is not None:
            where += f" (records {first_record}-{first_record + record_count - 1})"
        if offset is not None:
            where += f" at byte {offset}"
        if expected is not None and actual is not None:
            message += f" (expected {expected}, found {actual})"
        self.reason = message
        super().__init__(f"{where}: {message}", path=path)


class InputError(ShardpackError, ValueError):
    """A JSONL input line that cannot be read, with its position."""

    def __init__(
        self,
        reason: str,
        *,
        path: str,
        line: int | None = None,
        column: int | None = None,
        excerpt: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.reason = reason
        self.excerpt = excerpt
        where = path
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        message = f"{where}: {reason}"
        if excerpt:
            message += f" near {excerpt!r}"
        super().__init__(message)


class SchemaError(ShardpackError, ValueError):
    """A record that does not comply with the dataset's JSON Schema."""

    def __init__(
        self, reason: str, *, path: str | None, line: int | None = None, json_path: str = "$"
    ) -> None:
        self.path = path
        self.line = line
        self.json_path = json_path
        self.reason = reason
        where = f"{path}:{line}" if path and line is not None else (path or "record")
        super().__init__(f"{where}: schema violation at {json_path}: {reason}")


class CodecError(ShardpackError):
    """Compressing or decompressing a block failed."""


class UnknownCodecError(CodecError, ValueError):
    """A codec id that no registered codec answers to."""


class ManifestError(ShardpackError, ValueError):
    """A sharded dataset's manifest is missing, malformed, inconsistent or unsafe."""


class OptionError(ShardpackError, ValueError):
    """An option value that cannot be used (unknown dtype, bad size, conflicting flags)."""


class RemoteError(ShardpackError, OSError):
    """A request to remote storage failed for good (not found, denied, or still failing after
    its retries)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class ObjectChangedError(RemoteError):
    """A remote object no longer has the version (ETag) it had when it was opened: its bytes
    are never mixed with those already read or cached."""
