"""Resumable zip backups: a zip backup killed with SIGKILL midway and run again continues
the partial zip it left, keeping only the complete members it can check."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import last_json
from repobackup import Engine, MemoryRepository, SqliteRepository, TaskState

COUNT, SIZE = 60, 1 << 20
LOCAL = struct.Struct("<IHHHHHIIIHH")  # a zip local header's fixed part, as the zip spec says


def cli(*argv: str | Path) -> list[str]:
    return [sys.executable, "-m", "repobackup.cli", *map(str, argv)]


def backup_args(source: Path, store: Path, name: str = "nightly") -> list[str | Path]:
    return ["backup", "-r", source, "--store", store, "--name", name, "--all", "--compress",
            "--no-space-check", "--workers", "1", "--json"]  # fmt: skip


def fill(path: Path, kind: str) -> list[str]:
    """*COUNT* distinct files of *SIZE* bytes: random (stored as they are) or hex text (stored
    zstd-compressed at about half their size); return their sha256s."""
    shas = []
    with SqliteRepository(path) as repo:
        repo.put_project("p1")
        repo.put_repository("p1", "generic")
        repo.put_document("user", "admin", {"name": "admin"})
        for number in range(COUNT):
            data = os.urandom(SIZE) if kind == "plain" else os.urandom(SIZE // 2).hex().encode()
            repo.put_file("p1", "generic", f"/f{number}.bin", data)
            shas.append(hashlib.sha256(data).hexdigest())
    return shas


def partial_of(folder: Path) -> Path | None:
    found = sorted(folder.glob(".*.zip.*.partial")) if folder.is_dir() else []
    return found[-1] if found else None


def start_and_kill(
    args: list[str | Path], folder: Path, at_bytes: float, *, fresh: bool = True
) -> Path:
    """Start a backup and kill it with SIGKILL once its partial zip holds *at_bytes*;
    return the partial it left. On a busy machine the kill may come too late (after the
    last blob): a *fresh* run (the folder held nothing before) is then tried again."""
    for _ in range(3):
        child = subprocess.Popen(cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            partial = partial_of(folder)
            if partial is not None and partial.stat().st_size >= at_bytes:
                break
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        partial = partial_of(folder)
        if partial is not None and len(blob_headers(partial)) < COUNT:
            return partial
        if not fresh:
            break
        shutil.rmtree(folder)
    pytest.fail("the kill should come before the last blob")


def run_cli(args: list[str | Path]) -> dict[str, Any]:
    done = subprocess.run(cli(*args), capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = last_json(done.stdout)
    return summary


def local_members(path: Path) -> Iterator[tuple[int, str, int, int]]:
    """(header offset, name, data offset, size) of each complete member the zip's local
    headers describe, from the first byte on, as a streaming reader sees them."""
    data = path.read_bytes()
    at = 0
    while at + LOCAL.size <= len(data):
        fields = LOCAL.unpack_from(data, at)
        if fields[0] != 0x04034B50:
            return
        name_len, extra_len, size = fields[9], fields[10], fields[8]
        name = data[at + LOCAL.size : at + LOCAL.size + name_len].decode()
        if extra_len:
            size = struct.unpack_from("<Q", data, at + LOCAL.size + name_len + 4)[0]
        start = at + LOCAL.size + name_len + extra_len
        if start + size > len(data):
            return
        yield at, name, start, size
        at = start + size


def blob_headers(path: Path) -> list[tuple[int, str, int, int]]:
    return [m for m in local_members(path) if m[1].startswith("blobs/")]


def check_restores(source: Path, location: str, tmp_path: Path) -> None:
    with SqliteRepository(source) as repo:
        report = Engine(repo).verify(location)
        assert report.ok, report
        with SqliteRepository(tmp_path / "target.db") as target:
            engine = Engine(target)
            content = {"commonData": True, "projects": [{"projectRegex": "*"}]}
            data = {"name": "restore", "type": "DATA_RESTORE", "storeLocation": location,
                    "content": content}  # fmt: skip
            restored = engine.execute(engine.create_task(data))
            assert restored.state is TaskState.FINISHED, restored.errors
            assert target.snapshot() == repo.snapshot()


@pytest.fixture(scope="module", params=["plain", "compressed"])
def world(request: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A source of *COUNT* blobs and the bytes a full zip backup of it writes."""
    root = tmp_path_factory.mktemp(request.param)
    source = root / "source" / "source.db"
    source.parent.mkdir()
    shas = fill(source, request.param)
    full = run_cli(backup_args(source, root / "full"))
    size = Path(full["location"]).stat().st_size
    return {"source": source, "shas": shas, "written": full["counts"]["bytesWritten"],
            "size": size, "kind": request.param}  # fmt: skip


def copy_source(world: dict[str, Any], tmp_path: Path) -> Path:
    """A copy of the world's source (its database and its blob files) to change freely."""
    shutil.copytree(Path(world["source"]).parent, tmp_path / "source")
    return tmp_path / "source" / "source.db"


