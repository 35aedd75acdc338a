"""Backups on object stores: S3 through s3fs against moto's real HTTP server, and retries of
transient store failures injected by a flaky fsspec filesystem."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

from conftest import ARCHIVE_T0
from helpers import is_transient, retrying
from repobackup import Engine, RunSummary, SqliteRepository, TaskState, verify
from repobackup.exceptions import StoreError
from s3server import S3Server

pytestmark = pytest.mark.slow  # real HTTP to a local server: seconds, not minutes


class Clock:
    """A settable clock for the engine."""

    def __init__(self) -> None:
        self.now = ARCHIVE_T0 + timedelta(days=1)

    def __call__(self) -> Any:
        return self.now


def task_body(store: str, **content: Any) -> dict[str, Any]:
    content.setdefault("commonData", True)
    content.setdefault("projects", [{"projectRegex": "*"}])
    return {"name": "nightly", "storeLocation": store, "content": content}


def restore_body(location: str, **settings: Any) -> dict[str, Any]:
    body = task_body(location)
    body.update(name="restore", type="DATA_RESTORE", backupSetting=settings)
    return body


def run(engine: Engine, body: dict[str, Any]) -> RunSummary:
    return engine.execute(engine.create_task(body))


@pytest.fixture(name="target")
def _target(tmp_path: Path) -> Iterator[SqliteRepository]:
    with SqliteRepository(str(tmp_path / "target.db")) as repo:
        yield repo


@pytest.fixture(name="bucket")
def _bucket(s3: S3Server) -> str:
    return s3.new_bucket()


class TestS3:
    @pytest.mark.parametrize("compression", [False, True])
    def test_backup_restore_and_verify(
        self,
        s3: S3Server,
        bucket: str,
        archive_source: SqliteRepository,
        target: SqliteRepository,
        compression: bool,
    ) -> None:
        """A backup to s3:// restores into an empty repository whole and verifies clean."""
        options = {"s3": s3.options}
        backup = run(
            Engine(archive_source, storage_options=options),
            task_body(f"s3://{bucket}/store", compression=compression),
        )
        assert backup.state is TaskState.FINISHED, backup.errors
        assert backup.location is not None
        assert backup.location.startswith(f"s3://{bucket}/store/nightly/nightly-")
        assert any("free space" in note for note in backup.notes)
        fs = s3.filesystem()
        names = fs.ls(f"{bucket}/store/nightly", detail=False)
        assert [name.rsplit("/", 1)[-1] for name in names] == [backup.location.rsplit("/", 1)[-1]]
        if compression:
            assert backup.location.endswith(".zip")
            assert fs.isfile(backup.location)
        else:
            assert fs.isfile(f"{backup.location}/manifest.json")
        restored = run(Engine(target, storage_options=options), restore_body(backup.location))
        assert restored.state is TaskState.FINISHED, restored.errors
        assert target.snapshot() == archive_source.snapshot()
        report = verify(backup.location, options)
        assert report.ok, report.problems
        assert report.blobs == backup.counts.blobs_written

    def test_restore_from_the_task_folder_takes_the_newest_complete(
        self,
        s3: S3Server,
        bucket: str,
        archive_source: SqliteRepository,
        target: SqliteRepository,
    ) -> None:
        """A task folder on S3 restores its newest complete backup, skipping a damaged one."""
        options = {"s3": s3.options}
        clock = Clock()
        engine = Engine(archive_source, storage_options=options, clock=clock)
        task = engine.create_task(task_body(f"s3://{bucket}/store", compression=True))
        first = engine.execute(task)
        archive_source.put_file("p1", "generic", "/later.txt", b"later\n", modified=clock.now)
        clock.now += timedelta(hours=1)
        second = engine.execute(task)
        assert first.location != second.location
        assert second.location is not None
        fs = s3.filesystem()
        # A newer zip that is cut short, as a crashed upload elsewhere might leave it.
        fs.pipe(
            f"{bucket}/store/nightly/nightly-29990101.000000.zip",
            fs.cat_file(second.location)[:-50],
        )
        folder = f"s3://{bucket}/store/nightly"
        restored = run(Engine(target, storage_options=options), restore_body(folder))
        assert restored.state is TaskState.FINISHED, restored.errors
        assert restored.location == second.location
        assert target.read_file("p1", "generic", "/later.txt") == b"later\n"
        report = verify(folder, options)
        assert report.backups == (second.location,)
        assert [p.backup.rsplit("/", 1)[-1] for p in report.problems] == [
            "nightly-29990101.000000.zip"
        ]

    def test_verify_on_s3_finds_a_swapped_blob(
        self, s3: S3Server, bucket: str, archive_source: SqliteRepository
    ) -> None:
        """A blob object replaced on the store is reported by verify."""
        options = {"s3": s3.options}
        backup = run(Engine(archive_source, storage_options=options), task_body(f"s3://{bucket}/s"))
        assert backup.location is not None
        fs = s3.filesystem()
        blob = next(p for p in fs.find(backup.location) if "/blobs/" in p and fs.size(p) > 0)
        fs.pipe(blob, b"swapped")
        report = verify(backup.location, options)
        assert not report.ok
        assert [p.member for p in report.problems] == [
            blob.split(f"{bucket}/s/", 1)[1].split("/", 2)[2]
        ]

    def test_credentials_and_endpoint_from_the_environment(
        self,
        s3_env: S3Server,
        archive_source: SqliteRepository,
        target: SqliteRepository,
    ) -> None:
        """With AWS_* variables set, s3:// locations work without any storage options."""
        bucket = s3_env.new_bucket()
        backup = run(Engine(archive_source), task_body(f"s3://{bucket}/env", compression=True))
        assert backup.state is TaskState.FINISHED, backup.errors
        assert backup.location is not None
        restored = run(Engine(target), restore_body(backup.location))
        assert restored.state is TaskState.FINISHED, restored.errors
        assert target.snapshot() == archive_source.snapshot()
        assert verify(backup.location).ok

    def test_a_failed_compressed_backup_leaves_no_object_and_no_upload(
        self, s3: S3Server, bucket: str, archive_source: SqliteRepository
    ) -> None:
        """A zip whose run fails after parts were uploaded never appears: the multipart
        upload is aborted, nothing is left on the store."""
        big = os.urandom(6 << 20)  # incompressible, so more than one 5 MiB part goes up
        archive_source.put_file("p1", "generic", "/a-big.bin", big, modified=ARCHIVE_T0)
        archive_source.put_file("p1", "generic", "/b-bad.bin", b"bad" * 100, modified=ARCHIVE_T0)
        bad = Path(archive_source.blobs)
        victim = next(p for p in bad.rglob("*") if p.is_file() and p.read_bytes() == b"bad" * 100)
        victim.write_bytes(b"rotten")
        options = {"s3": {**s3.options, "default_block_size": 5 * 2**20}}
        body = task_body(f"s3://{bucket}/store", compression=True)
        body["backupSetting"] = {"errorStrategy": "FAST_FAIL"}
        summary = run(Engine(archive_source, storage_options=options, max_workers=1), body)
        assert summary.state is TaskState.FAILED
        fs = s3.filesystem()
        assert fs.find(bucket) == []
        uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket)
        assert uploads.get("Uploads", []) == []

    def test_no_threads_are_left_behind(
        self, s3: S3Server, bucket: str, archive_source: SqliteRepository
    ) -> None:
        """After backups and verifies, none of the worker threads they started is alive."""
        before = set(threading.enumerate())
        options = {"s3": s3.options}
        for compression in (False, True):
            backup = run(
                Engine(archive_source, storage_options=options),
                task_body(f"s3://{bucket}/t{compression}", compression=compression),
            )
            assert backup.location is not None
            verify(backup.location, options)
        alive = [
            t.name for t in set(threading.enumerate()) - before if t.name.startswith("repobackup-")
        ]
        assert alive == []
        assert s3.thread is not None
        assert s3.thread.is_alive()


