"""The original server's backups through the public API: Engine restore into SqliteRepository,
Engine.verify, and ``repobackup ls``, ``verify`` and ``restore`` in a child process."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import bkrepo_fixture as fx
from helpers import last_json
from hostile import run_cli
from repobackup import Engine, RunSummary, SqliteRepository, TaskState

SHANGHAI = ZoneInfo("Asia/Shanghai")
ALL: dict[str, Any] = {"commonData": True, "projects": [{"projectRegex": "*"}]}
RECORDS = 19  # fx.standard(): 20 lines, one of them a copy of the project's maven metadata
README = "/docs/readme.txt"


def _write(builder: fx.Builder, tmp_path: Path, form: str) -> Path:
    if form == "folder":
        return builder.write_folder(tmp_path / "store")
    return builder.write_zip(tmp_path / "store", separator="\\")


@pytest.fixture(name="form", params=["folder", "windows-zip"])
def _form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="target")
def _target(tmp_path: Path) -> Iterator[SqliteRepository]:
    repository = SqliteRepository(tmp_path / "target.db")
    yield repository
    repository.close()


def _restore(
    target: SqliteRepository,
    location: Path | str,
    content: dict[str, Any] | None = None,
    **setting: str,
) -> RunSummary:
    engine = Engine(target, tz=SHANGHAI)
    try:
        task = engine.create_task(
            {
                "name": "migrate",
                "type": "DATA_RESTORE",
                "storeLocation": str(location),
                "content": content or ALL,
                "backupSetting": setting,
            }
        )
        return engine.execute(task)
    finally:
        engine.close()


def _errors(summary: RunSummary) -> dict[str, str]:
    return {error.key: error.message for error in summary.errors}


class TestEngineRestore:
    def test_round_trip(self, form: str, tmp_path: Path, target: SqliteRepository) -> None:
        """Every record and blob of the server's backup, restored as DESIGN section 12 maps."""
        summary = _restore(target, _write(fx.standard(), tmp_path, form))
        assert summary.state is TaskState.FINISHED, summary.errors
        assert (summary.counts.records_written, summary.counts.records_failed) == (RECORDS, 0)
        assert summary.counts.blobs_written == 4  # readme, old, jar, a.bin; the copy reuses
        assert target.read_file("demo", "generic", README) == fx.DATA["readme"]
        assert target.read_file("demo", "maven", "/copy/readme.txt") == fx.DATA["readme"]
        assert target.read_file("demo", "maven", "/com/x/lib/1.0/lib-1.0.jar") == fx.DATA["jar"]
        user = target.get_document("user", "admin")
        assert user is not None
        assert user["pwd"] == "x"
        project = target.get_document("project", "demo", project_id="demo")
        assert project is not None
        assert project["id"] == fx.object_id(6)
        assert len(target.snapshot()["records"]) == RECORDS

    def test_times_without_offset_are_in_the_engines_zone(
        self, tmp_path: Path, target: SqliteRepository
    ) -> None:
        """A restore into a target through an engine in Shanghai reads 09:30 as 09:30+08."""
        _restore(target, _write(fx.standard(), tmp_path, "folder"))
        records = {(r.collection, r.key): r for r in target.snapshot()["records"].values()}
        project = records[("project", "demo")]
        assert project.modified == datetime(2024, 12, 1, 9, 30, tzinfo=SHANGHAI)

    def test_a_task_folder_restores_its_newest_backup(
        self, tmp_path: Path, target: SqliteRepository
    ) -> None:
        """``<store>/<name>/`` holding several of the server's backups: the newest is used."""
        fx.standard(fx.Builder("20241223.010000")).write_zip(tmp_path / "store")
        newest = fx.standard(fx.Builder("20241224.010000")).write_folder(tmp_path / "store")
        summary = _restore(target, tmp_path / "store" / "nightly")
        assert summary.state is TaskState.FINISHED
        assert summary.location == str(newest)

    def test_selection(self, form: str, tmp_path: Path, target: SqliteRepository) -> None:
        """The same select function: one repository of one project, no common data."""
        content = {"projects": [{"projectId": "demo", "repoList": ["generic"]}]}
        summary = _restore(target, _write(fx.standard(), tmp_path, form), content)
        assert summary.state is TaskState.FINISHED
        scopes = {
            (r.collection, r.project_id, r.repo_name) for r in target.snapshot()["records"].values()
        }
        assert scopes == {
            ("project", "demo", None),
            ("repository", "demo", "generic"),
            ("node", "demo", "generic"),
        }  # the maven metadata in generic's folder is maven's, which is not selected
        assert target.get_document("user", "admin") is None
        assert target.read_file("demo", "generic", README) == fx.DATA["readme"]

    def test_skip_and_overwrite(self, form: str, tmp_path: Path, target: SqliteRepository) -> None:
        """SKIP keeps a file the target has; OVERWRITE replaces it with the backup's."""
        location = _write(fx.standard(), tmp_path, form)
        target.put_file("demo", "generic", README, b"mine")
        skipped = _restore(target, location, conflictStrategy="SKIP")
        assert skipped.counts.records_skipped == 1
        assert target.read_file("demo", "generic", README) == b"mine"
        _restore(target, location, conflictStrategy="OVERWRITE")
        assert target.read_file("demo", "generic", README) == fx.DATA["readme"]


