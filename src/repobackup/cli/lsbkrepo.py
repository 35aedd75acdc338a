"""`repobackup ls` of a backup of the original server (bk-repo): its stamp, projects,
repositories and the records of each collection, counted by line; with --files its nodes."""

from __future__ import annotations

from typing import Any

from .._archive.bkrepo_reader import UNMARKED, BkrepoReader
from .._backends.protocols import Scope
from .output import Output, plural

__all__ = ["bkrepo_summary", "list_bkrepo_files", "show_bkrepo"]


def _scope_name(scope: Scope) -> str:
    if scope.project_id is None:
        return "(common data)"
    return scope.project_id if scope.repo_name is None else f"{scope.project_id}/{scope.repo_name}"


def bkrepo_summary(reader: BkrepoReader) -> dict[str, Any]:
    """What ``ls --json`` prints for a bk-repo backup."""
    backup = reader.backup
    return {
        **{k: v for k, v in reader.manifest.items() if k != "members"},
        "records": [
            {
                "projectId": scope.project_id,
                "repoName": scope.repo_name,
                "collections": backup.line_counts(scope),
            }
            for scope in backup.scopes()
        ],
        "problems": [str(p) for p in backup.problems],
        "note": UNMARKED,
    }


def show_bkrepo(reader: BkrepoReader, out: Output) -> None:
    """The backup's fields, then a table of its scopes and collections with their records."""
    backup = reader.backup
    manifest = reader.manifest
    projects = manifest["projects"]
    repositories = sum(len(r) for r in projects.values())
    rows = []
    total = 0
    for scope in backup.scopes():
        for collection, count in backup.line_counts(scope).items():
            rows.append([_scope_name(scope), collection, str(count)])
            total += count
    pairs = [
        ("location", reader.location),
        ("format", "bk-repo (the original server's job service)"),
        ("stamp", str(manifest["stamp"] or "")),
        ("started", str(manifest["started"] or "")),
        ("compression", str(manifest["compression"]).lower()),
        ("common data", str(manifest["commonData"]).lower()),
        ("projects", f"{len(projects)} ({plural(repositories, 'repository', 'repositories')})"),
        ("records", f"{total} (lines, not yet parsed)"),
        ("complete", "unknown: no completeness marker"),
    ]
    out.fields(str(manifest["name"]), pairs)
    out.table("records", ["scope", "collection", "records"], rows)
    for problem in backup.problems:
        out.note(f"{reader.location}: {problem}")


def list_bkrepo_files(reader: BkrepoReader, as_json: bool, out: Output) -> None:
    """Every file node of the backup, streamed; soft-deleted ones marked."""
    backup = reader.backup
    for scope in backup.scopes():
        if scope.repo_name is None:
            continue
        for record in backup.records(scope, "node"):
            if out.closed:
                return
            if record.document.get("folder") is True:
                continue
            path = str(record.document.get("fullPath"))
            deleted = record.document.get("deleted") is not None
            if as_json:
                out.json_line(
                    {
                        "backup": reader.manifest["name"],
                        "projectId": scope.project_id,
                        "repoName": scope.repo_name,
                        "path": path,
                        "size": record.document.get("size"),
                        "sha256": record.document.get("sha256"),
                        "deleted": deleted,
                    }
                )
            else:
                out.say(
                    f"{scope.project_id}/{scope.repo_name}{path}{' (deleted)' if deleted else ''}"
                )
