"""verify(): every member, record line and blob of a backup checked, folder or zip."""

from __future__ import annotations

import hashlib
import json
import random
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard

from conftest import ARCHIVE_T0
from helpers import blob_member
from repobackup import Engine, SqliteRepository, TaskState, VerifyReport, verify

TEXT = b"p1/generic text content\n" * 400  # /docs/readme.txt of p1/generic


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Clock:
    """A settable clock for the engine."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def task_body(store: Path | str, **content: Any) -> dict[str, Any]:
    content.setdefault("commonData", True)
    content.setdefault("projects", [{"projectRegex": "*"}])
    return {"name": "nightly", "storeLocation": str(store), "content": content}


def back_up(source: Any, store: Path | str, **content: Any) -> str:
    engine = Engine(source)
    summary = engine.execute(engine.create_task(task_body(store, **content)))
    assert summary.state is TaskState.FINISHED, summary.errors
    assert summary.location is not None
    return summary.location


class Backup:
    """A backup on disk that tests alter, the same way whether it is a folder or a zip."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.path = Path(location)
        self.zip = location.endswith(".zip")

    def members(self) -> list[str]:
        if self.zip:
            with zipfile.ZipFile(self.path) as zf:
                return zf.namelist()
        return [str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file()]

    def read(self, member: str) -> bytes:
        if self.zip:
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(member)
        return (self.path / member).read_bytes()

    def write(self, member: str, data: bytes | None) -> None:
        """Replace, add (or with None remove) one member."""
        if not self.zip:
            target = self.path / member
            if data is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            return
        with zipfile.ZipFile(self.path) as zf:
            members = [(name, zf.read(name)) for name in zf.namelist()]
        with zipfile.ZipFile(self.path, "w", zipfile.ZIP_STORED) as zf:
            for name, old in members:
                if name != member:
                    zf.writestr(name, old)
                elif data is not None:
                    zf.writestr(name, data)
            if member not in dict(members) and data is not None:
                zf.writestr(member, data)

    def blob(self, data: bytes) -> str:
        """The member holding the blob of *data*."""
        plain = blob_member(sha(data), compressed=False)
        return plain if plain in self.members() else plain + ".zst"

    @property
    def manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = json.loads(self.read("manifest.json"))
        return manifest

    @manifest.setter
    def manifest(self, value: dict[str, Any]) -> None:
        self.write("manifest.json", json.dumps(value).encode())

    def entry(self, path_end: str) -> dict[str, Any]:
        return next(m for m in self.manifest["members"] if m["path"].endswith(path_end))

    def relist(self, path: str, content: bytes, **changes: Any) -> None:
        """Write a records member and make the manifest agree with its bytes."""
        self.write(path, content)
        manifest = self.manifest
        for entry in manifest["members"]:
            if entry["path"] == path:
                entry.update(sha256=sha(content), size=len(content), **changes)
        self.manifest = manifest


def pack(path: str, data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data) if path.endswith(".zst") else data


def unpack(path: str, data: bytes) -> bytes:
    if not path.endswith(".zst"):
        return data
    return zstandard.ZstdDecompressor().stream_reader(data).read()  # type: ignore[no-any-return]


def messages(report: VerifyReport) -> list[tuple[str, str]]:
    return [(p.member, p.message) for p in report.problems]


@pytest.fixture(name="backup", params=["folder", "zip"])
def _backup(request: Any, archive_source: SqliteRepository, tmp_path: Path) -> Backup:
    return Backup(back_up(archive_source, tmp_path / "store", compression=request.param == "zip"))


