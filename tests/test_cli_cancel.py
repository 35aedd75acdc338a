"""Tests for stopping `repobackup scheduler` with a real SIGTERM while a real backup runs: the
run is cancelled and ends FAILED saying so, the process exits promptly with 143, nothing
that looks complete is left, and the next run succeeds; a run that cannot stop in time is
left to recovery after --stop-timeout."""

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
from repobackup.cli import EXIT_OK, EXIT_TERMINATED
from test_cli import install_plugin, slow_env

pytestmark = pytest.mark.slow

FILES = 600
SIZE = 256 * 1024  # 150 MiB in all: a zip of it written on one worker takes about a second

STUCK_BACKEND = '''
"""A SQLite repository whose blobs take a minute to open: a blob copy cannot be cut short."""

import time

from repobackup import SqliteRepository


class StuckRepository(SqliteRepository):
    def open_blob(self, sha256):
        time.sleep(60)
        return super().open_blob(sha256)


def open_stuck(argument):
    return StuckRepository(argument)
'''


def _cli(*argv: str | Path) -> list[str]:
    return [sys.executable, "-m", "repobackup.cli", *map(str, argv)]


def _run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cli(*argv),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module", name="large")
def _large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / "source.db"
    with SqliteRepository(path) as repo:
        repo.put_project("alpha")
        repo.put_repository("alpha", "libs")
        for number in range(FILES):
            repo.put_file("alpha", "libs", f"/pkg/f{number}.bin", os.urandom(SIZE))
    return path


def _due_task(source: str | Path, store: Path, tasks_db: Path, env: dict[str, str] | None = None):
    at = (datetime.now().astimezone() + timedelta(seconds=1)).isoformat(timespec="seconds")
    made = _run(
        "backup", "-r", source, "--store", store, "--name", "nightly", "--all", "--compress",
        "--at", at, "--tasks-db", tasks_db, "--json", env=env,
    )  # fmt: skip
    assert made.returncode == EXIT_OK, made.stderr
    task_id: str = json.loads(made.stdout)["id"]
    return task_id


def _start_scheduler(
    source: str | Path, tasks_db: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """A scheduler started as a child, once it logged the start of a run."""
    process = subprocess.Popen(
        _cli("scheduler", "-r", source, "--tasks-db", tasks_db, "--poll", "0.2",
             "--log-format", "json", "--workers", "1", *extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "start":
            return process, event
    process.kill()
    pytest.fail(f"no run started: {process.communicate()}")


def _slowly(large: Path, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """*large* through the ``slow:`` backend, whose records stream 50 ms apart: a whole run
    of it takes half a minute, however fast the machine copies blobs."""
    plugins = install_plugin(tmp_path / "slow-plugin")
    return f"slow:{large}", slow_env(plugins, tmp_path / "slow-marker", "0.05")


def _looks_complete(store: Path) -> list[Path]:
    return [*store.rglob("manifest.json"), *(p for p in store.rglob("*.zip") if p.is_file())]


def test_sigterm_cancels_the_backup_under_way(large: Path, tmp_path: Path) -> None:
    """SIGTERM mid-backup: the backup is cancelled, its end line says FAILED and why, the
    scheduler exits 143 within seconds, no partial or complete-looking file is left, the
    task's last run says it was cancelled, and running the task again succeeds."""
    store, tasks_db = tmp_path / "store", tmp_path / "tasks.sqlite"
    slow, env = _slowly(large, tmp_path)
    task_id = _due_task(slow, store, tasks_db, env=env)
    process, start = _start_scheduler(slow, tasks_db, env=env)
    assert (start["taskId"], start["kind"], start["trigger"]) == (task_id, "backup", "schedule")
    assert str(start["plan"]).startswith("at ")
    time.sleep(0.2)  # under way: sized, and writing its zip
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    took = time.monotonic() - signalled
    assert process.returncode == EXIT_TERMINATED, err
    assert took < 15, took  # a run not cancelled would take 30 s
    assert "Traceback" not in err
    events = [json.loads(line) for line in out.splitlines()]
    (end,) = [e for e in events if e["event"] == "end"]
    assert end["state"] == "FAILED"
    assert end["firstError"].startswith("cancelled (the scheduler was stopped by SIGTERM)")
    messages = [e["message"] for e in events if e["event"] == "scheduler"]
    assert any(m.startswith("stopping (SIGTERM)") and "cancelling 1 run" in m for m in messages)
    assert messages[-1] == "stopped"
    assert not _looks_complete(store)
    assert not [p for p in store.rglob("*") if p.name.endswith(".partial")]
    with SqliteTaskStore(tasks_db) as tasks:
        task = tasks.get(task_id)
    assert task.state is TaskState.FAILED
    assert task.last_run is not None
    assert "no backup was committed" in task.last_run.errors[-1].message

    again = _run("run", task_id, "-r", large, "--tasks-db", tasks_db, "--json")
    assert again.returncode == EXIT_OK, again.stderr
    location = json.loads(again.stdout.splitlines()[-1])["location"]
    assert _run("verify", location).returncode == EXIT_OK


def test_a_run_that_cannot_stop_is_left_to_recovery(large: Path, tmp_path: Path) -> None:
    """A blob copy stuck in the source keeps the cancelled run from ending: after
    --stop-timeout the scheduler exits 143 anyway, saying so; the next command ends that
    run FAILED (interrupted) and removes what it left, and its own run succeeds."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "stuckbackend.py").write_text(STUCK_BACKEND)
    info = plugins / "stuckbackend-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stuckbackend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[repobackup.backends]\nstuck = stuckbackend:open_stuck\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}
    store, tasks_db = tmp_path / "store", tmp_path / "tasks.sqlite"
    task_id = _due_task(f"stuck:{large}", store, tasks_db, env=env)
    process, _ = _start_scheduler(f"stuck:{large}", tasks_db, "--stop-timeout", "1", env=env)
    time.sleep(0.5)
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_TERMINATED, err
    assert time.monotonic() - signalled < 15  # the stuck run itself never ends
    assert "exiting without waiting (runs still under way after 1s)" in out
    assert not _looks_complete(store)

    again = _run("run", task_id, "-r", large, "--tasks-db", tasks_db)
    assert again.returncode == EXIT_OK, again.stderr
    assert "ended its earlier run, whose process is gone" in again.stderr
    assert not [p for p in store.rglob("*") if p.name.endswith(".partial")]
    assert len(_looks_complete(store)) == 1


def test_serve_cancels_its_runs_on_sigterm(large: Path, tmp_path: Path) -> None:
    """serve stops as the scheduler does: the run its scheduler started is cancelled and
    ends FAILED, and serve exits 0 once it has ended."""
    store, tasks_db = tmp_path / "store", tmp_path / "tasks.sqlite"
    slow, env = _slowly(large, tmp_path)
    task_id = _due_task(slow, store, tasks_db, env=env)
    process = subprocess.Popen(
        _cli("serve", "-r", slow, "--tasks-db", tasks_db, "--port", "0", "--log-format", "json",
             "--workers", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().startswith("serving http://127.0.0.1:")
    start = json.loads(process.stdout.readline())
    assert (start["event"], start["taskId"], start["trigger"]) == ("start", task_id, "schedule")
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_OK, err
    (end,) = [e for e in map(json.loads, out.splitlines()) if e["event"] == "end"]
    assert end["state"] == "FAILED"
    assert end["firstError"].startswith("cancelled (serve was stopped by SIGTERM)")
    assert not _looks_complete(store)
