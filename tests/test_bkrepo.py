"""The reader of the original server's own backups (folder and zip), unit by unit.

These reach the private reader for what the public API does not show (scopes, line counts,
callbacks, the fixture's bytes); restore, verify and the command line on such backups are
tested through public names in test_bkrepo_restore.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import fsspec
import pytest

import bkrepo_fixture as fx
from private import BkrepoBackup, BkrepoProblem, detect, find_bkrepo, open_bkrepo
from repobackup import Record, Scope, SqliteRepository
from repobackup.exceptions import ArchiveError

SHANGHAI = ZoneInfo("Asia/Shanghai")
LOCAL = fsspec.filesystem("file")


def _open(path: Path) -> BkrepoBackup:
    return open_bkrepo(LOCAL, str(path), zone=SHANGHAI)


@pytest.fixture(
    name="form",
    params=["folder", "zip", "windows-zip", "stored-zip", "memory", "memory-zip"],
)
def _form(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BkrepoBackup]:
    builder = fx.standard()
    if request.param == "memory":
        fs = fsspec.filesystem("memory")
        root = f"/bk-{os.getpid()}-{id(tmp_path)}/{builder.stamp}"
        for entry, data in builder.entries():
            assert isinstance(data, bytes)
            fs.pipe_file(f"{root.rsplit('/', 1)[0]}/{entry}", data)
        backup = open_bkrepo(fs, root, zone=SHANGHAI)
    elif request.param == "memory-zip":
        fs = fsspec.filesystem("memory")
        path = f"/bk-{os.getpid()}-{id(tmp_path)}/nightly-{builder.stamp}.zip"
        fs.pipe_file(path, builder.write_zip(tmp_path).read_bytes())
        backup = open_bkrepo(fs, path, zone=SHANGHAI)
    elif request.param == "folder":
        backup = _open(builder.write_folder(tmp_path))
    else:
        separator = "\\" if request.param == "windows-zip" else "/"
        method = zipfile.ZIP_STORED if request.param == "stored-zip" else zipfile.ZIP_DEFLATED
        backup = _open(builder.write_zip(tmp_path, separator=separator, method=method))
    with backup:
        yield backup


def _all(backup: BkrepoBackup) -> list[Record]:
    return [record for scope in backup.scopes() for record in backup.records(scope)]


def _by(records: list[Record], collection: str) -> dict[str, Record]:
    return {r.key: r for r in records if r.collection == collection}


class TestLayout:
    def test_both_forms_are_recognised_and_ours_is_not(self, tmp_path: Path) -> None:
        """detect() takes the server's folder and zips, not our own backups or other folders."""
        builder = fx.standard()
        assert detect(LOCAL, str(builder.write_folder(tmp_path)))
        assert detect(LOCAL, str(builder.write_zip(tmp_path)))
        assert detect(LOCAL, str(builder.write_zip(tmp_path, "win", separator="\\")))
        ours = tmp_path / "ours" / "nightly-20241224.171354"
        ours.mkdir(parents=True)
        (ours / "manifest.json").write_text("{}")
        (ours / "user.json").write_text("")
        assert not detect(LOCAL, str(ours))
        assert not detect(LOCAL, str(tmp_path / "missing"))
        our_zip = tmp_path / "ours.zip"
        with zipfile.ZipFile(our_zip, "w") as archive:
            archive.writestr("manifest.json", "{}")
        assert not detect(LOCAL, str(our_zip))

    def test_a_backup_without_common_data_is_recognised_by_its_repository_folders(
        self, tmp_path: Path
    ) -> None:
        """Common-data files and bk+store may be absent; repository folders are enough."""
        builder = fx.Builder()
        project = {"id": builder.next_id(), "name": "p", "lastModifiedDate": fx.TIME}
        builder.repository(project, "r")
        assert detect(LOCAL, str(builder.write_folder(tmp_path)))

    def test_the_zip_is_deflated_with_data_descriptors(self, tmp_path: Path) -> None:
        """The fixture writes what ZipOutputStream writes: DEFLATE, descriptors, no folders."""
        path = fx.standard().write_zip(tmp_path)
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos)
        assert all(i.flag_bits & 0x8 for i in infos)
        assert not any(i.filename.endswith("/") for i in infos)

    def test_scopes_and_tree(self, form: BkrepoBackup) -> None:
        """Common scope first, then each project and its repositories, sorted."""
        assert form.tree() == {"demo": ["generic", "maven"], "other": ["files"]}
        assert list(form.scopes()) == [
            Scope(),
            Scope("demo"),
            Scope("demo", "generic"),
            Scope("demo", "maven"),
            Scope("other"),
            Scope("other", "files"),
        ]
        assert form.stamp == fx.STAMP
        assert form.started == datetime(2024, 12, 24, 17, 13, 54, tzinfo=SHANGHAI)


