"""Encrypted backups end to end, through the public API and the command line: round trips,
what the store sees, wrong and missing passphrases, tampering, key changes, copies."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import zipfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docdecrypt import doc_blob_id, doc_decrypt_member, doc_open_key_file
from repobackup import Engine, RunSummary, SqliteRepository, TaskState, verify
from repobackup.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main

PASS = "correct horse battery staple"
MARKER = "ZQX-PLAINTEXT-MARKER-7f3e"
# A bcrypt-shaped password hash, as a user document of the common data holds one.
PASSWORD_HASH = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"


def fill(repo: SqliteRepository) -> list[bytes]:
    """Common data with a password hash, two projects, compressible, random, duplicate and
    empty files, each carrying the marker; return every file content."""
    repo.put_document("user", "admin", {"name": MARKER, "password": PASSWORD_HASH})
    contents = []
    for project in ("alpha", "beta"):
        repo.put_project(project)
        repo.put_repository(project, "libs")
        files = {
            "/text.txt": f"{MARKER} {project} compressible\n".encode() * 300,
            "/random.bin": MARKER.encode() + os.urandom(70_000),
            "/same.txt": f"{MARKER} shared\n".encode() * 20,
            "/empty": b"",
        }
        for path, data in files.items():
            repo.put_file(project, "libs", path, data)
            contents.append(data)
    return contents


def body(store: str | Path, *, compression: bool = False, **content: Any) -> dict[str, Any]:
    return {
        "name": "vault",
        "storeLocation": str(store),
        "content": {
            "commonData": True,
            "projects": [{"projectRegex": "*"}],
            "compression": compression,
            "encryption": True,
            **content,
        },
    }


def restore_body(location: str) -> dict[str, Any]:
    return {
        "name": "back",
        "type": "DATA_RESTORE",
        "storeLocation": location,
        "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
    }


def run(engine: Engine, data: dict[str, Any]) -> RunSummary:
    return engine.execute(engine.create_task(data))


@pytest.fixture(name="source")
def _source(tmp_path: Path) -> Iterator[tuple[SqliteRepository, list[bytes]]]:
    with SqliteRepository(str(tmp_path / "source.db")) as repo:
        yield repo, fill(repo)


@pytest.fixture(name="target")
def _target(tmp_path: Path) -> Iterator[SqliteRepository]:
    with SqliteRepository(str(tmp_path / "target.db")) as repo:
        yield repo


def empty_snapshot(tmp_path: Path) -> Any:
    with SqliteRepository(str(tmp_path / "empty.db")) as repo:
        return repo.snapshot()


def forbidden(contents: list[bytes]) -> list[bytes]:
    """What no stored byte or name may contain: the marker, the password hash, and the
    sha256 of every content, as hex and as raw bytes."""
    found = [MARKER.encode(), PASSWORD_HASH.encode()]
    for data in contents:
        digest = hashlib.sha256(data)
        found += [digest.hexdigest().encode(), digest.digest()]
    return found


def scan(root: Path, contents: list[bytes]) -> list[str]:
    """Every stored file, by name and by bytes, that gives away something forbidden."""
    leaks = []
    needles = forbidden(contents)
    for path in root.rglob("*"):
        name = str(path.relative_to(root)).encode()
        data = path.read_bytes() if path.is_file() else b""
        leaks += [f"{path}: {n[:16]!r}" for n in needles if n in name or n in data]
    return leaks


def stored_files(root: Path) -> dict[str, bytes]:
    """Every file under *root*, by path, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


