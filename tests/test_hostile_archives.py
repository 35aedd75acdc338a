"""Restores from hand-made hostile or damaged archives: clear errors under the error strategy.

Each archive is built by hand with zipfile; nothing in it is trusted, nothing lands outside
the target, and a damaged zip fails its task with a message rather than a traceback.
"""

from __future__ import annotations

import hashlib
import json
import stat
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from helpers import RECORD_T0 as T0
from helpers import record_line as line
from repobackup import Engine, MemoryRepository, RunSummary, TaskState

GOOD = b"good file content\n" * 20
OTHER = b"another file\n" * 30


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def node(path: str, content: bytes) -> bytes:
    document = {"fullPath": path, "sha256": sha(content), "size": len(content)}
    return line(
        "node",
        path,
        document,
        projectId="p1",
        repoName="generic",
        blob=sha(content),
        size=len(content),
    )


class HandMade:
    """The members of a small compressed backup, built by hand, to be spoiled by a test and
    then written as a zip."""

    def __init__(self) -> None:
        self.records: dict[str, list[bytes]] = {
            "common/user.jsonl.zst": [line("user", "admin", {"name": "admin"})],
            "projects/p1/repos/generic/node.jsonl.zst": [
                node("/a.txt", GOOD),
                node("/b.txt", OTHER),
            ],
        }
        self.blobs = {sha(GOOD): GOOD, sha(OTHER): OTHER}
        self.extra: list[tuple[zipfile.ZipInfo | str, bytes]] = []
        self.manifest_changes: dict[str, dict[str, Any]] = {}

    def member_bytes(self) -> dict[str, bytes]:
        compressor = zstandard.ZstdCompressor()
        return {path: compressor.compress(b"".join(lines)) for path, lines in self.records.items()}

    def manifest(self, stored: dict[str, bytes]) -> dict[str, Any]:
        members = []
        for path, data in stored.items():
            parts = path.split("/")
            project = parts[1] if parts[0] == "projects" else None
            repo = parts[3] if len(parts) > 3 else None
            entry = {
                "path": path,
                "projectId": project,
                "repoName": repo,
                "collection": parts[-1].removesuffix(".jsonl.zst"),
                "records": len(self.records[path]),
                "tombstones": 0,
                "size": len(data),
                "sha256": sha(data),
            }
            entry.update(self.manifest_changes.get(path, {}))
            members.append(entry)
        return {
            "format": 1,
            "generator": "by hand",
            "name": "hostile-20260301.120000",
            "taskName": "hostile",
            "created": T0,
            "completed": T0,
            "kind": "full",
            "since": None,
            "follows": None,
            "compression": True,
            "commonData": True,
            "projects": {"p1": ["generic"]},
            "members": members,
            "blobs": {
                "count": len(self.blobs),
                "bytes": sum(map(len, self.blobs.values())),
                "failed": [],
            },
        }

    def write(self, path: Path) -> str:
        stored = self.member_bytes()
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for name, data in stored.items():
                zf.writestr(name, data)
            for digest, content in self.blobs.items():
                zf.writestr(f"blobs/{digest[:2]}/{digest[2:4]}/{digest}", content)
            for info, data in self.extra:
                zf.writestr(info, data)
            zf.writestr("manifest.json", json.dumps(self.manifest(stored)))
        return str(path)


@pytest.fixture(name="made")
def _made() -> HandMade:
    return HandMade()


@pytest.fixture(name="target")
def _target() -> MemoryRepository:
    return MemoryRepository()


@pytest.fixture(name="place")
def _place(tmp_path: Path) -> Path:
    """Where the zip goes: a folder nested deep enough that climbing out is visible."""
    folder = tmp_path / "a" / "b" / "c" / "store"
    folder.mkdir(parents=True)
    return folder


def restore(target: MemoryRepository, location: str, strategy: str) -> RunSummary:
    engine = Engine(target)
    task = engine.create_task(
        {
            "name": "restore",
            "storeLocation": location,
            "type": "DATA_RESTORE",
            "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
            "backupSetting": {"errorStrategy": strategy},
        }
    )
    return engine.execute(task)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture(name="nothing_escapes")
