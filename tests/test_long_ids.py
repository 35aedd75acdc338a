"""Ids longer than a file name may be: stored in a form that fits, restored exactly.

A path component is at most 255 bytes and percent-encoding triples non-ASCII bytes, so a
300-character ASCII id or a 90-character CJK id cannot be a folder name as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from repobackup import Engine, MemoryRepository, Scope, TaskState

ASCII = "p" * 299 + "1"
CJK = "仓库" * 45  # 90 characters, 270 bytes of UTF-8, 810 once percent-encoded


def source() -> MemoryRepository:
    repo = MemoryRepository()
    for project, name in ((ASCII, CJK), (CJK, ASCII), ("short", "x" * 300)):
        repo.put_project(project)
        repo.put_repository(project, name)
        repo.put_file(project, name, "/f.txt", f"{project[:3]}-{name[:3]}".encode())
    return repo


def contents(repo: MemoryRepository) -> set[tuple[str, str, str]]:
    found = set()
    for project in repo.projects():
        for repository in repo.repositories(project):
            for record in repo.records(Scope(project, repository), "node"):
                found.add((project, repository, record.key))
    return found


@pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
def test_long_project_and_repository_ids_round_trip(tmp_path: Path, compression: bool) -> None:
    repo = source()
    content = {"commonData": True, "projects": [{"projectRegex": "*"}], "compression": compression}
    backing_up = Engine(repo)
    backup = backing_up.execute(
        backing_up.create_task(
            {"name": "nightly", "storeLocation": str(tmp_path / "store"), "content": content}
        )
    )
    assert backup.state is TaskState.FINISHED, backup.errors
    assert backup.location is not None
    if not compression:
        for _, folders, files in os.walk(backup.location):
            assert all(len(n.encode()) <= 255 for n in folders + files)
    target = MemoryRepository()
    engine = Engine(target)
    restored = engine.execute(
        engine.create_task(
            {
                "name": "restore",
                "type": "DATA_RESTORE",
                "storeLocation": backup.location,
                "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
            }
        )
    )
    assert restored.state is TaskState.FINISHED, restored.errors
    assert not restored.errors
    assert contents(target) == contents(repo)
    assert len(contents(target)) == 3
    assert engine.verify(backup.location).ok
