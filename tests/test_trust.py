"""Tests for unattended runs one can trust (DESIGN section 8): no silent empty backup or
restore, errors that name the file, a manifest that lists what failed, retention that only
removes its own task's backups (restic's rules), private backups, one writer per name, and
the command line recovering from killed runs by itself."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from helpers import Clock, last_json, make_repository
from repobackup import Engine, MemoryRepository, SqliteRepository, SqliteTaskStore, TaskState
from repobackup.cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from test_cli import cli_process, fill, install_plugin, mid_backup, slow_env, spawn

ZONE = timezone(timedelta(hours=8))


def backup_body(store: Path | str, name: str = "nightly", **setting: Any) -> dict[str, Any]:
    content = setting.pop("content", {"projects": [{"projectId": "demo"}]})
    return {
        "name": name,
        "storeLocation": str(store),
        "content": content,
        "backupSetting": {"executionPlan": {"executeImmediately": False}, **setting},
    }


@pytest.fixture(name="source")
def _source(tmp_path: Path) -> Path:
    path = tmp_path / "source.db"
    with SqliteRepository(path) as repo:
        fill(repo)
    return path


class TestNothingMatched:
    """A selection that matches nothing fails the run; an absent id is an error of it."""

    @pytest.mark.parametrize(
        "content",
        [
            {"projects": [{"projectRegex": "nosuch*"}]},
            {"commonData": True},
            {"commonData": True, "projects": [{"projectRegex": "zz*"}]},
        ],
    )
    def test_empty_selection_fails(self, tmp_path: Path, content: dict[str, Any]) -> None:
        repo = MemoryRepository()
        repo.put_project("demo")
        engine = Engine(repo)
        summary = engine.execute(engine.create_task(backup_body(tmp_path, content=content)))
        assert summary.state is TaskState.FAILED
        assert "nothing matched" in summary.errors[-1].message
        assert not list(tmp_path.rglob("manifest.json"))

    def test_absent_ids_are_errors_of_the_run(self, tmp_path: Path) -> None:
        engine = Engine(make_repository())
        entries = [{"projectId": "nosuch"}, {"projectId": "demo", "repoList": ["libs", "gone"]}]
        summary = engine.execute(
            engine.create_task(backup_body(tmp_path, content={"projects": entries}))
        )
        assert summary.state is TaskState.FINISHED
        assert {(e.scope, e.key) for e in summary.errors} == {
            ("project", "nosuch"),
            ("repository", "demo/gone"),
        }
        fast = engine.execute(
            engine.create_task(
                backup_body(
                    tmp_path, "fast", content={"projects": entries}, errorStrategy="FAST_FAIL"
                )
            )
        )
        assert fast.state is TaskState.FAILED
        assert "nosuch" in fast.errors[0].message

    def test_increment_with_no_change_is_not_empty(self, tmp_path: Path) -> None:
        clock = Clock(datetime(2026, 3, 1, 2, 0, tzinfo=ZONE))
        engine = Engine(make_repository(), clock=clock, tz=ZONE)
        task_id = engine.create_task(
            backup_body(tmp_path, content={"projects": [{"projectId": "demo"}], "increment": True})
        )
        assert engine.execute(task_id).state is TaskState.FINISHED
        clock.advance(days=1)
        again = engine.execute(task_id)
        assert again.state is TaskState.FINISHED, again.errors

    def test_restore_matching_nothing_fails(self, tmp_path: Path) -> None:
        engine = Engine(make_repository())
        done = engine.execute(engine.create_task(backup_body(tmp_path / "s")))
        assert done.location is not None
        target = Engine(MemoryRepository())
        for entries, state, scope in [
            ([{"projectRegex": "x*"}], TaskState.FAILED, "task"),
            ([{"projectId": "nosuch"}], TaskState.FAILED, "project"),
            (
                [{"projectId": "demo", "repoList": ["libs", "gone"]}],
                TaskState.FINISHED,
                "repository",
            ),
        ]:
            body = {
                "name": "r",
                "type": "DATA_RESTORE",
                "storeLocation": done.location,
                "content": {"projects": entries},
            }
            summary = target.execute(target.create_task(body))
            assert summary.state is state
            assert scope in {e.scope for e in summary.errors}

    def test_cli_exit_codes(self, source: Path, tmp_path: Path) -> None:
        """Through a real process: nothing matched exits 1; an absent id under CONTINUE 3."""
        base = ["backup", "-r", source, "--store", tmp_path / "s", "--name", "n", "--json"]
        empty = cli_process(*base, "--project-regex", "nosuch*")
        assert empty.returncode == EXIT_FAILED, empty.stderr
        assert "nothing matched" in last_json(empty.stdout)["errors"][-1]["message"]
        absent = cli_process(*base, "--project-id", "alpha", "--repo", "libs", "--repo", "typo")
        assert absent.returncode == EXIT_PARTIAL, absent.stderr
        errors = last_json(absent.stdout)["errors"]
        assert [(e["scope"], e["key"]) for e in errors] == [("repository", "alpha/typo")]


class TestTruthfulManifest:
    def test_failed_blob_names_its_file(self, source: Path, tmp_path: Path) -> None:
        """A blob that cannot be read: the error names the sha256 and the file, the backup
        exits 3, and verify of it says what is missing and exits 1."""
        with SqliteRepository(source, create=False) as repo:
            node = next(
                r
                for r in repo.records(scope_of("alpha", "libs"), "node")
                if r.key == "/dir/file-0.bin"
            )
        victim = next(p for p in (tmp_path / "source.db.blobs").rglob(f"{node.blob}*"))
        victim.unlink()
        run = cli_process(
            "backup", "-r", source, "--store", tmp_path / "s", "--name", "n", "--all", "--json"
        )
        assert run.returncode == EXIT_PARTIAL, run.stderr
        summary = last_json(run.stdout)
        (error,) = summary["errors"]
        assert error["key"] == node.blob
        assert "(file alpha/libs/dir/file-0.bin)" in error["message"]
        checked = cli_process("verify", summary["location"])
        assert checked.returncode == EXIT_FAILED
        assert node.blob in checked.stdout + checked.stderr

    def test_failed_record_is_listed_and_verify_says_so(self, tmp_path: Path) -> None:
        """A record the backup cannot write is listed in the manifest's failedRecords, and
        verify of that backup names it (the server's own documents, as a Source streams
        them, are not always JSON: this one yields NaN)."""
        repo = NotJsonSource()
        repo.put_project("demo")
        repo.put_document("user", "bad", {"score": 0})
        repo.put_document("user", "good", {"score": 1})
        engine = Engine(repo)
        summary = engine.execute(
            engine.create_task(
                backup_body(
                    tmp_path, content={"commonData": True, "projects": [{"projectId": "demo"}]}
                )
            )
        )
        assert summary.state is TaskState.FINISHED
        assert [e.scope for e in summary.errors] == ["record"]
        assert summary.location is not None
        manifest = json.loads((Path(summary.location) / "manifest.json").read_text())
        assert manifest["failedRecords"] == ["user/bad"]
        report = engine.verify(summary.location)
        assert not report.ok
        assert "user/bad" in str(report)


class NotJsonSource(MemoryRepository):
    """A source whose record "bad" carries a document that JSON cannot hold."""

    def records(self, scope: Any, collection: str, *, since: Any = None) -> Any:
        for record in super().records(scope, collection, since=since):
            if record.key == "bad":
                yield attrs.evolve(record, document={"score": float("nan")})
            else:
                yield record


def scope_of(project: str, repo: str) -> Any:
    from repobackup import Scope

    return Scope(project, repo)


class TestRetention:
    def run_days(self, engine: Engine, clock: Clock, task_id: str, days: int) -> list[str]:
        names = []
        for _ in range(days):
            summary = engine.execute(task_id)
            assert summary.state is TaskState.FINISHED, summary.errors
            assert summary.location is not None
            names.append(Path(summary.location).name)
            clock.advance(days=1)
        return names

    def test_only_own_backups_are_removed(self, tmp_path: Path) -> None:
        """Two tasks (two repositories) sharing store and name: each one's keepLast leaves
        the other's backups alone."""
        clock = Clock(datetime(2026, 3, 1, 2, 0, tzinfo=ZONE))
        first = Engine(make_repository(), clock=clock, tz=ZONE)
        second = Engine(make_repository(), clock=clock, tz=ZONE)
        one = first.create_task(backup_body(tmp_path, retention={"keepLast": 1}))
        two = second.create_task(backup_body(tmp_path, retention={"keepLast": 1}))
        mine = []
        for _ in range(3):
            mine.append(Path(first.execute(one).location or "").name)
            clock.advance(seconds=5)
            second.execute(two)
            clock.advance(days=1)
        left = sorted(p.name for p in (tmp_path / "nightly").iterdir())
        assert mine[-1] in left
        assert len(left) == 2  # one of each task
        plan = first.plan_retention(one)
        assert [d.keep for d in plan] == [True, True]
        assert any(r.startswith("not this task's") for d in plan for r in d.reasons)

    def test_gfs_as_restic_forgets(self, tmp_path: Path) -> None:
        """Daily backups from 2026-01-01 for 70 days; keepDaily 3, keepWeekly 2,
        keepMonthly 2: the newest of each of the 3 newest days, 2 newest ISO weeks, 2 newest
        months stay (and the oldest while a rule has buckets left, as restic does)."""
        clock = Clock(datetime(2026, 1, 1, 2, 0, tzinfo=ZONE))
        engine = Engine(make_repository(), clock=clock, tz=ZONE)
        task_id = engine.create_task(backup_body(tmp_path))
        names = self.run_days(engine, clock, task_id, 70)
        engine.update_task(
            task_id,
            backup_body(tmp_path, retention={"keepDaily": 3, "keepWeekly": 2, "keepMonthly": 2}),
        )
        plan = engine.plan_retention(task_id)
        kept = {d.name: d.reasons for d in plan if d.keep}
        assert len(plan) == 70
        # 2026-03-11 is the newest; 03-10, 03-09 the other days; the weeks W11 (03-11) and
        # W10 (newest 03-08, a Sunday); the months 2026-03 (03-11) and 2026-02 (02-28).
        assert sorted(kept) == sorted(
            f"nightly-2026{d}.020000" for d in ("0311", "0310", "0309", "0308", "0228")
        )
        assert kept["nightly-20260311.020000"] == (
            "daily 2026-03-11",
            "weekly 2026-W11",
            "monthly 2026-03",
            "newest backup with no failed record or blob",
        )
        assert "weekly 2026-W10" in kept["nightly-20260308.020000"]
        assert "monthly 2026-02" in kept["nightly-20260228.020000"]
        assert names[-1] == "nightly-20260311.020000"
        # The dry run removed nothing; the next run applies the rules.
        assert len(list((tmp_path / "nightly").iterdir())) == 70
        summary = engine.execute(task_id)
        assert any("removed" in note for note in summary.notes)
        # On 03-12: days 03-12, 03-11, 03-10; weeks W11 (03-12), W10 (03-08); months 2026-03
        # (03-12), 2026-02 (02-28).
        left = sorted(p.name for p in (tmp_path / "nightly").iterdir())
        days = ("0228", "0308", "0310", "0311", "0312")
        assert left == [f"nightly-2026{d}.020000" for d in days]

    def test_no_retention_after_a_run_with_errors(self, tmp_path: Path) -> None:
        clock = Clock(datetime(2026, 3, 1, 2, 0, tzinfo=ZONE))
        repo = make_repository()
        engine = Engine(repo, clock=clock, tz=ZONE)
        task_id = engine.create_task(
            backup_body(
                tmp_path,
                retention={"keepLast": 1},
                content={"projects": [{"projectId": "demo", "repoList": ["libs", "gone"]}]},
            )
        )
        for _ in range(3):
            summary = engine.execute(task_id)
            assert summary.errors
            assert any("retention skipped" in note for note in summary.notes)
            clock.advance(days=1)
        assert len(list((tmp_path / "nightly").iterdir())) == 3

    def test_validation_of_the_rules(self, tmp_path: Path) -> None:
        from repobackup import ValidationError

        engine = Engine(make_repository())
        for key in ("keepLast", "keepDaily", "keepWeekly", "keepMonthly", "keepYearly"):
            with pytest.raises(ValidationError) as caught:
                engine.create_task(backup_body(tmp_path, retention={key: 0}))
            assert f"$.backupSetting.retention.{key}" in str(caught.value)

    def test_cli_dry_run(self, source: Path, tmp_path: Path) -> None:
        store = tmp_path / "s"
        base = ["-r", source, "--store", store, "--name", "n", "--all"]
        for _ in range(3):
            assert cli_process("backup", *base).returncode == EXIT_OK
            time.sleep(1.1)
        last = cli_process("backup", *base, "--keep-last", "1", "--keep-daily", "1", "--json")
        assert last.returncode == EXIT_OK, last.stderr
        task = last_json(last.stdout)["taskId"]
        plan = cli_process("retention", task, "-r", source, "--dry-run", "--json")
        assert plan.returncode == EXIT_OK, plan.stderr
        decisions = json.loads(plan.stdout)
        assert [d["action"] for d in decisions] == ["keep"]
        text = cli_process("retention", task, "-r", source, "--dry-run")
        assert "keep 1 backup(s)" in text.stdout
        assert cli_process("retention", task, "-r", source).returncode == EXIT_USAGE


