"""The synthetic repositories the benchmark runs on, built once from fixed seeds and cached.

`records_plan` and `files_plan` describe a repository; `build` writes it with large batches.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from repobackup import ConflictStrategy, Record, SqliteRepository

__all__ = [
    "BASE_TIME",
    "CHANGE_TIME",
    "GIB",
    "INCREMENT_SINCE",
    "MIB",
    "Built",
    "FileSpec",
    "Params",
    "build",
    "change_files",
    "clone",
    "files_plan",
]

# Bump when what a plan generates changes, so old caches are not taken for new ones.
GENERATOR = 3
SEED = 20240611
BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)
CHANGE_TIME = datetime(2025, 6, 1, tzinfo=UTC)
INCREMENT_SINCE = datetime(2025, 5, 1, tzinfo=UTC)
BATCH = 5000

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
SMALL = (1 * KIB, 64 * KIB)
LARGE = (2 * MIB, 8 * MIB)
DUPLICATES = 0.20  # share of files whose content is another file's
TEXT = 0.5  # share of distinct contents that are text-like (the rest is random bytes)


@dataclass(frozen=True)
class Params:
    """What a synthetic repository is made of; equal parameters give an equal repository."""

    mode: str  # "records" or "files"
    records: int = 0  # records mode: total records
    blob_every: int = 100  # records mode: one node in this many carries a tiny blob
    total_bytes: int = 0  # files mode: logical bytes of all files, duplicates included
    projects: int = 4
    repos: int = 3
    seed: int = SEED

    def key(self) -> str:
        """A folder name for the cache: readable, and unique for these parameters."""
        data = json.dumps({**asdict(self), "generator": GENERATOR}, sort_keys=True)
        digest = hashlib.sha256(data.encode()).hexdigest()[:10]
        size = f"{self.records}r" if self.mode == "records" else f"{self.total_bytes // MIB}MiB"
        return f"{self.mode}-{size}-{digest}"


@dataclass(frozen=True)
class FileSpec:
    """One file of a files-mode repository; *content* names its bytes (shared by duplicates)."""

    index: int
    project: str
    repo: str
    path: str
    size: int
    text: bool
    content: int  # the index of the file whose content this is (itself unless a duplicate)


# --- content ------------------------------------------------------------------------------------


class TextPool:
    """Lines of source-like text; files pick lines at random, which compresses like real text
    (about 3:1 with zstd) without long runs that repeat across files and dedupe unfairly."""

    def __init__(self, seed: int, lines: int = 60_000) -> None:
        rng = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(6000)]
        weights = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(words))))
        pool = []
        for number in range(lines):
            indent = " " * (4 * rng.randint(0, 3))
            picked = rng.choices(words, cum_weights=weights, k=rng.randint(3, 14))
            pool.append(f"{indent}{' '.join(picked)} = {number * 7919 % 100003};\n".encode())
        self.lines = pool

    def make(self, rng: random.Random, size: int) -> bytes:
        """*size* bytes of text."""
        out = bytearray()
        while len(out) < size:
            out += b"".join(rng.choices(self.lines, k=max(1, (size - len(out)) // 40 + 1)))
        return bytes(out[:size])


def make_content(pool: TextPool, seed: int, content: int, size: int, text: bool) -> bytes:
    """The bytes of content number *content*: the same arguments give the same bytes."""
    rng = random.Random(f"{seed}/{content}")
    if text:
        return pool.make(rng, size)
    return rng.randbytes(size)


# --- plans --------------------------------------------------------------------------------------


def _repositories(params: Params) -> list[tuple[str, str]]:
    """(project, repository) of every repository, in order."""
    return [
        (f"project-{p}", f"repo-{r}") for p in range(params.projects) for r in range(params.repos)
    ]


def files_plan(params: Params) -> list[FileSpec]:
    """The files of a files-mode repository: half the bytes in files of 1-64 KiB, half in
    files of 2-8 MiB; a fifth of the files repeat another file's content."""
    rng = random.Random(params.seed)
    sizes: list[int] = []
    for low, high in (SMALL, LARGE):
        budget = params.total_bytes // 2
        while budget > 0:
            size = min(rng.randint(low, high), max(budget, low))
            sizes.append(size)
            budget -= size
    rng.shuffle(sizes)
    scopes = _repositories(params)
    specs: list[FileSpec] = []
    originals: dict[bool, list[int]] = {False: [], True: []}  # by "large" class
    for index, size in enumerate(sizes):
        large = size > SMALL[1]
        project, repo = scopes[index % len(scopes)]
        path = f"/com/example/g{index % 97}/artifact-{index}/{index % 13}.0/artifact-{index}.bin"
        pool = originals[large]
        if pool and rng.random() < DUPLICATES:
            original = specs[rng.choice(pool)]
            specs.append(
                FileSpec(index, project, repo, path, original.size, original.text, original.content)
            )
            continue
        pool.append(index)
        specs.append(FileSpec(index, project, repo, path, size, rng.random() < TEXT, index))
    return specs


