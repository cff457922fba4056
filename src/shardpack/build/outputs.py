"""Where a pack writes, and what is already there: one packed file, or a dataset folder (local or
URL) with its manifest, and, while a sharded pack is unfinished, its plan file.

Up to date: the output exists, validates, and its recorded fingerprint (options + each input's
content) equals this pack's. Resume: an unfinished folder whose plan records the same options
fingerprint and unchanged inputs keeps its finished shards that validate. docs/BUILD.md says
what decides, and in which order the cheap checks come.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..dataset.manifest import MANIFEST_NAME, Manifest, ShardEntry, shard_name
from ..errors import OptionError, ShardpackError
from ..format.metadata import FileMetadata
from ..storage.atomic import refuse_inputs_as_output, temp_target
from ..storage.folder import Storage, open_storage
from ..storage.ranges import BytesSource
from ..storage.urls import is_remote
from .hashing import hash_file
from .inputs import InputFile
from .options import PackOptions
from .sink import ShardResult

if TYPE_CHECKING:
    from ..storage.fetch import ObjectPin

PLAN_NAME = "unfinished-pack.json"  # present only while a sharded pack is unfinished


class PlanRecord(msgspec.Struct):
    """What an unfinished sharded pack was doing, for the run that resumes it."""

    options: str  # fingerprint of the options alone
    inputs: list[tuple[str, int | None, str]]  # (path, size, modification stamp)
    fingerprint: str | None = None  # the whole pack's, once every input was hashed


def content_ids(
    files: Sequence[InputFile],
    sha256: dict[int, str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[tuple[str, str]] | None:
    """Each input's ``(path, content id)``: its sha256 (hashed now unless given), or an object
    store's ETag; None when an input cannot be identified (stdin)."""
    ids = []
    for number, file in enumerate(files):
        if file.path == "-":
            return None
        if file.remote and file.stamp:
            ids.append((file.path, f"etag:{file.stamp}"))
            continue
        known = (sha256 or {}).get(number)
        if known is None:
            known = hash_file(file.location, storage_options).sha256.hexdigest()
        ids.append((file.path, known))
    return ids