class TestVerify:
    def test_a_complete_backup_is_ok(self, backup: Backup) -> None:
        """A backup as written verifies with no problem, and says what it checked."""
        report = verify(backup.location)
        assert report.ok, report.problems
        assert report.problems == ()
        assert report.backups == (backup.location,)
        manifest = backup.manifest
        assert report.records == sum(m["records"] for m in manifest["members"])
        assert report.blobs == manifest["blobs"]["count"]
        assert report.members == len(backup.members())

    def test_a_missing_blob(self, backup: Backup) -> None:
        """A blob a live record references but the backup lacks is reported by its path."""
        member = backup.blob(TEXT)
        backup.write(member, None)
        report = verify(backup.location)
        assert not report.ok
        missing = [m for m in messages(report) if "is missing" in m[1]]
        assert missing == [
            (blob_member(sha(TEXT), compressed=False), missing[0][1]),
        ]
        assert "node.jsonl" in missing[0][1]  # names the record line referencing it

    def test_a_blob_whose_content_is_altered(self, backup: Backup) -> None:
        """A blob that does not hash to its name is reported."""
        member = backup.blob(TEXT)
        backup.write(member, pack(member, TEXT.replace(b"text", b"TEXT")))
        report = verify(backup.location)
        assert [m for m in messages(report) if m[0] == member] == [
            (member, report.problems[0].message)
        ]
        assert "does not match its sha256" in report.problems[0].message

    def test_an_unexpected_member(self, backup: Backup) -> None:
        """A member the manifest does not list and no record references is reported."""
        backup.write("projects/p1/extra.jsonl", b"{}\n")
        stray = blob_member(sha(b"stray"), compressed=False)
        backup.write(stray, b"stray")
        report = verify(backup.location)
        assert ("projects/p1/extra.jsonl", "not in the manifest") in messages(report)
        assert any(m == stray and "not in the manifest" in msg for m, msg in messages(report))

    def test_an_altered_records_member(self, backup: Backup) -> None:
        """A records member whose bytes differ from the manifest's sha256 and size is reported."""
        path = backup.entry("common/user.jsonl" + (".zst" if backup.zip else ""))["path"]
        lines = unpack(path, backup.read(path)).replace(b"ADMIN", b"NOBODY")
        backup.write(path, pack(path, lines))
        problems = [msg for member, msg in messages(verify(backup.location)) if member == path]
        assert len(problems) == 1
        assert "does not match the manifest" in problems[0]

    def test_a_malformed_line(self, backup: Backup) -> None:
        """Each record line that does not parse is reported with its line number, even when
        the manifest was made to agree with the member."""
        path = backup.entry("p1/repos/generic/node.jsonl" + (".zst" if backup.zip else ""))["path"]
        lines = unpack(path, backup.read(path)).splitlines(keepends=True)
        lines[1] = b'{"key": "broken"\n'
        backup.relist(path, pack(path, b"".join(lines)))
        report = verify(backup.location)
        assert [(m, msg.split(": ")[0]) for m, msg in messages(report) if m == path] == [
            (path, f"{path}:2")
        ]
        assert "malformed JSON" in report.problems[0].message

    def test_manifest_counts_disagree_with_the_member(self, backup: Backup) -> None:
        """Record and tombstone counts in the manifest are checked against the member."""
        manifest = backup.manifest
        entry = manifest["members"][0]
        entry["records"] += 1
        entry["tombstones"] = 3
        backup.manifest = manifest
        found = [
            msg for member, msg in messages(verify(backup.location)) if member == entry["path"]
        ]
        assert any("counts" in msg and "records" in msg for msg in found)
        assert any("counts 3 tombstones" in msg for msg in found)

    def test_blob_totals_disagree(self, backup: Backup) -> None:
        """The manifest's blob count and bytes are checked against the blobs held."""
        manifest = backup.manifest
        manifest["blobs"]["count"] += 1
        backup.manifest = manifest
        report = verify(backup.location)
        assert [m for m, _ in messages(report)] == ["manifest.json"]
        assert "blobs.count" in report.problems[0].message

    def test_malformed_manifest_fields(self, backup: Backup) -> None:
        """Manifest fields of the wrong shape are problems of manifest.json, each named."""
        manifest = backup.manifest
        manifest["kind"] = "weekly"
        manifest["members"][0]["sha256"] = "XYZ"
        backup.manifest = manifest
        found = [
            msg for member, msg in messages(verify(backup.location)) if member == "manifest.json"
        ]
        assert any("kind must be" in msg for msg in found)
        assert any("members[0]: sha256" in msg for msg in found)

    def test_a_missing_manifest(self, backup: Backup) -> None:
        """Without manifest.json the backup is not complete: one problem says so."""
        backup.write("manifest.json", None)
        report = verify(backup.location)
        assert not report.ok
        assert [m for m, _ in messages(report)] == ["manifest.json"]
        assert "not a complete backup" in report.problems[0].message


