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