def _nothing_escapes(tmp_path: Path, place: Path) -> Iterator[None]:
    """Asserts afterwards that the only file anywhere under the test's folder is the zip."""
    yield
    assert {p.relative_to(tmp_path) for p in files_under(tmp_path)} == {
        p.relative_to(tmp_path) for p in place.glob("*.zip")
    }


def restored_keys(target: MemoryRepository) -> set[str]:
    return {identity[3] for identity in target.snapshot()["records"]}


HOSTILE_NAMES = ["../x", "../../../../escaped", "/abs-{token}", "a/../../x", "common/..\\x"]


class TestHostileMemberNames:
    @pytest.mark.parametrize("name", HOSTILE_NAMES)
    def test_continue_reports_the_member_and_restores_the_rest(
        self,
        made: HandMade,
        target: MemoryRepository,
        place: Path,
        name: str,
        nothing_escapes: None,
    ) -> None:
        """Under CONTINUE a member whose path escapes the tree is an error naming it; every
        legitimate record and blob is still restored, and nothing lands outside the target."""
        hostile = name.format(token=uuid.uuid4().hex)
        made.extra.append((hostile, b"evil"))
        location = made.write(place / "hostile.zip")
        with zipfile.ZipFile(location) as zf:
            assert hostile in zf.namelist()  # the hostile name really is in the zip
        summary = restore(target, location, "CONTINUE")
        assert summary.state is TaskState.FINISHED
        assert [(e.key, "escapes" in e.message) for e in summary.errors] == [(hostile, True)]
        assert restored_keys(target) == {"admin", "/a.txt", "/b.txt"}
        assert target.read_file("p1", "generic", "/a.txt") == GOOD
        if hostile.startswith("/"):
            assert not Path(hostile).exists()

    @pytest.mark.parametrize("name", HOSTILE_NAMES)
    def test_fast_fail_stops_before_anything_is_written(
        self,
        made: HandMade,
        target: MemoryRepository,
        place: Path,
        name: str,
        nothing_escapes: None,
    ) -> None:
        """Under FAST_FAIL the first hostile member stops the restore before any record."""
        hostile = name.format(token=uuid.uuid4().hex)
        made.extra.append((hostile, b"evil"))
        summary = restore(target, made.write(place / "hostile.zip"), "FAST_FAIL")
        assert summary.state is TaskState.FAILED
        assert any(hostile in e.message or e.key == hostile for e in summary.errors)
        assert restored_keys(target) == set()

    def test_symlink_members_are_errors(
        self, made: HandMade, target: MemoryRepository, place: Path, nothing_escapes: None
    ) -> None:
        """A symbolic link member is reported and never followed or read."""
        link = zipfile.ZipInfo("blobs/00/00/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        made.extra.append((link, b"/etc/passwd"))
        summary = restore(target, made.write(place / "hostile.zip"), "CONTINUE")
        assert summary.state is TaskState.FINISHED
        assert [(e.key, "symbolic link" in e.message) for e in summary.errors] == [
            ("blobs/00/00/link", True)
        ]
        assert restored_keys(target) == {"admin", "/a.txt", "/b.txt"}
        failed = restore(MemoryRepository(), made.write(place / "hostile2.zip"), "FAST_FAIL")
        assert failed.state is TaskState.FAILED

    def test_a_duplicated_blob_is_used_in_neither_copy(
        self, made: HandMade, target: MemoryRepository, place: Path
    ) -> None:
        """Two members with one blob's name are ambiguous: the blob and its record fail,
        the rest is restored."""
        digest = sha(GOOD)
        made.extra.append((f"blobs/{digest[:2]}/{digest[2:4]}/{digest}", b"imposter"))
        with pytest.warns(UserWarning, match="Duplicate name"):
            location = made.write(place / "hostile.zip")
        summary = restore(target, location, "CONTINUE")
        assert summary.state is TaskState.FINISHED
        assert any("more than once" in e.message for e in summary.errors)
        assert any(e.scope == "record" and e.key.endswith("/a.txt") for e in summary.errors)
        assert restored_keys(target) == {"admin", "/b.txt"}
        failed = restore(MemoryRepository(), location, "FAST_FAIL")
        assert failed.state is TaskState.FAILED

    def test_a_duplicated_records_member(
        self, made: HandMade, target: MemoryRepository, place: Path
    ) -> None:
        """A records member present twice is an error; its records are not restored."""
        made.extra.append(("common/user.jsonl.zst", b"not even zstd"))
        with pytest.warns(UserWarning, match="Duplicate name"):
            location = made.write(place / "hostile.zip")
        summary = restore(target, location, "CONTINUE")
        assert summary.state is TaskState.FINISHED
        assert "admin" not in restored_keys(target)
        assert {"/a.txt", "/b.txt"} <= restored_keys(target)
        assert any(e.key == "common/user.jsonl.zst" for e in summary.errors)


class TestDamagedZip:
    def test_an_oversized_manifest_is_refused_unread(
        self, made: HandMade, target: MemoryRepository, place: Path
    ) -> None:
        """A manifest.json over 16 MiB fails the task with a message, and nothing is restored;
        verify reports it the same way."""
        made.manifest_changes = {}
        path = place / "hostile.zip"
        made.write(path)
        stored = made.member_bytes()
        manifest = made.manifest(stored)
        manifest["padding"] = "x" * (16 * 1024 * 1024)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for name, data in stored.items():
                zf.writestr(name, data)
            zf.writestr("manifest.json", json.dumps(manifest))
        summary = restore(target, str(path), "CONTINUE")
        assert summary.state is TaskState.FAILED
        assert "manifest.json is larger than 16777216 bytes" in summary.errors[0].message
        assert restored_keys(target) == set()
        report = Engine(target).verify(str(path))
        assert not report.ok
        assert any("larger than 16777216 bytes" in p.message for p in report.problems)

    @pytest.mark.parametrize("strategy", ["CONTINUE", "FAST_FAIL"])
    @pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
    def test_a_truncated_zip_fails_the_task_with_a_message(
        self, made: HandMade, target: MemoryRepository, place: Path, strategy: str, keep: float
    ) -> None:
        """A zip cut short fails the task (FAILED, never stuck) with a message naming it."""
        path = Path(made.write(place / "hostile.zip"))
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        summary = restore(target, str(path), strategy)
        assert summary.state is TaskState.FAILED
        assert len(summary.errors) == 1
        assert "hostile.zip" in summary.errors[0].message
        assert "truncated" in summary.errors[0].message
        assert "Traceback" not in summary.errors[0].message
        assert restored_keys(target) == set()

    def test_corrupted_blob_bytes(
        self, made: HandMade, target: MemoryRepository, place: Path
    ) -> None:
        """A flipped byte inside a blob is an error naming the blob; its record is not
        restored, the others are (CONTINUE); FAST_FAIL stops."""
        path = Path(made.write(place / "hostile.zip"))
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"blobs/{sha(GOOD)[:2]}/{sha(GOOD)[2:4]}/{sha(GOOD)}")
        data = bytearray(path.read_bytes())
        data[info.header_offset + 30 + len(info.filename) + 7] ^= 0x20
        path.write_bytes(bytes(data))
        summary = restore(target, str(path), "CONTINUE")
        assert summary.state is TaskState.FINISHED
        blob_errors = [e for e in summary.errors if e.scope == "blob"]
        assert [e.key for e in blob_errors] == [sha(GOOD)]
        assert info.filename in blob_errors[0].message
        assert restored_keys(target) == {"admin", "/b.txt"}
        assert not target.has_blob(sha(GOOD))
        failed = restore(MemoryRepository(), str(path), "FAST_FAIL")
        assert failed.state is TaskState.FAILED

    def test_a_blob_whose_content_is_not_its_hash(
        self, made: HandMade, target: MemoryRepository, place: Path
    ) -> None:
        """A blob stored whole (valid CRC) under another content's sha256 is never written."""
        made.blobs[sha(GOOD)] = b"swapped content"
        summary = restore(target, made.write(place / "hostile.zip"), "CONTINUE")
        assert summary.state is TaskState.FINISHED
        assert any("does not match its sha256" in e.message for e in summary.errors)
        assert not target.has_blob(sha(GOOD))
        assert restored_keys(target) == {"admin", "/b.txt"}