class TestMapping:
    def test_common_data(self, form: BkrepoBackup) -> None:
        """The five common collections, keyed by the server's unique keys."""
        records = list(form.records(Scope()))
        assert [(r.collection, r.key) for r in records] == [
            ("user", "admin"),
            ("role", fx.object_id(2)),
            ("permission", fx.object_id(3)),
            ("account", "ci"),
            ("temporary_token", fx.object_id(5)),
        ]
        assert all(r.project_id is None and r.repo_name is None for r in records)

    def test_each_project_once(self, form: BkrepoBackup) -> None:
        """project.json is in both repository folders of demo; demo is one record."""
        records = _all(form)
        projects = [r for r in records if r.collection == "project"]
        assert [(r.key, r.project_id, r.repo_name) for r in projects] == [
            ("demo", "demo", None),
            ("other", "other", None),
        ]
        assert projects[0].document["displayName"] == "Démo"

    def test_repositories_packages_and_versions(self, form: BkrepoBackup) -> None:
        """Each in the scope of its repository, package versions keyed by package and name."""
        records = list(form.records(Scope("demo", "maven")))
        assert [(r.collection, r.key) for r in records if r.collection != "node"] == [
            ("repository", "maven"),
            ("package", "gav://com.x:lib"),
            ("package_version", "gav://com.x:lib#1.0"),
            ("maven_metadata", fx.object_id(500)),
        ]
        assert all(r.scope == Scope("demo", "maven") for r in records)

    def test_nodes(self, form: BkrepoBackup) -> None:
        """Nodes keyed by fullPath, blob and size as the node says, folders without a blob."""
        nodes = _by(list(form.records(Scope("demo", "generic"), "node")), "node")
        folder = nodes["/docs"]
        assert (folder.blob, folder.size, folder.deleted) == (None, 0, False)
        readme = nodes["/docs/readme.txt"]
        assert readme.blob == hashlib.sha256(fx.DATA["readme"]).hexdigest()
        assert readme.size == len(fx.DATA["readme"])
        assert readme.document["metadata"][0]["value"] == "ops"

    def test_soft_deleted_nodes_are_documents_with_their_deleted_field(
        self, form: BkrepoBackup
    ) -> None:
        """A soft-deleted node is kept, not a tombstone, under a key of its own."""
        nodes = _by(list(form.records(Scope("demo", "generic"), "node")), "node")
        old = nodes["/docs/old.txt#deleted:2024-12-23T10:00:00.5"]
        assert old.deleted is False
        assert old.document["deleted"] == "2024-12-23T10:00:00.5"
        assert old.document["fullPath"] == "/docs/old.txt"
        assert old.blob == hashlib.sha256(fx.DATA["old"]).hexdigest()

    def test_maven_metadata_once_in_its_own_repository(self, form: BkrepoBackup) -> None:
        """Both folders of demo hold the project's metadata; it is read once, in maven."""
        metadata = [r for r in _all(form) if r.collection == "maven_metadata"]
        assert [(r.key, r.repo_name) for r in metadata] == [(fx.object_id(500), "maven")]
        assert not form.problems

    def test_documents_are_verbatim(self, form: BkrepoBackup, tmp_path: Path) -> None:
        """Every field of every line, the server's own ids and offset-less times included."""
        builder = fx.standard()
        expected = sorted(
            json.dumps(json.loads(line), sort_keys=True)
            for entry, lines in builder.files.items()
            if not (entry.endswith("project.json") and "/maven/" in entry)
            and not (entry.endswith("maven-metadata.json") and "/generic/" in entry)
            for line in lines
        )
        got = sorted(json.dumps(dict(r.document), sort_keys=True) for r in _all(form))
        assert got == expected

    def test_times_without_offset_are_in_the_given_zone(self, tmp_path: Path) -> None:
        """modified comes from lastModifiedDate (else updateAt, createdDate, the stamp)."""
        folder = fx.standard().write_folder(tmp_path)
        for zone in (SHANGHAI, timezone(timedelta(hours=-5))):
            with open_bkrepo(LOCAL, str(folder), zone=zone) as backup:
                records = _all(backup)
            project = _by(records, "project")["demo"]
            assert project.modified == datetime(2024, 12, 1, 9, 30, tzinfo=zone)
            permission = next(r for r in records if r.collection == "permission")
            assert permission.modified == datetime(2024, 12, 20, 8, 0, tzinfo=zone)
            user = _by(records, "user")["admin"]
            assert user.modified == datetime(2024, 12, 24, 17, 13, 54, tzinfo=zone)
            assert all(r.modified.utcoffset() is not None for r in records)