class OutputLayout:
    """The output of one pack: checked before anything is written."""

    def __init__(self, output: str, options: PackOptions, files: Sequence[InputFile]) -> None:
        self.output = output
        self.options = options
        self.files = files
        self.storage_options = dict(options.storage_options or {}) or None
        local_inputs = [f.location for f in files if not f.remote and f.path != "-"]
        self.storage: Storage | None = None
        self._pin: ObjectPin | None = None  # the version read of a packed file at a URL
        self.existing_bytes: int | None = None  # the size of the packed file already there
        if output == "-":  # a file named '-' is never what was meant
            raise OptionError(
                "packed output cannot go to stdout ('-'): give a file name (or a folder with "
                "a shard size or records per shard)"
            )
        if options.sharded:
            self.storage = open_storage(output, self.storage_options)
            self._check_folder(local_inputs)
        else:
            if output.endswith(("/", os.sep)):  # the spelling of a folder: a file there would
                raise OptionError(  # not be at the name given
                    f"output {output} ends with '/', which names a folder: give a file name, "
                    "or a shard size or records per shard to write a sharded dataset there"
                )
            if not is_remote(output) and os.path.isdir(output.removeprefix("file://")):
                raise OptionError(
                    f"output {output} is a folder: give a file name, or a shard size or "
                    "records per shard to write a sharded dataset there"
                )
            refuse_inputs_as_output(output, local_inputs, "output")

    # -- what is there already --------------------------------------------------------------

    def up_to_date(self) -> FileMetadata | Manifest | None:
        """The output's metadata (file) or manifest (folder) when it already is this pack."""
        recorded = self._recorded()
        if recorded is None:
            return None
        provenance = recorded.provenance
        if provenance is None or not isinstance(provenance.fingerprint, str):
            return None
        previous = [(source.path, source.size) for source in provenance.inputs]
        if previous != [(f.path, f.size) for f in self.files]:
            return None  # an input was added, removed or changed size: no need to hash
        if self.fingerprint() != provenance.fingerprint:
            return None
        return recorded if self._valid() else None

    def fingerprint(self) -> str | None:
        """This pack's fingerprint, inputs hashed now (once); None when stdin is an input."""
        if not hasattr(self, "_fingerprint"):
            ids = content_ids(self.files, None, self.storage_options)
            self._fingerprint = None if ids is None else self.options.fingerprint(ids)
        return self._fingerprint

    def _recorded(self) -> FileMetadata | Manifest | None:
        try:
            if self.storage is None:
                if is_remote(self.output):
                    return self._recorded_remote()
                if not os.path.isfile(self.output):
                    return None
                from ..packfile.reader import PackedFile

                with PackedFile(self.output) as existing:
                    self.existing_bytes = existing.size
                    return existing.metadata
            if not self.storage.exists(MANIFEST_NAME):
                return None
            return Manifest.from_json(self.storage.read_bytes(MANIFEST_NAME))
        except OptionError:
            raise  # a bad setting (SHARDPACK_TIMEOUT_S=5s) is the user's to fix, not "no output"
        except (OSError, ShardpackError):
            return None

    def _recorded_remote(self) -> FileMetadata | None:
        """A packed file at a URL: its footer, read through the range reader as
        ``shardpack.open`` reads a URL (header and footer, one round trip), the version read
        pinned for ``_valid``. No object there: a RemoteError, so None."""
        from ..packfile.reader import PackedFile
        from ..storage.ranges import RangeSource
        from ..storage.remote import RemoteReader
        from ..storage.remote_options import RemoteOptions

        reader = RemoteReader(RemoteOptions(storage_options=self.storage_options or {}))
        try:
            source = RangeSource(self.output, reader=reader)
            with PackedFile(self.output, source=source) as existing:
                self._pin = source.pin
                self.existing_bytes = existing.size
                return existing.metadata
        finally:
            reader.close()

    def _valid_remote(self) -> bool:
        """The packed file at a URL validated as ``shardpack validate`` validates one: its bytes
        fetched (in one request, of the version whose footer was read: a replaced object fails
        If-Match) and checked from memory. A store that does not answer: not up to date."""
        from ..dataset.validate_file import validate_url
        from ..storage.remote_options import RemoteOptions

        if self._pin is None:
            return False
        remote = RemoteOptions(storage_options=self.storage_options or {})
        try:
            report = validate_url(self.output, remote=remote, pin=self._pin)
        except (OSError, ShardpackError):
            return False
        return report.ok

    def _valid(self) -> bool:
        if self.storage is None:
            from ..dataset.validate_file import validate_path

            if is_remote(self.output):
                return self._valid_remote()
            return validate_path(self.output).ok
        from ..dataset.validate_folder import validate_dataset

        return validate_dataset(self.output, storage_options=self.storage_options).ok

    # -- sharded folders --------------------------------------------------------------------

    def _check_folder(self, local_inputs: list[str]) -> None:
        storage = self.storage
        assert storage is not None
        if not storage.is_remote and os.path.isfile(storage.root):
            raise OptionError(f"output {storage.root} is a file; a sharded pack writes a folder")
        names = storage.list_names()
        foreign = [n for n in names if n not in (MANIFEST_NAME, PLAN_NAME) and not _ours(n)]
        if foreign:
            raise OptionError(
                f"output folder {storage.root} holds files that are not part of a shardpack "
                f"dataset ({', '.join(foreign[:3])}{'...' if len(foreign) > 3 else ''}); "
                "use an empty folder"
            )
        root = os.path.abspath(storage.root) + os.sep
        for path in local_inputs:
            if not storage.is_remote and os.path.abspath(path).startswith(root):
                raise OptionError(f"input {path} lies inside the output folder {storage.root}")

    def begin(self, options_fingerprint: str) -> dict[int, ShardResult]:
        """Mark the folder unfinished (its plan) and return the finished shards of an
        interrupted run of the same pack that still validate, by shard number."""
        storage = self.storage
        assert storage is not None
        # trust: only a pack that writes (holding the output's lock, not a dry run) removes the
        # temp files of a killed run of ours, in a folder checked to hold nothing else
        self.remove_leftovers()
        inputs = [(f.path, f.size, f.stamp) for f in self.files]
        reused: dict[int, ShardResult] = {}
        keep = self.options.resume and not self.options.force  # --force rebuilds every shard
        if keep and storage.exists(PLAN_NAME):
            try:
                plan = msgspec.json.decode(storage.read_bytes(PLAN_NAME), type=PlanRecord)
            except (msgspec.DecodeError, msgspec.ValidationError):
                plan = None
            same = plan is not None and plan.options == options_fingerprint
            if same and plan is not None and [tuple(i) for i in plan.inputs] != inputs:
                # touched inputs: the same content still resumes (hashed, once)
                same = plan.fingerprint is not None and self.fingerprint() == plan.fingerprint
            if same:
                reused = self._finished_shards()
        elif keep and storage.exists(MANIFEST_NAME):
            # a finished dataset of this very pack that lost or damaged shards: repair those
            recorded = self._recorded()
            provenance = recorded.provenance if recorded is not None else None
            if provenance is not None and provenance.fingerprint == self.fingerprint():
                reused = self._finished_shards()
        storage.remove(MANIFEST_NAME)  # from here on the folder is unfinished until the end
        self.plan = PlanRecord(options_fingerprint, [list(i) for i in inputs])  # type: ignore[misc]
        storage.write_bytes(PLAN_NAME, msgspec.json.encode(self.plan))
        return reused

    def record_fingerprint(self, fingerprint: str) -> None:
        """Once every input is hashed: lets a resume recognise touched but unchanged inputs."""
        if self.storage is not None:
            self.plan.fingerprint = fingerprint
            self.storage.write_bytes(PLAN_NAME, msgspec.json.encode(self.plan))

    def _finished_shards(self) -> dict[int, ShardResult]:
        from ..dataset.validate_file import validate_path
        from ..packfile.reader import PackedFile

        storage = self.storage
        assert storage is not None
        finished = {}
        for name in storage.list_names():
            if not _is_shard_file(name):
                continue
            index = int(name[6:11])
            try:
                where = storage.location(name)
                data = storage.read_bytes(name) if storage.is_remote else None
                # a source is closed with the file that reads it: one for each
                if not validate_path(where, source=_in_memory(data, where)).ok:
                    continue
                with PackedFile(where, source=_in_memory(data, where)) as packed:
                    metadata, size = packed.metadata, packed.size
                    footer_offset = packed.trailer.index_offset  # for remote readers
                digest = storage.hash_file(name)
            except (ShardpackError, OSError):
                continue
            entry = ShardEntry(
                file=name,
                records=metadata.record_count,
                blocks=metadata.block_count,
                size=size,
                file_hash=digest,
                content_hash=metadata.content_hash,
                inputs=metadata.inputs,
                footer_offset=footer_offset,
            )
            finished[index] = ShardResult(index, entry, metadata, reused=True)
        return finished

    def remove_leftovers(self, also: str | None = None) -> None:
        """Remove the temp files our writers leave beside shards, the manifest or the single
        output file (and beside ``also``, the rejects file). Called, holding the output's lock,
        when a pack starts and when it fails: an interrupt can land between a writer creating
        its temp file and its owner holding it, where no abort can reach it (a SIGTERM test
        once found one)."""
        if self.storage is not None:
            for name in self.storage.list_names():
                if _is_leftover(name):
                    self.storage.remove(name)
        else:
            _remove_temps_beside(self.output)
        if also is not None:
            _remove_temps_beside(also)

    def finish(self, manifest: Manifest, keep: set[str]) -> None:
        """Write the manifest last (a folder without one is unfinished); drop shard files of an
        earlier, larger plan and the plan file."""
        storage = self.storage
        assert storage is not None
        for name in storage.list_names():
            if _is_shard_file(name) and name not in keep:
                storage.remove(name)
        storage.write_bytes(MANIFEST_NAME, manifest.to_json())
        storage.remove(PLAN_NAME)


def _remove_temps_beside(target: str) -> None:
    """Remove the ``temp_beside`` temp files made for a local file ``target``; a remote one is
    written in a local temp folder, then uploaded."""
    if is_remote(target):
        return
    path = Path(target.removeprefix("file://"))
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if temp_target(tmp.name) == path.name:
            tmp.unlink(missing_ok=True)


def _in_memory(data: bytes | None, where: str) -> BytesSource | None:
    return None if data is None else BytesSource(data, where)


def _is_shard_file(name: str) -> bool:
    return name.startswith("shard-") and name.endswith(".packed") and name[6:11].isdigit()


def _is_leftover(name: str) -> bool:
    """A temp file this packer writes beside a shard or the manifest (``temp_beside``)."""
    target = temp_target(name)
    return target is not None and (target in (MANIFEST_NAME, PLAN_NAME) or _is_shard_file(target))


def _ours(name: str) -> bool:
    return _is_shard_file(name) or _is_leftover(name)


__all__ = ["PLAN_NAME", "OutputLayout", "PlanRecord", "content_ids", "shard_name"]