def changed_files(params: Params, specs: list[FileSpec], share: float = 0.01) -> list[FileSpec]:
    """The files an incremental benchmark rewrites: *share* of them, chosen by the seed."""
    rng = random.Random(params.seed + 1)
    return sorted(rng.sample(specs, max(1, round(len(specs) * share))), key=lambda s: s.index)


def node_document(
    project: str, repo: str, path: str, *, size: int, sha256: str | None, md5: str | None, when: str
) -> dict[str, Any]:
    """A node document as an artifact server stores it."""
    return {
        "projectId": project,
        "repoName": repo,
        "fullPath": path,
        "name": path.rsplit("/", 1)[-1],
        "folder": sha256 is None,
        "size": size,
        "sha256": sha256,
        "md5": md5,
        "metadata": {"build": "ci-1234", "scanned": True, "labels": ["release", "bench"]},
        "createdBy": "builder",
        "createdDate": when,
        "lastModifiedBy": "builder",
        "lastModifiedDate": when,
    }


def file_record(spec: FileSpec, data: bytes, modified: datetime) -> Record:
    """The node record of *spec* holding *data*."""
    sha256 = hashlib.sha256(data).hexdigest()
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    document = node_document(
        spec.project,
        spec.repo,
        spec.path,
        size=len(data),
        sha256=sha256,
        md5=md5,
        when=modified.isoformat(),
    )
    return Record(
        collection="node",
        key=spec.path,
        document=document,
        modified=modified,
        project_id=spec.project,
        repo_name=spec.repo,
        blob=sha256,
        size=len(data),
    )


def _scope_records(params: Params, users: int) -> Iterator[Record]:
    """Common data, projects and repositories."""
    when = BASE_TIME
    for number in range(users):
        yield Record(
            collection="user",
            key=f"user{number}",
            document={
                "userId": f"user{number}",
                "name": f"User {number}",
                "pwd": hashlib.sha256(str(number).encode()).hexdigest(),
                "roles": ["dev"] if number % 10 else ["admin"],
                "tokens": [{"id": f"t{number}", "expiredAt": None}],
            },
            modified=when,
        )
        yield Record(
            collection="permission",
            key=f"perm{number}",
            document={"users": [f"user{number}"], "actions": ["READ", "WRITE"], "scope": "PROJECT"},
            modified=when,
        )
    for p in range(params.projects):
        project = f"project-{p}"
        document: dict[str, Any] = {"name": project, "displayName": project.title()}
        yield Record("project", project, document, when, project)
        for r in range(params.repos):
            repo = f"repo-{r}"
            document = {"projectId": project, "name": repo, "type": "GENERIC", "public": False}
            yield Record("repository", repo, document, when, project, repo)