@pytest.mark.slow
class TestZipResume:
    def test_a_killed_zip_backup_resumes(self, world: dict[str, Any], tmp_path: Path) -> None:
        """kill -9 at about 60%; the next run continues the partial zip: it writes at most
        half of the bytes of a full run (by its counts and by the file's growth), counts the
        blobs it kept as reused, verifies and restores identical."""
        source, store = copy_source(world, tmp_path), tmp_path / "store"
        folder = store / "nightly"
        partial = start_and_kill(backup_args(source, store), folder, world["size"] * 0.6)
        kept = len(blob_headers(partial))
        assert 0 < kept < COUNT, "the kill should come between the first and last blob"
        before = partial.stat().st_size
        summary = run_cli(backup_args(source, store))
        counts = summary["counts"]
        assert counts["blobsReused"] == kept
        assert counts["blobsWritten"] == COUNT - kept
        assert counts["bytesWritten"] <= world["written"] / 2
        final = Path(summary["location"])
        assert final.stat().st_size - before <= world["size"] / 2
        assert any("kept in place" in note for note in summary["notes"]), summary["notes"]
        check_restores(source, str(final), tmp_path)
        # The interrupted run's partial became the backup: nothing of it is left beside it.
        assert sorted(p.name for p in folder.iterdir()) == [final.name]

    def test_the_directory_lists_exactly_the_new_backup(
        self, world: dict[str, Any], tmp_path: Path
    ) -> None:
        """Records written again as the source says now, blobs the source no longer holds
        left out: the old run's records and those blobs are in no directory entry."""
        source, store = copy_source(world, tmp_path), tmp_path / "store"
        partial = start_and_kill(backup_args(source, store), store / "nightly", world["size"] * 0.6)
        kept = blob_headers(partial)
        gone = [name.rsplit("/", 1)[1].removesuffix(".zst") for _, name, _, _ in kept[:3]]
        with SqliteRepository(source) as repo:
            repo.put_document("user", "admin", {"name": "admin", "changed": True})
            for number, sha in enumerate(world["shas"]):
                if sha in gone:
                    repo.delete_file("p1", "generic", f"/f{number}.bin")
        summary = run_cli(backup_args(source, store))
        assert summary["counts"]["blobsReused"] == len(kept) - len(gone)
        final = Path(summary["location"])
        with zipfile.ZipFile(final) as archive:
            names = archive.namelist()
        assert len(names) == len(set(names))
        blobs = {name.rsplit("/", 1)[1].removesuffix(".zst") for name in names
                 if name.startswith("blobs/")}  # fmt: skip
        assert blobs == set(world["shas"]) - set(gone)
        # The old run's records are still bytes in the file, a streaming reader would see
        # them, but the directory names the new ones and every reader goes by it.
        check_restores(source, str(final), tmp_path)
        with SqliteRepository(tmp_path / "target.db") as target:
            assert target.get_document("user", "admin") == {"name": "admin", "changed": True}

    @pytest.mark.parametrize("damage", ["cut in a header", "cut in data", "flipped crc"])
    def test_a_damaged_partial_keeps_only_what_it_can_check(
        self, world: dict[str, Any], tmp_path: Path, damage: str
    ) -> None:
        """The bad tail is dropped, never restored as good data."""
        source, store = copy_source(world, tmp_path), tmp_path / "store"
        partial = start_and_kill(backup_args(source, store), store / "nightly", world["size"] * 0.6)
        headers = blob_headers(partial)
        k = len(headers) // 2
        offset, _, start, size = headers[k]
        with open(partial, "r+b") as file:
            if damage == "cut in a header":
                file.truncate(offset + 17)
            elif damage == "cut in data":
                file.truncate(start + size // 2)
            else:
                file.seek(offset + 14)  # the CRC-32 of the local header
                byte = file.read(1)
                file.seek(offset + 14)
                file.write(bytes([byte[0] ^ 0x40]))
        summary = run_cli(backup_args(source, store))
        assert summary["counts"]["blobsReused"] == k
        assert summary["counts"]["blobsWritten"] == COUNT - k
        check_restores(source, summary["location"], tmp_path)

    def test_a_resumed_run_killed_resumes_again(
        self, world: dict[str, Any], tmp_path: Path
    ) -> None:
        """Killed at 35%, killed again at 70%, then run to the end: the last run writes at
        most half of a full run, and the result verifies and restores identical."""
        source, store = copy_source(world, tmp_path), tmp_path / "store"
        folder = store / "nightly"
        start_and_kill(backup_args(source, store), folder, world["size"] * 0.35)
        second = start_and_kill(
            backup_args(source, store), folder, world["size"] * 0.7, fresh=False
        )
        kept = len({name for _, name, _, _ in blob_headers(second)})
        summary = run_cli(backup_args(source, store))
        assert summary["counts"]["blobsReused"] == kept
        assert summary["counts"]["bytesWritten"] <= world["written"] / 2
        check_restores(source, summary["location"], tmp_path)

    def test_a_partial_of_another_task_is_never_adopted(
        self, world: dict[str, Any], tmp_path: Path
    ) -> None:
        """Another task's run, on the same store, starts from nothing and leaves the
        interrupted task's partial for that task."""
        source, store = copy_source(world, tmp_path), tmp_path / "store"
        partial = start_and_kill(backup_args(source, store), store / "nightly", world["size"] * 0.6)
        # A copy in the other task's folder too, under the interrupted task's partial name.
        (store / "other").mkdir()
        (store / "other" / partial.name).write_bytes(partial.read_bytes())
        other = run_cli(backup_args(source, store, "other"))
        assert other["counts"]["blobsReused"] == 0
        assert other["counts"]["blobsWritten"] == COUNT
        assert (store / "nightly" / ".nightly.zip.resume").is_file()
        nightly = run_cli(backup_args(source, store))
        assert nightly["counts"]["blobsReused"] > 0
        check_restores(source, nightly["location"], tmp_path)

    def test_a_zip_cut_in_its_central_directory_keeps_every_blob(
        self, world: dict[str, Any], tmp_path: Path
    ) -> None:
        """A run killed while committing: its manifest member and everything after it go, its
        blobs stay and only the records are written again."""
        source, store = copy_source(world, tmp_path), tmp_path / "store"
        complete = Path(run_cli(backup_args(source, store))["location"])
        with zipfile.ZipFile(complete) as archive:
            cut = archive.start_dir + 30
        (store / "nightly" / ".nightly.zip.resume").write_bytes(complete.read_bytes()[:cut])
        complete.unlink()
        summary = run_cli(backup_args(source, store))
        assert summary["counts"]["blobsReused"] == COUNT
        assert summary["counts"]["blobsWritten"] == 0
        assert summary["counts"]["bytesWritten"] < 100_000
        assert any("manifest.json" in note for note in summary["notes"]), summary["notes"]
        check_restores(source, summary["location"], tmp_path)

    def test_an_encrypted_zip_backup_does_not_resume(
        self, world: dict[str, Any], tmp_path: Path
    ) -> None:
        """Its members are bound to their own backup: what a killed run left is removed and
        the next run writes every blob."""
        if world["kind"] != "plain":
            pytest.skip("one kind of blobs is enough")
        source, store = copy_source(world, tmp_path), tmp_path / "store"
        password = tmp_path / "password"
        password.write_text("correct horse battery staple\n")
        args = [*backup_args(source, store), "--encrypt", "--password-file", password]
        start_and_kill(args, store / "nightly", world["size"] * 0.6)
        summary = run_cli(args)
        assert summary["counts"]["blobsReused"] == 0
        assert summary["counts"]["blobsWritten"] == COUNT
        left = sorted(p.name for p in (store / "nightly").iterdir())
        assert not [name for name in left if name.endswith((".resume", ".partial"))], left
        # A plain zip's leftover, met by an encrypted run (the task changed), goes too.
        leftover = store / "nightly" / ".nightly.zip.resume"
        leftover.write_bytes(Path(run_cli(backup_args(source, store))["location"]).read_bytes())
        again = run_cli(args)
        assert again["counts"]["blobsReused"] == 0
        assert not leftover.exists()


def test_a_zip_backup_that_failed_in_process_resumes(tmp_path: Path) -> None:
    """A run that fails (here under FAST_FAIL, a blob the source cannot read) keeps its
    partial zip; the next run, the source mended, continues it."""
    repo = MemoryRepository()
    repo.put_project("p1")
    repo.put_repository("p1", "generic")
    contents = [os.urandom(300_000) for _ in range(30)]
    for number, data in enumerate(contents):
        repo.put_file("p1", "generic", f"/f{number}.bin", data)
    repo.fail_blobs.add(hashlib.sha256(contents[-1]).hexdigest())
    engine = Engine(repo)
    data = {"name": "n", "storeLocation": str(tmp_path / "store"),
            "content": {"projects": [{"projectRegex": "*"}], "compression": True},
            "backupSetting": {"errorStrategy": "FAST_FAIL"}}  # fmt: skip
    task_id = engine.create_task(data)
    failed = engine.execute(task_id)
    assert failed.state is TaskState.FAILED
    assert (tmp_path / "store" / "n" / ".n.zip.resume").is_file()
    repo.fail_blobs.clear()
    done = engine.execute(task_id)
    assert done.state is TaskState.FINISHED, done.errors
    assert done.counts.blobs_reused > 0
    assert done.counts.blobs_reused + done.counts.blobs_written == len(contents)
    assert done.location is not None
    assert engine.verify(done.location).ok
    target = MemoryRepository()
    restorer = Engine(target)
    restore = {"name": "r", "type": "DATA_RESTORE", "storeLocation": done.location,
               "content": {"projects": [{"projectRegex": "*"}]}}  # fmt: skip
    assert restorer.execute(restorer.create_task(restore)).state is TaskState.FINISHED
    assert target.snapshot() == repo.snapshot()