class TestRoundTrip:
    @pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
    def test_backup_restore_verify_and_nothing_in_clear(
        self,
        tmp_path: Path,
        source: tuple[SqliteRepository, list[bytes]],
        target: SqliteRepository,
        compression: bool,
    ) -> None:
        """An encrypted backup restores whole, verifies with its passphrase, and no stored
        name or byte holds the marker, the password hash, or any content's sha256."""
        repo, contents = source
        store = tmp_path / "store"
        backup = run(Engine(repo, passphrase=PASS), body(store, compression=compression))
        assert backup.state is TaskState.FINISHED, backup.errors
        assert backup.location is not None
        assert scan(store, contents) == []
        report = Engine(repo, passphrase=PASS.encode()).verify(backup.location)
        assert report.ok, report.problems
        assert report.blobs == backup.counts.blobs_written > 0
        restored = run(Engine(target, passphrase=lambda: PASS), restore_body(backup.location))
        assert restored.state is TaskState.FINISHED, restored.errors
        assert target.snapshot() == repo.snapshot()
        assert "keys" in {p.name for p in (store / "vault").iterdir()}

    def test_increments_chain(
        self, tmp_path: Path, source: tuple[SqliteRepository, list[bytes]], target: SqliteRepository
    ) -> None:
        """An increment of an encrypted task follows its full backup; the task folder
        restores the chain, with the keys the first run made."""
        repo, _ = source
        store = tmp_path / "store"
        engine = Engine(repo, passphrase=PASS)
        task = engine.create_task(body(store, increment=True))
        first = engine.execute(task)
        repo.put_file("alpha", "libs", "/later.txt", f"{MARKER} later\n".encode())
        second = engine.execute(task)
        assert (first.state, second.state) == (TaskState.FINISHED, TaskState.FINISHED)
        assert len(list((store / "vault" / "keys").iterdir())) == 1
        report = engine.verify(str(store / "vault"))
        assert report.ok, report.problems
        assert len(report.backups) == 2
        restored = run(Engine(target, passphrase=PASS), restore_body(str(store / "vault")))
        assert restored.state is TaskState.FINISHED, restored.errors
        assert target.snapshot() == repo.snapshot()

    def test_a_copy_elsewhere_restores(
        self, tmp_path: Path, source: tuple[SqliteRepository, list[bytes]], target: SqliteRepository
    ) -> None:
        """A backup copied away from its task folder opens with the keys it carries."""
        repo, _ = source
        backup = run(Engine(repo, passphrase=PASS), body(tmp_path / "store"))
        assert backup.location is not None
        copy = tmp_path / "elsewhere" / Path(backup.location).name
        shutil.copytree(backup.location, copy)
        restored = run(Engine(target, passphrase=PASS), restore_body(str(copy)))
        assert restored.state is TaskState.FINISHED, restored.errors
        assert target.snapshot() == repo.snapshot()


def test_blobs_copied_in_worker_processes(
    tmp_path: Path, source: tuple[SqliteRepository, list[bytes]], target: SqliteRepository
) -> None:
    """With a process pool, the blob jobs encrypt in the workers: same keyed names, same
    round trip."""
    repo, contents = source
    with ProcessPoolExecutor(2) as pool:
        engine = Engine(repo, passphrase=PASS, executor=pool)
        backup = run(engine, body(tmp_path / "store"))
    assert backup.state is TaskState.FINISHED, backup.errors
    assert backup.location is not None
    assert not backup.notes  # the blobs did go to the pool
    assert scan(tmp_path / "store", contents) == []
    restored = run(Engine(target, passphrase=PASS), restore_body(backup.location))
    assert restored.state is TaskState.FINISHED, restored.errors
    assert target.snapshot() == repo.snapshot()


@pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
def test_backup_and_restore_on_a_process_pool(
    tmp_path: Path,
    source: tuple[SqliteRepository, list[bytes]],
    target: SqliteRepository,
    compression: bool,
) -> None:
    """Both the backup's and the restore's blob jobs run in worker processes, which hold
    the opened key and never the passphrase: nothing leaks, and the round trip is whole."""
    repo, contents = source
    with ProcessPoolExecutor(2) as pool:
        backup = run(
            Engine(repo, passphrase=PASS, executor=pool),
            body(tmp_path / "store", compression=compression),
        )
        assert backup.state is TaskState.FINISHED, backup.errors
        assert backup.location is not None
        assert not backup.notes  # the blobs did go to the pool
        assert scan(tmp_path / "store", contents) == []
        restored = run(
            Engine(target, passphrase=PASS, executor=pool), restore_body(backup.location)
        )
    assert restored.state is TaskState.FINISHED, restored.errors
    assert not restored.notes  # the restore's blobs went to the pool too
    assert target.snapshot() == repo.snapshot()
    assert Engine(repo, passphrase=PASS).verify(backup.location).ok


@pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
def test_key_files_are_private(
    tmp_path: Path, source: tuple[SqliteRepository, list[bytes]], compression: bool
) -> None:
    """Under a permissive umask, the task folder's key files and their copies in a folder
    backup are the owner's only (0600 in 0700 folders), like every other backup file."""
    repo, _ = source
    old = os.umask(0o022)
    try:
        backup = run(
            Engine(repo, passphrase=PASS), body(tmp_path / "store", compression=compression)
        )
    finally:
        os.umask(old)
    assert backup.state is TaskState.FINISHED, backup.errors
    assert backup.location is not None
    keys = [tmp_path / "store" / "vault" / "keys"]
    if not compression:
        keys.append(Path(backup.location) / "keys")
    for folder in keys:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        files = list(folder.iterdir())
        assert files
        assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o600}, folder