def _bad_blob(builder: fx.Builder) -> str:
    sha = hashlib.sha256(fx.DATA["jar"]).hexdigest()
    builder.blobs[sha] = b"tampered"
    return sha


class TestNothingTrusted:
    def test_a_bad_blob_is_never_written(
        self, form: str, tmp_path: Path, target: SqliteRepository
    ) -> None:
        """CONTINUE: the blob and its node fail; the rest is restored."""
        builder = fx.standard()
        sha = _bad_blob(builder)
        summary = _restore(target, _write(builder, tmp_path, form))
        assert summary.state is TaskState.FINISHED
        assert "does not match its sha256" in _errors(summary)[sha]
        assert not target.has_blob(sha)
        assert summary.counts.records_failed == 1
        assert target.read_file("demo", "generic", README) == fx.DATA["readme"]

    def test_malformed_lines_are_errors_with_file_and_line(
        self, form: str, tmp_path: Path, target: SqliteRepository
    ) -> None:
        """Each bad line is an error of the run named by its file and line; the rest goes in."""
        builder = fx.standard()
        builder.files["demo/generic/node.json"].insert(1, b'{  "id" : \n')
        summary = _restore(target, _write(builder, tmp_path, form))
        assert summary.state is TaskState.FINISHED
        errors = _errors(summary)
        assert "not a JSON line" in errors["demo/generic/node.json:2"]
        assert summary.counts.records_failed == 1
        assert summary.counts.records_written == RECORDS

    def test_hostile_entries_are_refused_and_reported(
        self, tmp_path: Path, target: SqliteRepository
    ) -> None:
        """Names that escape the tree are errors of the run; nothing is written outside."""
        builder = fx.standard()
        for name in ("../evil.json", "/etc/passwd", "C:\\evil.json"):
            builder.raw[name] = b'{  "id" : "x"}\n'
        summary = _restore(target, builder.write_zip(tmp_path / "store"))
        errors = _errors(summary)
        for name in ("../evil.json", "/etc/passwd", "C:\\evil.json"):
            assert "refused" in errors[name]
            assert name not in errors[name]  # named once, by the error's key
        assert summary.counts.records_written == RECORDS
        assert not (tmp_path / "evil.json").exists()

    def test_fast_fail_stops_at_the_first_error(
        self, tmp_path: Path, target: SqliteRepository
    ) -> None:
        """FAST_FAIL: the first malformed line ends the run as FAILED."""
        builder = fx.standard()
        builder.files["user.json"].insert(0, b"not json\n")
        summary = _restore(target, _write(builder, tmp_path, "folder"), errorStrategy="FAST_FAIL")
        assert summary.state is TaskState.FAILED
        assert any("user.json:1" in e.message for e in summary.errors)
        assert target.get_document("project", "demo", project_id="demo") is None

    def test_fast_fail_on_a_bad_blob(self, tmp_path: Path, target: SqliteRepository) -> None:
        builder = fx.standard()
        sha = _bad_blob(builder)
        summary = _restore(
            target, _write(builder, tmp_path, "windows-zip"), errorStrategy="FAST_FAIL"
        )
        assert summary.state is TaskState.FAILED
        assert not target.has_blob(sha)


class TestEngineVerify:
    def test_a_sound_backup_is_ok_with_a_note(self, form: str, tmp_path: Path) -> None:
        """ok, no problems, and a note that nothing marks the backup complete."""
        location = str(_write(fx.standard(), tmp_path, form))
        with Engine(SqliteRepository(tmp_path / "r.db")) as engine:
            report = engine.verify(location)
        assert report.ok
        assert not report.problems
        assert (report.records, report.blobs) == (RECORDS, 4)
        (note,) = report.notes
        assert "completeness marker" in note

    def test_every_bad_blob_and_malformed_line(self, form: str, tmp_path: Path) -> None:
        builder = fx.standard()
        sha = _bad_blob(builder)
        builder.files["role.json"].append(b"[1]\n")
        builder.node("demo", "generic", "/lost.bin", b"never stored", store=False)
        location = str(_write(builder, tmp_path, form))
        with Engine(SqliteRepository(tmp_path / "r.db")) as engine:
            report = engine.verify(location)
        assert not report.ok
        members = {p.member: p.message for p in report.problems}
        assert "does not match" in members[f"bk+store/{sha[:2]}/{sha[2:4]}/{sha}"]
        assert "not a JSON object" in members["role.json:2"]
        lost = hashlib.sha256(b"never stored").hexdigest()
        assert "is not in bk+store" in members[f"bk+store/{lost[:2]}/{lost[2:4]}/{lost}"]
        assert report.notes


def _cli(*args: str | Path) -> Any:
    result = run_cli(list(args))
    assert not result.timed_out
    return result


