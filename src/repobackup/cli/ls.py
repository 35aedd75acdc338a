"""`repobackup ls`: what a backup holds (manifest, members, with --files every file path), the
backups of a task folder, or the task folders of a store."""

from __future__ import annotations

import argparse
import io
import json
import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

import zstandard

from .._archive.bkrepo_reader import BkrepoReader
from .._archive.catalog import describe, open_backup_chain
from .._archive.layout import BACKUP_NAME, BackupReader, open_store
from ..exceptions import ArchiveError, store_errors
from .exits import EXIT_OK, UsageError
from .lsbkrepo import bkrepo_summary, list_bkrepo_files, show_bkrepo
from .options import Parents, source_zone
from .output import Column, Output, plural, size
from .passwords import add_password_option

__all__ = ["register"]

LINE_LIMIT = 64 << 20  # a record line longer than this is not one we wrote


def register(commands: Any, parents: Parents) -> None:
    """Add `ls` to the subparsers *commands*."""
    ls = commands.add_parser(
        "ls",
        parents=[parents.common],
        help="show what a backup holds",
        description="Show a backup's manifest, members with record counts and its blobs. For "
        "a task folder: its backups, then the ones a restore from it would apply. For a "
        "store holding several task folders: each of them with its backups.",
    )
    ls.add_argument(
        "location", metavar="LOCATION", help="a backup, a task folder, or a store of them"
    )
    ls.add_argument(
        "--files",
        action="store_true",
        help="list every file path instead (one per line; JSON lines with --json)",
    )
    add_password_option(ls)
    source_zone(ls)
    ls.set_defaults(handler=_ls)


def _ls(args: argparse.Namespace, out: Output) -> int:
    try:
        chain = open_backup_chain(args.location, zone=args.source_zone)
    except ArchiveError:
        folders = _task_folders(args.location)
        if not folders:
            raise
        if args.files:
            raise UsageError(
                f"{args.location} holds {plural(len(folders), 'task folder')}: give one of "
                "them (or one backup) to --files"
            ) from None
        return _show_store(args, out, folders)
    try:
        if args.files:
            for reader in chain:
                if len(chain) > 1:  # which backup of the chain each part comes from
                    out.note(f"files in {reader.location}:")
                _list_files(reader, args, out)
        elif args.json:
            out.json([_json_of(r) for r in chain])
        else:
            _show_chain(args.location, chain, out)
    finally:
        for reader in chain:
            reader.close()
    return EXIT_OK


def _show_chain(location: str, chain: list[BackupReader], out: Output) -> None:
    is_folder = len(chain) > 1 or chain[-1].location.rstrip("/") != location.rstrip("/")
    if is_folder:
        out.table(
            f"backups in {location}",
            ["backup", "status"],
            [list(row) for row in _backups_in(location)],
        )
        out.say(f"a restore from {location} applies, oldest first:")
    for reader in chain:
        if isinstance(reader, BkrepoReader):
            show_bkrepo(reader, out)
        else:
            _show_backup(reader.location, reader.manifest, out)


def _json_of(reader: BackupReader) -> dict[str, Any]:
    if isinstance(reader, BkrepoReader):
        return {"location": reader.location, "bkrepo": bkrepo_summary(reader)}
    return {"location": reader.location, "manifest": reader.manifest}


def _backups_in(location: str) -> list[tuple[str, str]]:
    """The backups in a task folder by name, with whether each is complete."""
    return describe(location)


def _task_folders(location: str) -> dict[str, list[tuple[str, str]]]:
    """The task folders directly under *location*, each with its backups; {} when it is not
    a folder or holds none."""
    fs, path = open_store(location)
    folders: dict[str, list[tuple[str, str]]] = {}
    with store_errors(f"listing {location!r}"):
        if not fs.isdir(path):
            return {}
        for entry in sorted(fs.ls(path.rstrip("/"), detail=True), key=lambda e: e["name"]):
            if entry.get("type") != "directory":
                continue
            name = posixpath.basename(entry["name"].rstrip("/"))
            backups = _backups_in(f"{location.rstrip('/')}/{name}")
            if backups:
                folders[name] = backups
    return folders


