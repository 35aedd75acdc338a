"""Tests for `repobackup tasks rm|enable|disable` and `tasks list --last-run-state`, through
`main(argv)` on a real SQLite repository and task database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import one_file_database
from repobackup import Scheduler, SqliteRepository, SqliteTaskStore, TaskState
from repobackup.cli import EXIT_OK, EXIT_USAGE, main


@pytest.fixture(name="cli")
def _cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str | Path) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(name="source")
def _source(tmp_path: Path) -> Path:
    return one_file_database(tmp_path / "source.db")


def scheduled(cli: Any, source: Path, store: Path, name: str) -> str:
    """A CRON_EXPRESSION task made with `backup --cron`; its id."""
    code, out, err = cli(
        "backup", "-r", source, "--store", store, "--name", name, "--all", "--cron",
        "* * * * *", "--json",
    )  # fmt: skip
    assert code == EXIT_OK, err
    task_id: str = json.loads(out)["id"]
    return task_id


def test_disable_and_enable_by_name(cli: Any, source: Path, tmp_path: Path) -> None:
    """`tasks disable NAME` keeps the scheduler off the task; `enable` lets it run again."""
    task_id = scheduled(cli, source, tmp_path / "store", "nightly")
    code, out, _ = cli("tasks", "disable", "nightly", "-r", source)
    assert code == EXIT_OK
    assert "disabled task" in out
    with SqliteTaskStore(f"{source}.tasks.sqlite") as tasks:
        assert tasks.get(task_id).enabled is False
    code, out, _ = cli("tasks", "-r", source)
    assert "PENDING (disabled)" in out
    code, out, _ = cli("tasks", "enable", task_id[:10], "-r", source, "--json")
    assert code == EXIT_OK
    assert json.loads(out)["enabled"] is True
    with SqliteTaskStore(f"{source}.tasks.sqlite") as tasks:
        assert tasks.get(task_id).enabled is True


def test_disabled_task_is_not_started(cli: Any, source: Path, tmp_path: Path) -> None:
    """A task disabled from the command line is skipped by a Scheduler on the same database."""
    from repobackup import Engine

    task_id = scheduled(cli, source, tmp_path / "store", "nightly")
    assert cli("tasks", "disable", task_id, "-r", source)[0] == EXIT_OK
    with (
        SqliteTaskStore(f"{source}.tasks.sqlite") as tasks,
        SqliteRepository(source) as repo,
        Engine(repo, tasks=tasks) as engine,
    ):
        assert Scheduler(engine).next_run(task_id) is None


def test_rm_keeps_the_backups(cli: Any, source: Path, tmp_path: Path) -> None:
    """`tasks rm` removes the task and its history; the backups stay in the store."""
    store = tmp_path / "store"
    code, out, err = cli(
        "backup", "-r", source, "--store", store, "--name", "once", "--all", "--json"
    )
    assert code == EXIT_OK, err
    task_id = json.loads(out.splitlines()[-1])["taskId"]  # the summary message, last
    before = sorted(store.rglob("*"))
    code, out, err = cli("tasks", "rm", task_id[:9], "-r", source)
    assert code == EXIT_OK, err
    assert f"removed task {task_id}" in out
    assert str(store) in err
    assert sorted(store.rglob("*")) == before
    code, out, _ = cli("tasks", "-r", source, "--json")
    assert json.loads(out)["totalRecords"] == 0
    code, _, err = cli("tasks", "rm", task_id, "-r", source)
    assert code == EXIT_USAGE
    assert task_id in err


def test_ambiguous_name_is_refused(cli: Any, source: Path, tmp_path: Path) -> None:
    """A name two tasks share names neither: exit 2 listing both, nothing removed."""
    first = scheduled(cli, source, tmp_path / "a", "same")
    second = scheduled(cli, source, tmp_path / "b", "same")
    code, _, err = cli("tasks", "rm", "same", "-r", source)
    assert code == EXIT_USAGE
    assert first in err
    assert second in err
    code, out, _ = cli("tasks", "-r", source, "--json")
    assert json.loads(out)["totalRecords"] == 2


def test_last_run_state_finds_failed_recurring_task(cli: Any, source: Path, tmp_path: Path) -> None:
    """A recurring task whose run failed is PENDING again: --state FAILED misses it,
    --last-run-state FAILED finds it."""
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the store folder should be")
    failing = scheduled(cli, source, blocker / "store", "failing")
    scheduled(cli, source, tmp_path / "fine", "fine")
    code, _, _ = cli("run", failing, "-r", source)
    assert code != EXIT_OK
    with SqliteTaskStore(f"{source}.tasks.sqlite") as tasks:
        assert tasks.get(failing).state is TaskState.PENDING
    code, out, _ = cli("tasks", "list", "-r", source, "--state", "FAILED", "--json")
    assert json.loads(out)["totalRecords"] == 0
    code, out, _ = cli("tasks", "list", "-r", source, "--last-run-state", "failed", "--json")
    assert [t["id"] for t in json.loads(out)["records"]] == [failing]
    code, out, _ = cli("tasks", "-r", source, "--last-run-state", "FAILED")
    assert code == EXIT_OK
    assert "failing" in out
    assert "fine" not in out
