"""The original server's own backups (bk-repo's job service) read as a restore source.

`detect` recognises one by its layout; `open_bkrepo` maps its lines to `Record` objects,
streamed, and serves its ``bk+store`` blobs checked against their sha256 names.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, tzinfo
from types import TracebackType
from typing import IO, Any, BinaryIO, cast

import attrs
import fsspec

from .._backends.protocols import Record, Scope
from .._model.times import local_zone
from ..exceptions import ArchiveError, store_errors
from .bkrepo_lines import (
    MAX_LINE,
    BadLine,
    LineMapper,
    guarded,
    in_zone,
    numbered_lines,
)
from .bkrepo_tree import BkrepoTree, FolderTree, ZipTree, zip_stamp

__all__ = [
    "COMMON_COLLECTIONS",
    "BkrepoBackup",
    "BkrepoProblem",
    "BkrepoVerify",
    "detect",
    "find_bkrepo",
    "open_bkrepo",
]

MAX_PROBLEMS = 1000
CHUNK = 1 << 20
STORE = "bk+store"
MANIFEST = "manifest.json"
PROJECT_FILE = "project.json"
SHA256 = re.compile(r"^[0-9a-f]{64}$")

COMMON_FILES = {
    "user.json": "user",
    "role.json": "role",
    "permission.json": "permission",
    "account.json": "account",
    "temporary_token.json": "temporary_token",
}
COMMON_COLLECTIONS = tuple(COMMON_FILES.values())
REPOSITORY_FILES = {
    "repository.json": "repository",
    "package.json": "package",
    "package-version.json": "package_version",
    "node.json": "node",
    "maven-metadata.json": "maven_metadata",
    "conan-metadata.json": "conan_metadata",
}
_FILE_OF = {c: f for f, c in {**COMMON_FILES, **REPOSITORY_FILES}.items()}
_FILE_OF["project"] = PROJECT_FILE


@attrs.frozen
class BkrepoProblem:
    """One thing wrong with a bk-repo backup.

    *kind* is ``unmarked`` (the backup has no completeness marker: always reported by
    `BkrepoBackup.verify`), ``hostile`` (an entry name that escapes the tree, refused),
    ``malformed`` (a line that does not parse or map; *line* is its number), ``blob`` (a
    blob whose content does not match its sha256 name, or unreadable), ``missing`` (a blob a
    node references is not in ``bk+store``) or ``unexpected`` (an entry the layout has no
    place for, not read).
    """

    kind: str
    entry: str
    message: str
    line: int | None = None

    @property
    def where(self) -> str:
        """``entry`` or ``entry:line``."""
        return self.entry if self.line is None else f"{self.entry}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@attrs.frozen
class BkrepoVerify:
    """What `BkrepoBackup.verify` found: counts of what was checked, and every problem
    (bounded; ``problems_dropped`` counts the rest)."""

    location: str
    records: int
    blobs: int
    problems: tuple[BkrepoProblem, ...]
    problems_dropped: int

    @property
    def ok(self) -> bool:
        """True when nothing but the missing completeness marker was found."""
        return not self.problems_dropped and all(p.kind == "unmarked" for p in self.problems)


OnProblem = Callable[[BkrepoProblem], None]


class _BlobMismatch(ArchiveError):
    """A blob whose content is not what its sha256 name says."""


def detect(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether *path* on *fs* is a bk-repo backup: a ``<stamp>/`` folder without
    ``manifest.json`` that holds common-data files, ``bk+store/`` or repository folders; or
    a zip whose entries start with ``<stamp>/`` (or ``<stamp>\\``). Cheap: a few listings,
    or a zip's end records and first directory entry."""
    path = path.rstrip("/")
    with store_errors(f"checking {path}"):
        if path.endswith(".zip"):
            try:
                return bool(fs.isfile(path)) and zip_stamp(fs, path, path) is not None
            except ArchiveError:
                return False
        return bool(fs.isdir(path)) and _looks_like_folder(fs, path)