class TestNothingTrusted:
    def test_hostile_zip_entries_are_refused_and_reported(self, tmp_path: Path) -> None:
        """Entries that escape the tree are never listed or read; the rest still is."""
        builder = fx.standard()
        stamp = builder.stamp
        hostile = {
            "../evil.json": "'..' component",
            "/etc/passwd": "absolute path",
            "C:\\evil.json": "drive letter",
            f"{stamp}/demo/gen\\eric/node.json": "path separator",
            f"{stamp}/demo/../../up.json": "'..' component",
            "elsewhere/user.json": "outside",
            f"{stamp}/demo//x.json": "empty",
        }
        for name in hostile:
            builder.raw[name] = b'{  "id" : "x"}\n'
        with _open(builder.write_zip(tmp_path)) as backup:
            problems = {p.entry: p for p in backup.problems}
            for name, why in hostile.items():
                assert problems[name].kind == "hostile"
                assert why in problems[name].message
            assert backup.tree() == {"demo": ["generic", "maven"], "other": ["files"]}
            assert len(_all(backup)) == 19

    def test_a_slash_inside_a_windows_name_is_refused(self, tmp_path: Path) -> None:
        """In a zip written with backslashes, a slash in a component is not a separator."""
        builder = fx.standard()
        builder.raw[f"{builder.stamp}\\demo\\generic/x\\node.json"] = b""
        with _open(builder.write_zip(tmp_path, separator="\\")) as backup:
            (problem,) = backup.problems
            assert problem.kind == "hostile"
            assert "separator" in problem.message

    def test_a_symbolic_link_in_a_folder_is_refused(self, tmp_path: Path) -> None:
        """A folder's symbolic link is reported and never followed."""
        folder = fx.standard().write_folder(tmp_path)
        outside = tmp_path / "outside"
        (outside / "r").mkdir(parents=True)
        (folder / "linked").symlink_to(outside)
        with _open(folder) as backup:
            assert "linked" not in backup.tree()
            assert [(p.kind, p.entry) for p in backup.problems] == [("hostile", "linked")]

    @pytest.mark.parametrize("zipped", [False, True])
    def test_a_blob_that_does_not_match_its_name_is_refused(
        self, tmp_path: Path, zipped: bool
    ) -> None:
        """Reading it raises ArchiveError; a target given it stores nothing; verify says so."""
        builder = fx.standard()
        sha = hashlib.sha256(fx.DATA["jar"]).hexdigest()
        builder.blobs[sha] = b"tampered"
        path = builder.write_zip(tmp_path) if zipped else builder.write_folder(tmp_path)
        target = SqliteRepository(tmp_path / "repo.db")
        with _open(path) as backup:
            file = backup.open_blob(sha)
            with pytest.raises(ArchiveError, match="does not match its sha256"):
                target.write_blob(sha, iter(lambda: file.read(4), b""))
            file.close()
            assert not target.has_blob(sha)
            report = backup.verify()
        assert not report.ok
        bad = [p for p in report.problems if p.kind == "blob"]
        assert {p.entry for p in bad} == {f"bk+store/{sha[:2]}/{sha[2:4]}/{sha}"}

    def test_malformed_lines_are_reported_with_file_and_line(self, tmp_path: Path) -> None:
        """Each bad line is skipped and named; the good lines around it are read."""
        builder = fx.standard()
        entry = "demo/generic/node.json"
        lines = builder.files[entry]
        lines.insert(1, b'{  "id" : \n')
        lines.insert(2, b"[ 1, 2 ]\n")
        lines.insert(
            3,
            fx.line(
                {
                    "id": "z",
                    "fullPath": "/bad",
                    "folder": False,
                    "sha256": "NOT-HEX",
                    "size": 1,
                    "projectId": "demo",
                    "repoName": "generic",
                }
            ),
        )
        lines.insert(
            4,
            fx.line(
                {
                    "id": "y",
                    "fullPath": "/elsewhere",
                    "folder": True,
                    "projectId": "other",
                    "repoName": "generic",
                }
            ),
        )
        with _open(builder.write_folder(tmp_path)) as backup:
            seen: list[BkrepoProblem] = []
            nodes = list(backup.records(Scope("demo", "generic"), "node", on_problem=seen.append))
            assert len(nodes) == 3
            assert [(p.kind, p.where) for p in seen] == [
                ("malformed", f"{entry}:2"),
                ("malformed", f"{entry}:3"),
                ("malformed", f"{entry}:4"),
                ("malformed", f"{entry}:5"),
            ]
            assert "not a JSON line" in seen[0].message
            assert "not a JSON object" in seen[1].message
            assert seen[2].message.startswith("sha256:")
            assert seen[3].message.startswith("projectId:")
            assert list(backup.problems) == seen

    def test_verify_reports_missing_blobs_and_no_marker(self, tmp_path: Path) -> None:
        """A node whose blob is not in bk+store is reported; so is the missing marker."""
        builder = fx.standard()
        builder.node("demo", "generic", "/lost.bin", b"never stored", store=False)
        with _open(builder.write_zip(tmp_path)) as backup:
            report = backup.verify()
        kinds = [p.kind for p in report.problems]
        assert kinds == ["unmarked", "missing"]
        assert not report.ok
        assert (report.records, report.blobs) == (20, 4)

    def test_a_clean_backup_verifies_with_only_the_marker_noted(self, form: BkrepoBackup) -> None:
        """ok is True when nothing but the absent completeness marker was found."""
        report = form.verify()
        assert report.ok
        assert [p.kind for p in report.problems] == ["unmarked"]

    def test_a_corrupt_deflate_entry_fails_when_read(self, tmp_path: Path) -> None:
        """A flipped byte in a DEFLATE entry is an ArchiveError, never bad records."""
        path = fx.standard().write_zip(tmp_path)
        data = bytearray(path.read_bytes())
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{fx.STAMP}/user.json")
        start = info.header_offset + 30 + len(info.filename) + 10
        data[start] ^= 0xFF
        path.write_bytes(bytes(data))
        with _open(path) as backup, pytest.raises(ArchiveError):
            list(backup.records(Scope(), "user"))

    def test_an_absent_blob_is_an_archive_error(self, form: BkrepoBackup) -> None:
        """open_blob refuses a name that is not there, or not a sha256."""
        with pytest.raises(ArchiveError, match="missing"):
            form.open_blob("0" * 64)
        with pytest.raises(ArchiveError, match="sha256"):
            form.open_blob("../../etc/passwd")


