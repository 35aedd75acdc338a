"""Tests for the progress events of backups, restores and verifies (files and bytes against
their totals), the start hook, and cancelling a run: it ends FAILED, nothing it leaves looks
complete, and the next run succeeds."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from repobackup import (
    Engine,
    MemoryRepository,
    Progress,
    Scheduler,
    SqliteRepository,
    TaskState,
    verify,
)
from repobackup.adapters.json import JsonApi

FILES = 24
SIZE = 48 * 1024


def _repository(path: Path) -> SqliteRepository:
    """24 files of 48 KiB, two of them sharing their content, and some common data."""
    repo = SqliteRepository(path)
    repo.put_project("alpha")
    repo.put_repository("alpha", "libs")
    for number in range(FILES - 1):
        repo.put_file("alpha", "libs", f"/f{number}.bin", os.urandom(SIZE))
    repo.put_file("alpha", "libs", "/copy.bin", repo.read_file("alpha", "libs", "/f0.bin"))
    repo.put_document("user", "admin", {"name": "admin"})
    return repo


@pytest.fixture(name="repo")
def _repo(tmp_path: Path) -> SqliteRepository:
    return _repository(tmp_path / "source.db")


def task(store: Path, name: str = "nightly", **content: Any) -> dict[str, Any]:
    return {
        "name": name,
        "storeLocation": str(store),
        "content": {"commonData": True, "projects": [{"projectId": "alpha"}], **content},
    }


def common(store: Path) -> dict[str, Any]:
    return {"name": "common", "storeLocation": str(store), "content": {"commonData": True}}


def _monotonic(events: list[Progress]) -> None:
    for before, after in itertools.pairwise(events):
        assert after.files >= before.files
        assert after.bytes >= before.bytes
    for event in events:
        if event.total_files is not None:
            assert event.files <= event.total_files
        if event.total_bytes is not None:
            assert event.bytes <= event.total_bytes


def test_backup_counts_files_against_the_sized_total(repo: SqliteRepository, tmp_path: Path):
    """A backup's space check sizes its content: from then on the events carry the files
    (records with a blob) and their bytes as totals, and the last one reaches both."""
    events: list[Progress] = []
    with Engine(repo, on_progress=events.append) as engine:
        summary = engine.execute(engine.create_task(task(tmp_path / "store")))
    assert summary.state is TaskState.FINISHED
    sized = [e for e in events if e.total_files is not None]
    assert sized, events
    assert {(e.total_files, e.total_bytes) for e in sized} == {(FILES, FILES * SIZE)}
    last = events[-1]
    assert last.phase == "done"
    assert (last.files, last.bytes, last.records) == (
        FILES,
        FILES * SIZE,
        summary.counts.records_written,
    )
    # The shared content is copied once and counted done for the second file.
    assert summary.counts.blobs_written == FILES - 1
    _monotonic(events)


def test_backup_without_a_space_check_has_no_totals(repo: SqliteRepository, tmp_path: Path):
    """Without the space check nothing sizes the content first: no total, a count only."""
    events: list[Progress] = []
    data = task(tmp_path / "store")
    data["backupSetting"] = {"spaceCapCheck": False}
    with Engine(repo, on_progress=events.append) as engine:
        assert engine.execute(engine.create_task(data)).state is TaskState.FINISHED
    assert all(e.total_files is None and e.total_bytes is None for e in events)
    assert events[-1].files == FILES


def test_restore_and_verify_take_their_totals_from_the_manifest(
    repo: SqliteRepository, tmp_path: Path
) -> None:
    """A restore and a verify measure against the blobs and bytes the manifest counts;
    a verify's events belong to no task (task id None), through `verify` or the engine."""
    with Engine(repo) as engine:
        location = engine.execute(engine.create_task(task(tmp_path / "store"))).location
    assert location is not None
    distinct = (FILES - 1, (FILES - 1) * SIZE)

    restored: list[Progress] = []
    with Engine(SqliteRepository(tmp_path / "copy.db"), on_progress=restored.append) as engine:
        data = {**task(Path(location), name="back"), "type": "DATA_RESTORE"}
        assert engine.execute(engine.create_task(data)).state is TaskState.FINISHED
        checked: list[Progress] = []
        report = engine.verify(location, on_progress=checked.append)
    assert report.ok
    assert {(e.total_files, e.total_bytes) for e in restored} == {distinct}
    assert (restored[-1].files, restored[-1].bytes) == distinct
    _monotonic(restored)

    for events in (checked, []):
        if not events:
            assert verify(location, on_progress=events.append).ok
        assert {e.task_id for e in events} == {None}
        assert {(e.total_files, e.total_bytes) for e in events} == {distinct}
        assert [e.phase for e in events][-1] == "done"
        assert (events[-1].files, events[-1].bytes) == distinct
        assert events[-1].records == report.records
        assert "blobs" in {e.phase for e in events}
        _monotonic(events)


