"""`Manifest`: the typed ``manifest.json`` of format 1, built, written, read and checked here.

Writers build a `Manifest` and `dump` it; readers `parse_manifest` (size-limited) and ask it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

import attrs

from .._model.convert import to_json
from ..exceptions import ArchiveError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "BlobTally",
    "Manifest",
    "Member",
    "dump",
    "failed_blobs_of",
    "failed_records_of",
    "follows_of",
    "parse_manifest",
    "projects_of",
    "read_bounded",
    "task_id_of",
]

FORMAT = 1
MANIFEST = "manifest.json"
#: A larger manifest.json is refused unread: a hostile archive must not cost memory.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


@attrs.frozen
class Member:
    """One records member: its path, scope, counts, and its size and sha256 as stored."""

    path: str
    project_id: str | None
    repo_name: str | None
    collection: str
    records: int
    tombstones: int
    size: int
    sha256: str


@attrs.frozen
class BlobTally:
    """The blobs of a backup: members written, their bytes, and those that failed."""

    count: int
    bytes: int
    failed: tuple[str, ...] = ()


@attrs.frozen
class Manifest:
    """The ``manifest.json`` a backup is completed with (docs/format.md lists each field)."""

    format: int
    generator: str
    task_id: str | None
    name: str
    task_name: str
    created: str
    completed: str
    kind: str  # "full" or "incremental"
    since: str | None
    follows: str | None
    compression: bool
    common_data: bool
    content: Mapping[str, Any]
    projects: Mapping[str, list[str]]
    members: tuple[Member, ...]
    blobs: BlobTally
    #: Format 2 only: the key set and cipher of an encrypted backup.
    encryption: Mapping[str, Any] | None = None
    #: The keys (project/repository/collection/key) of records that could not be backed up:
    #: they are missing from the backup, and `verify` says so.
    failed_records: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON data, in format 1's field names and order."""
        data: dict[str, Any] = to_json(self)
        if self.encryption is None:
            data.pop("encryption", None)
        else:
            data["encryption"] = dict(self.encryption)
        data["content"] = dict(self.content)
        data["projects"] = {project: list(repos) for project, repos in self.projects.items()}
        data["members"] = [to_json(member) for member in self.members]
        data["blobs"]["failed"] = list(self.blobs.failed)
        data["failedRecords"] = list(self.failed_records)
        return data

    def dump(self) -> bytes:
        """The bytes of ``manifest.json``."""
        return dump(self.to_json())


def dump(manifest: Mapping[str, Any]) -> bytes:
    """The bytes of a ``manifest.json`` holding *manifest*."""
    return json.dumps(manifest, ensure_ascii=False, indent=1).encode()


def read_bounded(file: IO[bytes], location: str) -> bytes:
    """The whole of an open ``manifest.json``; ArchiveError past `MAX_MANIFEST_BYTES`."""
    raw = file.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ArchiveError(
            f"{location}: manifest.json is larger than {MAX_MANIFEST_BYTES} bytes, "
            "the most this version reads"
        )
    return raw


def parse_manifest(raw: bytes, location: str, *, sealing: Any = None) -> dict[str, Any]:
    """The manifest in *raw*, checked as far as any reader needs (a JSON object of format 1
    with a members list); ArchiveError otherwise. Each member is checked by whoever reads
    it, so that one bad entry costs that member, not the backup."""
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{location}: manifest.json is not a JSON object: {exc}") from None
    if not isinstance(manifest, dict):
        raise ArchiveError(
            f"{location}: manifest.json is not a JSON object: found {type(manifest).__name__}"
        )
    # Format 2 is format 1 encrypted: only a manifest that decrypted may say so.
    expected = FORMAT if sealing is None else FORMAT + 1
    if manifest.get("format") != expected:
        raise ArchiveError(
            f"{location}: unsupported archive format {manifest.get('format')!r} "
            f"(this version reads format {expected} here)"
        )
    if sealing is not None:
        from .sealing import check_manifest

        check_manifest(manifest, location, sealing)
    if not isinstance(manifest.get("members"), list):
        raise ArchiveError(f"{location}: manifest.json has no members list")
    return manifest


def projects_of(manifest: Mapping[str, Any], location: str) -> dict[str, list[str]]:
    """The manifest's ``projects`` map; ArchiveError when it is malformed."""
    tree = manifest.get("projects")
    if not isinstance(tree, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(r, str) for r in v)
        for k, v in tree.items()
    ):
        raise ArchiveError(f"{location}: manifest.json has a malformed projects map")
    return tree


def failed_blobs_of(manifest: Mapping[str, Any]) -> set[str]:
    """The sha256s the manifest records as never stored (malformed entries are ignored)."""
    blobs = manifest.get("blobs")
    failed = blobs.get("failed") if isinstance(blobs, dict) else None
    return {sha for sha in failed or () if isinstance(sha, str)}


def failed_records_of(manifest: Mapping[str, Any]) -> list[str]:
    """The keys of the records the manifest lists as failed at backup time (malformed
    entries are ignored)."""
    failed = manifest.get("failedRecords")
    return [key for key in failed if isinstance(key, str)] if isinstance(failed, list) else []


def task_id_of(manifest: Mapping[str, Any]) -> str | None:
    """The id of the task that wrote the backup, or None when the manifest names none."""
    task_id = manifest.get("taskId")
    return task_id if isinstance(task_id, str) and task_id else None


def follows_of(manifest: Mapping[str, Any]) -> str | None:
    """The name of the backup this one is an increment of, or None."""
    follows = manifest.get("follows")
    return follows if isinstance(follows, str) else None