# --------------------------------------------------------------------------------------------
# Retries, with failures injected by a real filesystem


class _FailingFile(MemoryFile):
    """A memory file whose writes fail once ``limit`` bytes went through."""

    limit = 0

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.limit:
            raise ConnectionError("connection reset while uploading")
        return super().write(data)


class FlakyFileSystem(MemoryFileSystem):
    """An in-memory store whose chosen methods fail their next N calls, as a network store
    does under load. ``plan`` maps a method name to how many calls fail; ``error`` makes the
    exception; ``calls`` counts every call."""

    protocol = "flaky"
    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]
    plan: ClassVar[dict[str, int]] = {}
    calls: ClassVar[Counter[str]] = Counter()
    error: ClassVar[Callable[[], Exception]] = lambda: ConnectionError("connection reset")
    write_limit: ClassVar[int | None] = None

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return super()._strip_protocol(str(path).removeprefix("flaky://"))

    def _trip(self, name: str) -> None:
        self.calls[name] += 1
        if self.plan.get(name, 0) > 0:
            self.plan[name] -= 1
            raise type(self).error()

    def info(self, path: str, **kwargs: Any) -> Any:
        self._trip("info")
        return super().info(path, **kwargs)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        self._trip("ls")
        return super().ls(path, detail=detail, **kwargs)

    def cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> Any:
        self._trip("cat_file")
        return super().cat_file(path, start=start, end=end, **kwargs)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self._trip("makedirs")
        super().makedirs(path, exist_ok=exist_ok)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        self._trip("_open")
        if mode == "wb" and self.write_limit is not None:
            file = _FailingFile(self, self._strip_protocol(path))
            file.limit = self.write_limit
            file.commit()
            return file
        return super()._open(path, mode, **kwargs)