def modes(root: Path) -> set[tuple[str, int]]:
    return {
        ("d" if p.is_dir() else "f", stat.S_IMODE(p.stat().st_mode))
        for p in [root, *root.rglob("*")]
    }


class TestPrivate:
    @pytest.mark.parametrize("compression", [False, True])
    def test_files_0600_folders_0700(self, tmp_path: Path, compression: bool) -> None:
        old = os.umask(0o022)
        try:
            engine = Engine(make_repository())
            summary = engine.execute(
                engine.create_task(
                    backup_body(
                        tmp_path / "store",
                        content={"projects": [{"projectId": "demo"}], "compression": compression},
                    )
                )
            )
        finally:
            os.umask(old)
        assert summary.location is not None
        task_dir = tmp_path / "store" / "nightly"
        assert stat.S_IMODE(task_dir.stat().st_mode) == 0o700
        assert modes(Path(summary.location)) <= {("d", 0o700), ("f", 0o600)}
        assert not [p for p in task_dir.iterdir() if p.name.startswith(".")]


RACER = """
import sys, time
from repobackup.cli import main
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
class TestOneWriterPerName:
    @pytest.mark.parametrize("compression", [False, True])
    def test_four_processes_in_one_second(
        self, source: Path, tmp_path: Path, compression: bool
    ) -> None:
        """4 processes, 4 task databases, one name and store, started in the same second:
        all finish, with 4 distinct names, and all 4 verify."""
        rounds = int(os.environ.get("SAME_SECOND_ROUNDS", "2"))
        good = 0
        for number in range(rounds):
            store = tmp_path / f"s{number}"
            start = int(time.time()) + 2.0
            extra = ["--compress"] if compression else []
            processes = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        RACER,
                        str(start),
                        "backup",
                        "-r",
                        str(source),
                        "--store",
                        str(store),
                        "--name",
                        "n",
                        "--all",
                        "--json",
                        "--tasks-db",
                        str(tmp_path / f"t{number}-{i}.sqlite"),
                        *extra,
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for i in range(4)
            ]
            outcomes = [p.communicate(timeout=120) for p in processes]
            codes = [p.returncode for p in processes]
            assert codes == [EXIT_OK] * 4, outcomes
            locations = {last_json(out)["location"] for out, _ in outcomes}
            assert len(locations) == 4
            assert all(cli_process("verify", loc).returncode == EXIT_OK for loc in locations)
            assert not [p for p in (store / "n").iterdir() if p.name.startswith(".")]
            good += 1
        print(f"same-second rounds that verify: {good} of {rounds}")


@pytest.mark.slow
class TestKilledRuns:
    def test_kills_are_recovered_by_the_next_command(self, source: Path, tmp_path: Path) -> None:
        """Runs killed mid-backup by SIGKILL or SIGTERM: the same command run again at once
        finishes (exit 0) and leaves nothing half-written."""
        rounds = int(os.environ.get("KILL_ROUNDS", "2"))
        plugins, marker = install_plugin(tmp_path / "plugins"), tmp_path / "m"
        recovered = 0
        for number in range(rounds):
            kill = signal.SIGKILL if number % 2 == 0 else signal.SIGTERM
            store, tasks_db = tmp_path / f"s{number}", tmp_path / f"t{number}.sqlite"
            marker.unlink(missing_ok=True)
            args = [
                "backup",
                "-r",
                f"slow:{source}",
                "--store",
                store,
                "--name",
                "n",
                "--all",
                "--no-space-check",
                "--tasks-db",
                tasks_db,
            ]
            if number % 4 >= 2:
                args.append("--compress")
            process = spawn(*args, env=slow_env(plugins, marker, "0.2"))
            mid_backup(process, marker, store / "n")
            process.send_signal(kill)
            process.communicate(timeout=60)
            again = cli_process(*args, env=slow_env(plugins, marker, "0"))
            assert again.returncode == EXIT_OK, again.stderr
            left = [p.name for p in (store / "n").iterdir() if p.name.startswith(".")]
            assert not left
            recovered += 1
        print(f"kills recovered by the CLI: {recovered} of {rounds}")

    def test_killed_restore_leaves_no_temporary_blob(self, tmp_path: Path) -> None:
        """A restore killed by SIGKILL while it writes a large blob leaves a ``.tmp`` in the
        target's blob store; the next restore command removes it first."""
        source = tmp_path / "big.db"
        with SqliteRepository(source) as repo:
            repo.put_project("p")
            repo.put_repository("p", "r")
            repo.put_file("p", "r", "/big.bin", os.urandom(1 << 20) * 300)
        store = tmp_path / "s"
        made = cli_process("backup", "-r", source, "--store", store, "--name", "n", "--all")
        assert made.returncode == EXIT_OK, made.stderr
        target = tmp_path / "target.db"
        blobs = tmp_path / "target.db.blobs"
        args = ["restore", "-r", target, "--store", store / "n", "--all"]
        for _ in range(5):
            process = spawn(*args)
            deadline = time.monotonic() + 60
            while process.poll() is None and time.monotonic() < deadline:
                if blobs.is_dir() and list(blobs.rglob("*.tmp")):
                    process.kill()
                    break
                time.sleep(0.005)
            process.communicate(timeout=60)
            if process.returncode == -signal.SIGKILL:
                break
            target.unlink(missing_ok=True)
        assert list(blobs.rglob("*.tmp")), "the restore should have been killed mid-blob"
        again = cli_process(*args)
        assert again.returncode == EXIT_OK, again.stderr
        assert "ended its earlier run" in again.stderr
        assert not list(blobs.rglob("*.tmp"))
        with SqliteTaskStore(f"{target}.tasks.sqlite") as tasks:
            notes = [n for t in tasks.list().records if t.last_run for n in t.last_run.notes]
        assert any("temporary blob file" in note for note in notes)