def test_flipped_byte_in_a_zip_is_refused(
    tmp_path: Path, source: tuple[SqliteRepository, list[bytes]], target: SqliteRepository
) -> None:
    """A byte flipped inside an encrypted zip's member fails verify and restore."""
    repo, _ = source
    backup = run(Engine(repo, passphrase=PASS), body(tmp_path / "store", compression=True))
    assert backup.location is not None
    with zipfile.ZipFile(backup.location) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    _flip(Path(backup.location), info.header_offset + 30 + len(info.filename) + 100)
    report = Engine(target, passphrase=PASS).verify(backup.location)
    assert not report.ok
    assert any(info.filename in p.member for p in report.problems), report.problems
    restored = run(Engine(target, passphrase=PASS), restore_body(backup.location))
    assert restored.errors
    assert len(target.snapshot()["blobs"]) < len(repo.snapshot()["blobs"])


class TestFormatByHand:
    @pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
    def test_a_backup_opens_with_docs_format_alone(
        self, tmp_path: Path, source: tuple[SqliteRepository, list[bytes]], compression: bool
    ) -> None:
        """With only docs/format.md's recipe (tests/docdecrypt.py), a backup's key copy
        opens with the passphrase, its manifest and records decrypt, and every blob is
        where its keyed id says, holding its content."""
        repo, _ = source
        backup = run(Engine(repo, passphrase=PASS), body(tmp_path / "s", compression=compression))
        assert backup.location is not None
        backup_id = Path(backup.location).name.removesuffix(".zip")
        if compression:
            with zipfile.ZipFile(backup.location) as archive:
                stored = {n: archive.read(n) for n in archive.namelist()}
        else:
            root = Path(backup.location)
            stored = {
                str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()
            }
        keys = [name for name in stored if name.startswith("keys/")]
        assert keys
        master = doc_open_key_file(stored[keys[0]], PASS)
        manifest = json.loads(
            doc_decrypt_member(master, stored["manifest.json"], backup_id, "manifest.json")
        )
        assert manifest["format"] == 2
        assert manifest["name"] == backup_id
        assert manifest["encryption"]["cipher"] == "AES-256-GCM"
        blobs = 0
        for entry in manifest["members"]:
            plain = doc_decrypt_member(master, stored[entry["path"]], backup_id, entry["path"])
            assert hashlib.sha256(plain).hexdigest() == entry["sha256"]
            if entry["path"].endswith(".zst"):
                plain = zstandard.ZstdDecompressor().decompressobj().decompress(plain)
            for line in plain.splitlines():
                record = json.loads(line)
                if record["blob"] is None:
                    continue
                name = doc_blob_id(master, record["blob"])
                path = f"blobs/{name[:2]}/{name[2:4]}/{name}"
                member = path if path in stored else path + ".zst"
                content = doc_decrypt_member(master, stored[member], backup_id, member)
                if member.endswith(".zst"):
                    content = zstandard.ZstdDecompressor().decompressobj().decompress(content)
                assert hashlib.sha256(content).hexdigest() == record["blob"]
                blobs += 1
        assert blobs > 0


class TestPassphrases:
    def test_wrong_passphrase_writes_nothing(
        self, tmp_path: Path, source: tuple[SqliteRepository, list[bytes]], target: SqliteRepository
    ) -> None:
        """A wrong passphrase fails restore, verify and a further backup, each before
        anything is written."""
        repo, _ = source
        store = tmp_path / "store"
        backup = run(Engine(repo, passphrase=PASS), body(store))
        assert backup.location is not None
        restored = run(Engine(target, passphrase="wrong"), restore_body(backup.location))
        assert restored.state is TaskState.FAILED
        assert "wrong passphrase" in restored.errors[0].message
        assert target.snapshot() == empty_snapshot(tmp_path)
        report = Engine(repo, passphrase="wrong").verify(backup.location)
        assert not report.ok
        assert "wrong passphrase" in report.problems[0].message
        before = sorted((store / "vault").iterdir())
        again = run(Engine(repo, passphrase="wrong"), body(store))
        assert again.state is TaskState.FAILED
        assert "wrong passphrase" in again.errors[0].message
        assert sorted((store / "vault").iterdir()) == before

    def test_missing_passphrase(
        self, tmp_path: Path, source: tuple[SqliteRepository, list[bytes]], target: SqliteRepository
    ) -> None:
        """Without a passphrase an encrypted backup is not written, not restored, and verify
        says its contents could not be checked."""
        repo, _ = source
        store = tmp_path / "store"
        refused = run(Engine(repo), body(store))
        assert refused.state is TaskState.FAILED
        assert "no passphrase" in refused.errors[0].message
        assert not store.exists() or list(store.rglob("vault-*")) == []
        backup = run(Engine(repo, passphrase=PASS), body(store))
        assert backup.location is not None
        restored = run(Engine(target), restore_body(backup.location))
        assert restored.state is TaskState.FAILED
        assert "no passphrase" in restored.errors[0].message
        assert target.snapshot() == empty_snapshot(tmp_path)
        report = verify(backup.location)
        assert not report.ok
        assert "could not be read or checked" in report.problems[0].message