# Registered by import path, as installed filesystems are, so that task validation knows it.
fsspec.register_implementation("flaky", f"{__name__}.FlakyFileSystem", clobber=True)


@pytest.fixture(name="flaky")
def _flaky() -> Iterator[type[FlakyFileSystem]]:
    def reset() -> None:
        FlakyFileSystem.store.clear()
        FlakyFileSystem.pseudo_dirs[:] = [""]
        FlakyFileSystem.plan = {}
        FlakyFileSystem.calls = Counter()
        FlakyFileSystem.error = lambda: ConnectionError("connection reset")
        FlakyFileSystem.write_limit = None

    reset()
    yield FlakyFileSystem
    reset()


class TestRetry:
    @pytest.mark.parametrize("compression", [False, True])
    def test_transient_failures_are_retried(
        self,
        flaky: type[FlakyFileSystem],
        archive_source: SqliteRepository,
        target: SqliteRepository,
        compression: bool,
    ) -> None:
        """Opens, listings, lookups and ranged reads that fail twice succeed on retry: backup
        and restore both finish as if nothing happened."""
        flaky.plan = {"makedirs": 2, "_open": 2}
        backup = run(Engine(archive_source), task_body("flaky://store", compression=compression))
        assert backup.state is TaskState.FINISHED, backup.errors
        assert flaky.plan == {"makedirs": 0, "_open": 0}
        assert backup.location is not None
        flaky.plan = {"info": 2, "ls": 2, "cat_file": 2, "_open": 2}
        restored = run(Engine(target), restore_body("flaky://store/nightly"))
        assert restored.state is TaskState.FINISHED, restored.errors
        assert target.snapshot() == archive_source.snapshot()
        reads = "cat_file" if compression else "_open"  # how each form reads members
        assert {name: flaky.plan[name] for name in ("info", "ls", reads)} == {
            "info": 0,
            "ls": 0,
            reads: 0,
        }

    def test_a_lasting_failure_is_a_store_error_naming_the_object(
        self,
        flaky: type[FlakyFileSystem],
        archive_source: SqliteRepository,
        target: SqliteRepository,
    ) -> None:
        """A store that keeps failing fails the task after a bounded number of attempts,
        with a message naming the object."""
        backup = run(Engine(archive_source), task_body("flaky://store", compression=True))
        assert backup.location is not None
        flaky.plan = {"cat_file": 10**6}
        flaky.calls.clear()
        started = time.monotonic()
        restored = run(Engine(target), restore_body(backup.location))
        assert time.monotonic() - started < 10
        assert restored.state is TaskState.FAILED
        message = restored.errors[-1].message
        assert backup.location in message
        assert "failed 5 times" in message
        assert flaky.calls["cat_file"] == 5

    def test_permanent_failures_are_not_retried(
        self, flaky: type[FlakyFileSystem], archive_source: SqliteRepository
    ) -> None:
        """A refused permission is reported at once, not asked again."""
        backup = run(Engine(archive_source), task_body("flaky://store", compression=True))
        assert backup.location is not None
        flaky.error = lambda: PermissionError("access denied")
        flaky.plan = {"cat_file": 10**6}
        flaky.calls.clear()
        restored = run(Engine(archive_source), restore_body(backup.location))
        assert restored.state is TaskState.FAILED
        assert "PermissionError" in restored.errors[-1].message
        assert flaky.calls["cat_file"] == 1

    def test_a_broken_upload_stream_fails_the_run_naming_the_zip(
        self, flaky: type[FlakyFileSystem], archive_source: SqliteRepository
    ) -> None:
        """A stream cannot be replayed: a write failing midway fails the run with the zip's
        path, and no zip is left behind."""
        flaky.write_limit = 20_000
        backup = run(Engine(archive_source), task_body("flaky://store", compression=True))
        assert backup.state is TaskState.FAILED
        message = backup.errors[-1].message
        assert "flaky://store/nightly/nightly-" in message
        assert ".zip" in message
        assert "ConnectionError" in message
        assert [p for p in flaky.store if p.endswith(".zip")] == []