class TestStreaming:
    COUNT = 60_000

    @pytest.mark.parametrize("zipped", [False, True])
    def test_memory_stays_flat_on_a_large_node_json(self, tmp_path: Path, zipped: bool) -> None:
        """Reading tens of megabytes of nodes peaks at a small fraction of the file."""
        builder = fx.Builder()
        project = {"id": builder.next_id(), "name": "big", "lastModifiedDate": fx.TIME}
        builder.repository(project, "r")
        nodes = tmp_path / "node.json"
        size = fx.write_nodes(nodes, "big", "r", self.COUNT)
        builder.raw[f"{builder.stamp}/big/r/node.json"] = nodes
        path = builder.write_zip(tmp_path) if zipped else builder.write_folder(tmp_path)
        with _open(path) as backup:
            tracemalloc.start()
            try:
                count = sum(1 for _ in backup.records(Scope("big", "r"), "node"))
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert count == self.COUNT
        assert size > 20_000_000
        assert peak < size / 10, (peak, size)


class TestMoreLayout:
    def test_a_task_folder_lists_its_backups_oldest_first(self, tmp_path: Path) -> None:
        """find_bkrepo() returns each stamp folder and zip of a <name>/ folder, by stamp."""
        fx.standard(fx.Builder("20241225.010000")).write_folder(tmp_path)
        fx.standard(fx.Builder("20241224.010000")).write_zip(tmp_path)
        (tmp_path / "nightly" / "notes.txt").write_text("not a backup")
        found = find_bkrepo(LOCAL, str(tmp_path / "nightly"))
        assert [Path(p).name for p in found] == [
            "nightly-20241224.010000.zip",
            "20241225.010000",
        ]

    def test_folder_entries_of_other_zip_tools_are_harmless(self, tmp_path: Path) -> None:
        """A zip re-made with folder entries (``<stamp>/``, ``<stamp>/demo/``) reads the same."""
        builder = fx.standard()
        builder.raw[f"{builder.stamp}/"] = b""
        builder.raw[f"{builder.stamp}/demo/"] = b""
        with _open(builder.write_zip(tmp_path)) as backup:
            assert not backup.problems
            assert len(_all(backup)) == 19

    def test_a_linked_folder_inside_bk_store_is_never_read(self, tmp_path: Path) -> None:
        """A blob reached through a linked folder resolves outside the backup: refused."""
        builder = fx.standard()
        folder = builder.write_folder(tmp_path)
        sha = hashlib.sha256(fx.DATA["jar"]).hexdigest()
        outside = tmp_path / "outside"
        (folder / "bk+store" / sha[:2]).rename(outside)
        (folder / "bk+store" / sha[:2]).symlink_to(outside)
        with _open(folder) as backup, pytest.raises(ArchiveError, match="outside the backup"):
            backup.open_blob(sha)

    def test_stray_entries_are_reported_as_unexpected(self, tmp_path: Path) -> None:
        """Files the layout has no place for are named, not read."""
        folder = fx.standard().write_folder(tmp_path)
        (folder / "notes.txt").write_text("x")
        (folder / "demo" / "stray.json").write_text("x")
        (folder / "demo" / "generic" / "extra.json").write_text("x")
        with _open(folder) as backup:
            report = backup.verify()
            again = backup.verify()
        assert {(p.kind, p.entry) for p in report.problems} == {
            ("unmarked", "*"),
            ("unexpected", "notes.txt"),
            ("unexpected", "demo/stray.json"),
            ("unexpected", "demo/generic/extra.json"),
        }
        assert [p.kind for p in again.problems].count("unmarked") == 1

    @pytest.mark.slow
    def test_a_zip_of_more_than_65535_entries(self, tmp_path: Path) -> None:
        """Past 65535 entries the JDK writes zip64 end records; they are read."""
        builder = fx.Builder()
        project = {"id": builder.next_id(), "name": "p", "lastModifiedDate": fx.TIME}
        builder.repository(project, "r")
        for number in range(66_000):
            data = number.to_bytes(4, "big")
            builder.blobs[hashlib.sha256(data).hexdigest()] = data
        with _open(builder.write_zip(tmp_path)) as backup:
            assert sum(1 for _ in backup.blobs()) == 66_000
            assert not backup.problems