def _members(location: str, prefix: str) -> list[Path]:
    return sorted(
        p
        for p in Path(location).rglob("*")
        if p.is_file()
        and p.name != "manifest.json"
        and str(p.relative_to(location)).startswith(prefix)
    )


def _flip(path: Path, at: int = -20) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


class TestTampering:
    @pytest.fixture(name="backups")
    def _backups(
        self, tmp_path: Path, source: tuple[SqliteRepository, list[bytes]]
    ) -> tuple[str, str]:
        repo, _ = source
        engine = Engine(repo, passphrase=PASS)
        task = engine.create_task(body(tmp_path / "store"))
        first, second = engine.execute(task), engine.execute(task)
        assert first.location is not None
        assert second.location is not None
        return first.location, second.location

    def _refused(self, location: str, target: SqliteRepository, member: str) -> None:
        report = Engine(target, passphrase=PASS).verify(location)
        assert not report.ok
        assert any(member in p.member for p in report.problems), report.problems
        restored = run(Engine(target, passphrase=PASS), restore_body(location))
        assert restored.state is not TaskState.FINISHED or restored.errors
        assert any(member in e.key or member in e.message for e in restored.errors), restored
        # Whatever restore wrote passed authentication and matches its sha256.
        for sha, data in target.snapshot()["blobs"].items():
            assert data is None or hashlib.sha256(data).hexdigest() == sha

    def test_flipped_byte_in_a_blob(
        self,
        backups: tuple[str, str],
        target: SqliteRepository,
        source: tuple[SqliteRepository, list[bytes]],
    ) -> None:
        blob = _members(backups[1], "blobs")[0]
        _flip(blob)
        self._refused(backups[1], target, blob.name)
        assert len(target.snapshot()["blobs"]) < len(source[0].snapshot()["blobs"])

    def test_truncated_records_member(
        self, backups: tuple[str, str], target: SqliteRepository
    ) -> None:
        member = Path(backups[1]) / "common" / "user.jsonl"
        member.write_bytes(member.read_bytes()[:-10])
        self._refused(backups[1], target, "common/user.jsonl")

    def test_two_swapped_blobs(
        self,
        backups: tuple[str, str],
        target: SqliteRepository,
        source: tuple[SqliteRepository, list[bytes]],
    ) -> None:
        one, two = _members(backups[1], "blobs")[:2]
        a, b = one.read_bytes(), two.read_bytes()
        one.write_bytes(b)
        two.write_bytes(a)
        self._refused(backups[1], target, one.name)
        assert len(target.snapshot()["blobs"]) < len(source[0].snapshot()["blobs"])

    def test_member_replayed_from_another_backup(
        self, backups: tuple[str, str], target: SqliteRepository
    ) -> None:
        older, newer = (Path(b) for b in backups)
        blob = _members(str(newer), "blobs")[0]
        relative = blob.relative_to(newer)
        assert (older / relative).exists()  # the same key set names it the same
        shutil.copyfile(older / relative, blob)
        self._refused(str(newer), target, blob.name)


