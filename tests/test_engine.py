"""Backup and restore through the Engine on real repositories and real stores."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpers import Clock
from repobackup import (
    ConflictStrategy,
    Engine,
    MemoryRepository,
    Progress,
    RunSummary,
    Scope,
    SqliteRepository,
    TaskState,
    ValidationError,
    from_json,
    to_json,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sample(repo: Any, *, modified: datetime = T0 - timedelta(hours=1)) -> None:
    """A small repository: two projects, three repositories, duplicate and empty files,
    common data with odd documents."""
    repo.put_document(
        "user", "admin", {"name": "admin", "pwd": "x", "roles": ["ADMIN"]}, modified=modified
    )
    repo.put_document(
        "permission", "p1", {"ünïcode": {"nested": [1, 2.5, None, True]}}, modified=modified
    )
    for project in ("alpha", "beta"):
        repo.put_project(project, modified=modified)
    for project, name in (("alpha", "generic"), ("alpha", "docker"), ("beta", "generic")):
        repo.put_repository(project, name, modified=modified)
        for index in range(4):
            repo.put_file(
                project,
                name,
                f"/dir/f{index}.txt",
                f"{name}-{index % 2}".encode() * 50,
                metadata={"k": index},
                modified=modified,
            )
        repo.put_file(project, name, "/empty", b"", modified=modified)


def body(store: Any, **content: Any) -> dict[str, Any]:
    content.setdefault("commonData", True)
    content.setdefault("projects", [{"projectRegex": "*"}])
    return {"name": "nightly", "storeLocation": str(store), "content": content}


def restore_body(location: str, **content: Any) -> dict[str, Any]:
    data = body(location, **content)
    data["name"] = "restore"
    data["type"] = "DATA_RESTORE"
    return data


def run(engine: Engine, data: dict[str, Any]) -> RunSummary:
    return engine.execute(engine.create_task(data))


def backup_and_restore(
    source: Any, target: Any, store: Any, **content: Any
) -> tuple[RunSummary, RunSummary]:
    backup = run(Engine(source), body(store, **content))
    assert backup.state is TaskState.FINISHED, backup.errors
    assert backup.location is not None
    restore_content = {k: v for k, v in content.items() if k in ("commonData", "projects")}
    restored = run(Engine(target), restore_body(backup.location, **restore_content))
    return backup, restored


@pytest.fixture(name="repo")
def _repo(tmp_path: Path) -> Iterator[SqliteRepository]:
    with SqliteRepository(str(tmp_path / "source.db")) as repo:
        sample(repo)
        yield repo


@pytest.fixture(name="empty")
def _empty(tmp_path: Path) -> Iterator[SqliteRepository]:
    with SqliteRepository(str(tmp_path / "target.db")) as repo:
        yield repo


class TestRoundTrip:
    def test_backup_then_restore_reproduces_the_repository(
        self, repo: SqliteRepository, empty: SqliteRepository, tmp_path: Path
    ) -> None:
        """Restoring a full backup into an empty repository gives the same records and bytes."""
        backup, restored = backup_and_restore(repo, empty, tmp_path / "store")
        assert restored.state is TaskState.FINISHED, restored.errors
        assert empty.snapshot() == repo.snapshot()
        assert backup.counts.records_written == restored.counts.records_written
        assert backup.counts.blobs_reused > 0  # duplicate contents are stored once

    def test_backup_layout_matches_the_design(self, repo: SqliteRepository, tmp_path: Path) -> None:
        """A backup is <store>/<name>/<name>-<stamp>/ with the members of DESIGN section 6."""
        clock = Clock(datetime(2024, 12, 24, 17, 13, 54, tzinfo=UTC))
        engine = Engine(repo, clock=clock, tz=UTC)
        summary = run(engine, body(tmp_path))
        folder = tmp_path / "nightly" / "nightly-20241224.171354"
        assert summary.location == f"{tmp_path}/nightly/nightly-20241224.171354"
        assert (folder / "manifest.json").is_file()
        assert (folder / "common" / "user.jsonl").is_file()
        assert (folder / "projects" / "alpha" / "project.jsonl").is_file()
        assert (folder / "projects" / "alpha" / "repos" / "docker" / "node.jsonl").is_file()
        sha = hashlib.sha256(b"").hexdigest()
        assert (folder / "blobs" / sha[:2] / sha[2:4] / sha).read_bytes() == b""
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["format"] == 1
        assert manifest["kind"] == "full"
        assert manifest["projects"] == {"alpha": ["docker", "generic"], "beta": ["generic"]}

    def test_documents_are_kept_verbatim(
        self, repo: SqliteRepository, empty: SqliteRepository, tmp_path: Path
    ) -> None:
        """Unknown and odd fields of a document survive the round trip untouched."""
        odd = {"": 0, "a.b": {"$where": [{"deep": "ü" * 3}]}, "big": 2**62, "f": -0.5}
        repo.put_document("account", "odd", odd, project_id="alpha")
        backup_and_restore(repo, empty, tmp_path / "store")
        assert empty.get_document("account", "odd", project_id="alpha") == odd

    def test_unsafe_ids_stay_inside_the_backup(
        self, empty: SqliteRepository, tmp_path: Path
    ) -> None:
        """Ids with '..', '/' or '%' are percent-encoded, never escape, and come back."""
        source = MemoryRepository()
        source.put_project("..")
        source.put_repository("..", "a/b%2F")
        source.put_file("..", "a/b%2F", "/x", b"payload")
        backup, _ = backup_and_restore(source, empty, tmp_path / "store")
        root = Path(str(backup.location))
        for path in root.rglob("*"):
            assert path.resolve().is_relative_to(root.resolve())
        assert (root / "projects" / "%2E." / "repos" / "a%2Fb%252F").is_dir()
        assert empty.read_file("..", "a/b%2F", "/x") == b"payload"

    def test_memory_store(self, repo: SqliteRepository, empty: SqliteRepository) -> None:
        """A backup on fsspec's memory filesystem restores like one on disk."""
        _, restored = backup_and_restore(repo, empty, "memory://engine-test")
        assert restored.state is TaskState.FINISHED
        assert empty.snapshot() == repo.snapshot()

    def test_progress_events_arrive(self, repo: SqliteRepository, tmp_path: Path) -> None:
        """on_progress receives phases in order, ending with done and the final counts."""
        events: list[Progress] = []
        engine = Engine(repo, on_progress=events.append)
        summary = run(engine, body(tmp_path))
        phases = [e.phase for e in events]
        assert phases[0] == "estimate"
        assert phases[-1] == "done"
        assert events[-1].records == summary.counts.records_written
        assert all(e.task_id == summary.task_id for e in events)