class TestCallbacks:
    def test_every_problem_goes_to_the_backup_wide_callback(self, tmp_path: Path) -> None:
        """Given at open, on_problem hears hostile entries, bad lines and bad blobs alike."""
        builder = fx.standard()
        builder.raw["../evil"] = b""
        builder.files["demo/generic/node.json"].append(b"not json\n")
        heard: list[BkrepoProblem] = []
        path = builder.write_zip(tmp_path)
        with open_bkrepo(LOCAL, str(path), zone=SHANGHAI, on_problem=heard.append) as backup:
            assert [p.kind for p in heard] == ["hostile"]
            _all(backup)
            assert [p.kind for p in heard] == ["hostile", "malformed"]
            assert heard == list(backup.problems)

    def test_a_raising_callback_stops_the_read(self, tmp_path: Path) -> None:
        """FAST_FAIL: the callback's exception ends the walk at the first bad line."""
        builder = fx.standard()
        builder.files["demo/generic/node.json"].insert(0, b"not json\n")

        def stop(problem: BkrepoProblem) -> None:
            raise RuntimeError(problem.where)

        with _open(builder.write_folder(tmp_path)) as backup:
            records = backup.records(Scope("demo", "generic"), "node", on_problem=stop)
            with pytest.raises(RuntimeError, match=r"demo/generic/node\.json:1"):
                list(records)

    def test_line_counts(self, form: BkrepoBackup) -> None:
        """ls counts lines without parsing them."""
        assert form.line_counts(Scope("demo", "generic")) == {
            "repository": 1,
            "node": 3,
            "maven_metadata": 1,
        }
        assert form.line_counts(Scope("demo")) == {"project": 1}


