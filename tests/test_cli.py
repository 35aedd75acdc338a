"""Tests for the ``repobackup`` command line: in-process through `main(argv)`, and as real
processes for serving, Ctrl-C and the console script."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import attrs
import pytest

from helpers import last_json
from private import (
    ENTRY_POINT_GROUP,
    UnknownBackendError,
    available_backends,
    open_repository,
    split_spec,
    sqlite_path,
)
from repobackup import (
    BackendError,
    RunSummary,
    SqliteRepository,
    SqliteTaskStore,
    TaskState,
    from_json,
)
from repobackup.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TERMINATED,
    EXIT_USAGE,
    TOKEN_ENV,
    build_parser,
    main,
)

TOKEN = "s3cret-token-for-tests-0123456789"


@attrs.frozen
class Result:
    """What one command printed and returned."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """The JSON document printed; for a run, its last line (the summary message after
        the status lines)."""
        return last_json(self.out)


@pytest.fixture(name="cli")
def _cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str | Path) -> Result:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def fill(repo: SqliteRepository) -> None:
    """Two projects with two repositories each, a few files (one content twice), common data."""
    for project in ("alpha", "beta"):
        repo.put_project(project)
        for name in ("libs", "docs"):
            repo.put_repository(project, name)
            for number in range(3):
                repo.put_file(
                    project,
                    name,
                    f"/dir/file-{number}.bin",
                    f"{project}/{name}/{number}".encode() + bytes(range(256)),
                    metadata={"n": number},
                )
            repo.put_file(project, name, "/LICENSE", b"same bytes everywhere")
    repo.put_document("user", "admin", {"userId": "admin", "admin": True})
    repo.put_document("permission", "p1", {"projectId": "alpha", "users": ["admin"]})


@pytest.fixture(name="source")
def _source(tmp_path: Path) -> Path:
    path = tmp_path / "source.db"
    with SqliteRepository(path) as repo:
        fill(repo)
    return path


def snapshot(path: Path) -> Any:
    with SqliteRepository(path) as repo:
        return repo.snapshot()


def backup(cli: Any, source: Path, store: Path, *extra: str) -> Result:
    return cli("backup", "-r", source, "--store", store, "--name", "nightly", *extra)


def only_location(store: Path) -> Path:
    (found,) = [p for p in (store / "nightly").iterdir() if not p.name.startswith(".")]
    return found


class TestBackupAndRestore:
    """`backup` and `restore` create a task from the options, run it and report."""

    def test_round_trip(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """A backup of everything restored into an empty repository gives the same data."""
        store = tmp_path / "store"
        made = backup(cli, source, store, "--all")
        assert made.code == EXIT_OK, made.err
        assert "FINISHED" in made.out
        restored = cli("restore", "-r", tmp_path / "copy.db", "--store", store / "nightly", "--all")
        assert restored.code == EXIT_OK, restored.err
        original = snapshot(source)
        assert len(original["records"]) > 10
        assert snapshot(tmp_path / "copy.db") == original

    def test_json_summary(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--json prints the run summary as the API's JSON, readable back into a RunSummary."""
        result = backup(cli, source, tmp_path / "store", "--all", "--json")
        assert result.code == EXIT_OK
        data = result.json()
        assert data.pop("messageType") == "summary"  # restic's summary message
        summary = from_json(RunSummary, data)
        assert summary.state is TaskState.FINISHED
        assert summary.location is not None
        assert Path(summary.location) == only_location(tmp_path / "store")
        assert summary.counts.records_written == len(snapshot(source)["records"])
        assert summary.counts.blobs_reused > 0  # the licence is the same bytes in every repo

    def test_compress(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--compress writes the backup as one zip file that restores like a folder."""
        result = backup(cli, source, tmp_path / "store", "--all", "--compress", "--json")
        assert result.code == EXIT_OK
        location = result.json()["location"]
        assert location.endswith(".zip")
        assert Path(location).is_file()
        restored = cli("restore", "-r", tmp_path / "copy.db", "--store", location, "--all")
        assert restored.code == EXIT_OK, restored.err
        assert snapshot(tmp_path / "copy.db") == snapshot(source)

    def test_one_entry_selects(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--project-id with --repo backs up only that repository (and its project)."""
        result = backup(cli, source, tmp_path / "store", "--project-id", "alpha", "--repo", "libs")
        assert result.code == EXIT_OK, result.err
        listing = cli("ls", only_location(tmp_path / "store"), "--json")
        (manifest,) = [entry["manifest"] for entry in listing.json()]
        assert manifest["projects"] == {"alpha": ["libs"]}
        assert not manifest["commonData"]

    def test_excludes(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--exclude-project and --exclude-repo remove from what --project-regex selects."""
        result = backup(
            cli, source, tmp_path / "store",
            "--project-regex", "*", "--exclude-project", "beta", "--exclude-repo", "docs",
        )  # fmt: skip
        assert result.code == EXIT_OK, result.err
        (entry,) = cli("ls", only_location(tmp_path / "store"), "--json").json()
        assert entry["manifest"]["projects"] == {"alpha": ["libs"]}

    def test_content_json_entries(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--content-json takes a projects array inline, for more than one entry."""
        entries = [{"projectId": "alpha", "repoList": ["docs"]}, {"projectId": "beta"}]
        result = backup(cli, source, tmp_path / "store", "--content-json", json.dumps(entries))
        assert result.code == EXIT_OK, result.err
        (entry,) = cli("ls", only_location(tmp_path / "store"), "--json").json()
        assert entry["manifest"]["projects"] == {"alpha": ["docs"], "beta": ["docs", "libs"]}

    def test_content_json_file(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--content-json also reads a whole content object from a file."""
        file = tmp_path / "content.json"
        file.write_text(json.dumps({"commonData": True, "projects": [{"projectId": "beta"}]}))
        result = backup(cli, source, tmp_path / "store", "--content-json", file)
        assert result.code == EXIT_OK, result.err
        (entry,) = cli("ls", only_location(tmp_path / "store"), "--json").json()
        assert entry["manifest"]["commonData"] is True
        assert list(entry["manifest"]["projects"]) == ["beta"]

    def test_content_json_unreadable(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """A --content-json that is neither JSON nor a readable file is a usage error."""
        missing = backup(cli, source, tmp_path / "s", "--content-json", tmp_path / "nope.json")
        assert missing.code == EXIT_USAGE
        assert "nope.json" in missing.err
        broken = backup(cli, source, tmp_path / "s", "--content-json", "[{")
        assert broken.code == EXIT_USAGE
        assert "not valid JSON" in broken.err

    def test_invalid_task_lists_every_problem(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """An invalid task exits 2 and names each problem by its JSON path."""
        result = backup(
            cli, source, tmp_path / "store",
            "--project-id", "alpha", "--project-regex", "a*",
            "--repo", "libs", "--repo-regex", "re:(",
            "--increment-date", "yesterday-ish",
        )  # fmt: skip
        assert result.code == EXIT_USAGE
        assert "$.content.projects[0]: set at most one of projectId and projectRegex" in result.err
        assert "set at most one of repoList and repoRegex" in result.err
        assert "$.content.projects[0].repoRegex" in result.err
        assert "$.content.incrementDate" in result.err
        assert "Traceback" not in result.err
        assert not (tmp_path / "store").exists()

    def test_nothing_to_do(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """A backup without any content option exits 2 and says which options give content."""
        result = backup(cli, source, tmp_path / "store")
        assert result.code == EXIT_USAGE
        assert "$.content: nothing to do" in result.err
        assert "--all" in result.err

    def test_bad_name(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """A name that is not one safe path component is refused before anything is written."""
        result = cli("backup", "-r", source, "--store", tmp_path / "s", "--name", "../up", "--all")
        assert result.code == EXIT_USAGE
        assert "$.name" in result.err

    def test_failed_task_exits_1_with_errors(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """A FAST_FAIL backup that meets a missing blob ends FAILED: exit 1, the error shown."""
        blobs = sorted((tmp_path / "source.db.blobs").rglob("*"))
        victim = next(p for p in blobs if p.is_file())
        victim.unlink()
        result = backup(cli, source, tmp_path / "store", "--all", "--error-strategy", "fast_fail")
        assert result.code == EXIT_FAILED
        assert "FAILED" in result.err
        assert victim.name in result.err
        assert not list((tmp_path / "store").rglob("manifest.json"))

    def test_continue_finishes_with_warnings(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """Under CONTINUE the same missing blob lets the run finish: exit 3, the error in the
        summary, and the warning says "1 error"."""
        victim = next(p for p in sorted((tmp_path / "source.db.blobs").rglob("*")) if p.is_file())
        victim.unlink()
        result = backup(cli, source, tmp_path / "store", "--all", "--json")
        assert result.code == EXIT_PARTIAL
        summary = result.json()
        assert summary["state"] == "FINISHED"
        assert [e["key"] for e in summary["errors"]] == [victim.name]
        assert "finished with 1 error\n" in result.err

    def test_restore_from_nowhere_fails(self, cli: Any, tmp_path: Path) -> None:
        """A restore whose store holds no backup ends FAILED and says so: exit 1."""
        result = cli("restore", "-r", tmp_path / "t.db", "--store", tmp_path / "empty", "--all")
        assert result.code == EXIT_FAILED
        assert "no backup" in result.err

    def test_restore_skip_keeps_existing(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--conflict SKIP leaves a record that exists in the target as it is."""
        assert backup(cli, source, tmp_path / "store", "--all").code == EXIT_OK
        target = tmp_path / "target.db"
        with SqliteRepository(target) as repo:
            repo.put_document("user", "admin", {"userId": "admin", "admin": False})
        result = cli(
            "restore", "-r", target, "--store", tmp_path / "store" / "nightly", "--all",
            "--conflict", "SKIP", "--json",
        )  # fmt: skip
        assert result.code == EXIT_OK, result.err
        assert result.json()["counts"]["recordsSkipped"] == 1
        with SqliteRepository(target) as repo:
            assert repo.get_document("user", "admin") == {"userId": "admin", "admin": False}

    def test_increment(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--increment after a full backup carries only what changed since, deletions too."""
        store = tmp_path / "store"
        assert backup(cli, source, store, "--all").code == EXIT_OK
        with SqliteRepository(source) as repo:
            repo.put_file("alpha", "libs", "/new.txt", b"new")
            repo.delete_file("beta", "docs", "/LICENSE")
        result = backup(cli, source, store, "--all", "--increment", "--json")
        assert result.code == EXIT_OK, result.err
        assert result.json()["counts"]["recordsWritten"] == 2
        copy = tmp_path / "copy.db"
        restored = cli("restore", "-r", copy, "--store", store / "nightly", "--all")
        assert restored.code == EXIT_OK, restored.err
        assert snapshot(copy) == snapshot(source)

    def test_same_series_runs_one_task(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """A second backup with the same name and store runs the same task again, with the
        new options, so the task's run history holds both runs."""
        first = backup(cli, source, tmp_path / "store", "--all", "--json").json()
        second = backup(cli, source, tmp_path / "store", "--project-id", "beta", "--json").json()
        assert second["taskId"] == first["taskId"]
        assert second["location"] != first["location"]
        shown = cli("tasks", "show", first["taskId"], "-r", source, "--json").json()
        assert len(shown["runs"]) == 2
        assert shown["task"]["content"]["commonData"] is False
        assert shown["task"]["content"]["projects"][0]["projectId"] == "beta"
        other = backup(cli, source, tmp_path / "elsewhere", "--all", "--json").json()
        assert other["taskId"] != first["taskId"]

    def test_store_is_made_absolute(self, cli: Any, source: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
        """A relative --store is stored as an absolute path, so a later run finds it anywhere."""
        monkeypatch.chdir(tmp_path)
        result = cli("backup", "-r", source, "--store", "rel", "--name", "n", "--all", "--json")
        assert result.code == EXIT_OK
        listing = cli("tasks", "-r", source, "--json").json()
        assert listing["records"][0]["storeLocation"] == str(tmp_path / "rel")


class TestScheduled:
    """--cron and --at store a task for `serve` (or `run`) instead of running it."""

    def test_cron_task_is_stored_not_run(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """A --cron backup is created PENDING with its expression, and nothing is written."""
        result = backup(cli, source, tmp_path / "store", "--all", "--cron", "0 0 2 * * ?", "--json")
        assert result.code == EXIT_OK, result.err
        task = result.json()
        assert task["state"] == "PENDING"
        assert task["backupSetting"]["executionStrategy"] == "CRON_EXPRESSION"
        assert task["backupSetting"]["executionPlan"]["cronExpression"] == "0 0 2 * * ?"
        assert not (tmp_path / "store").exists()

    def test_at_then_run(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """An --at task shows its next run; `run TASK_ID` runs it now."""
        created = backup(cli, source, tmp_path / "store", "--all", "--at", "2999-01-01T02:00:00")
        assert created.code == EXIT_OK, created.err
        assert "next run: 2999-01-01T02:00:00" in created.out
        task_id = re.search(r"created task ([0-9a-f]{24})", created.out)
        assert task_id is not None
        ran = cli("run", task_id[1], "-r", source, "--json")
        assert ran.code == EXIT_OK, ran.err
        assert Path(ran.json()["location"]).is_dir()

    def test_bad_cron(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """A cron expression that does not parse is refused at creation with its path."""
        result = backup(cli, source, tmp_path / "store", "--all", "--cron", "every night")
        assert result.code == EXIT_USAGE
        assert "$.backupSetting.executionPlan.cronExpression" in result.err

    def test_cron_and_at_exclude_each_other(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--cron and --at together are a usage error."""
        result = backup(cli, source, tmp_path / "s", "--all", "--cron", "* * * * *", "--at", "2030")
        assert result.code == EXIT_USAGE

    def test_scheduled_needs_a_lasting_task_store(self, cli: Any, tmp_path: Path) -> None:
        """A scheduled task on a backend without a default task database needs --tasks-db."""
        result = cli(
            "backup", "-r", "memory:", "--store", tmp_path / "s", "--name", "n", "--all",
            "--cron", "0 2 * * *",
        )  # fmt: skip
        assert result.code == EXIT_USAGE
        assert "--tasks-db" in result.err


class TestTasks:
    """`tasks` lists the task database of a repository, or shows one task."""

    @pytest.fixture(name="history")
    def _history(self, cli: Any, source: Path, tmp_path: Path) -> list[str]:
        ids = []
        for name in ("first", "second", "third"):
            result = cli(
                "backup", "-r", source, "--store", tmp_path / "store", "--name", name, "--all",
                "--json",
            )  # fmt: skip
            ids.append(result.json()["taskId"])
        failed = cli("restore", "-r", tmp_path / "t.db", "--store", tmp_path / "none", "--all",
                     "--tasks-db", tmp_path / "source.db.tasks.sqlite")  # fmt: skip
        assert failed.code == EXIT_FAILED
        return ids

    def test_default_database_beside_repository(
        self, cli: Any, source: Path, history: list[str]
    ) -> None:
        """Runs with a SQLite repository are recorded in REPO.tasks.sqlite, newest first."""
        assert Path(f"{source}.tasks.sqlite").is_file()
        listing = cli("tasks", "--repository", source, "--json").json()
        assert listing["totalRecords"] == 4
        assert [t["id"] for t in listing["records"][1:]] == history[::-1]

    def test_state_filter(self, cli: Any, source: Path, history: list[str]) -> None:
        """--state keeps the tasks in that state only."""
        failed = cli("tasks", "-r", source, "--state", "failed", "--json").json()
        assert [t["type"] for t in failed["records"]] == ["DATA_RESTORE"]
        finished = cli("tasks", "-r", source, "--state", "FINISHED", "--json").json()
        assert sorted(t["id"] for t in finished["records"]) == sorted(history)

    def test_paging(self, cli: Any, source: Path, history: list[str]) -> None:
        """--page and --page-size page through the tasks, with the totals on every page."""
        page = cli("tasks", "-r", source, "--page", "2", "--page-size", "2", "--json").json()
        assert page["pageNumber"] == 2
        assert page["totalPages"] == 2
        assert page["count"] == 4
        assert [t["id"] for t in page["records"]] == history[1::-1]

    def test_table(self, cli: Any, source: Path, history: list[str]) -> None:
        """Without --json the tasks come out as a table naming id, name and state."""
        result = cli("tasks", "-r", source)
        assert result.code == EXIT_OK
        shown = [line.split()[0] for line in result.out.splitlines()[3:]]
        for task_id in history:  # each id shown as a prefix that names it alone
            (prefix,) = [p for p in shown if task_id.startswith(p)]
            assert len(prefix) >= 8
        assert "second" in result.out
        assert "FAILED" in result.out

    def test_show_one(self, cli: Any, source: Path, history: list[str]) -> None:
        """`tasks TASK_ID` shows the task and its run history."""
        shown = cli("tasks", "show", history[0], "-r", source, "--json").json()
        assert shown["task"]["name"] == "first"
        assert [run["state"] for run in shown["runs"]] == ["FINISHED"]
        text = cli("tasks", "show", history[0], "-r", source)
        assert "runs (newest first)" in text.out

    def test_unknown_task_is_a_usage_error(
        self, cli: Any, source: Path, history: list[str]
    ) -> None:
        """An id no task has exits 2, for `tasks show ID` and for `run ID` alike."""
        missing = "0" * 24
        shown = cli("tasks", "show", missing, "-r", source)
        assert shown.code == EXIT_USAGE
        assert missing in shown.err
        ran = cli("run", missing, "-r", source)
        assert ran.code == EXIT_USAGE
        assert cli("run", "not-an-id", "-r", source).code == EXIT_USAGE

    def test_missing_database_is_not_created(self, cli: Any, tmp_path: Path) -> None:
        """Listing a task database that does not exist says so and creates nothing."""
        result = cli("tasks", "--tasks-db", tmp_path / "typo.sqlite")
        assert result.code == EXIT_USAGE
        assert "no task database" in result.err
        assert not (tmp_path / "typo.sqlite").exists()

    def test_tasks_needs_a_place(self, cli: Any) -> None:
        """`tasks` without --tasks-db or --repository is a usage error."""
        assert cli("tasks").code == EXIT_USAGE


class TestLsAndVerify:
    """`ls` shows what a backup holds; `verify` checks it against its hashes."""

    def test_ls_members_and_counts(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """ls names every member with its record count, and the blob count and bytes."""
        summary = backup(cli, source, tmp_path / "store", "--all", "--json").json()
        result = cli("ls", summary["location"], "--plain")
        assert result.code == EXIT_OK
        assert "projects/alpha/repos/libs/node.jsonl" in result.out
        assert re.search(r"common/user\.jsonl\s+1\s", result.out)
        assert f"blobs        {summary['counts']['blobsWritten']} (" in result.out
        (entry,) = cli("ls", summary["location"], "--json").json()
        records = sum(m["records"] for m in entry["manifest"]["members"])
        assert records == summary["counts"]["recordsWritten"]

    def test_ls_task_folder(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """ls of a task folder lists its backups, incomplete ones marked, then the chain."""
        store = tmp_path / "store"
        location = Path(backup(cli, source, store, "--all", "--json").json()["location"])
        leftover = store / "nightly" / f".{location.name[:-1]}9.partial"
        leftover.mkdir()
        result = cli("ls", store / "nightly")
        assert result.code == EXIT_OK
        assert re.search(rf"{re.escape(location.name)}\s+complete", result.out)
        assert re.search(rf"{re.escape(leftover.name)}\s+incomplete", result.out)
        assert "a restore from" in result.out

    def test_ls_nothing(self, cli: Any, tmp_path: Path) -> None:
        """ls of a place without a backup exits 1 with a message, no traceback."""
        result = cli("ls", tmp_path / "nothing")
        assert result.code == EXIT_FAILED
        assert "no backup" in result.err
        assert "Traceback" not in result.err

    def test_verify_ok(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """A backup just written verifies: exit 0, with what was checked."""
        location = backup(cli, source, tmp_path / "store", "--all", "--json").json()["location"]
        result = cli("verify", location)
        assert result.code == EXIT_OK
        assert result.out.startswith("ok:")
        report = cli("verify", location, "--json").json()
        assert report["ok"] is True
        assert report["blobs"] > 0

    def test_verify_names_a_damaged_member(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """A blob altered after the backup makes verify exit 1 naming that member."""
        location = Path(backup(cli, source, tmp_path / "s", "--all", "--json").json()["location"])
        blob = next(p for p in sorted((location / "blobs").rglob("*")) if p.is_file())
        blob.write_bytes(b"tampered")
        result = cli("verify", location, "--plain")
        assert result.code == EXIT_FAILED
        assert blob.name in result.out
        assert "did not verify" in result.err
        report = cli("verify", location, "--json").json()
        assert report["ok"] is False
        assert any(blob.name in p["member"] for p in report["problems"])


class TestRepositories:
    """--repository names a SQLite path or a backend NAME:ARG from the registry."""

    def test_memory_backend(self, cli: Any, tmp_path: Path) -> None:
        """`memory:` opens the built-in in-memory repository: empty, so a backup of it
        matches nothing and fails rather than writing an empty backup."""
        result = cli(
            "backup", "-r", "memory:", "--store", tmp_path / "s", "--name", "n",
            "--project-regex", "*", "--json",
        )  # fmt: skip
        assert result.code == EXIT_FAILED, result.err
        assert "nothing matched" in result.json()["errors"][-1]["message"]

    def test_sqlite_prefix(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """`sqlite:PATH` is the same as PATH, and its task database sits beside it."""
        result = cli("backup", "-r", f"sqlite:{source}", "--store", tmp_path / "s", "--name", "n",
                     "--all")  # fmt: skip
        assert result.code == EXIT_OK
        assert Path(f"{source}.tasks.sqlite").is_file()

    def test_unknown_backend(self, cli: Any, tmp_path: Path) -> None:
        """An unknown backend name exits 2 listing the available ones and how to add one."""
        result = cli("backup", "-r", "mongo:db", "--store", tmp_path, "--name", "n", "--all")
        assert result.code == EXIT_USAGE
        assert "unknown repository backend 'mongo'" in result.err
        assert "memory, sqlite" in result.err
        assert ENTRY_POINT_GROUP in result.err
        assert "pip install" in result.err

    def test_spec_parsing(self) -> None:
        """Plain paths, Windows drive paths and NAME:ARG are told apart."""
        assert split_spec("repo.db") == ("sqlite", "repo.db")
        assert split_spec("C:\\data\\repo.db") == ("sqlite", "C:\\data\\repo.db")
        assert split_spec("sqlite:/srv/repo.db") == ("sqlite", "/srv/repo.db")
        assert split_spec("memory:") == ("memory", "")
        assert split_spec("my-db:host=x:1") == ("my-db", "host=x:1")
        assert sqlite_path("memory:") is None
        assert sqlite_path("/a/b.db") == "/a/b.db"

    def test_errors_of_builtins(self) -> None:
        """The built-ins refuse arguments they cannot use, with a message saying why."""
        with pytest.raises(BackendError, match="takes no argument, got 'x'"):
            open_repository("memory:x")
        with pytest.raises(BackendError, match="needs a database path"):
            open_repository("sqlite:")
        with pytest.raises(ValueError, match="must be named"):
            open_repository("")
        with pytest.raises(UnknownBackendError) as info:
            open_repository("nosuch:x")
        assert info.value.available == ["memory", "sqlite"]

    def test_entry_point_backend(
        self, cli: Any, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A backend registered under the entry-point group is found by name and used."""
        plugins = install_plugin(tmp_path / "plugins")
        monkeypatch.syspath_prepend(str(plugins))
        assert available_backends()["slow"] == "slowbackend:open_slow"
        monkeypatch.setenv("SLOW_DELAY", "0")
        monkeypatch.setenv("SLOW_MARKER", str(tmp_path / "marker"))
        result = cli("backup", "-r", f"slow:{source}", "--store", tmp_path / "s", "--name", "n",
                     "--all", "--tasks-db", tmp_path / "tasks.sqlite", "--json")  # fmt: skip
        assert result.code == EXIT_OK, result.err
        assert (tmp_path / "marker").exists()
        assert result.json()["counts"]["recordsWritten"] == len(snapshot(source)["records"])

    def test_broken_backend(
        self, cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A backend that fails to open exits 1 with its error; --debug adds the traceback."""
        plugins = install_plugin(tmp_path / "plugins")
        monkeypatch.syspath_prepend(str(plugins))
        args = ["backup", "-r", "broken:x", "--store", tmp_path, "--name", "n", "--all"]
        result = cli(*args)
        assert result.code == EXIT_FAILED
        assert "RuntimeError: cannot reach the database" in result.err
        assert "Traceback" not in result.err
        debug = cli(*args, "--debug")
        assert debug.code == EXIT_FAILED
        assert "Traceback" in debug.err


SLOW_BACKEND = '''
"""A SQLite repository whose records stream slowly, to interrupt a backup half way."""

import os
import time
from pathlib import Path

from repobackup import SqliteRepository


class SlowRepository(SqliteRepository):
    def records(self, scope, collection, *, since=None):
        for record in super().records(scope, collection, since=since):
            Path(os.environ["SLOW_MARKER"]).touch()
            time.sleep(float(os.environ.get("SLOW_DELAY", "0.05")))
            yield record


def open_slow(argument):
    return SlowRepository(argument)


def open_broken(argument):
    raise RuntimeError("cannot reach the database")
'''


def install_plugin(folder: Path) -> Path:
    """A distribution on a path folder registering the backends ``slow`` and ``broken``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "slowbackend.py").write_text(SLOW_BACKEND)
    info = folder / "slowbackend-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: slowbackend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nslow = slowbackend:open_slow\nbroken = slowbackend:open_broken\n"
    )
    return folder


class TestOutput:
    """Plain text by default off a terminal; rich on a terminal; plain again without rich."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def test_rich_on_a_terminal(
        self, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a terminal rich draws the tables with box characters, and a progress bar runs."""
        out, err = self.Terminal(), self.Terminal()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        code = main(["backup", "-r", str(source), "--store", str(tmp_path / "s"), "--name", "n",
                     "--all"])  # fmt: skip
        assert code == EXIT_OK
        assert "┃" in out.getvalue() or "│" in out.getvalue()

    def test_plain_without_rich(
        self, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When rich cannot be imported the same command prints plain text and phase lines."""
        for name in [m for m in sys.modules if m == "rich" or m.startswith("rich.")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, "rich", None)
        out, err = self.Terminal(), self.Terminal()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        code = main(["backup", "-r", str(source), "--store", str(tmp_path / "s"), "--name", "n",
                     "--all"])  # fmt: skip
        assert code == EXIT_OK
        assert "┃" not in out.getvalue()
        assert re.search(r"state\s+FINISHED", out.getvalue())
        assert "… records:" in err.getvalue()

    def test_quiet(self, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """--quiet leaves stderr empty on success, even on a terminal."""
        out, err = self.Terminal(), self.Terminal()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        code = main(["backup", "-r", str(source), "--store", str(tmp_path / "s"), "--name", "n",
                     "--all", "--quiet"])  # fmt: skip
        assert code == EXIT_OK
        assert err.getvalue() == ""

    def test_rich_task_list_fits_the_terminal(
        self, cli: Any, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a 100-column terminal the task table fits, cutting names and locations, never
        the id, type or state."""
        long_store = tmp_path / ("a-long-folder-name-" * 5)
        made = cli("backup", "-r", source, "--store", long_store, "--name", "n" * 60, "--all",
                   "--json").json()  # fmt: skip
        out = self.Terminal()
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setenv("COLUMNS", "100")
        assert main(["tasks", "-r", str(source)]) == EXIT_OK
        lines = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).splitlines()  # no colours
        assert max(len(line) for line in lines) <= 100
        row = next(line for line in lines if "backup" in line)
        assert made["taskId"][:8] in row
        assert "FINISHED" in row
        assert "…" in row

    def test_help_and_usage(self, cli: Any) -> None:
        """--help exits 0; an unknown option or a missing required one exits 2."""
        assert cli("--help").code == EXIT_OK
        assert cli("backup", "--help").code == EXIT_OK
        assert cli("backup", "--nope").code == EXIT_USAGE
        missing = cli("backup", "--store", "x", "--name", "n")
        assert missing.code == EXIT_USAGE
        assert "--repository" in missing.err

    def test_parser_mirrors_json_fields(self) -> None:
        """Each option of the task fields is there under its documented name."""
        parser = build_parser()
        args = parser.parse_args(
            ["restore", "-r", "x.db", "--store", "s", "--conflict", "skip", "--repo", "a",
             "--repo", "b", "--error-strategy", "continue", "--no-space-check"]
        )  # fmt: skip
        assert args.conflict == "SKIP"
        assert args.repo == ["a", "b"]
        assert args.error_strategy == "CONTINUE"
        assert args.no_space_check is True


def spawn(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "repobackup.cli", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def request(url: str, *, method: str = "GET", body: Any = None, token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def served_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"serving (http://\S+)", line)
    if match is None:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"serve did not start: {line!r} {err}")
    return match[1]


@pytest.mark.slow
class TestServe:
    """`serve` answers the API over HTTP with a scheduler running, and guards its address."""

    def test_refuses_public_address_without_token(
        self, cli: Any, source: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Binding 0.0.0.0 without a token exits 2 and tells how to give one."""
        monkeypatch.delenv(TOKEN_ENV, raising=False)
        result = cli("serve", "-r", source, "--host", "0.0.0.0", "--port", "0")
        assert result.code == EXIT_USAGE
        assert "refusing to serve on 0.0.0.0" in result.err
        assert TOKEN_ENV in result.err
        assert cli("serve", "-r", source, "--host", "::", "--port", "0").code == EXIT_USAGE

    def test_refuses_a_short_token(self, cli: Any, source: Path) -> None:
        """A token too short to resist guessing is refused."""
        result = cli("serve", "-r", source, "--host", "0.0.0.0", "--token", "abc")
        assert result.code == EXIT_USAGE
        assert "at least 16 characters" in result.err

    def test_refusal_in_a_real_process(self, source: Path) -> None:
        """The console process refuses too, with exit code 2 and no traceback."""
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        process = subprocess.run(
            [sys.executable, "-m", "repobackup.cli", "serve", "-r", str(source), "--host",
             "0.0.0.0"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert process.returncode == EXIT_USAGE
        assert "refusing" in process.stderr
        assert "Traceback" not in process.stderr

    def test_serves_and_schedules(self, source: Path, tmp_path: Path) -> None:
        """On 127.0.0.1 the API answers; a task created over HTTP is run by the scheduler."""
        process = spawn("serve", "-r", source, "--port", "0", "--store-root", tmp_path / "store")
        try:
            base = served_url(process)
            assert base.startswith("http://127.0.0.1:")
            status, listing = request(f"{base}/tasks")
            assert (status, listing["code"]) == (200, 0)
            task = {
                "name": "over-http",
                "storeLocation": str(tmp_path / "store"),
                "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
            }
            status, created = request(base, method="POST", body=task)
            assert (status, created["code"]) == (200, 0), created
            deadline = time.monotonic() + 60
            state = "PENDING"
            while state != "FINISHED" and time.monotonic() < deadline:
                time.sleep(0.2)
                state = request(f"{base}/tasks")[1]["data"]["records"][0]["state"]
            assert state == "FINISHED"
            assert list((tmp_path / "store" / "over-http").rglob("manifest.json"))
        finally:
            process.terminate()
            _, err = process.communicate(timeout=60)
        assert process.returncode == EXIT_OK, err
        assert "Traceback" not in err

    def test_token_guards_a_public_address(self, source: Path) -> None:
        """With REPOBACKUP_TOKEN set it binds 0.0.0.0; callers without the token get 401."""
        process = spawn(
            "serve", "-r", source, "--host", "0.0.0.0", "--port", "0", env={TOKEN_ENV: TOKEN}
        )
        try:
            base = served_url(process)
            port = base.split(":")[2].split("/")[0]
            url = f"http://127.0.0.1:{port}/job/api/job/backup/tasks"
            status, refused = request(url)
            assert (status, refused["code"]) == (401, 250114)
            assert request(url, token="wrong-token-wrong-token")[0] == 401
            status, listing = request(url, token=TOKEN)
            assert (status, listing["code"]) == (200, 0)
        finally:
            process.terminate()
            process.communicate(timeout=60)
        assert process.returncode == EXIT_OK


@pytest.mark.slow
class TestInterrupt:
    """Ctrl-C during a backup leaves nothing that looks like a complete backup."""

    def test_sigint_mid_backup(self, source: Path, tmp_path: Path) -> None:
        """SIGINT while records stream: exit 130, no manifest.json, no leftovers, task FAILED."""
        plugins = install_plugin(tmp_path / "plugins")
        marker = tmp_path / "marker"
        store = tmp_path / "store"
        env = {
            "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]),
            "SLOW_MARKER": str(marker),
            "SLOW_DELAY": "0.2",
        }
        tasks_db = tmp_path / "tasks.sqlite"
        process = spawn(
            "backup", "-r", f"slow:{source}", "--store", store, "--name", "nightly", "--all",
            "--no-space-check", "--tasks-db", tasks_db, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), process.communicate()
        time.sleep(0.3)  # a few records in: the member files are open
        partial = [p for p in (store / "nightly").iterdir() if p.name.endswith(".partial")]
        assert partial, "the interrupt should come while the backup is being written"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        assert process.returncode == EXIT_INTERRUPTED, err
        assert "interrupted" in err
        assert "Traceback" not in err
        assert not list(store.rglob("manifest.json"))
        assert not [p for p in store.rglob("*") if p.name.endswith(".partial")]
        with SqliteTaskStore(tasks_db) as tasks:
            (task,) = tasks.list().records
        assert task.state is TaskState.FAILED
        assert task.last_run is not None
        assert [e.message for e in task.last_run.errors] == ["interrupted"]


@pytest.mark.slow
def test_console_script(tmp_path: Path) -> None:
    """The installed ``repobackup`` script runs, returning main's exit code."""
    script = Path(sys.executable).with_name("repobackup")
    if not script.exists():
        pytest.skip("the console script is not installed beside this interpreter")
    ok = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert ok.returncode == EXIT_OK
    assert ok.stdout.startswith("repobackup ")
    missing = subprocess.run(
        [str(script), "tasks", "--tasks-db", str(tmp_path / "none.sqlite")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert missing.returncode == EXIT_USAGE
    assert textwrap.shorten(missing.stderr, 30).startswith("error: no task database")


def cli_process(
    *argv: str | Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m repobackup.cli ARGV`` as a real process, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "repobackup.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def slow_env(plugins: Path, marker: Path, delay: str) -> dict[str, str]:
    """The environment of a child whose ``slow:`` backend streams records *delay* s apart."""
    return {
        "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]),
        "SLOW_MARKER": str(marker),
        "SLOW_DELAY": delay,
    }


def mid_backup(process: subprocess.Popen[str], marker: Path, folder: Path) -> None:
    """Wait until *process* is writing a backup in *folder* (its ``.partial`` exists)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        started = marker.exists() and folder.is_dir()
        if started and [p for p in folder.iterdir() if p.name.endswith(".partial")]:
            time.sleep(0.3)  # a few records in: the member files are open
            return
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"the backup never got under way: {process.communicate()}")


def looks_complete(store: Path) -> list[Path]:
    """Whatever in *store* a restore would take for a complete backup."""
    return [*store.rglob("manifest.json"), *(p for p in store.rglob("*.zip") if p.is_file())]


@pytest.mark.slow
class TestExitCodes:
    """The exit codes of DESIGN section 8, seen from a real process."""

    def test_each_outcome(self, source: Path, tmp_path: Path) -> None:
        """0 clean, 3 finished with a failed blob (CONTINUE), 1 FAILED (FAST_FAIL), 2 usage;
        verify 0 sound and 1 damaged; --json says the same as the code."""
        store = tmp_path / "store"
        args = ["backup", "-r", source, "--store", store, "--name", "nightly", "--all", "--json"]
        clean = cli_process(*args)
        assert clean.returncode == EXIT_OK, clean.stderr
        location = Path(last_json(clean.stdout)["location"])
        assert cli_process("verify", location).returncode == EXIT_OK
        victim = next(p for p in sorted((tmp_path / "source.db.blobs").rglob("*")) if p.is_file())
        victim.unlink()
        partial = cli_process(*args)
        assert partial.returncode == EXIT_PARTIAL, partial.stderr
        summary = last_json(partial.stdout)
        assert summary["state"] == "FINISHED"
        assert summary["counts"]["blobsFailed"] == 1
        failed = cli_process(*args, "--error-strategy", "FAST_FAIL")
        assert failed.returncode == EXIT_FAILED
        assert last_json(failed.stdout)["state"] == "FAILED"
        assert cli_process("backup", "--nope").returncode == EXIT_USAGE
        assert cli_process(*args[:-2]).returncode == EXIT_USAGE  # no content option
        blob = next(p for p in sorted((location / "blobs").rglob("*")) if p.is_file())
        blob.write_bytes(b"tampered")
        damaged = cli_process("verify", location)
        assert damaged.returncode == EXIT_FAILED
        assert "Traceback" not in damaged.stderr

    def test_sigterm_mid_backup(self, source: Path, tmp_path: Path) -> None:
        """SIGTERM while a backup is being written: exit 143, the task FAILED (not RUNNING),
        no backup that looks complete and no partial left."""
        plugins, marker, store = (
            install_plugin(tmp_path / "plugins"),
            tmp_path / "m",
            tmp_path / "s",
        )
        tasks_db = tmp_path / "tasks.sqlite"
        process = spawn(
            "backup", "-r", f"slow:{source}", "--store", store, "--name", "nightly", "--all",
            "--compress", "--no-space-check", "--tasks-db", tasks_db, "--json",
            env=slow_env(plugins, marker, "0.2"),
        )  # fmt: skip
        mid_backup(process, marker, store / "nightly")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == EXIT_TERMINATED, err
        assert "terminated" in err
        assert "Traceback" not in err
        assert last_json(out)["state"] == "FAILED"  # --json reports the run it recorded
        assert not looks_complete(store)
        assert not [p for p in store.rglob("*") if p.name.endswith(".partial")]
        with SqliteTaskStore(tasks_db) as tasks:
            (task,) = tasks.list().records
            assert not tasks.leases()
        assert task.state is TaskState.FAILED
        assert task.last_run is not None
        assert task.last_run.state is TaskState.FAILED

    def test_sigkill_then_the_same_command(self, source: Path, tmp_path: Path) -> None:
        """A backup killed with SIGKILL leaves its task RUNNING; the same command run again
        ends that run first (FAILED, its partial removed) and then backs up: exit 0."""
        plugins, marker, store = (
            install_plugin(tmp_path / "plugins"),
            tmp_path / "m",
            tmp_path / "s",
        )
        tasks_db = tmp_path / "tasks.sqlite"
        args = [
            "backup", "-r", f"slow:{source}", "--store", store, "--name", "nightly", "--all",
            "--no-space-check", "--tasks-db", tasks_db,
        ]  # fmt: skip
        process = spawn(*args, env=slow_env(plugins, marker, "0.2"))
        mid_backup(process, marker, store / "nightly")
        process.kill()
        process.communicate(timeout=60)
        with SqliteTaskStore(tasks_db) as tasks:
            (task,) = tasks.list().records
        assert task.state is TaskState.RUNNING  # what a killed process leaves behind
        again = cli_process(*args, "--json", env=slow_env(plugins, marker, "0"))
        assert again.returncode == EXIT_OK, again.stderr
        assert "ended its earlier run" in again.stderr
        summary = last_json(again.stdout)
        assert summary["taskId"] == task.id
        assert [p.name for p in looks_complete(store)] == ["manifest.json"]
        assert not [p for p in store.rglob("*") if p.name.endswith(".partial")]
        with SqliteTaskStore(tasks_db) as tasks:
            runs = tasks.runs(summary["taskId"])
        assert [r.state for r in runs] == [TaskState.FINISHED, TaskState.FAILED]
        assert runs[1].errors[0].message == "interrupted"

    def test_missing_repository_is_never_created(self, tmp_path: Path) -> None:
        """backup (and serve, and run of a backup task) of a repository path that does not
        exist: exit 1 naming the path, and no file or folder appears."""
        missing = tmp_path / "not-mounted" / "data" / "server.db"
        store = tmp_path / "store"
        result = cli_process("backup", "-r", missing, "--store", store, "--name", "n", "--all")
        assert result.returncode == EXIT_FAILED
        assert str(missing) in result.stderr
        assert "does not exist" in result.stderr
        assert not (tmp_path / "not-mounted").exists()
        assert not store.exists()
        served = cli_process("serve", "-r", missing, "--port", "0")
        assert served.returncode == EXIT_FAILED
        assert not (tmp_path / "not-mounted").exists()
        sqlite = cli_process("backup", "-r", f"sqlite:{missing}", "--store", store, "--name",
                             "n", "--all", "--tasks-db", tmp_path / "t.sqlite")  # fmt: skip
        assert sqlite.returncode == EXIT_FAILED
        assert not (tmp_path / "not-mounted").exists()
        assert not store.exists()

    def test_run_of_a_backup_task_needs_its_repository(self, source: Path, tmp_path: Path) -> None:
        """`run` of a stored backup task whose repository is gone fails and creates nothing."""
        tasks_db = tmp_path / "tasks.sqlite"
        created = cli_process("backup", "-r", source, "--store", tmp_path / "s", "--name", "n",
                              "--all", "--cron", "0 2 * * *", "--tasks-db", tasks_db,
                              "--json")  # fmt: skip
        assert created.returncode == EXIT_OK, created.stderr
        task_id = json.loads(created.stdout)["id"]
        moved = tmp_path / "gone.db"
        ran = cli_process("run", task_id, "-r", moved, "--tasks-db", tasks_db)
        assert ran.returncode == EXIT_FAILED
        assert str(moved) in ran.stderr
        assert not moved.exists()


def many_files(path: Path, count: int) -> Path:
    """A repository with *count* small files under long paths (a listing bigger than a pipe's
    buffer)."""
    with SqliteRepository(path) as repo:
        repo.put_project("big")
        repo.put_repository("big", "files")
        for number in range(count):
            name = f"/some/deeply/nested/folder/of/artifacts/release-{number:05d}/artifact.bin"
            repo.put_file("big", "files", name, number.to_bytes(4, "big"))
    return path


@pytest.mark.slow
class TestBrokenPipe:
    """A reader that stops early (``| head -1``) ends the command quietly."""

    def test_head_one(self, tmp_path: Path) -> None:
        """`ls --files | head -1` through a real shell pipe prints one path and no noise,
        every time; the command itself exits 0."""
        repo = many_files(tmp_path / "big.db", 1500)
        made = cli_process("backup", "-r", repo, "--store", tmp_path / "s", "--name", "n",
                           "--all", "--json")  # fmt: skip
        location = last_json(made.stdout)["location"]
        command = [sys.executable, "-m", "repobackup.cli", "ls", "--files", location]
        for _ in range(4):
            piped = subprocess.run(
                f"{shlex.join(command)} | head -1",
                shell=True, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert piped.stdout.startswith("big/files/some/deeply/"), piped
            assert piped.stdout.count("\n") == 1
            assert piped.stderr == ""
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert process.stdout is not None
            assert process.stderr is not None
            assert process.stdout.readline()
            process.stdout.close()
            err = process.stderr.read()
            assert process.wait(timeout=60) == EXIT_OK
            assert b"Broken pipe" not in err
            assert b"Exception ignored" not in err


class TestPolish:
    """Global options anywhere, help everywhere, plurals, hints and quiet notes."""

    def test_global_options_before_or_after(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--json and --plain work before the command as well as after it."""
        before = cli("--json", "backup", "-r", source, "--store", tmp_path / "a", "--name", "n",
                     "--all")  # fmt: skip
        assert before.code == EXIT_OK, before.err
        assert before.json()["state"] == "FINISHED"
        after = cli("backup", "-r", source, "--store", tmp_path / "b", "--name", "n", "--all",
                    "--json")  # fmt: skip
        assert after.json()["state"] == "FINISHED"
        listing = cli("--json", "tasks", "-r", source)
        assert listing.json()["totalRecords"] == 2
        assert cli("-v", "--plain", "tasks", "list", "-r", source, "--json").code == EXIT_OK

    def test_json_errors(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """With --json an error that ends the command before any run still puts its outcome
        on stdout: the exit code, the message and any problems."""
        missing = cli("--json", "backup", "-r", tmp_path / "nope.db", "--store", tmp_path / "s",
                      "--name", "n", "--all")  # fmt: skip
        assert missing.code == EXIT_FAILED
        assert missing.json()["exitCode"] == EXIT_FAILED
        assert "nope.db" in missing.json()["error"]
        invalid = backup(cli, source, tmp_path / "s", "--json")
        assert invalid.code == EXIT_USAGE
        assert invalid.json()["problems"][0]["path"] == "$.content"

    def test_every_command_has_help(self) -> None:
        """Each command (and each `tasks` action) has a one-line help and a description."""
        parser = build_parser()
        (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        helps = {choice.dest: choice.help for choice in commands._choices_actions}
        assert set(helps) == set(commands.choices)
        for name, sub in commands.choices.items():
            assert helps[name], name
            assert sub.description, name
        assert {"list", "show"} <= set(
            next(
                a for a in commands.choices["tasks"]._actions
                if isinstance(a, argparse._SubParsersAction)
            ).choices
        )  # fmt: skip

    def test_plurals(self, cli: Any, tmp_path: Path) -> None:
        """One of a thing is named in the singular: "1 repository", "1 record", "1 blob"."""
        with SqliteRepository(tmp_path / "one.db") as repo:
            repo.put_file("solo", "only", "/a.txt", b"a")
        made = cli("backup", "-r", tmp_path / "one.db", "--store", tmp_path / "s", "--name", "n",
                   "--project-id", "solo", "--json")  # fmt: skip
        location = made.json()["location"]
        listing = cli("ls", location, "--plain")
        assert "1 (1 repository)" in listing.out
        checked = cli("verify", location)
        assert "1 record and 1 blob match" in checked.out
        assert "repositories)" not in listing.out

    def test_free_space_note_only_when_verbose(self, cli: Any, source: Path) -> None:
        """On a store whose free space cannot be known the note shows only with --verbose."""
        args = ["backup", "-r", source, "--store", "memory://notes", "--name", "n", "--all"]
        quiet = cli(*args)
        assert quiet.code == EXIT_OK, quiet.err
        assert "cannot be known" not in quiet.out + quiet.err
        verbose = cli(*args, "--verbose")
        assert verbose.code == EXIT_OK, verbose.err
        assert "cannot be known" in verbose.err
        assert cli(*args, "--json").json()["notes"]  # the JSON summary keeps every note

    def test_restore_is_named_after_its_backup(
        self, cli: Any, source: Path, tmp_path: Path
    ) -> None:
        """A restore task takes its name from the backup it restores, not "restore"."""
        location = backup(cli, source, tmp_path / "store", "--all", "--json").json()["location"]
        target = tmp_path / "copy.db"
        whole = cli("restore", "-r", target, "--store", tmp_path / "store" / "nightly", "--all")
        one = cli("restore", "-r", target, "--store", location, "--all")
        assert whole.code == one.code == EXIT_OK
        names = [t["name"] for t in cli("tasks", "-r", target, "--json").json()["records"]]
        assert names == [f"restore-{Path(location).name}", "restore-nightly"]

    def test_s3_install_hint(self, source: Path, tmp_path: Path) -> None:
        """Without s3fs an s3:// store is refused with the extra to install, by name."""
        blocker = tmp_path / "blocker"
        blocker.mkdir()
        (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['s3fs'] = None\n")
        path = os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])
        result = cli_process("backup", "-r", source, "--store", "s3://bucket/backups", "--name",
                             "n", "--all", env={"PYTHONPATH": path})  # fmt: skip
        assert result.returncode == EXIT_USAGE
        assert "pip install 'repobackup[s3]'" in result.stderr


class TestListing:
    """`ls --files`, stores of several task folders, and task ids by prefix or name."""

    def test_files(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--files prints every file path, one per line; with --json, one JSON line each."""
        location = backup(cli, source, tmp_path / "s", "--all", "--compress", "--json").json()
        listed = cli("ls", "--files", location["location"])
        assert listed.code == EXIT_OK, listed.err
        lines = listed.out.splitlines()
        assert "alpha/libs/dir/file-0.bin" in lines
        assert "beta/docs/LICENSE" in lines
        assert len(lines) == 16
        streamed = cli("ls", "--files", "--json", location["location"]).out
        records = [json.loads(line) for line in streamed.splitlines()]
        assert {r["path"] for r in records} >= {"/dir/file-1.bin", "/LICENSE"}
        assert all(len(r["sha256"]) == 64 for r in records)

    def test_files_of_an_increment_chain(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """--files of a task folder lists each backup of the chain, deletions marked."""
        store = tmp_path / "store"
        assert backup(cli, source, store, "--all").code == EXIT_OK
        with SqliteRepository(source) as repo:
            repo.delete_file("beta", "docs", "/LICENSE")
        assert backup(cli, source, store, "--all", "--increment").code == EXIT_OK
        listed = cli("ls", "--files", store / "nightly")
        assert "beta/docs/LICENSE (deleted)" in listed.out.splitlines()
        assert listed.err.count("files in") == 2

    def test_store_of_several_task_folders(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """ls of a store holding several task folders lists each with its backups."""
        store = tmp_path / "store"
        for name in ("nightly", "weekly"):
            made = cli("backup", "-r", source, "--store", store, "--name", name, "--all")
            assert made.code == EXIT_OK
        result = cli("ls", store, "--plain")
        assert result.code == EXIT_OK, result.err
        assert "2 task folders in" in result.out
        assert re.search(r"nightly\s+1\s+nightly-\d{8}\.\d{6}", result.out)
        assert "backups in weekly" in result.out
        entries = cli("ls", store, "--json").json()
        assert [e["taskFolder"] for e in entries] == ["nightly", "weekly"]
        assert cli("ls", "--files", store).code == EXIT_USAGE

    @pytest.fixture(name="tasks_made")
    def _tasks_made(self, cli: Any, source: Path, tmp_path: Path) -> list[dict[str, Any]]:
        made = []
        for name in ("alpha-nightly", "beta-nightly"):
            result = cli("backup", "-r", source, "--store", tmp_path / "s", "--name", name,
                         "--all", "--cron", "0 2 * * *", "--json")  # fmt: skip
            assert result.code == EXIT_OK, result.err
            made.append(result.json())
        return made

    def test_prefix_and_name(
        self, cli: Any, source: Path, tasks_made: list[dict[str, Any]]
    ) -> None:
        """A task is found by a unique id prefix, or by a name no other task has."""
        first = tasks_made[0]["id"]
        others = [t["id"] for t in tasks_made[1:]]
        prefix = next(
            first[:n] for n in range(1, 25) if not any(o.startswith(first[:n]) for o in others)
        )
        shown = cli("tasks", "show", prefix, "-r", source, "--json")
        assert shown.code == EXIT_OK, shown.err
        assert shown.json()["task"]["id"] == first
        by_name = cli("tasks", "show", "beta-nightly", "-r", source, "--json")
        assert by_name.json()["task"]["id"] == tasks_made[1]["id"]
        ran = cli("run", "alpha-nightly", "-r", source, "--json")
        assert ran.code == EXIT_OK, ran.err
        assert ran.json()["taskId"] == first

    def test_ambiguous_prefix(
        self, cli: Any, source: Path, tasks_made: list[dict[str, Any]]
    ) -> None:
        """A prefix two tasks share is a usage error that lists both."""
        ids = [t["id"] for t in tasks_made]
        common = next(n for n in range(24) if ids[0][n] != ids[1][n])
        assert common > 0  # ids begin with the time they were made
        result = cli("run", ids[0][:common], "-r", source)
        assert result.code == EXIT_USAGE
        assert "ambiguous" in result.err
        for task_id in ids:
            assert task_id in result.err

    def test_show_details(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """`tasks show` gives the cron expression, the last run's state, end and first error."""
        made = cli("backup", "-r", source, "--store", tmp_path / "s", "--name", "n", "--all",
                   "--cron", "0 3 * * *", "--json").json()  # fmt: skip
        victim = next(p for p in sorted((tmp_path / "source.db.blobs").rglob("*")) if p.is_file())
        victim.unlink()
        ran = cli("run", made["id"], "-r", source, "--error-strategy", "FAST_FAIL")
        assert ran.code == EXIT_USAGE  # `run` takes no task options
        assert cli("run", made["id"], "-r", source).code == EXIT_PARTIAL
        shown = cli("tasks", "show", made["id"], "-r", source, "--plain")
        assert shown.code == EXIT_OK, shown.err
        assert re.search(r"schedule\s+cron 0 3 \* \* \*", shown.out)
        assert re.search(r"last run\s+FINISHED", shown.out)
        assert re.search(r"last run ended\s+\d{4}-\d\d-\d\dT", shown.out)
        assert re.search(rf"first error\s+blob {victim.name}", shown.out)

    def test_list_has_last_run_and_fits(self, cli: Any, source: Path, tmp_path: Path) -> None:
        """The task list shows each last run (state, end, first error) within 120 columns,
        and the shortened ids it shows name their tasks."""
        long_store = tmp_path / ("a-very-long-folder-name-" * 4) / "backups"
        for name in ("nightly-" + "x" * 40, "weekly"):  # one process each, as in real use
            made = cli_process("backup", "-r", source, "--store", long_store, "--name", name,
                               "--all")  # fmt: skip
            assert made.returncode == EXIT_OK, made.stderr
        cli_process("restore", "-r", tmp_path / "t.db", "--store", tmp_path / "none", "--all",
                    "--tasks-db", tmp_path / "source.db.tasks.sqlite")  # fmt: skip
        result = cli("tasks", "-r", source, "--plain")
        assert result.code == EXIT_OK
        assert max(len(line) for line in result.out.splitlines()) <= 120
        assert "last run" in result.out
        assert re.search(r"FAILED \d{4}-\d\d-\d\d \d\d:\d\d: no backup", result.out)
        rows = [line.split() for line in result.out.splitlines()[3:]]
        for row in rows:
            assert len(row[0]) < 24
            assert cli("tasks", "show", row[0], "-r", source).code == EXIT_OK