def _records_mode_records(params: Params, pool: TextPool) -> Iterator[tuple[Record, bytes | None]]:
    users = max(10, params.records // 1000)
    fixed = list(_scope_records(params, users))
    for record in fixed:
        yield record, None
    scopes = _repositories(params)
    rng = random.Random(params.seed)
    when = BASE_TIME.isoformat()
    for number in range(max(0, params.records - len(fixed))):
        project, repo = scopes[number % len(scopes)]
        if number % 20 == 19:
            key = f"artifact-{number}"
            document = {
                "projectId": project,
                "repoName": repo,
                "key": key,
                "type": "MAVEN",
                "latest": "1.0.0",
                "versions": 3,
                "description": "a package of the benchmark",
            }
            yield Record("package", key, document, BASE_TIME, project, repo), None
            continue
        path = f"/com/example/g{number % 97}/artifact-{number}/{number % 13}.0/file-{number}.txt"
        if number % params.blob_every == 0:
            data = make_content(pool, params.seed, number, rng.randint(64, 1024), text=True)
            sha = hashlib.sha256(data).hexdigest()
            md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
            document = node_document(
                project, repo, path, size=len(data), sha256=sha, md5=md5, when=when
            )
            yield Record("node", path, document, BASE_TIME, project, repo, sha, len(data)), data
        else:
            document = node_document(project, repo, path, size=0, sha256=None, md5=None, when=when)
            yield Record("node", path, document, BASE_TIME, project, repo), None


def _files_mode_records(params: Params, pool: TextPool) -> Iterator[tuple[Record, bytes | None]]:
    for record in _scope_records(params, 50):
        yield record, None
    for spec in files_plan(params):
        data = make_content(pool, params.seed, spec.content, spec.size, spec.text)
        yield file_record(spec, data, BASE_TIME), data


# --- building and caching -----------------------------------------------------------------------


@dataclass
class Built:
    """A synthetic repository on disk and what it holds."""

    params: Params
    folder: Path
    database: Path
    blobs: Path
    records: int
    files: int
    distinct_blobs: int
    blob_bytes: int  # distinct blob bytes: what the blob folder holds
    logical_bytes: int  # file bytes, duplicates included
    database_bytes: int
    build_seconds: float

    def stats(self) -> dict[str, Any]:
        """The figures as plain JSON values."""
        data = asdict(self)
        data["params"] = asdict(self.params)
        for name in ("folder", "database", "blobs"):
            data[name] = str(data[name])
        return data


def build(params: Params, cache: Path, *, say: Any = print) -> Built:
    """The repository of *params* under *cache*, built now unless a complete one is there."""
    folder = cache.resolve() / params.key()
    database = folder / "repo.db"
    blobs = folder / "blobs"
    ready = folder / "READY.json"
    if ready.exists():
        stats = json.loads(ready.read_text())
        # The paths are where the cache is now: the folder may have moved since.
        stats.update(params=params, folder=folder, database=database, blobs=blobs)
        return Built(**stats)
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted build: start again
    folder.mkdir(parents=True)
    say(f"building the synthetic repository {folder.name} (cached for later runs) ...")
    started = time.perf_counter()
    pool = TextPool(params.seed)
    make = _records_mode_records if params.mode == "records" else _files_mode_records
    rows = make(params, pool)
    records = files = blob_bytes = logical = 0
    seen: set[str] = set()
    with SqliteRepository(database, str(blobs)) as repo:
        batch: list[Record] = []
        for record, data in rows:
            batch.append(record)
            records += 1
            if data is not None and record.blob is not None:
                files += 1
                logical += len(data)
                if record.blob not in seen:
                    seen.add(record.blob)
                    blob_bytes += len(data)
                    repo.write_blob(record.blob, [data])
            if len(batch) >= BATCH:
                repo.apply(batch, ConflictStrategy.OVERWRITE)
                batch = []
        if batch:
            repo.apply(batch, ConflictStrategy.OVERWRITE)
    built = Built(
        params=params,
        folder=folder,
        database=database,
        blobs=blobs,
        records=records,
        files=files,
        distinct_blobs=len(seen),
        blob_bytes=blob_bytes,
        logical_bytes=logical,
        database_bytes=database.stat().st_size,
        build_seconds=round(time.perf_counter() - started, 2),
    )
    ready.write_text(json.dumps(built.stats(), indent=1))
    say(f"built in {built.build_seconds:.1f} s")
    return built


def change_files(built: Built, database: Path, blobs: Path, share: float = 0.01) -> int:
    """Rewrite *share* of the files of a files-mode repository copied to *database* and
    *blobs* with new content modified at CHANGE_TIME; return how many changed."""
    params = built.params
    pool = TextPool(params.seed)
    specs = changed_files(params, files_plan(params), share)
    with SqliteRepository(database, str(blobs)) as repo:
        records = []
        for spec in specs:
            # A content number no plan uses, so the new bytes are new blobs.
            data = make_content(pool, params.seed, 10_000_000 + spec.index, spec.size, spec.text)
            record = file_record(spec, data, CHANGE_TIME)
            repo.write_blob(record.blob or "", [data])
            records.append(record)
        repo.apply(records, ConflictStrategy.OVERWRITE)
    return len(specs)


def clone(built: Built, into: Path) -> tuple[Path, Path]:
    """A copy of the repository under *into* that can be changed: the database copied, the
    blob folder hard-linked (blobs are replaced, never rewritten in place)."""
    into.mkdir(parents=True, exist_ok=True)
    database = into / "repo.db"
    blobs = into / "blobs"
    shutil.copyfile(built.database, database)
    subprocess.run(["cp", "-al", str(built.blobs), str(blobs)], check=True)
    return database, blobs
