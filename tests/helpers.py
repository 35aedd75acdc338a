"""Small test doubles shared by the test modules: a hand-moved clock, a tiny repository,
an engine fixture."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from repobackup import Engine, MemoryRepository, SqliteRepository


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **amount: float) -> datetime:
        self.now += timedelta(**amount)
        return self.now


def make_repository() -> MemoryRepository:
    """A small repository: one project, one repository, two files."""
    repo = MemoryRepository()
    repo.put_project("demo")
    repo.put_repository("demo", "libs")
    repo.put_file("demo", "libs", "/a.jar", b"alpha")
    repo.put_file("demo", "libs", "/b.jar", b"beta")
    return repo


@pytest.fixture(name="engine")
def engine_fixture(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a fresh SQLite repository, closed after the test."""
    engine = Engine(SqliteRepository(str(tmp_path / "repo.db")))
    yield engine
    engine.close()


# --- Units below the public API -------------------------------------------------------------
# A few tests exercise private units directly (the zip writer and reader, retention, the
# retry policy, the scheduler's due time). They reach them through these names only, so that
# moving a private module changes this block and no test.

from repobackup._archive import crypto, keys  # noqa: E402  (the encryption primitives)
from repobackup._archive.retention import apply_retention, remove_leftovers  # noqa: E402
from repobackup._archive.store import is_transient, retrying  # noqa: E402
from repobackup._archive.zipreader import ZipReader  # noqa: E402
from repobackup._archive.zipwriter import ZipWriter, worth_compressing  # noqa: E402
from repobackup._engine.scheduler import due_at  # noqa: E402

MANIFEST = "manifest.json"

__all__ = [
    "MANIFEST",
    "Clock",
    "ZipReader",
    "ZipWriter",
    "apply_retention",
    "blob_member",
    "crypto",
    "due_at",
    "engine_fixture",
    "is_transient",
    "keys",
    "make_repository",
    "remove_leftovers",
    "retrying",
    "worth_compressing",
]


def blob_member(sha256: str, *, compressed: bool) -> str:
    """A blob's member path, as docs/format.md writes it: blobs/<sha[0:2]>/<sha[2:4]>/<sha>,
    with .zst when it is a zstd frame."""
    return f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}" + (".zst" if compressed else "")