def _show_store(
    args: argparse.Namespace, out: Output, folders: Mapping[str, list[tuple[str, str]]]
) -> int:
    if args.json:
        out.json(
            [
                {"taskFolder": name, "backups": [{"name": b, "status": s} for b, s in backups]}
                for name, backups in folders.items()
            ]
        )
        return EXIT_OK
    out.table(
        f"{plural(len(folders), 'task folder')} in {args.location}",
        ["task folder", "backups", "newest complete"],
        [[name, str(len(backups)), _newest_complete(backups)] for name, backups in folders.items()],
    )
    for name, backups in folders.items():
        out.table(f"backups in {name}", ["backup", "status"], [list(b) for b in backups])
    out.say(f"`repobackup ls {args.location.rstrip('/')}/TASK_FOLDER` shows what one holds")
    return EXIT_OK


def _newest_complete(backups: list[tuple[str, str]]) -> str:
    complete = [name for name, status in backups if status in ("complete", "zip")]
    return (
        max(complete, key=lambda n: m["stamp"] if (m := BACKUP_NAME.match(n)) else "")
        if (complete)
        else ""
    )


def _show_backup(location: str, manifest: Mapping[str, Any], out: Output) -> None:
    blobs = manifest.get("blobs") if isinstance(manifest.get("blobs"), dict) else {}
    assert isinstance(blobs, dict)
    projects = manifest.get("projects") if isinstance(manifest.get("projects"), dict) else {}
    assert isinstance(projects, dict)
    members = [m for m in manifest.get("members", []) if isinstance(m, dict)]
    failed = blobs.get("failed") or []
    repositories = sum(len(r) for r in projects.values())
    pairs = [
        ("location", location),
        ("task", f"{manifest.get('taskName', '')} ({manifest.get('taskId', '')})"),
        ("kind", str(manifest.get("kind", ""))),
        ("created", str(manifest.get("created", ""))),
        ("completed", str(manifest.get("completed", ""))),
        ("compression", str(manifest.get("compression", False)).lower()),
        ("common data", str(manifest.get("commonData", False)).lower()),
        ("projects", f"{len(projects)} ({plural(repositories, 'repository', 'repositories')})"),
        ("records", str(sum(int(m.get("records", 0)) for m in members))),
        ("blobs", f"{blobs.get('count', 0)} ({size(int(blobs.get('bytes', 0)))})"),
    ]
    if manifest.get("since"):
        pairs.append(("since", str(manifest["since"])))
        pairs.append(("follows", str(manifest.get("follows") or "")))
    if failed:
        pairs.append(("failed blobs", str(len(failed))))
    pairs.append(("format", f"{manifest.get('format')} ({manifest.get('generator', '')})"))
    out.fields(str(manifest.get("name", location)), pairs)
    out.table(
        "members",
        [Column("member"), "records", "tombstones", "size"],
        [
            [
                str(m.get("path", "")),
                str(m.get("records", "")),
                str(m.get("tombstones", "")),
                size(int(m.get("size", 0))),
            ]
            for m in members
        ],
    )


def _list_files(reader: BackupReader, args: argparse.Namespace, out: Output) -> None:
    """Every file a backup holds, as it streams from the archive (nothing is held)."""
    if isinstance(reader, BkrepoReader):
        list_bkrepo_files(reader, args.json, out)
        return
    name = str(reader.manifest.get("name", reader.location))
    for entry in reader.manifest.get("members", []):
        if not isinstance(entry, dict) or entry.get("collection") != "node":
            continue
        project, repo = str(entry.get("projectId")), str(entry.get("repoName"))
        for line in _member_lines(reader, str(entry.get("path", ""))):
            if out.closed:
                return
            record = json.loads(line)
            document = record.get("document")
            if isinstance(document, dict) and document.get("folder") is True:
                continue
            path = str(record.get("key", ""))
            if args.json:
                out.json_line(
                    {
                        "backup": name,
                        "projectId": project,
                        "repoName": repo,
                        "path": path,
                        "size": record.get("size"),
                        "sha256": record.get("blob"),
                        "deleted": record.get("deleted") is True,
                    }
                )
            else:
                deleted = " (deleted)" if record.get("deleted") is True else ""
                out.say(f"{project}/{repo}{path}{deleted}")


def _member_lines(reader: BackupReader, member: str) -> Iterator[bytes]:
    with store_errors(f"reading {member}"), reader.open(member) as raw:
        stream: Any = raw
        if member.endswith(".zst"):
            stream = zstandard.ZstdDecompressor().stream_reader(raw)
        buffered = io.BufferedReader(stream)
        try:
            while line := buffered.readline(LINE_LIMIT):
                if line.strip():
                    yield line
        except zstandard.ZstdError as exc:
            message = f"{reader.location}: {member} is not a valid zstd stream: {exc}"
            raise ArchiveError(message) from None
