"""Tests for `repobackup scheduler` as a real process: --once and its exit codes, the start and
end lines (text and JSON), the metrics file, SIGTERM mid-backup, and serve's run lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from repobackup import SqliteRepository, SqliteTaskStore, TaskState
from repobackup.cli import EXIT_FAILED, EXIT_OK, EXIT_TERMINATED
from test_cli import install_plugin, looks_complete, mid_backup, slow_env

pytestmark = pytest.mark.slow


def repobackup(*argv: str | Path, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "repobackup.cli", *map(str, argv)]


def run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        repobackup(*argv),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


@pytest.fixture(name="source")
def _source(tmp_path: Path) -> Path:
    path = tmp_path / "source.db"
    with SqliteRepository(path) as repo:
        for project in ("alpha", "beta"):
            repo.put_project(project)
            repo.put_repository(project, "libs")
            for number in range(20):
                repo.put_file(project, "libs", f"/f{number}.bin", f"{project}{number}".encode())
    return path


def due_soon(source: Path, store: Path, name: str, *extra: str) -> str:
    """A SPECIFIED_TIME task due one second from now; its id (after it fell due)."""
    at = (datetime.now().astimezone() + timedelta(seconds=1)).isoformat(timespec="seconds")
    made = run(
        "backup", "-r", source, "--store", store, "--name", name, "--all", "--at", at,
        "--json", *extra,
    )  # fmt: skip
    assert made.returncode == EXIT_OK, made.stderr
    task_id: str = json.loads(made.stdout)["id"]
    return task_id


def wait_due() -> None:
    time.sleep(2.1)


def test_once_runs_what_is_due_and_logs_it(source: Path, tmp_path: Path) -> None:
    """--once starts the due task, logs a start and an end line, writes the metrics file,
    exits 0; run again, nothing is due."""
    task_id = due_soon(source, tmp_path / "store", "nightly")
    wait_due()
    metrics = tmp_path / "repobackup.prom"
    done = run("scheduler", "-r", source, "--once", "--metrics-file", metrics)
    assert done.returncode == EXIT_OK, done.stderr
    start, end = done.stdout.splitlines()
    assert f"start backup 'nightly' (task {task_id})" in start
    assert f"end backup 'nightly' (task {task_id}) FINISHED in " in end
    assert "44 records, 40 blobs" in end  # 2 projects, 2 repositories, 40 files
    assert "0 errors" in end
    assert f'task_id="{task_id}"' in metrics.read_text()
    again = run("scheduler", "-r", source, "--once")
    assert again.returncode == EXIT_OK
    assert again.stdout.strip().endswith("nothing due")


def test_once_json_lines_and_failure_exit_code(source: Path, tmp_path: Path) -> None:
    """--log-format json writes one JSON object a line; a failed run makes --once exit 1,
    its first error in the end line."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    good = due_soon(source, tmp_path / "store", "good")
    bad = due_soon(source, blocker / "store", "bad")
    wait_due()
    done = run("scheduler", "-r", source, "--once", "--log-format", "json")
    assert done.returncode == EXIT_FAILED, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    ends = {line["taskId"]: line for line in lines if line["event"] == "end"}
    assert {line["taskId"] for line in lines if line["event"] == "start"} == {good, bad}
    assert ends[good]["state"] == "FINISHED"
    assert ends[good]["counts"]["recordsWritten"] == 44
    assert ends[bad]["state"] == "FAILED"
    assert ends[bad]["exitCode"] == EXIT_FAILED
    assert "Not a directory" in ends[bad]["firstError"]
    assert ends[bad]["durationSeconds"] >= 0


def test_disabled_task_is_left_alone(source: Path, tmp_path: Path) -> None:
    """A disabled task that is due is not started by --once."""
    task_id = due_soon(source, tmp_path / "store", "nightly")
    assert run("tasks", "disable", task_id, "-r", source).returncode == EXIT_OK
    wait_due()
    done = run("scheduler", "-r", source, "--once")
    assert done.returncode == EXIT_OK
    assert "nothing due" in done.stdout
    assert not (tmp_path / "store").exists()