class TestFixture:
    def test_lines_are_jacksons_indented_output_without_line_breaks(self) -> None:
        """Two spaces per level, " : " between name and value, arrays on one line."""
        assert fx.line({"id": "x", "a": [{"k": 1}], "e": {}, "t": fx.TIME}) == (
            b'{  "id" : "x",  "a" : [ {    "k" : 1  } ],  "e" : { },'
            b'  "t" : "2024-12-24T17:13:54.123"}\n'
        )


class TestConanAndFolderNames:
    def test_conan_metadata_once_in_its_own_repository(self, tmp_path: Path) -> None:
        """conan-metadata.json maps to conan_metadata, read once from its own repository."""
        builder = fx.Builder()
        project = {"id": builder.next_id(), "name": "c", "lastModifiedDate": fx.TIME}
        for repo in ("conan", "generic"):
            builder.repository(project, repo, "CONAN")
        for repo in ("conan", "generic"):
            builder.add(
                f"c/{repo}/conan-metadata.json",
                {"id": fx.object_id(77), "projectId": "c", "repoName": "conan",
                 "user": "_", "name": "zlib", "version": "1.3", "channel": "_",
                 "recipe": "zlib/1.3@_/_"},
            )  # fmt: skip
        with _open(builder.write_zip(tmp_path)) as backup:
            found = [r for r in _all(backup) if r.collection == "conan_metadata"]
        assert [(r.key, r.scope) for r in found] == [(fx.object_id(77), Scope("c", "conan"))]

    def test_a_backslash_in_a_folder_name_is_refused(self, tmp_path: Path) -> None:
        """A file named with a backslash (an unzip of a Windows zip) is reported, not read."""
        folder = fx.standard().write_folder(tmp_path)
        (folder / "demo" / "generic\\..\\x").mkdir()
        with _open(folder) as backup:
            assert backup.tree() == {"demo": ["generic", "maven"], "other": ["files"]}
            assert [(p.kind, p.entry) for p in backup.problems] == [
                ("hostile", "demo/generic\\..\\x")
            ]
