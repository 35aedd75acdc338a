"""One line of the original server's backup files mapped to a `Record`: key, time, blob.

The mapping rules of DESIGN section 12 live here; `bkrepo` walks the files and calls them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, tzinfo
from typing import IO, Any, TypeVar, cast

from .._backends.protocols import Record, Scope
from ..exceptions import store_errors
from .layout import numbered_lines as limited_lines

__all__ = [
    "MAX_LINE",
    "PROJECT_WIDE",
    "BadLine",
    "LineMapper",
    "guarded",
    "in_zone",
    "numbered_lines",
]

MAX_LINE = 64 * 1024 * 1024  # a longer line is reported, not held in memory
CHUNK = 1 << 20
SHA256 = re.compile(r"^[0-9a-f]{64}$")
T_ = TypeVar("T_")
END_ = object()
# Every repository folder holds its whole project's metadata: a record is taken only from
# the folder of the repository it names.
PROJECT_WIDE = frozenset({"maven_metadata", "conan_metadata"})
# The fields that give a record's key, first present wins (the server's unique keys).
KEY_FIELDS = {
    "user": ("userId", "id"),
    "account": ("appId", "id"),
    "role": ("id", "roleId"),
    "permission": ("id",),
    "temporary_token": ("id", "token"),
    "project": ("name",),
    "repository": ("name",),
    "package": ("key",),
    "maven_metadata": ("id",),
    "conan_metadata": ("id",),
}
# Where a document says when it last changed, first present wins; else the backup's stamp.
MODIFIED_FIELDS = ("lastModifiedDate", "updateAt", "updatedDate", "createdDate", "createAt")


class BadLine(Exception):
    """A line that does not map to a record; the message says why."""


class LineMapper:
    """Maps the lines of one backup: offset-less times read in *zone*, records without a
    time taken at *started* (the backup's stamp); *has_blob* says whether a blob is kept."""

    def __init__(
        self, zone: tzinfo, started: datetime | None, has_blob: Callable[[str], bool]
    ) -> None:
        self.zone = zone
        self.started = started
        self.has_blob = has_blob

    def record(self, line: bytes, scope: Scope, collection: str) -> Record | None:
        """The record one line maps to; None for a project-wide line of another repository."""
        try:
            document = json.loads(line.removeprefix(b"\xef\xbb\xbf"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadLine(f"not a JSON line: {exc}") from None
        if not isinstance(document, dict):
            raise BadLine(f"not a JSON object but {type(document).__name__}")
        if scope.project_id is not None:
            check_owner(document, scope, collection)
            if collection in PROJECT_WIDE and document.get("repoName") != scope.repo_name:
                return None
        modified = self.modified(document)
        if collection == "node":
            return self.node(document, scope, modified)
        return Record(
            collection=collection,
            key=record_key(document, collection),
            document=document,
            modified=modified,
            project_id=scope.project_id,
            repo_name=scope.repo_name,
        )

    def modified(self, document: Mapping[str, Any]) -> datetime:
        for field in MODIFIED_FIELDS:
            value = document.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                raise BadLine(f"{field}: not an ISO 8601 time: {value!r:.80}")
            try:
                return in_zone(datetime.fromisoformat(value), self.zone)
            except ValueError:
                raise BadLine(f"{field}: not an ISO 8601 time: {value!r:.80}") from None
        if self.started is None:
            raise BadLine("no time field, and the backup's folder is not named by its stamp")
        return self.started

    def node(self, document: dict[str, Any], scope: Scope, modified: datetime) -> Record:
        full_path = document.get("fullPath")
        if not isinstance(full_path, str) or not full_path.startswith("/"):
            raise BadLine(f"fullPath: expected an absolute path, got {full_path!r:.80}")
        folder = document.get("folder")
        if not isinstance(folder, bool):
            raise BadLine(f"folder: expected true or false, got {folder!r:.80}")
        deleted = document.get("deleted")
        if deleted is not None and not isinstance(deleted, str):
            raise BadLine(f"deleted: expected null or a time, got {deleted!r:.80}")
        blob: str | None = None
        size = 0
        if not folder:
            blob, stated = document.get("sha256"), document.get("size")
            if not isinstance(blob, str) or not SHA256.match(blob):
                raise BadLine(f"sha256: expected 64 lowercase hex digits, got {blob!r:.80}")
            if not isinstance(stated, int) or isinstance(stated, bool) or stated < 0:
                raise BadLine(f"size: expected a non-negative integer, got {stated!r:.80}")
            size = stated
            if deleted is not None and not self.has_blob(blob):
                blob = None  # a soft-deleted node's content need not have been kept
        # A path can have one live node and any number of soft-deleted ones: each keeps a key
        # of its own, so none shadows the live node.
        key = full_path if deleted is None else f"{full_path}#deleted:{deleted}"
        return Record(
            collection="node",
            key=key,
            document=document,
            modified=modified,
            project_id=scope.project_id,
            repo_name=scope.repo_name,
            blob=blob,
            size=size if blob is not None else 0,
        )


def in_zone(moment: datetime, zone: tzinfo) -> datetime:
    """*moment* with *zone* attached when it has no offset (pytz zones localised)."""
    if moment.tzinfo is not None:
        return moment
    localize = getattr(zone, "localize", None)
    if localize is not None:
        return cast(datetime, localize(moment))
    return moment.replace(tzinfo=zone)


def record_key(document: Mapping[str, Any], collection: str) -> str:
    if collection == "package_version":
        package, name = document.get("key"), document.get("name")
        if not (isinstance(package, str) and package and isinstance(name, str) and name):
            raise BadLine("key and name: a package version needs its package's key and its name")
        return f"{package}#{name}"
    fields = KEY_FIELDS.get(collection, ("id",))
    for field in fields:
        value = document.get(field)
        if isinstance(value, str) and value:
            return value
    raise BadLine(f"{' or '.join(fields)}: a {collection} record needs a non-empty string")


def check_owner(document: Mapping[str, Any], scope: Scope, collection: str) -> None:
    """BadLine unless the record belongs to the folder it was found in."""
    if collection == "project":
        if document.get("name") != scope.project_id:
            raise BadLine(f"name: {document.get('name')!r:.80} is not the folder's project")
        return
    if document.get("projectId") != scope.project_id:
        raise BadLine(f"projectId: {document.get('projectId')!r:.80} is not the folder's project")
    if collection == "repository" and document.get("name") != scope.repo_name:
        raise BadLine(f"name: {document.get('name')!r:.80} is not the folder's repository")
    if collection not in PROJECT_WIDE and document.get("repoName", scope.repo_name) != (
        scope.repo_name
    ):
        raise BadLine(f"repoName: {document.get('repoName')!r:.80} is not the folder's repository")


def guarded(items: Iterator[T_], what: str) -> Iterator[T_]:
    """*items*, each taken under `store_errors` (a store failure becomes a StoreError)."""
    while True:
        with store_errors(what):
            item = next(items, END_)
        if item is END_:
            return
        yield cast(T_, item)


def numbered_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """Numbered lines; None for one longer than `MAX_LINE`, skipped without holding it."""
    return limited_lines(stream, MAX_LINE)