class TestSelection:
    @pytest.mark.parametrize(
        ("entry", "expected"),
        [
            ({"projectId": "alpha"}, {"alpha": ["docker", "generic"]}),
            ({"projectRegex": "b*"}, {"beta": ["generic"]}),
            ({"projectRegex": "re:al.*", "repoList": ["docker"]}, {"alpha": ["docker"]}),
            ({"repoRegex": "gen*"}, {"alpha": ["generic"], "beta": ["generic"]}),
            ({"excludeProjects": ["alpha"]}, {"beta": ["generic"]}),
            ({"excludeRepos": ["generic"]}, {"alpha": ["docker"], "beta": []}),
        ],
    )
    def test_backup_selects_what_the_entry_says(
        self, repo: SqliteRepository, tmp_path: Path, entry: dict[str, Any], expected: Any
    ) -> None:
        """Each field of a projects entry narrows the backup as DESIGN section 3 says."""
        summary = run(Engine(repo), body(tmp_path, commonData=False, projects=[entry]))
        manifest = json.loads((Path(str(summary.location)) / "manifest.json").read_text())
        assert manifest["projects"] == expected
        assert not any(m["projectId"] is None for m in manifest["members"])

    def test_restore_selects_from_the_backup(
        self, repo: SqliteRepository, empty: SqliteRepository, tmp_path: Path
    ) -> None:
        """A restore task's own selection picks part of a full backup."""
        backup = run(Engine(repo), body(tmp_path))
        restore = restore_body(
            str(backup.location), commonData=False, projects=[{"projectId": "beta"}]
        )
        assert run(Engine(empty), restore).state is TaskState.FINISHED
        assert list(empty.projects()) == ["beta"]
        assert empty.get_document("user", "admin") is None
        assert empty.read_file("beta", "generic", "/dir/f1.txt") == b"generic-1" * 50