S3_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from slowbackend import SlowRepository
from repobackup import Engine, SqliteTaskStore
options = json.loads(sys.argv[4])
with SqliteTaskStore(sys.argv[3]) as tasks:
    engine = Engine(SlowRepository(sys.argv[2]), tasks=tasks, storage_options=options)
    body = {"name": "nightly", "storeLocation": sys.argv[5],
            "content": {"projects": [{"projectId": "p"}], "compression": True},
            "backupSetting": {"executionPlan": {"executeImmediately": False},
                              "spaceCapCheck": False}}
    engine.execute(engine.create_task(body))
"""


@pytest.mark.slow
def test_recovery_aborts_a_killed_runs_multipart_upload(s3: Any, tmp_path: Path) -> None:
    """A compressed backup to S3 killed (SIGKILL) while its zip's multipart upload is open:
    recovery of the dead run aborts that upload, and the bucket holds nothing."""
    plugins, marker = install_plugin(tmp_path / "plugins"), tmp_path / "m"
    source = tmp_path / "src.db"
    with SqliteRepository(source) as repo:
        repo.put_project("p")
        repo.put_repository("p", "r")
        repo.put_file("p", "r", "/0-big.bin", os.urandom(7 << 20))
        for number in range(40):
            repo.put_file("p", "r", f"/f{number:02}.txt", f"small {number}".encode())
    bucket = s3.new_bucket()
    options = {"s3": {**s3.options, "default_block_size": 5 * 2**20}}
    tasks_db = tmp_path / "tasks.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", S3_CHILD, str(plugins), str(source), str(tasks_db),
         json.dumps(options), f"s3://{bucket}/store"],
        env={**os.environ, "SLOW_MARKER": str(marker), "SLOW_DELAY": "0.2"},
    )  # fmt: skip
    fs = s3.filesystem()
    deadline = time.monotonic() + 60
    uploads: list[Any] = []
    while child.poll() is None and time.monotonic() < deadline and not uploads:
        uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
        time.sleep(0.05)
    child.kill()
    child.wait(timeout=60)
    assert uploads, "the backup should have been killed with its upload open"
    with SqliteTaskStore(tasks_db) as tasks, SqliteRepository(source) as repo:
        engine = Engine(repo, tasks=tasks, storage_options=options)
        (ended,) = engine.recover_interrupted()
        (run,) = engine.runs(ended)
    assert fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []
    assert any("nightly-" in note and ".zip" in note for note in run.notes), run.notes
    assert fs.find(bucket) == []