class TestCommandLine:
    def test_ls(self, form: str, tmp_path: Path) -> None:
        """The stamp, projects, repositories and record counts; as JSON too."""
        location = _write(fx.standard(), tmp_path, form)
        shown = _cli("ls", location, "--plain", "--source-zone", "Asia/Shanghai")
        assert shown.returncode == 0, shown.stderr
        assert "bk-repo" in shown.stdout
        assert fx.STAMP in shown.stdout
        assert "2024-12-24T17:13:54+08:00" in shown.stdout
        assert "2 (3 repositories)" in shown.stdout
        assert "no completeness marker" in shown.stdout
        data = json.loads(_cli("ls", location, "--json").stdout)
        (entry,) = data
        summary = entry["bkrepo"]
        assert summary["projects"] == {"demo": ["generic", "maven"], "other": ["files"]}
        counts = {(s["projectId"], s["repoName"]): s["collections"] for s in summary["records"]}
        assert counts[("demo", "generic")] == {"repository": 1, "node": 3, "maven_metadata": 1}
        files = _cli("ls", location, "--files").stdout.splitlines()
        assert "demo/generic/docs/old.txt (deleted)" in files
        assert "demo/generic/docs" not in files

    def test_ls_of_a_task_folder(self, tmp_path: Path) -> None:
        fx.standard().write_zip(tmp_path / "store")
        shown = _cli("ls", tmp_path / "store" / "nightly", "--plain")
        assert shown.returncode == 0, shown.stderr
        assert f"nightly-{fx.STAMP}.zip" in shown.stdout
        assert "bk-repo (no completeness marker)" in shown.stdout
        assert "incomplete" not in shown.stdout  # named like ours, not taken for one of ours

    def test_verify(self, form: str, tmp_path: Path) -> None:
        """Exit 0 with the note for a sound backup; 1 naming the bad blob otherwise."""
        location = _write(fx.standard(), tmp_path / "good", form)
        good = _cli("verify", location, "--plain", "--source-zone", "UTC")
        assert good.returncode == 0, good.stderr
        assert f"ok: {location}: {RECORDS} records read and 4 blobs" in good.stdout
        assert "no manifest, checksums or completeness marker" in good.stdout
        builder = fx.standard()
        sha = _bad_blob(builder)
        bad = _cli("verify", _write(builder, tmp_path / "bad", form), "--plain")
        assert bad.returncode == 1
        assert sha in bad.stdout
        assert "does not match" in bad.stdout

    def test_restore(self, form: str, tmp_path: Path) -> None:
        location = _write(fx.standard(), tmp_path, form)
        database = tmp_path / "server.db"
        done = _cli(
            "restore", "-r", database, "--store", location, "--all",
            "--source-zone", "Asia/Shanghai", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = last_json(done.stdout)
        assert summary["state"] == "FINISHED"
        with SqliteRepository(database) as repository:
            assert repository.read_file("demo", "generic", README) == fx.DATA["readme"]
            records = {(r.collection, r.key): r for r in repository.snapshot()["records"].values()}
        assert records[("project", "demo")].modified == datetime(
            2024, 12, 1, 9, 30, tzinfo=SHANGHAI
        )

    def test_restore_with_a_bad_blob_and_skip(self, tmp_path: Path) -> None:
        """A bad blob is exit code 3 (some failed); SKIP leaves an existing file alone."""
        builder = fx.standard()
        sha = _bad_blob(builder)
        location = _write(builder, tmp_path, "windows-zip")
        database = tmp_path / "server.db"
        with SqliteRepository(database) as repository:
            repository.put_file("demo", "generic", README, b"mine")
        done = _cli(
            "restore", "-r", database, "--store", location, "--all", "--conflict", "SKIP",
            "--plain",
        )  # fmt: skip
        assert done.returncode == 3, done.stderr
        assert sha in done.stdout + done.stderr
        with SqliteRepository(database) as repository:
            assert repository.read_file("demo", "generic", README) == b"mine"
            assert not repository.has_blob(sha)

    def test_an_unknown_zone_is_a_usage_error(self, tmp_path: Path) -> None:
        location = _write(fx.standard(), tmp_path, "folder")
        shown = _cli("ls", location, "--source-zone", "Mars/Olympus")
        assert shown.returncode == 2
        assert "--source-zone" in shown.stderr
        assert "Mars/Olympus" in shown.stderr


@pytest.mark.slow
def test_memory_stays_flat_restoring_a_large_node_json(tmp_path: Path) -> None:
    """``repobackup restore`` of a node.json of 250 000 nodes (about 100 MB) in a child
    process: its peak RSS stays well below the size of the file."""
    builder = fx.Builder()
    project = {"id": builder.next_id(), "name": "big", "lastModifiedDate": fx.TIME}
    builder.repository(project, "r")
    nodes = tmp_path / "node.json"
    size = fx.write_nodes(nodes, "big", "r", 250_000)
    builder.raw[f"{builder.stamp}/big/r/node.json"] = nodes
    location = builder.write_zip(tmp_path / "store")
    done = run_cli(
        ["restore", "-r", tmp_path / "big.db", "--store", location, "--all", "--quiet"],
        timeout=280,
    )
    assert done.returncode == 0, done.stderr
    assert size > 90_000_000
    assert done.peak_rss < size * 0.8, (done.peak_rss_mib, size)