def test_on_start_names_the_task_and_how_it_started(tmp_path: Path) -> None:
    """`on_start` is called as each run starts, before its end: "manual" for `execute` and
    `submit`, "schedule" for a scheduler's run, "api" for the JSON adapter's execute."""
    calls: list[tuple[str, str | None, str]] = []
    with Engine(
        MemoryRepository(),
        on_start=lambda t, trigger: calls.append(("start", t.id, trigger)),
        on_finish=lambda t, s: calls.append(("end", t.id, s.state.value)),
    ) as engine:
        manual = engine.create_task(common(tmp_path / "a"))
        engine.execute(manual)
        due = engine.create_task(common(tmp_path / "b"))
        Scheduler(engine).run_pending()
        api = engine.create_task(common(tmp_path / "c"))
        assert JsonApi(engine).execute_task(api)["code"] == 0
        engine.close()
    starts = {task_id: trigger for kind, task_id, trigger in calls if kind == "start"}
    assert starts[manual] == "manual"
    assert starts[due] == "schedule"
    assert starts[api] == "api"
    for task_id in (manual, due, api):
        order = [kind for kind, seen, _ in calls if seen == task_id]
        assert order[0] == "start"
        assert order[-1] == "end"


def _complete(store: Path) -> list[Path]:
    """What a restore would take for a complete backup."""
    return [*store.rglob("manifest.json"), *(p for p in store.rglob("*.zip") if p.is_file())]


@pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
def test_cancel_ends_the_run_failed_and_the_next_run_succeeds(
    repo: SqliteRepository, tmp_path: Path, compression: bool
) -> None:
    """`Engine.cancel` stops a run at its next record or blob: FAILED with an error that says
    it was cancelled and why, no backup that looks complete, and the next run finishes."""
    store = tmp_path / "store"
    answers: list[bool] = []
    engine: Engine

    def watch(event: Progress) -> None:
        if event.phase == "records" and not answers:
            assert event.task_id is not None
            answers.append(engine.cancel(event.task_id, reason="the operator asked"))

    with Engine(repo, on_progress=watch) as engine:
        task_id = engine.create_task(task(store, compression=compression))
        summary = engine.submit(task_id).result(timeout=60)
        assert answers == [True]
        assert summary.state is TaskState.FAILED
        assert summary.location is None
        message = summary.errors[-1].message
        assert message.startswith("cancelled (the operator asked)")
        assert "no backup was committed" in message
        assert engine.get_task(task_id).state is TaskState.FAILED
        assert not _complete(store)
        assert not engine.running()
        assert engine.cancel(task_id) is False  # no run under way
        answers.append(True)  # the next run is left alone
        again = engine.execute(task_id)
        assert again.state is TaskState.FINISHED, again.errors
        assert again.location is not None
        assert engine.verify(again.location).ok


def test_cancel_a_restore_keeps_what_it_restored(repo: SqliteRepository, tmp_path: Path) -> None:
    """A cancelled restore ends FAILED; its message says the records restored so far stay."""
    with Engine(repo) as engine:
        location = engine.execute(engine.create_task(task(tmp_path / "store"))).location
    assert location is not None
    engine = Engine(SqliteRepository(tmp_path / "copy.db"))
    engine.on_progress = lambda e: e.task_id is not None and engine.cancel(e.task_id)
    with engine:
        data = {**task(Path(location), name="back"), "type": "DATA_RESTORE"}
        summary = engine.execute(engine.create_task(data))
    assert summary.state is TaskState.FAILED
    assert "cancelled (Engine.cancel was called)" in summary.errors[-1].message
    assert "what it restored so far stays" in summary.errors[-1].message


def test_a_run_cancelled_while_it_waits_never_starts(repo: SqliteRepository, tmp_path: Path):
    """A submitted run still waiting for a thread, cancelled, ends FAILED without writing;
    `close(cancel=True)` cancels what is under way and says whether every run ended."""
    release = threading.Event()
    first_id = ""

    def hold(event: Progress) -> None:
        if event.task_id == first_id:
            release.wait(30)

    engine = Engine(repo, max_workers=1, on_progress=hold)
    first_id = engine.create_task(task(tmp_path / "one", name="one"))
    second_id = engine.create_task(task(tmp_path / "two", name="two"))
    first = engine.submit(first_id)
    second = engine.submit(second_id)
    assert sorted(engine.running()) == sorted([first_id, second_id])
    assert engine.cancel(second_id, reason="not wanted")
    assert engine.close(cancel=False, timeout=0.2) is False  # the first is held
    release.set()
    assert engine.close(cancel=False, timeout=60) is True
    assert first.result().state is TaskState.FINISHED
    cancelled = second.result()
    assert cancelled.state is TaskState.FAILED
    assert cancelled.errors[-1].message.startswith("cancelled (not wanted)")
    assert cancelled.counts.records_written == 0
    assert not (tmp_path / "two").exists() or not _complete(tmp_path / "two")