def _write(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    return path


@pytest.mark.slow
class TestS3:
    @pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
    def test_round_trip_on_s3(
        self,
        s3: Any,
        source: tuple[SqliteRepository, list[bytes]],
        target: SqliteRepository,
        compression: bool,
    ) -> None:
        """An encrypted backup to s3:// restores whole; no object name or byte leaks."""
        repo, contents = source
        options = {"s3": s3.options}
        bucket = s3.new_bucket()
        backup = run(
            Engine(repo, passphrase=PASS, storage_options=options),
            body(f"s3://{bucket}/store", compression=compression),
        )
        assert backup.state is TaskState.FINISHED, backup.errors
        assert backup.location is not None
        fs = s3.filesystem()
        needles = forbidden(contents)
        objects = fs.find(bucket)
        assert any("/keys/" in name for name in objects)
        for name in objects:
            data = fs.cat_file(name)
            assert not [n for n in needles if n in name.encode() or n in data], name
        assert Engine(repo, passphrase=PASS, storage_options=options).verify(backup.location).ok
        restored = run(
            Engine(target, passphrase=PASS, storage_options=options), restore_body(backup.location)
        )
        assert restored.state is TaskState.FINISHED, restored.errors
        assert target.snapshot() == repo.snapshot()


class TestCommandLine:
    def test_backup_verify_and_keys(
        self,
        tmp_path: Path,
        source: tuple[SqliteRepository, list[bytes]],
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`backup --encrypt --password-file`, verify with and without it, then key add,
        passwd, list and remove: the data files stay byte for byte the same."""
        repo, _ = source
        repo.close()
        one, two, three = (_write(tmp_path / f"pw{i}", f"pass-{i}") for i in (1, 2, 3))
        store = tmp_path / "store"
        db = tmp_path / "source.db"
        monkeypatch.delenv("REPOBACKUP_PASSWORD", raising=False)
        common = ["--repository", db, "--store", store, "--all", "--name", "vault"]

        def cli(*argv: object) -> int:
            return main([str(a) for a in argv])

        assert cli("backup", *common, "--encrypt") != EXIT_OK
        assert "no passphrase" in capsys.readouterr().err
        code = cli("backup", *common, "--encrypt", "--password-file", one)
        assert code == EXIT_OK, capsys.readouterr()
        folder = store / "vault"
        assert cli("verify", folder) == EXIT_FAILED
        assert "could not be read or checked" in capsys.readouterr().out
        monkeypatch.setenv("REPOBACKUP_PASSWORD", "pass-1")
        assert cli("verify", folder) == EXIT_OK
        monkeypatch.delenv("REPOBACKUP_PASSWORD")
        data = {k: v for k, v in stored_files(folder).items() if not k.startswith("keys/")}
        add = ("key", "add", folder, "--password-file", one, "--new-password-file", two)
        assert cli(*add) == EXIT_OK
        passwd = ("--password-file", two, "--new-password-file", three)
        assert cli("key", "passwd", folder, *passwd) == EXIT_OK
        capsys.readouterr()
        assert cli("--json", "key", "list", folder) == EXIT_OK
        listed = json.loads(capsys.readouterr().out)
        assert len(listed) == 2
        assert len({k["keySet"] for k in listed}) == 1
        first = min(listed, key=lambda k: k["created"])["id"]
        assert cli("key", "remove", folder, first, "--password-file", three) == EXIT_OK
        assert cli(*add) != EXIT_OK
        after = {k: v for k, v in stored_files(folder).items() if not k.startswith("keys/")}
        assert after == data
        assert cli("verify", folder, "--password-file", three) == EXIT_OK
        assert cli("verify", folder, "--password-file", tmp_path / "none") == EXIT_USAGE


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.dictionaries(
        st.text("abcxyz/", min_size=1, max_size=8).map(lambda s: "/" + s.strip("/") or "/f"),
        st.binary(max_size=3000),
        max_size=5,
    ),
    compression=st.booleans(),
)
def test_random_repositories_round_trip(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes], compression: bool
) -> None:
    """Any small repository comes back whole from an encrypted backup, folder or zip."""
    root = tmp_path_factory.mktemp("prop")
    with (
        SqliteRepository(str(root / "s.db")) as repo,
        SqliteRepository(str(root / "t.db")) as target,
    ):
        repo.put_document("user", "u", {"password": PASSWORD_HASH})
        repo.put_project("p")
        repo.put_repository("p", "r")
        for path, data in files.items():
            if path.strip("/"):
                repo.put_file("p", "r", path, data)
        backup = run(Engine(repo, passphrase=PASS), body(root / "store", compression=compression))
        assert backup.state is TaskState.FINISHED, backup.errors
        assert backup.location is not None
        restored = run(Engine(target, passphrase=PASS), restore_body(backup.location))
        assert restored.state is TaskState.FINISHED, restored.errors
        assert target.snapshot() == repo.snapshot()
