"""Tests for `repobackup demo`: the sample is built, backed up, restored and matched, and the
commands it suggests next work as printed."""

from __future__ import annotations

import hashlib
import shlex
import time
from pathlib import Path

import pytest

from repobackup import SqliteRepository
from repobackup.cli import EXIT_FAILED, EXIT_OK, build_parser, main
from repobackup.cli.demo import (
    MARKER,
    PROJECTS,
    build_sample,
    describe_differences,
    prepare_folder,
    sample_files,
)


@pytest.fixture(name="demo_output")
def _demo_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    monkeypatch.chdir(tmp_path)
    began = time.monotonic()
    code = main(["demo"])
    elapsed = time.monotonic() - began
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    assert elapsed < 60
    return out


class TestDemo:
    """The whole demo, run in a temporary folder."""

    def test_restored_matches(self, demo_output: str, tmp_path: Path) -> None:
        """The restored repository holds exactly what the sample repository holds."""
        folder = tmp_path / "repobackup-demo"
        with (
            SqliteRepository(folder / "source.db") as source,
            SqliteRepository(folder / "restored.db") as restored,
        ):
            original = source.snapshot()
            assert restored.snapshot() == original
        nodes = [r for r in original["records"].values() if r.collection == "node"]
        assert len({r.project_id for r in nodes}) == 3
        assert len(nodes) >= 200
        assert len(original["blobs"]) < len(nodes)  # duplicate contents are one blob
        assert {"user", "role", "permission"} <= {
            r.collection for r in original["records"].values() if r.project_id is None
        }
        assert any(r.document["metadata"] for r in nodes)

    def test_backup_is_compressed(self, demo_output: str, tmp_path: Path) -> None:
        """The backup is a single zip under backups/demo/, and the run says where it is."""
        (backup,) = (tmp_path / "repobackup-demo" / "backups" / "demo").iterdir()
        assert backup.suffix == ".zip"
        assert f"backup               {backup.relative_to(tmp_path)}" in demo_output
        assert "identical" in demo_output
        assert "verifying the backup: ok" in demo_output

    def test_suggested_commands_work(
        self, demo_output: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every command under "try next" runs as printed (serve is only parsed)."""
        commands = [
            shlex.split(line.strip())[1:]
            for line in demo_output.splitlines()
            if line.startswith("  repobackup ")
        ]
        assert {argv[0] for argv in commands} == {"ls", "verify", "tasks", "restore", "serve"}
        for argv in commands:
            if argv[0] == "serve":
                assert build_parser().parse_args(argv).command == "serve"
                continue
            code = main(argv)
            captured = capsys.readouterr()
            assert code == EXIT_OK, (argv, captured.err)
            assert captured.out

    def test_tasks_are_listed(self, demo_output: str) -> None:
        """The demo shows its backup and restore tasks, both FINISHED."""
        table = demo_output[demo_output.index("tasks") :]
        assert table.count("FINISHED") >= 2
        assert "DATA_BACKUP" in table
        assert "DATA_RESTORE" in table

    def test_runs_again_fresh(
        self, demo_output: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A second run wipes the first run's folder and starts again."""
        folder = tmp_path / "repobackup-demo"
        (folder / "leftover.txt").write_text("from the first run")
        assert main(["demo", "--dir", str(folder)]) == EXIT_OK
        capsys.readouterr()
        assert not (folder / "leftover.txt").exists()
        assert len(list((folder / "backups" / "demo").iterdir())) == 1


class TestFolder:
    """The demo folder is only ever wiped when an earlier demo made it."""

    def test_refuses_a_foreign_folder(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A non-empty folder without the demo's marker is left alone: exit 1, files kept."""
        folder = tmp_path / "precious"
        folder.mkdir()
        (folder / "thesis.tex").write_text("years of work")
        assert main(["demo", "--dir", str(folder)]) == EXIT_FAILED
        assert "not made by `repobackup demo`" in capsys.readouterr().err
        assert (folder / "thesis.tex").read_text() == "years of work"

    def test_empty_folder_is_used(self, tmp_path: Path) -> None:
        """An empty folder is taken and marked."""
        folder = tmp_path / "empty"
        folder.mkdir()
        assert prepare_folder(folder) == folder
        assert (folder / MARKER).is_file()

    def test_a_file_is_not_a_folder(self, tmp_path: Path) -> None:
        """A file where the folder should be is refused."""
        file = tmp_path / "file"
        file.write_text("x")
        with pytest.raises(FileExistsError, match="not a folder"):
            prepare_folder(file)


class TestSample:
    """The sample data: a few hundred files, some the same bytes, some binary."""

    def test_deterministic(self) -> None:
        """The same seed gives the same files."""
        first = [(f.project, f.repo, f.path, f.data) for f in sample_files(7)]
        again = [(f.project, f.repo, f.path, f.data) for f in sample_files(7)]
        assert first == again
        assert first != [(f.project, f.repo, f.path, f.data) for f in sample_files(8)]

    def test_shape(self) -> None:
        """Files spread over every repository, with duplicates and non-UTF-8 content."""
        files = list(sample_files())
        assert 200 <= len(files) <= 500
        assert {(f.project, f.repo) for f in files} == {
            (p, r) for p, repos in PROJECTS.items() for r, _ in repos
        }
        digests = [hashlib.sha256(f.data).hexdigest() for f in files]
        assert len(set(digests)) < len(digests)
        binary = 0
        for file in files:
            try:
                file.data.decode("utf-8")
            except UnicodeDecodeError:
                binary += 1
        assert binary > 50

    def test_counts(self, tmp_path: Path) -> None:
        """build_sample reports what it stored, and the repository holds that."""
        with SqliteRepository(tmp_path / "r.db") as repo:
            counts = build_sample(repo, seed=3)
            records = repo.snapshot()["records"].values()
            nodes = [r for r in records if r.collection == "node"]
            assert counts["files"] == len(nodes)
            assert counts["blobs"] == len({r.blob for r in nodes})
            assert counts["projects"] == len(PROJECTS)
            assert counts["documents"] == sum(1 for r in records if r.project_id is None)


class TestDifferences:
    """describe_differences names what a restore got wrong."""

    def test_names_each_kind(self, tmp_path: Path) -> None:
        """A missing record, an extra one, a changed one and a changed blob are all named."""
        with (
            SqliteRepository(tmp_path / "a.db") as left,
            SqliteRepository(tmp_path / "b.db") as right,
        ):
            for repo in (left, right):
                repo.put_document("user", "same", {"v": 1})
                repo.put_document("user", "changed", {"v": 1})
            left.put_document("user", "only-left", {})
            right.put_document("user", "only-right", {})
            right.put_document("user", "changed", {"v": 2})
            assert describe_differences(left.snapshot(), left.snapshot()) == []
            lines = describe_differences(left.snapshot(), right.snapshot())
        assert any(
            line.startswith("missing after restore") and "only-left" in line for line in lines
        )
        assert any(
            line.startswith("not in the original") and "only-right" in line for line in lines
        )
        assert any(line.startswith("differs") and "changed" in line for line in lines)

    def test_limit(self, tmp_path: Path) -> None:
        """Past the limit the rest is counted, not listed."""
        with (
            SqliteRepository(tmp_path / "a.db") as left,
            SqliteRepository(tmp_path / "b.db") as right,
        ):
            for number in range(15):
                left.put_document("user", f"u{number}", {})
            lines = describe_differences(left.snapshot(), right.snapshot(), limit=10)
        assert len(lines) == 11
        assert lines[-1] == "… 5 more"