class TestVerifyAcrossBackups:
    def test_a_failed_blob_is_reported_as_recorded(
        self, archive_source: SqliteRepository, tmp_path: Path
    ) -> None:
        """A blob that failed at backup time is reported as such, not as merely missing."""
        blob_file = Path(archive_source.blobs) / sha(TEXT)[:2] / sha(TEXT)[2:4] / sha(TEXT)
        blob_file.write_bytes(b"rotten on the source disk")
        engine = Engine(archive_source)
        summary = engine.execute(engine.create_task(task_body(tmp_path / "store")))
        assert summary.state is TaskState.FINISHED
        assert any(error.key == sha(TEXT) for error in summary.errors)
        assert summary.location is not None
        report = verify(summary.location)
        assert [m for m in messages(report) if "recorded as failed at backup time" in m[1]] == [
            (blob_member(sha(TEXT), compressed=False), report.problems[0].message)
        ]

    def test_a_task_folder_verifies_its_newest_chain(
        self, archive_source: SqliteRepository, tmp_path: Path
    ) -> None:
        """A task folder verifies its newest backup and every backup it follows."""
        clock = Clock(ARCHIVE_T0 + timedelta(days=1))
        engine = Engine(archive_source, clock=clock)
        task = engine.create_task(task_body(tmp_path / "store", compression=True, increment=True))
        full = engine.execute(task)
        clock.now += timedelta(hours=1)
        archive_source.put_file("p1", "generic", "/new.txt", b"new\n", modified=clock.now)
        archive_source.delete_file("p2", "generic", "/empty", modified=clock.now)
        clock.now += timedelta(hours=1)
        increment = engine.execute(task)
        assert increment.state is TaskState.FINISHED, increment.errors
        report = verify(str(tmp_path / "store" / "nightly"))
        assert report.ok, report.problems
        assert report.backups == (full.location, increment.location)

    def test_newer_unusable_backups_are_reported(
        self, archive_source: SqliteRepository, tmp_path: Path
    ) -> None:
        """A task folder whose newest backup is damaged verifies the older one and reports
        the damaged one."""
        good = back_up(archive_source, tmp_path / "store", compression=True)
        damaged = tmp_path / "store" / "nightly" / "nightly-29991231.235959.zip"
        damaged.write_bytes(Path(good).read_bytes()[:-100])
        report = verify(str(tmp_path / "store" / "nightly"))
        assert report.backups == (good,)
        assert [p.backup for p in report.problems] == [str(damaged)]
        assert "truncated" in report.problems[0].message

    def test_a_truncated_zip(self, archive_source: SqliteRepository, tmp_path: Path) -> None:
        """A zip cut short is one problem naming the zip."""
        location = back_up(archive_source, tmp_path / "store", compression=True)
        data = Path(location).read_bytes()
        Path(location).write_bytes(data[: len(data) // 2])
        report = verify(location)
        assert not report.ok
        assert location in report.problems[0].message

    def test_hostile_zip_members_are_reported(
        self, archive_source: SqliteRepository, tmp_path: Path
    ) -> None:
        """Members of a zip that escape the tree are problems, and never read."""
        backup = Backup(back_up(archive_source, tmp_path / "store", compression=True))
        backup.write("placeholder/x", b"evil")
        raw = backup.path.read_bytes().replace(b"placeholder/x", b"../../../../x")
        backup.path.write_bytes(raw)
        report = verify(backup.location)
        assert [m for m, _ in messages(report)] == ["../../../../x"]
        assert "escapes" in report.problems[0].message
        assert not (tmp_path / "x").exists()

    def test_an_unzipped_backup_is_a_backup_folder(
        self, archive_source: SqliteRepository, tmp_path: Path
    ) -> None:
        """A zip extracted with a plain unzip verifies as a folder, as docs/format.md says."""
        location = back_up(archive_source, tmp_path / "store", compression=True)
        folder = tmp_path / "extracted" / Path(location).name.removesuffix(".zip")
        with zipfile.ZipFile(location) as zf:
            zf.extractall(folder)
        report = verify(str(folder))
        assert report.ok, report.problems
        assert report.blobs == verify(location).blobs > 0

    def test_nothing_at_the_location(self, tmp_path: Path) -> None:
        """A location without any backup is a report with one problem, not an exception."""
        report = verify(str(tmp_path / "nothing"))
        assert not report.ok
        assert "no backup" in report.problems[0].message

    def test_problems_are_bounded(self, archive_source: SqliteRepository, tmp_path: Path) -> None:
        """However much is wrong, the report holds at most a thousand problems and counts
        the rest."""
        backup = Backup(back_up(archive_source, tmp_path / "store"))
        path = backup.entry("common/user.jsonl")["path"]
        backup.relist(path, b"x\n" * 1500, records=1500)
        report = verify(backup.location)
        assert len(report.problems) == 1000
        assert report.problems_dropped == 500  # one problem per malformed line
        assert not report.ok

    def test_random_damage_never_passes(
        self, archive_source: SqliteRepository, tmp_path: Path
    ) -> None:
        """Flipping any single byte of a member's stored data is always caught."""
        location = back_up(archive_source, tmp_path / "store", compression=True)
        original = Path(location).read_bytes()
        with zipfile.ZipFile(location) as zf:
            infos = [i for i in zf.infolist() if i.file_size and i.filename != "manifest.json"]
        rng = random.Random(7)
        for info in rng.sample(infos, 8):
            damaged = bytearray(original)
            start = info.header_offset + 30 + len(info.filename.encode())
            damaged[start + rng.randrange(info.file_size)] ^= 1 << rng.randrange(8)
            Path(location).write_bytes(bytes(damaged))
            report = verify(location)
            assert not report.ok, info.filename
            assert info.filename in {p.member for p in report.problems}
        Path(location).write_bytes(original)
        assert verify(location).ok
