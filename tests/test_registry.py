"""Tests for opening repositories by name: one source for the built-in backends, and the
``create`` option that lets the command line open a repository without ever creating one."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

# The registry is how the command line names backends; it has no public import path of its
# own, so these tests reach it through the one module of private units.
from private import (
    ENTRY_POINT_GROUP,
    available_backends,
    load_backend,
    open_repository,
)
from repobackup import BackendError, MemoryRepository, SqliteRepository

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


class TestOneSourceForBuiltins:
    def test_package_registers_no_builtin_as_entry_point(self) -> None:
        """pyproject.toml declares no entry point that a built-in name would shadow."""
        project = tomllib.loads(PYPROJECT.read_text())["project"]
        registered = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
        assert set(registered) & {"sqlite", "memory"} == set()

    def test_builtins_listed_as_built_in(self) -> None:
        """sqlite and memory are listed as built-in, whatever else is installed."""
        backends = available_backends()
        assert backends["sqlite"] == "built-in"
        assert backends["memory"] == "built-in"

    def test_builtins_open_their_repositories(self, tmp_path: Path) -> None:
        """The built-in factories open a SqliteRepository and a MemoryRepository."""
        with open_repository(f"sqlite:{tmp_path / 'repo.db'}") as repo:
            assert isinstance(repo, SqliteRepository)
        assert isinstance(open_repository("memory:"), MemoryRepository)
        assert load_backend("sqlite") is load_backend("sqlite")


class TestCreate:
    @pytest.mark.parametrize("spec", ["{path}", "sqlite:{path}"])
    def test_missing_database_not_created(self, tmp_path: Path, spec: str) -> None:
        """create=False on a missing SQLite database raises FileNotFoundError as it is (not a
        BackendError) and creates no file and no folder."""
        path = tmp_path / "not-mounted" / "server.db"
        with pytest.raises(FileNotFoundError) as caught:
            open_repository(spec.format(path=path), create=False)
        assert not isinstance(caught.value, BackendError)
        assert caught.value.filename == str(path)
        assert list(tmp_path.iterdir()) == []

    def test_existing_database_opens(self, tmp_path: Path) -> None:
        """create=False opens a database that exists."""
        path = tmp_path / "repo.db"
        with SqliteRepository(path) as repo:
            repo.put_project("p")
        with open_repository(str(path), create=False) as again:
            assert list(again.projects()) == ["p"]

    def test_default_creates(self, tmp_path: Path) -> None:
        """Without the option a missing database is created, as before."""
        path = tmp_path / "new" / "repo.db"
        with open_repository(str(path)) as repo:
            assert list(repo.projects()) == []
        assert path.is_file()

    def test_memory_takes_the_option(self) -> None:
        """The memory backend accepts create=False: a new repository in memory is all it has."""
        assert isinstance(open_repository("memory:", create=False), MemoryRepository)