class TestIncremental:
    def test_chain_of_full_and_increment_restores_the_source(
        self, repo: SqliteRepository, empty: SqliteRepository, tmp_path: Path
    ) -> None:
        """Full, then changes and deletions, then an increment: restoring the task folder
        applies both in order and equals the source, deletions included."""
        clock = Clock(T0)
        engine = Engine(repo, clock=clock, tz=UTC)
        task_id = engine.create_task(body(tmp_path, increment=True))
        first = engine.execute(task_id)
        assert first.state is TaskState.FINISHED
        assert first.since == datetime(2026, 2, 28, tzinfo=UTC)  # 00:00 of the day before

        later = clock.advance(hours=1)
        repo.put_file("alpha", "generic", "/dir/f0.txt", b"changed", modified=later)
        repo.put_file("beta", "generic", "/new.bin", b"\x00\x01" * 10, modified=later)
        repo.delete_file("alpha", "docker", "/dir/f3.txt", modified=later)
        repo.put_document("user", "bob", {"name": "bob"}, modified=later)
        clock.advance(hours=1)
        second = engine.execute(task_id)
        assert second.state is TaskState.FINISHED
        assert second.since == first.started
        assert second.counts.records_written == 4
        manifest = json.loads((Path(str(second.location)) / "manifest.json").read_text())
        assert manifest["kind"] == "incremental"
        assert manifest["follows"] == Path(str(first.location)).name

        restored = run(Engine(empty), restore_body(str(tmp_path / "nightly")))
        assert restored.state is TaskState.FINISHED, restored.errors
        assert empty.snapshot() == repo.snapshot()
        with pytest.raises(FileNotFoundError):
            empty.read_file("alpha", "docker", "/dir/f3.txt")

    def test_increment_carries_a_deleted_repository(
        self, repo: SqliteRepository, empty: SqliteRepository, tmp_path: Path
    ) -> None:
        """A repository whose every record became a tombstone is still in the increment,
        so restoring the chain deletes it too."""
        clock = Clock(T0)
        engine = Engine(repo, clock=clock, tz=UTC)
        task_id = engine.create_task(body(tmp_path, increment=True))
        engine.execute(task_id)
        gone = clock.advance(hours=1)
        scope = Scope("alpha", "docker")
        tombstones = [
            attrs.evolve(record, deleted=True, modified=gone, blob=None, size=0)
            for collection in list(repo.collections(scope))
            for record in repo.records(scope, collection)
        ]
        repo.apply(tombstones, ConflictStrategy.OVERWRITE)
        assert "docker" not in list(repo.repositories("alpha"))
        clock.advance(hours=1)
        second = engine.execute(task_id)
        assert second.counts.records_written == len(tombstones)
        run(Engine(empty), restore_body(str(tmp_path / "nightly")))
        assert list(empty.repositories("alpha")) == ["generic"]
        assert empty.snapshot() == repo.snapshot()

    def test_increment_date_is_the_since_time(self, repo: SqliteRepository, tmp_path: Path) -> None:
        """incrementDate, when given, is where the increment starts."""
        since = T0 + timedelta(minutes=5)
        repo.put_document("user", "late", {"n": 1}, modified=since + timedelta(seconds=1))
        summary = run(
            Engine(repo, tz=UTC), body(tmp_path, increment=True, incrementDate=since.isoformat())
        )
        assert summary.since == since
        assert summary.counts.records_written == 1

    def test_increment_false_is_full(self, repo: SqliteRepository, tmp_path: Path) -> None:
        """increment false backs up everything."""
        full = run(Engine(repo), body(tmp_path / "a"))
        explicit = run(Engine(repo), body(tmp_path / "b", increment=False))
        assert explicit.since is None
        assert explicit.counts.records_written == full.counts.records_written