def _looks_like_folder(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    top = {_base(i["name"]): i["type"] for i in fs.ls(path, detail=True)}
    if MANIFEST in top:
        return False
    if any(top.get(name) == "file" for name in COMMON_FILES) or top.get(STORE) == "directory":
        return True
    known = {PROJECT_FILE, *REPOSITORY_FILES}
    for project in sorted(name for name, kind in top.items() if kind == "directory")[:3]:
        for repo in fs.ls(posixpath.join(path, project), detail=True)[:3]:
            if repo["type"] == "directory" and (
                {_base(n) for n in fs.ls(repo["name"], detail=False)} & known
            ):
                return True
    return False


def _base(name: object) -> str:
    return posixpath.basename(str(name).rstrip("/"))


_BACKUP_NAME = re.compile(r"^(?:(?P<stamp>\d{8}\.\d{6})|.+-(?P<zstamp>\d{8}\.\d{6})\.zip)$")


def find_bkrepo(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The bk-repo backups in the task folder *path* (``<storeLocation>/<name>/``): each
    ``<stamp>/`` folder and ``<name>-<stamp>.zip`` that `detect` accepts, oldest first.

    Nothing marks a backup of the server as complete: the newest may be one cut short.
    """
    path = path.rstrip("/")
    with store_errors(f"listing {path}"):
        names = [_base(name) for name in fs.ls(path, detail=False)]
    found = []
    for name in names:
        match = _BACKUP_NAME.match(name)
        if match is not None and detect(fs, posixpath.join(path, name)):
            found.append((match["stamp"] or match["zstamp"], name))
    return [posixpath.join(path, name) for _, name in sorted(found)]


def open_bkrepo(
    fs: fsspec.AbstractFileSystem,
    path: str,
    *,
    zone: tzinfo | None = None,
    location: str | None = None,
    on_problem: OnProblem | None = None,
) -> BkrepoBackup:
    """Open the bk-repo backup at *path* on *fs* (a ``<stamp>/`` folder or a ``.zip``).

    *zone* is the zone of its offset-less times (the server's; None: this machine's).
    *location* names the backup in messages (default *path*). *on_problem* is called with
    each problem as it is found (it may raise to stop), besides keeping it in `problems`. A
    zip's directory is read and its hostile entries refused at once; nothing else is read
    until asked for.
    """
    return BkrepoBackup(fs, path, zone=zone, location=location, on_problem=on_problem)


class BkrepoBackup:
    """One bk-repo backup, read as scopes of records and a store of blobs.

    Scopes: the common scope (when any common-data file is there), then each project, each
    followed by its repositories. Thread-safe for `open_blob`; records stream one line at a
    time, so memory stays flat on a node.json of any size.
    """

    location: str
    zone: tzinfo
    stamp: str | None
    started: datetime | None
    compressed: bool

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        path: str,
        *,
        zone: tzinfo | None = None,
        location: str | None = None,
        on_problem: OnProblem | None = None,
    ) -> None:
        self.location = location or path
        self._on_problem = on_problem
        self.zone = zone if zone is not None else local_zone()
        self._lock = threading.Lock()
        self._problems: list[BkrepoProblem] = []
        self.problems_dropped = 0
        self._tree_map: dict[str, list[str]] | None = None
        self._unmarked = False
        tree: BkrepoTree
        if path.rstrip("/").endswith(".zip"):
            tree = ZipTree(fs, path, self.location, self._refuse)
        else:
            with store_errors(f"checking {self.location}"):
                if not fs.isdir(path):
                    raise ArchiveError(f"no bk-repo backup at {self.location!r}")
            tree = FolderTree(fs, path, self.location, self._refuse)
        self._tree = tree
        self.stamp = tree.stamp
        self.compressed = tree.compressed
        self.started = None
        if tree.stamp is not None:
            self.started = in_zone(datetime.strptime(tree.stamp, "%Y%m%d.%H%M%S"), self.zone)
        self._mapper = LineMapper(self.zone, self.started, self.has_blob)

    def __repr__(self) -> str:
        return f"<BkrepoBackup {self.location!r}>"

    def __enter__(self) -> BkrepoBackup:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the backup (a zip's index and file)."""
        self._tree.close()

    # -- problems

    @property
    def problems(self) -> tuple[BkrepoProblem, ...]:
        """Every problem found so far (up to a thousand), in the order found."""
        with self._lock:
            return tuple(self._problems)

    def _problem(self, problem: BkrepoProblem, on_problem: OnProblem | None = None) -> None:
        with self._lock:
            if len(self._problems) < MAX_PROBLEMS:
                self._problems.append(problem)
            else:
                self.problems_dropped += 1
        if self._on_problem is not None:
            self._on_problem(problem)
        if on_problem is not None:
            on_problem(problem)

    def _refuse(self, entry: str, message: str) -> None:
        self._problem(BkrepoProblem("hostile", entry, f"refused, never read: {message}"))

    # -- layout

    def tree(self) -> dict[str, list[str]]:
        """Every project id mapped to its repository names, both sorted: what selection
        (`select`) runs on. Listed once, then kept."""
        if self._tree_map is None:
            found: dict[str, list[str]] = {}
            for project, is_folder in self._tree.children(""):
                if is_folder and project != STORE:
                    repos = self._repositories(project)
                    if repos:
                        found[project] = repos
                elif not is_folder and project not in COMMON_FILES:
                    self._problem(BkrepoProblem("unexpected", project, "not part of the layout"))
            self._tree_map = found
        return self._tree_map

    def _repositories(self, project: str) -> list[str]:
        repos = []
        for name, is_folder in self._tree.children(project):
            if is_folder:
                repos.append(name)
            else:
                entry = f"{project}/{name}"
                self._problem(BkrepoProblem("unexpected", entry, "not part of the layout"))
        return repos

    def scopes(self) -> Iterator[Scope]:
        """The common scope (when it holds a file), then each project and its repositories."""
        if any(self._tree.exists(name) for name in COMMON_FILES):
            yield Scope()
        for project, repos in self.tree().items():
            yield Scope(project)
            for repo in repos:
                yield Scope(project, repo)

    def collections(self, scope: Scope) -> list[str]:
        """The collections *scope* holds records of, in a fixed order."""
        if scope.project_id is None:
            return [c for f, c in COMMON_FILES.items() if self._tree.exists(f)]
        repos = self.tree().get(scope.project_id, [])
        if scope.repo_name is None:
            return ["project"] if self._project_entry(scope.project_id) else []
        if scope.repo_name not in repos:
            return []
        folder = f"{scope.project_id}/{scope.repo_name}"
        present = []
        for name, is_folder in self._tree.children(folder):
            if not is_folder and name in REPOSITORY_FILES:
                present.append(REPOSITORY_FILES[name])
            elif name != PROJECT_FILE:
                self._problem(
                    BkrepoProblem("unexpected", f"{folder}/{name}", "not part of the layout")
                )
        order = list(REPOSITORY_FILES.values())
        return sorted(present, key=order.index)

    def _project_entry(self, project: str) -> str | None:
        """The first repository folder's copy of the project's record (each holds one)."""
        for repo in self.tree().get(project, []):
            entry = f"{project}/{repo}/{PROJECT_FILE}"
            if self._tree.exists(entry):
                return entry
        return None

    # -- records

    def records(
        self,
        scope: Scope,
        collection: str | None = None,
        *,
        on_problem: OnProblem | None = None,
    ) -> Iterator[Record]:
        """The records of *collection* in *scope* (every collection when None), streamed in
        the backup's order. A line that does not parse or map is skipped and reported, to
        `problems` and to *on_problem* (which may raise to stop)."""
        collections = self.collections(scope) if collection is None else [collection]
        for name in collections:
            entry = self._entry_of(scope, name)
            if entry is not None:
                yield from self._read(entry, scope, name, on_problem)

    def line_counts(self, scope: Scope) -> dict[str, int]:
        """Each collection of *scope* with the number of non-empty lines of its file: what
        ``ls`` shows, counted without parsing (a project-wide file counts every copy)."""
        counts = {}
        for collection in self.collections(scope):
            entry = self._entry_of(scope, collection)
            if entry is None:
                continue
            with store_errors(f"reading {self.location}/{entry}"), self._tree.open(entry) as file:
                counts[collection] = sum(
                    1 for _, line in numbered_lines(file) if line is None or line.strip()
                )
        return counts

    def _entry_of(self, scope: Scope, collection: str) -> str | None:
        if scope.project_id is None:
            file = _FILE_OF.get(collection)
            return file if collection in COMMON_COLLECTIONS and file else None
        if scope.repo_name is None:
            return self._project_entry(scope.project_id) if collection == "project" else None
        file = _FILE_OF.get(collection)
        if file is None or collection not in REPOSITORY_FILES.values():
            return None
        entry = f"{scope.project_id}/{scope.repo_name}/{file}"
        return entry if self._tree.exists(entry) else None

    def _read(
        self, entry: str, scope: Scope, collection: str, on_problem: OnProblem | None
    ) -> Iterator[Record]:
        what = f"reading {self.location}/{entry}"
        with store_errors(what):
            stream = self._tree.open(entry)
        # Only reading is the store's failure: what the caller's callback raises stays its own.
        with stream:
            for number, line in guarded(numbered_lines(stream), what):
                if line is None:
                    self._problem(
                        BkrepoProblem("malformed", entry, f"longer than {MAX_LINE} bytes", number),
                        on_problem,
                    )
                    continue
                if not line.strip():
                    continue
                try:
                    record = self._mapper.record(line, scope, collection)
                except BadLine as exc:
                    self._problem(BkrepoProblem("malformed", entry, str(exc), number), on_problem)
                    continue
                if record is not None:
                    yield record

    # -- entries

    def exists(self, entry: str) -> bool:
        """Whether *entry* (a path below ``<stamp>/``) is a file of the backup."""
        return self._tree.exists(entry)

    def open_entry(self, entry: str) -> IO[bytes]:
        """The content of *entry* as stored: a blob unchecked (`open_blob` checks it)."""
        return self._tree.open(entry)

    # -- blobs

    @staticmethod
    def blob_entry(sha256: str) -> str:
        """Where the blob *sha256* is in the backup: ``bk+store/<sha[0:2]>/<sha[2:4]>/<sha>``."""
        return f"{STORE}/{sha256[0:2]}/{sha256[2:4]}/{sha256}"

    def has_blob(self, sha256: str) -> bool:
        """Whether ``bk+store`` holds a blob named *sha256* (its content is not checked)."""
        return bool(SHA256.match(sha256)) and self._tree.exists(self.blob_entry(sha256))

    def open_blob(self, sha256: str) -> BinaryIO:
        """The blob *sha256*, as a binary file whose reads are checked: reading to its end
        raises `ArchiveError` (and reports a ``blob`` problem) when the content does not match
        the name. ArchiveError at once when the blob is absent."""
        if not SHA256.match(sha256):
            raise ArchiveError(f"not a sha256 in lowercase hex: {sha256!r:.80}")
        entry = self.blob_entry(sha256)
        if not self._tree.exists(entry):
            raise ArchiveError(f"{self.location}: blob {sha256} is missing from {STORE}")
        raw = self._tree.open(entry)
        return cast(BinaryIO, io.BufferedReader(_CheckedBlob(raw, sha256, entry, self), CHUNK))

    def blobs(self) -> Iterator[str]:
        """The sha256 of every blob ``bk+store`` holds; misplaced entries are reported."""
        for first, is_folder in self._tree.children(STORE):
            for second, sub in self._tree.children(f"{STORE}/{first}") if is_folder else ():
                folder = f"{STORE}/{first}/{second}"
                for name, leaf in self._tree.children(folder) if sub else ():
                    if not leaf and SHA256.match(name) and name[0:4] == first + second:
                        yield name
                    else:
                        self._problem(
                            BkrepoProblem("unexpected", f"{folder}/{name}", "not a blob entry")
                        )

    # -- verify

    def verify(self, *, on_problem: OnProblem | None = None) -> BkrepoVerify:
        """Read everything once: every line of every scope, whether every blob a node
        references is there, and every blob's content against its name. Memory stays flat.

        The report's problems are all those found on this backup so far (so call it on a
        freshly opened backup), the missing completeness marker first."""
        unmarked = BkrepoProblem(
            "unmarked",
            "*",
            "the server's backups carry no manifest, checksums or completeness marker: "
            "a backup cut short cannot be told from a whole one",
        )
        if not self._unmarked:
            self._unmarked = True
            self._problem(unmarked, on_problem)
        records = blobs = 0
        for scope in self.scopes():
            for record in self.records(scope, on_problem=on_problem):
                records += 1
                if record.blob is not None and not self.has_blob(record.blob):
                    message = f"blob {record.blob} of node {record.key} is not in {STORE}"
                    self._problem(
                        BkrepoProblem("missing", self.blob_entry(record.blob), message),
                        on_problem,
                    )
        for sha256 in self.blobs():
            blobs += 1
            try:
                with self.open_blob(sha256) as file:
                    while file.read(CHUNK):
                        pass
            except _BlobMismatch:
                pass  # reported as it was found
            except ArchiveError as exc:
                self._problem(
                    BkrepoProblem("blob", self.blob_entry(sha256), exc.message), on_problem
                )
        return BkrepoVerify(self.location, records, blobs, self.problems, self.problems_dropped)


class _CheckedBlob(io.RawIOBase):
    """A blob's content, hashed as it is read; its end raises when the hash is not its name."""

    def __init__(self, raw: IO[bytes], sha256: str, entry: str, backup: BkrepoBackup) -> None:
        super().__init__()
        self._raw = raw
        self._sha256 = sha256
        self._entry = entry
        self._backup = backup
        self._digest = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        if not data:
            self._check()
            return 0
        buffer[: len(data)] = data
        self._digest.update(data)
        return len(data)

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        got = self._digest.hexdigest()
        if got != self._sha256:
            message = f"content does not match its sha256 name (got {got})"
            self._backup._problem(BkrepoProblem("blob", self._entry, message))
            raise _BlobMismatch(f"{self._backup.location}: {self._entry}: {message}")

    def close(self) -> None:
        self._raw.close()
        super().close()