class TestDamagedContent:
    def test_malformed_json_lines(
        self, made: HandMade, target: MemoryRepository, place: Path
    ) -> None:
        """Malformed record lines are errors naming member and line; good lines restore."""
        member = "projects/p1/repos/generic/node.jsonl.zst"
        made.records[member].insert(1, b'{"collection": "node", "key": \n')
        made.records[member].append(b"[1, 2, 3]\n")
        location = made.write(place / "hostile.zip")
        summary = restore(target, location, "CONTINUE")
        assert summary.state is TaskState.FINISHED
        assert sorted(e.key for e in summary.errors) == [f"{member}:2", f"{member}:4"]
        assert summary.counts.records_failed == 2
        assert restored_keys(target) == {"admin", "/a.txt", "/b.txt"}
        failed = restore(MemoryRepository(), location, "FAST_FAIL")
        assert failed.state is TaskState.FAILED
        assert f"{member}:2" in failed.errors[-1].message

    def test_a_record_that_lies_about_its_scope(
        self, made: HandMade, target: MemoryRepository, place: Path
    ) -> None:
        """A line claiming another project than its member's path is refused."""
        member = "projects/p1/repos/generic/node.jsonl.zst"
        made.records[member].append(
            line("node", "/planted", {}, projectId="p2", repoName="generic")
        )
        summary = restore(target, made.write(place / "hostile.zip"), "CONTINUE")
        assert [e.key for e in summary.errors] == [f"{member}:3"]
        assert "/planted" not in restored_keys(target)

    @pytest.mark.parametrize(
        ("change", "expected"),
        [
            ({"sha256": "0" * 64}, "does not match the manifest"),
            ({"size": 1}, "does not match the manifest"),
            ({"records": 7}, "holds 1 records, the manifest counts 7"),
        ],
    )
    def test_a_manifest_that_disagrees_with_a_member(
        self,
        made: HandMade,
        target: MemoryRepository,
        place: Path,
        change: dict[str, Any],
        expected: str,
    ) -> None:
        """A member whose sha256, size or record count differs from the manifest is an error
        naming it; under CONTINUE the other members restore, under FAST_FAIL nothing does."""
        made.manifest_changes["common/user.jsonl.zst"] = change
        location = made.write(place / "hostile.zip")
        summary = restore(target, location, "CONTINUE")
        assert summary.state is TaskState.FINISHED
        assert [(e.key, expected in e.message) for e in summary.errors] == [
            ("common/user.jsonl.zst", True)
        ]
        assert restored_keys(target) == {"/a.txt", "/b.txt"}
        failed_target = MemoryRepository()
        failed = restore(failed_target, location, "FAST_FAIL")
        assert failed.state is TaskState.FAILED
        assert restored_keys(failed_target) == set()

    def test_a_manifest_member_path_outside_the_tree(
        self, made: HandMade, target: MemoryRepository, place: Path, nothing_escapes: None
    ) -> None:
        """A manifest entry whose path is not where its scope lives is refused, by name."""
        made.manifest_changes["common/user.jsonl.zst"] = {"path": "../../../user.jsonl.zst"}
        summary = restore(target, made.write(place / "hostile.zip"), "CONTINUE")
        assert any("../../../user.jsonl.zst" in e.message for e in summary.errors)
        assert "admin" not in restored_keys(target)