def test_sigterm_mid_backup_stops_cleanly(source: Path, tmp_path: Path) -> None:
    """SIGTERM while a scheduled backup runs: no new runs, the one under way ends (its end
    line is logged), nothing unfinished looks complete, exit 143."""
    plugins = install_plugin(tmp_path / "plugins")
    marker = tmp_path / "marker"
    store = tmp_path / "store"
    env = slow_env(plugins, marker, "0.02")
    tasks_db = tmp_path / "tasks.sqlite"
    at = (datetime.now().astimezone() + timedelta(seconds=1)).isoformat(timespec="seconds")
    made = run(
        "backup", "-r", f"slow:{source}", "--store", store, "--name", "nightly", "--all",
        "--at", at, "--tasks-db", tasks_db, "--no-space-check", env=env,
    )  # fmt: skip
    assert made.returncode == EXIT_OK, made.stderr
    process = subprocess.Popen(
        repobackup("scheduler", "-r", f"slow:{source}", "--tasks-db", tasks_db, "--poll", "0.2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    mid_backup(process, marker, store / "nightly")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_TERMINATED, err
    assert "Traceback" not in err
    assert "stopping" in out
    assert "end backup 'nightly'" in out
    assert not [p for p in store.rglob("*") if p.name.endswith(".partial")]
    with SqliteTaskStore(tasks_db) as tasks:
        (task,) = tasks.list().records
    assert task.last_run is not None
    assert task.state in (TaskState.FINISHED, TaskState.FAILED)
    if task.state is TaskState.FAILED:
        assert not looks_complete(store)


def test_serve_logs_scheduled_runs(source: Path, tmp_path: Path) -> None:
    """serve writes the same start and end lines for the runs its scheduler starts."""
    due_soon(source, tmp_path / "store", "nightly")
    process = subprocess.Popen(
        repobackup("serve", "-r", source, "--port", "0", "--log-format", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("serving http://127.0.0.1:")
        events = [json.loads(process.stdout.readline()) for _ in range(2)]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert [e["event"] for e in events] == ["start", "end"]
    assert events[1]["state"] == "FINISHED"


def test_encrypted_task_takes_the_password_file(source: Path, tmp_path: Path) -> None:
    """A scheduled --encrypt task runs under `scheduler --password-file`; with no passphrase
    it fails, saying so, and writes no backup."""
    secret = tmp_path / "password"
    secret.write_text("correct horse battery staple\n")
    env = {key: value for key, value in os.environ.items() if key != "REPOBACKUP_PASSWORD"}
    sealed = ("--encrypt", "--password-file", str(secret))

    due_soon(source, tmp_path / "first", "sealed", *sealed)
    wait_due()
    missing = subprocess.run(repobackup("scheduler", "-r", source, "--once"), capture_output=True,
                             text=True, env=env, timeout=120, check=False)  # fmt: skip
    assert missing.returncode == EXIT_FAILED, missing.stderr
    assert "passphrase" in missing.stdout.splitlines()[-1]
    assert not list((tmp_path / "first").rglob("manifest.json"))

    due_soon(source, tmp_path / "second", "sealed", *sealed)
    wait_due()
    given = subprocess.run(repobackup("scheduler", "-r", source, "--once", "--password-file",
                                      secret), capture_output=True, text=True, env=env,
                           timeout=120, check=False)  # fmt: skip
    assert given.returncode == EXIT_OK, given.stdout + given.stderr
    assert "FINISHED" in given.stdout.splitlines()[-1]
    checked = run("verify", "--password-file", secret, tmp_path / "second" / "sealed")
    assert checked.returncode == EXIT_OK, checked.stdout + checked.stderr