def client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


def as_s3fs_raises(error: Exception) -> Exception:
    """The exception s3fs raises for *error*: its own translation, chained as s3fs chains it."""
    from s3fs.errors import translate_boto_error

    try:
        try:
            raise error
        except Exception as exc:
            raise translate_boto_error(exc) from exc
    except Exception as translated:
        return translated


class TestTransient:
    @pytest.mark.parametrize(
        ("code", "status"),
        [("SlowDown", 503), ("InternalError", 500), ("ServiceUnavailable", 503), ("X", 502)],
    )
    def test_throttling_and_server_errors_are_transient(self, code: str, status: int) -> None:
        """S3 throttling and 5xx answers, as s3fs raises them, are worth another try."""
        assert is_transient(as_s3fs_raises(client_error(code, status)))

    @pytest.mark.parametrize(
        ("code", "status"), [("AccessDenied", 403), ("NoSuchKey", 404), ("NoSuchBucket", 404)]
    )
    def test_client_errors_are_not(self, code: str, status: int) -> None:
        """Missing objects and refused permissions do not get better by asking again."""
        assert not is_transient(as_s3fs_raises(client_error(code, status)))

    def test_network_errors_are_transient(self) -> None:
        """Dropped connections and timeouts, builtin or botocore's, are transient."""
        from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

        assert is_transient(ConnectionResetError())
        assert is_transient(TimeoutError())
        assert is_transient(EndpointConnectionError(endpoint_url="http://x"))
        assert is_transient(ReadTimeoutError(endpoint_url="http://x"))
        assert not is_transient(FileNotFoundError("gone"))
        assert not is_transient(ValueError("bad"))

    def test_backoff_grows_and_stays_bounded(self) -> None:
        """Retries wait with jitter up to base * 2**n, then give up with a StoreError."""
        attempts: list[float] = []

        def fails() -> None:
            attempts.append(time.monotonic())
            raise ConnectionError("reset")

        with pytest.raises(StoreError, match=r"^fetching x: failed 4 times"):
            retrying("fetching x", fails, attempts=4, base=0.02)
        waits = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        assert len(waits) == 3
        assert all(wait <= 0.02 * 2**n + 0.05 for n, wait in enumerate(waits))

    def test_success_after_failures_returns_the_result(self) -> None:
        """A call that fails transiently then succeeds gives its result."""
        outcomes: list[Exception | str] = [TimeoutError(), ConnectionError(), "done"]

        def call() -> str:
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        assert retrying("x", call, base=0.001) == "done"
        with pytest.raises(ValueError, match="attempts"):
            retrying("x", call, attempts=0)