class TestConflicts:
    @pytest.mark.parametrize(("strategy", "expected"), [("SKIP", b"mine"), ("OVERWRITE", None)])
    def test_conflict_strategy(
        self,
        repo: SqliteRepository,
        empty: SqliteRepository,
        tmp_path: Path,
        strategy: str,
        expected: bytes | None,
    ) -> None:
        """SKIP leaves an existing record alone; OVERWRITE replaces it."""
        backup = run(Engine(repo), body(tmp_path))
        empty.put_project("alpha")
        empty.put_repository("alpha", "generic")
        empty.put_file("alpha", "generic", "/dir/f0.txt", b"mine")
        data = restore_body(str(backup.location))
        data["backupSetting"] = {"conflictStrategy": strategy}
        summary = run(Engine(empty), data)
        assert summary.state is TaskState.FINISHED
        original = repo.read_file("alpha", "generic", "/dir/f0.txt")
        assert empty.read_file("alpha", "generic", "/dir/f0.txt") == (expected or original)
        assert (summary.counts.records_skipped > 0) is (strategy == "SKIP")


class TestErrors:
    def failing_source(self) -> tuple[MemoryRepository, str]:
        source = MemoryRepository()
        sample(source)
        bad = hashlib.sha256(b"generic-1" * 50).hexdigest()
        source.fail_blobs.add(bad)
        return source, bad

    def test_continue_records_the_failure_and_goes_on(
        self, empty: SqliteRepository, tmp_path: Path
    ) -> None:
        """Under CONTINUE a failing blob is in the errors, everything else is backed up, and
        the restore reports the records that needed it instead of writing them."""
        source, bad = self.failing_source()
        summary = run(Engine(source), body(tmp_path))
        assert summary.state is TaskState.FINISHED
        assert [(e.scope, e.key) for e in summary.errors] == [("blob", bad)]
        assert summary.counts.blobs_failed == 1
        restored = run(Engine(empty), restore_body(str(summary.location)))
        assert restored.state is TaskState.FINISHED
        assert restored.counts.records_failed == 4  # /dir/f1 and /dir/f3 of two repositories
        assert empty.read_file("alpha", "generic", "/dir/f0.txt") == b"generic-0" * 50
        with pytest.raises(FileNotFoundError):
            empty.read_file("alpha", "generic", "/dir/f1.txt")

    def test_fast_fail_stops_and_leaves_no_complete_backup(self, tmp_path: Path) -> None:
        """Under FAST_FAIL the first failure ends the task FAILED and nothing looks complete."""
        source, bad = self.failing_source()
        data = body(tmp_path)
        data["backupSetting"] = {"errorStrategy": "FAST_FAIL"}
        engine = Engine(source)
        task_id = engine.create_task(data)
        summary = engine.execute(task_id)
        assert summary.state is TaskState.FAILED
        assert summary.location is None
        assert any(bad in e.message or e.key == bad for e in summary.errors)
        assert engine.get_task(task_id).state is TaskState.FAILED
        assert not list(tmp_path.rglob("manifest.json"))
        # The partial folder is gone; only its blobs may wait for the next run to resume.
        assert [p.name for p in (tmp_path / "nightly").iterdir()] in ([], [".nightly.resume"])

    def test_corrupted_blob_is_never_restored(
        self, repo: SqliteRepository, empty: SqliteRepository, tmp_path: Path
    ) -> None:
        """A blob whose bytes were altered in the archive is reported and not written."""
        backup = run(Engine(repo), body(tmp_path))
        sha = hashlib.sha256(b"docker-0" * 50).hexdigest()
        blob = Path(str(backup.location)) / "blobs" / sha[:2] / sha[2:4] / sha
        blob.write_bytes(b"evil" + blob.read_bytes()[4:])
        restored = run(Engine(empty), restore_body(str(backup.location)))
        assert ("blob", sha) in [(e.scope, e.key) for e in restored.errors]
        assert not empty.has_blob(sha)
        assert empty.read_file("alpha", "docker", "/dir/f1.txt") == b"docker-1" * 50

    def test_a_missing_backup_fails_the_restore_with_a_message(
        self, empty: SqliteRepository, tmp_path: Path
    ) -> None:
        """Restoring from nowhere ends FAILED with a message naming the location."""
        summary = run(Engine(empty), restore_body(str(tmp_path / "nothing")))
        assert summary.state is TaskState.FAILED
        assert "nothing" in summary.errors[0].message

    def test_not_enough_space_is_refused_before_writing(
        self, repo: SqliteRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The space check refuses with both figures and writes nothing."""
        real = shutil.disk_usage

        def tiny(path: Any) -> Any:
            usage = real(path)
            return usage._replace(free=1000)

        monkeypatch.setattr(shutil, "disk_usage", tiny)
        summary = run(Engine(repo), body(tmp_path))
        assert summary.state is TaskState.FAILED
        message = summary.errors[0].message
        assert "1000 bytes are free" in message
        assert "needs" in message
        assert not (tmp_path / "nightly").exists() or not any((tmp_path / "nightly").iterdir())

    def test_unknown_free_space_is_said(self, repo: SqliteRepository) -> None:
        """Where free space cannot be known, the summary says so."""
        summary = run(Engine(repo), body("memory://space-note"))
        assert any("cannot be known" in note for note in summary.notes)

    def test_summary_round_trips_as_json(self, repo: SqliteRepository, tmp_path: Path) -> None:
        """A run summary survives JSON."""
        summary = run(Engine(repo), body(tmp_path))
        assert from_json(RunSummary, json.loads(json.dumps(to_json(summary)))) == summary


documents = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
files = st.lists(
    st.tuples(
        st.sampled_from(["p1", "p-2", "ü"]),
        st.sampled_from(["r", "r.2"]),
        st.lists(st.text(alphabet="abc._-é ", min_size=1, max_size=6), min_size=1, max_size=3)
        .filter(lambda parts: all(part.strip(".") for part in parts))
        .map(lambda parts: "/" + "/".join(parts)),
        st.sampled_from([b"", b"dup", b"x" * 3000]) | st.binary(max_size=2000),
        st.dictionaries(st.text(max_size=5), documents, max_size=3),
    ),
    max_size=12,
)


class TestProperties:
    @settings(max_examples=25)
    @given(
        files,
        st.dictionaries(
            st.text(min_size=1, max_size=8),
            st.dictionaries(st.text(max_size=6), documents, max_size=3),
            max_size=4,
        ),
        st.booleans(),
    )
    def test_any_repository_round_trips(
        self, entries: list[Any], common: dict[str, Any], compression: bool
    ) -> None:
        """A random repository backed up and restored into an empty one is identical,
        record for record and byte for byte (an empty one is a failed backup, tested apart)."""
        assume(entries or common)
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            with (
                SqliteRepository(str(root / "a.db")) as source,
                SqliteRepository(str(root / "b.db")) as target,
            ):
                for key, document in common.items():
                    source.put_document("user", key, document)
                for project, repo, path, data, metadata in entries:
                    source.put_project(project)
                    source.put_repository(project, repo)
                    source.put_file(project, repo, path, data, metadata=metadata)
                _, restored = backup_and_restore(
                    source, target, root / "store", compression=compression
                )
                assert restored.state is TaskState.FINISHED, restored.errors
                assert target.snapshot() == source.snapshot()


class TestExecutors:
    def test_blobs_move_as_picklable_jobs_on_a_process_pool(
        self, repo: SqliteRepository, empty: SqliteRepository, tmp_path: Path
    ) -> None:
        """With a ProcessPoolExecutor, a reopenable source copies its blobs in other
        processes, and the backup restores exactly."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            summary = run(Engine(repo, executor=pool), body(tmp_path / "store"))
        assert summary.state is TaskState.FINISHED, summary.errors
        assert summary.notes == ()
        assert summary.counts.blobs_written == len(
            {r.blob for r in repo.snapshot()["records"].values() if r.blob}
        )
        restored = run(Engine(empty), restore_body(str(summary.location)))
        assert restored.state is TaskState.FINISHED
        assert empty.snapshot() == repo.snapshot()

    def test_a_source_that_cannot_be_reopened_says_so(self, tmp_path: Path) -> None:
        """A source without a reopener moves its blobs on threads and the summary says why."""
        from concurrent.futures import ThreadPoolExecutor

        source = MemoryRepository()
        sample(source)
        with ThreadPoolExecutor(2) as pool:
            summary = run(Engine(source, executor=pool), body(tmp_path))
        assert summary.state is TaskState.FINISHED
        assert any("cannot be reopened" in note for note in summary.notes)


class TestTaskRunners:
    def test_submit_runs_as_many_tasks_at_once_as_max_workers(self, tmp_path: Path) -> None:
        """With max_workers=6, six submitted tasks run side by side: each waits in its first
        progress event until all six are running, which four runners could never reach."""
        source = MemoryRepository()
        sample(source)
        together = threading.Barrier(6, timeout=20)
        waited: set[str] = set()

        def on_progress(event: Progress) -> None:
            if event.task_id not in waited:
                waited.add(event.task_id)
                together.wait()

        with Engine(source, max_workers=6, on_progress=on_progress) as engine:
            ids = [
                engine.create_task({**body(tmp_path / "store"), "name": f"t{n}"}) for n in range(6)
            ]
            futures = [engine.submit(task_id) for task_id in ids]
            summaries = [future.result(timeout=60) for future in futures]
        assert [s.state for s in summaries] == [TaskState.FINISHED] * 6, [
            s.errors for s in summaries
        ]


class TestUpdateTask:
    def test_update_keeps_identity_and_history(
        self, repo: SqliteRepository, tmp_path: Path
    ) -> None:
        """update_task changes what a task does and keeps its id, creation and runs."""
        engine = Engine(repo)
        task_id = engine.create_task(body(tmp_path))
        engine.execute(task_id)
        before = engine.get_task(task_id)
        updated = engine.update_task(task_id, body(tmp_path, increment=True), user="bob")
        assert updated.content.increment is True
        assert updated.id == task_id
        assert updated.created_date == before.created_date
        assert updated.last_run == before.last_run
        assert updated.last_modified_by == "bob"
        assert len(engine.runs(task_id)) == 1

    def test_update_is_validated(self, repo: SqliteRepository, tmp_path: Path) -> None:
        """A change that would make an invalid task is refused and nothing changes."""
        engine = Engine(repo)
        task_id = engine.create_task(body(tmp_path))
        with pytest.raises(ValidationError) as caught:
            engine.update_task(task_id, body(tmp_path, commonData=False, projects=[]))
        assert [p.path for p in caught.value.problems] == ["$.content"]
        assert engine.get_task(task_id).content.common_data is True


def test_restore_progress_has_the_backups_blob_bytes_as_total(tmp_path: Path) -> None:
    """A restore's progress events carry a total: the blob bytes its backup's manifest
    counts, so a bar can show how far it got and how long it has left."""
    from repobackup import MemoryRepository

    source = MemoryRepository()
    source.put_project("p")
    source.put_repository("p", "r")
    contents = [b"a" * 1000, b"b" * 3000, b"c" * 7]
    for number, data in enumerate(contents):
        source.put_file("p", "r", f"/f{number}", data)
    with Engine(source) as engine:
        backup = engine.execute(
            engine.create_task(
                {
                    "name": "n",
                    "storeLocation": str(tmp_path),
                    "content": {"commonData": False, "projects": [{"projectId": "p"}]},
                }
            )
        )
    events: list[Progress] = []
    target = MemoryRepository()
    with Engine(source, target=target, on_progress=events.append) as engine:
        restored = engine.execute(
            engine.create_task(
                {
                    "name": "r",
                    "type": "DATA_RESTORE",
                    "storeLocation": backup.location,
                    "content": {"projects": [{"projectId": "p"}]},
                }
            )
        )
    assert restored.state.value == "FINISHED"
    totals = {event.total_bytes for event in events}
    assert totals == {sum(len(data) for data in contents)}
    assert target.read_file("p", "r", "/f1") == contents[1]
