"""`repobackup demo`: a sample repository is built, backed up, restored into a fresh repository
and compared with the original, so that a first run shows the whole cycle in seconds."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from .._archive.verify import verify
from .._backends.sqlite import Snapshot, SqliteRepository
from .._engine.engine import Engine
from .._model.task import RunSummary, TaskState
from .._tasks.store import SqliteTaskStore

__all__ = [
    "MARKER",
    "register",
    "DemoOutput",
    "SampleFile",
    "build_sample",
    "describe_differences",
    "prepare_folder",
    "run_demo",
    "sample_files",
]

MARKER = ".repobackup-demo"
"""A file in the demo folder saying an earlier demo made it, so it may be wiped and remade."""

PROJECTS: dict[str, list[tuple[str, str]]] = {
    "web-portal": [("frontend-npm", "NPM"), ("release-builds", "GENERIC"), ("images", "DOCKER")],
    "payments": [("maven-releases", "MAVEN"), ("maven-snapshots", "MAVEN"), ("charts", "HELM")],
    "data-platform": [("pypi-local", "PYPI"), ("datasets", "GENERIC")],
}
USERS = ("admin", "alice", "bob", "carol", "dave", "erin")
LICENSE = (
    b"MIT License\n\nCopyright (c) 2024 Example Corp\n\n" + b"Permission is hereby granted" * 40
)
SEED = 20241224


class DemoOutput(Protocol):
    """Where the demo reports (the command line's `Output` is one)."""

    def say(self, text: str = "") -> None:
        """A line of the result."""

    def note(self, text: str) -> None:
        """A message about what is happening."""

    def error(self, text: str) -> None:
        """Something went wrong."""

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Rows under column headings."""


class SampleFile:
    """One file of the sample repository: where it goes, its bytes and its node metadata."""

    __slots__ = ("data", "metadata", "path", "project", "repo")

    def __init__(
        self, project: str, repo: str, path: str, data: bytes, metadata: dict[str, Any]
    ) -> None:
        self.project = project
        self.repo = repo
        self.path = path
        self.data = data
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"<SampleFile {self.project}/{self.repo}{self.path} {len(self.data)} bytes>"


def _binary(rng: random.Random, low: int = 2048, high: int = 49152) -> bytes:
    return rng.randbytes(rng.randint(low, high))


Meta = Callable[..., dict[str, Any]]


def _maven(rng: random.Random, project: str, repo: str, meta: Meta) -> Iterator[SampleFile]:
    for artifact in ("ledger", "gateway", "fraud-check"):
        for minor in range(4):
            version = f"1.{minor}.0" + ("-SNAPSHOT" if "snapshot" in repo else "")
            base = f"/com/example/{artifact}/{version}/{artifact}-{version}"
            pom = (
                f"<project><groupId>com.example</groupId><artifactId>{artifact}</artifactId>"
                f"<version>{version}</version></project>\n"
            ).encode()
            jar = _binary(rng)
            yield SampleFile(project, repo, f"{base}.pom", pom, meta())
            yield SampleFile(project, repo, f"{base}.jar", jar, meta(packaging="jar"))
            sha1 = hashlib.sha1(jar, usedforsecurity=False).hexdigest().encode()
            yield SampleFile(project, repo, f"{base}.jar.sha1", sha1, {})


def _npm(rng: random.Random, project: str, repo: str, meta: Meta) -> Iterator[SampleFile]:
    for package in ("ui-kit", "icons", "forms", "router", "charts"):
        for patch in range(7):
            path = f"/{package}/-/{package}-2.3.{patch}.tgz"
            yield SampleFile(project, repo, path, _binary(rng), meta(npm=True))


def _docker(rng: random.Random, project: str, repo: str, meta: Meta) -> Iterator[SampleFile]:
    base_layer = _binary(rng, 40000, 60000)  # every image shares its base layer
    for image in ("portal", "api", "worker"):
        for tag in ("1.0", "1.1", "latest"):
            own = _binary(rng, 4096, 16384)
            digest = hashlib.sha256(own).hexdigest()
            manifest = json.dumps({"schemaVersion": 2, "layers": [digest]}).encode()
            prefix = f"/{image}/{tag}"
            yield SampleFile(project, repo, f"{prefix}/manifest.json", manifest, meta())
            yield SampleFile(project, repo, f"{prefix}/base.tar.gz", base_layer, {})
            yield SampleFile(project, repo, f"{prefix}/sha256__{digest}", own, {})


def _helm(rng: random.Random, project: str, repo: str, meta: Meta) -> Iterator[SampleFile]:
    for chart in ("payments", "ledger", "gateway", "fraud-check"):
        for minor in range(8):
            path = f"/{chart}-0.{minor}.0.tgz"
            yield SampleFile(project, repo, path, _binary(rng, 1024, 8192), meta())


def _pypi(rng: random.Random, project: str, repo: str, meta: Meta) -> Iterator[SampleFile]:
    for package in ("etl", "features", "reports", "loaders"):
        for minor in range(9):
            wheel = f"/{package}/{package}-0.{minor}.0-py3-none-any.whl"
            yield SampleFile(project, repo, wheel, _binary(rng), meta(pythonVersion="3.11"))


def _generic(rng: random.Random, project: str, repo: str, meta: Meta) -> Iterator[SampleFile]:
    unchanged = _binary(rng)
    for build in range(1, 13):
        folder = f"/builds/{build}"
        binary = _binary(rng)
        notes = f"build {build}: {rng.randint(1, 40)} changes\n".encode()
        yield SampleFile(project, repo, f"{folder}/app-linux-amd64.tar.gz", binary, meta())
        yield SampleFile(project, repo, f"{folder}/docs.zip", unchanged, {})
        yield SampleFile(project, repo, f"{folder}/NOTES.txt", notes, {})


_KINDS = {"MAVEN": _maven, "NPM": _npm, "DOCKER": _docker, "HELM": _helm, "PYPI": _pypi}


def _files_of(rng: random.Random, project: str, repo: str, kind: str) -> Iterator[SampleFile]:
    """About forty files a repository of *kind* would hold, some of them the same bytes."""

    def meta(**extra: Any) -> dict[str, Any]:
        return {"buildNo": rng.randint(100, 999), "scanStatus": rng.choice(["PASSED", "NONE"])} | (
            extra
        )

    # The same licence in every repository: one blob, many nodes.
    yield SampleFile(project, repo, "/LICENSE", LICENSE, {})
    readme = f"# {project}/{repo}\n\n{kind.lower()} artifacts of {project}.\n".encode()
    yield SampleFile(project, repo, "/README.md", readme, {})
    yield from _KINDS.get(kind, _generic)(rng, project, repo, meta)


def sample_files(seed: int = SEED) -> Iterator[SampleFile]:
    """The files of the sample repository (a few hundred, the same for the same *seed*)."""
    rng = random.Random(seed)
    for project, repos in PROJECTS.items():
        for repo, kind in repos:
            yield from _files_of(rng, project, repo, kind)


def build_sample(repository: SqliteRepository, *, seed: int = SEED) -> dict[str, int]:
    """Fill *repository* with the sample: projects, repositories, files with metadata, and
    users, roles and permissions as common data. Return how many of each it holds."""
    counts = {"projects": 0, "repositories": 0, "files": 0, "bytes": 0, "documents": 0}
    blobs: set[str] = set()
    for project, repos in PROJECTS.items():
        repository.put_project(
            project,
            {
                "name": project,
                "displayName": project.replace("-", " ").title(),
                "createdBy": "admin",
            },
        )
        counts["projects"] += 1
        for repo, kind in repos:
            repository.put_repository(
                project,
                repo,
                {
                    "projectId": project,
                    "name": repo,
                    "type": kind,
                    "category": "LOCAL",
                    "public": False,
                    "quota": None,
                },
            )
            counts["repositories"] += 1
    for file in sample_files(seed):
        record = repository.put_file(
            file.project, file.repo, file.path, file.data, metadata=file.metadata
        )
        counts["files"] += 1
        counts["bytes"] += len(file.data)
        if record.blob is not None:
            blobs.add(record.blob)
    counts["blobs"] = len(blobs)
    for user in USERS:
        repository.put_document(
            "user",
            user,
            {
                "userId": user,
                "name": user.title(),
                "email": f"{user}@example.com",
                "admin": user == "admin",
                # A hash, as a real server stores it: common data holds secrets like this.
                "pwd": hashlib.sha256(f"demo-{user}".encode()).hexdigest(),
                "tokens": [],
            },
        )
    for project in PROJECTS:
        for role, actions in (("manager", ["MANAGE", "READ", "WRITE"]), ("viewer", ["READ"])):
            role_id = f"{project}_{role}"
            repository.put_document(
                "role",
                role_id,
                {
                    "roleId": role_id,
                    "projectId": project,
                    "type": "PROJECT",
                    "admin": role == "manager",
                },
            )
            repository.put_document(
                "permission",
                f"{role_id}_all",
                {
                    "projectId": project,
                    "resourceType": "PROJECT",
                    "roles": [role_id],
                    "actions": actions,
                    "users": list(USERS[1:4] if role == "viewer" else USERS[:2]),
                },
            )
    counts["documents"] = len(USERS) + 4 * len(PROJECTS)
    return counts


def prepare_folder(directory: Path) -> Path:
    """Create *directory* afresh and mark it; FileExistsError for a folder that holds files
    an earlier demo did not make (a mistyped --dir must never wipe someone's data)."""
    directory = directory.absolute()
    if directory.exists():
        if not directory.is_dir():
            raise FileExistsError(f"{directory} exists and is not a folder")
        if any(directory.iterdir()) and not (directory / MARKER).is_file():
            raise FileExistsError(
                f"{directory} is not empty and was not made by `repobackup demo`; "
                "choose another folder with --dir"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("made by `repobackup demo`; recreated on each run\n")
    return directory


def describe_differences(original: Snapshot, restored: Snapshot, limit: int = 10) -> list[str]:
    """What differs between two repository snapshots, one line each (at most *limit*)."""
    lines = []
    left, right = original["records"], restored["records"]
    for identity in sorted(left.keys() - right.keys(), key=str):
        lines.append(f"missing after restore: {identity}")
    for identity in sorted(right.keys() - left.keys(), key=str):
        lines.append(f"not in the original: {identity}")
    for identity in sorted(left.keys() & right.keys(), key=str):
        if left[identity] != right[identity]:
            lines.append(f"differs: {identity}")
    for sha in sorted(original["blobs"].keys() | restored["blobs"].keys()):
        if original["blobs"].get(sha) != restored["blobs"].get(sha):
            lines.append(f"blob differs or is missing: {sha}")
    return (
        lines[:limit] if len(lines) <= limit else [*lines[:limit], f"… {len(lines) - limit} more"]
    )


def _shown(path: Path | str) -> str:
    """*path* relative to the current folder when inside it, for commands to copy."""
    text = str(path)
    try:
        relative = os.path.relpath(text)
    except ValueError:  # another drive on Windows
        return shlex.quote(text)
    return shlex.quote(text if relative.startswith("..") else relative)


def _report_run(summary: RunSummary, what: str, out: DemoOutput) -> bool:
    counts = summary.counts
    seconds = (summary.ended - summary.started).total_seconds() if summary.ended else 0.0
    out.say(
        f"   {what} {summary.state.value} in {seconds:.1f} s: {counts.records_written} records, "
        f"{counts.blobs_written} blobs written, {counts.blobs_reused} reused"
    )
    for error in summary.errors[:10]:
        out.error(f"{error.scope} {error.key}: {error.message}")
    return summary.state is TaskState.FINISHED


def register(commands: Any, parents: Any) -> None:
    """Add `demo` to the subparsers *commands* (*parents*: the shared option groups)."""
    demo = commands.add_parser(
        "demo",
        parents=[parents.common],
        help="build a sample repository, back it up, restore and verify it",
        description="Build a sample repository in DIR (recreated each run), back it up "
        "compressed, restore it into a fresh repository and check both match.",
    )
    demo.add_argument(
        "--dir",
        default="repobackup-demo",
        type=Path,
        help="where to work (default ./repobackup-demo)",
    )
    demo.set_defaults(handler=lambda args, out: run_demo(args.dir, out))


class _Paths:
    """Where the demo puts each thing, inside its folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.store = folder / "backups"
        self.source = folder / "source.db"
        self.restored = folder / "restored.db"
        self.tasks = folder / "source.db.tasks.sqlite"


def _back_up(
    source: SqliteRepository,
    tasks: SqliteTaskStore,
    paths: _Paths,
    out: DemoOutput,
    workers: int | None,
) -> RunSummary:
    out.say(f"2. backing up compressed into {_shown(paths.store)}")
    with Engine(source, tasks=tasks, user="demo", max_workers=workers) as engine:
        backup_id = engine.create_task(
            {
                "name": "demo",
                "storeLocation": str(paths.store),
                "content": {
                    "commonData": True,
                    "compression": True,
                    "projects": [{"projectRegex": "*"}],
                },
            }
        )
        return engine.execute(backup_id)


def _restore(
    restored: SqliteRepository,
    tasks: SqliteTaskStore,
    location: str,
    paths: _Paths,
    *,
    out: DemoOutput,
    workers: int | None,
) -> bool:
    out.say(f"3. restoring into a fresh repository: {_shown(paths.restored)}")
    with Engine(restored, tasks=tasks, user="demo", max_workers=workers) as engine:
        restore_id = engine.create_task(
            {
                "name": "demo-restore",
                "storeLocation": location,
                "type": "DATA_RESTORE",
                "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
            }
        )
        restore = engine.execute(restore_id)
        if not _report_run(restore, "restore", out):
            return False
        page = engine.list_tasks()
    out.table(
        "tasks",
        ["id", "name", "type", "state", "ended"],
        [
            [
                t.id or "",
                t.name,
                t.type.value,
                t.state.value,
                t.end_date.isoformat(timespec="seconds") if t.end_date else "",
            ]
            for t in page.records
        ],
    )
    return True


def _cycle(paths: _Paths, out: DemoOutput, workers: int | None) -> tuple[str | None, str]:
    """Build, back up, restore and compare; the backup's location (None when a step failed)
    and where the source keeps its blobs."""
    out.say(f"1. building a sample repository: {_shown(paths.source)}")
    with (
        SqliteRepository(paths.source) as source,
        SqliteRepository(paths.restored) as restored,
        SqliteTaskStore(paths.tasks) as tasks,
    ):
        counts = build_sample(source)
        out.say(
            f"   {counts['projects']} projects, {counts['repositories']} repositories, "
            f"{counts['files']} files ({counts['bytes'] // 1024} KiB, {counts['blobs']} distinct "
            f"contents), {counts['documents']} users, roles and permissions"
        )
        backup = _back_up(source, tasks, paths, out, workers)
        if not _report_run(backup, "backup", out) or backup.location is None:
            return None, source.blobs
        if not _restore(restored, tasks, backup.location, paths, out=out, workers=workers):
            return None, source.blobs
        out.say("4. comparing the restored repository with the original")
        differences = describe_differences(source.snapshot(), restored.snapshot())
        if differences:
            out.error("the restored repository differs from the original:")
            for line in differences:
                out.say(f"   {line}")
            return None, source.blobs
        out.say(f"   identical: {counts['files']} files and every document match")
        return backup.location, source.blobs


def _try_next(paths: _Paths, location: str, blobs: str, began: float, out: DemoOutput) -> None:
    shown = _shown(location)
    folder, source = paths.folder, _shown(paths.source)
    out.say()
    out.say(f"done in {time.monotonic() - began:.1f} s. Everything is in {_shown(folder)}:")
    out.say(f"  original repository  {source} (blobs in {_shown(blobs)})")
    out.say(f"  backup               {shown}")
    out.say(f"  restored repository  {_shown(paths.restored)}")
    out.say(f"  task database        {_shown(paths.tasks)}")
    out.say()
    out.say("try next:")
    out.say(f"  repobackup ls {shown}")
    out.say(f"  repobackup verify {shown}")
    out.say(f"  repobackup tasks --repository {source}")
    out.say(
        f"  repobackup restore --repository {_shown(folder / 'copy.db')} "
        f"--store {_shown(paths.store / 'demo')} --all"
    )
    out.say(f"  repobackup serve --repository {source}")


def run_demo(directory: Path | str, out: DemoOutput, *, workers: int | None = None) -> int:
    """Run the demo in *directory* (wiped and remade); return 0 when the restored repository
    matches the original and the backup verifies, else 1."""
    began = time.monotonic()
    paths = _Paths(prepare_folder(Path(directory)))
    location, blobs = _cycle(paths, out, workers)
    if location is None:
        return 1
    report = verify(location)
    verified = bool(report.ok)
    out.say(f"5. verifying the backup: {'ok' if verified else 'PROBLEMS'}")
    for problem in list(report.problems)[:10]:
        out.error(str(problem))
    _try_next(paths, location, blobs, began, out)
    return 0 if verified else 1
