"""Scale-out and resumable runs: blob jobs on a real dask.distributed cluster, a backup
killed midway and run again, and a large blob with memory flat."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import last_json
from repobackup import Engine, RunSummary, SqliteRepository, TaskState

T0_DAYS = 1
BLOBS = 24


def body(store: str, *, compression: bool = False) -> dict[str, Any]:
    return {
        "name": "nightly",
        "storeLocation": store,
        "content": {
            "commonData": True,
            "projects": [{"projectRegex": "*"}],
            "compression": compression,
        },
    }


def restore_body(location: str) -> dict[str, Any]:
    data = body(location)
    data["name"] = "restore"
    data["type"] = "DATA_RESTORE"
    return data


def run(engine: Engine, data: dict[str, Any]) -> RunSummary:
    return engine.execute(engine.create_task(data))


def fill(repo: SqliteRepository, count: int, size: int) -> None:
    """*count* distinct files of *size* bytes, half compressible, half random."""
    repo.put_project("p1")
    repo.put_repository("p1", "generic")
    repo.put_document("user", "admin", {"name": "admin"})
    for number in range(count):
        if number % 2:
            data = os.urandom(size)
        else:
            data = (f"line {number} of a text file\n".encode() * (size // 20 + 1))[:size]
        repo.put_file("p1", "generic", f"/f{number}.bin", data)


@pytest.fixture(name="source")
def _source(tmp_path: Path) -> Iterator[SqliteRepository]:
    with SqliteRepository(tmp_path / "source.db") as repo:
        fill(repo, BLOBS, 300_000)
        yield repo


# --- dask.distributed --------------------------------------------------------------------------


@pytest.fixture(scope="module", name="cluster")
def _cluster() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def on_the_cluster(client: Any, engine_run: Any) -> tuple[Any, list[dict[str, Any]]]:
    """Run *engine_run(executor)* and return its result and the blob tasks the scheduler's
    task stream recorded."""
    from distributed import get_task_stream

    with get_task_stream(client) as stream:
        result = engine_run(client.get_executor(pure=False, retries=2))
    jobs = [task for task in stream.data if str(task["key"]).startswith("run_job")]
    return result, jobs


@pytest.mark.slow
class TestDask:
    @pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
    def test_backup_and_restore_run_on_the_workers(
        self, cluster: Any, source: SqliteRepository, tmp_path: Path, compression: bool
    ) -> None:
        """The blob jobs of a backup and of its restore run on the cluster's two worker
        processes, and the restore is identical."""
        workers = set(cluster.scheduler_info()["workers"])
        backup, jobs = on_the_cluster(
            cluster,
            lambda ex: run(
                Engine(source, executor=ex), body(str(tmp_path / "store"), compression=compression)
            ),
        )
        assert backup.state is TaskState.FINISHED, backup.errors
        assert backup.notes == ()
        assert backup.counts.blobs_written == BLOBS
        assert jobs
        assert {task["worker"] for task in jobs} <= workers
        assert len({task["worker"] for task in jobs}) == 2
        with SqliteRepository(tmp_path / "target.db") as target:
            restored, jobs = on_the_cluster(
                cluster,
                lambda ex: run(Engine(target, executor=ex), restore_body(str(backup.location))),
            )
            assert restored.state is TaskState.FINISHED, restored.errors
            assert restored.notes == ()
            assert jobs
            assert {task["worker"] for task in jobs} <= workers
            assert target.snapshot() == source.snapshot()
        assert Engine(source).verify(str(backup.location)).ok

    @pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
    def test_encrypted_backup_and_restore_run_on_the_workers(
        self, cluster: Any, source: SqliteRepository, tmp_path: Path, compression: bool
    ) -> None:
        """An encrypted backup's blob jobs, and its restore's, run on the cluster's workers
        with the opened key they were handed: the restore is identical."""
        pytest.importorskip("cryptography")
        passphrase = "correct horse battery staple"
        data = body(str(tmp_path / "store"), compression=compression)
        data["content"]["encryption"] = True
        backup, jobs = on_the_cluster(
            cluster, lambda ex: run(Engine(source, executor=ex, passphrase=passphrase), data)
        )
        assert backup.state is TaskState.FINISHED, backup.errors
        assert backup.notes == ()
        assert backup.counts.blobs_written == BLOBS
        assert jobs
        with SqliteRepository(tmp_path / "target.db") as target:
            restored, jobs = on_the_cluster(
                cluster,
                lambda ex: run(
                    Engine(target, executor=ex, passphrase=passphrase),
                    restore_body(str(backup.location)),
                ),
            )
            assert restored.state is TaskState.FINISHED, restored.errors
            assert restored.notes == ()
            assert jobs
            assert target.snapshot() == source.snapshot()
        assert Engine(source, passphrase=passphrase).verify(str(backup.location)).ok
        assert not Engine(source).verify(str(backup.location)).ok

    @pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
    def test_to_s3(
        self, cluster: Any, s3: Any, source: SqliteRepository, tmp_path: Path, compression: bool
    ) -> None:
        """The workers write to and read from S3 (moto) with the run's storage options."""
        bucket = s3.new_bucket("dask")
        options = {"s3": s3.options}
        backup, jobs = on_the_cluster(
            cluster,
            lambda ex: run(
                Engine(source, executor=ex, storage_options=options),
                body(f"s3://{bucket}/store", compression=compression),
            ),
        )
        assert backup.state is TaskState.FINISHED, backup.errors
        assert jobs
        with SqliteRepository(tmp_path / "target.db") as target:
            restored, jobs = on_the_cluster(
                cluster,
                lambda ex: run(
                    Engine(target, executor=ex, storage_options=options),
                    restore_body(str(backup.location)),
                ),
            )
            assert restored.state is TaskState.FINISHED, restored.errors
            assert jobs
            assert target.snapshot() == source.snapshot()
        # Nothing the workers spooled is left beside the backup.
        assert not [p for p in s3.filesystem().find(bucket) if ".spool" in p]

    def test_the_command_line_flag(
        self, cluster: Any, source: SqliteRepository, tmp_path: Path
    ) -> None:
        """``repobackup backup --dask-scheduler ADDRESS`` runs its blob jobs on the cluster."""
        from distributed import get_task_stream

        address = cluster.scheduler.address
        args = ("backup", "-r", tmp_path / "source.db", "--store", tmp_path / "store",
                "--name", "nightly", "--all", "--compress", "--json")  # fmt: skip
        with get_task_stream(cluster) as stream:
            done = subprocess.run(cli(*args, "--dask-scheduler", address), capture_output=True,
                                  text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert last_json(done.stdout)["counts"]["blobsWritten"] == BLOBS
        assert [task for task in stream.data if str(task["key"]).startswith("run_job")]


def test_an_unreachable_scheduler_is_a_usage_error(tmp_path: Path) -> None:
    """``--dask-scheduler`` at an address nobody listens on: exit 2 within the timeout, a
    message naming the address, and no backup started or stored."""
    pytest.importorskip("distributed")
    with socket.socket() as probe:  # a port that was free a moment ago and is closed now
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    SqliteRepository(tmp_path / "source.db").close()
    store = tmp_path / "store"
    args = ("backup", "-r", tmp_path / "source.db", "--store", store, "--name", "nightly",
            "--all", "--dask-scheduler", address, "--dask-timeout", "2")  # fmt: skip
    done = subprocess.run(cli(*args), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert f"--dask-scheduler: cannot reach {address!r}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not store.exists()


# --- Resumable runs ----------------------------------------------------------------------------


def cli(*argv: str | Path) -> list[str]:
    return [sys.executable, "-m", "repobackup.cli", *map(str, argv)]


def blob_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("blobs/*/*/*") if p.is_file())


@pytest.mark.slow
class TestResume:
    def test_a_killed_folder_backup_resumes(self, tmp_path: Path) -> None:
        """kill -9 at about 60% of the blobs; the next run writes at most half of the bytes
        of a full one, counts the blobs it took over as reused, verifies and restores
        identical."""
        count, size = 80, 1 << 20
        with SqliteRepository(tmp_path / "source.db") as repo:
            fill(repo, count, size)
        store = tmp_path / "store"
        args = ("backup", "-r", tmp_path / "source.db", "--store", store, "--name", "nightly",
                "--all", "--no-space-check", "--workers", "1", "--json")  # fmt: skip
        child = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if (store / "nightly").is_dir() and blob_files(store / "nightly") >= count * 0.6:
                break
            time.sleep(0.002)
        assert child.poll() is None, child.communicate()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        done = blob_files(store / "nightly")
        assert done < count, "the kill should come before the last blob"
        second = subprocess.run(
            cli(*args), capture_output=True, text=True, timeout=120, check=False
        )
        assert second.returncode == 0, second.stderr
        summary = last_json(second.stdout)
        counts = summary["counts"]
        assert counts["blobsReused"] >= done - 2  # the blob being written at the kill is redone
        assert counts["bytesWritten"] <= count * size / 2
        assert counts["blobsWritten"] + counts["blobsReused"] >= count
        location = summary["location"]
        with SqliteRepository(tmp_path / "source.db") as repo:
            assert Engine(repo).verify(location).ok
            with SqliteRepository(tmp_path / "target.db") as target:
                restored = run(Engine(target), restore_body(location))
                assert restored.state is TaskState.FINISHED, restored.errors
                assert target.snapshot() == repo.snapshot()
        # Nothing of the interrupted run is left once the resumed one committed.
        assert sorted(p.name for p in (store / "nightly").iterdir()) == [Path(location).name]


# --- Large blobs ---------------------------------------------------------------------------------


def peak_of_round_trip(tmp_path: Path, size: int, *, compression: bool) -> int:
    """The Python heap's peak while a blob of *size* bytes is backed up and restored."""
    with SqliteRepository(tmp_path / "source.db") as repo:
        repo.put_project("p1")
        repo.put_repository("p1", "generic")
        piece = b"".join(f"{n:08d} text {os.urandom(4).hex()}\n".encode() for n in range(4096))
        data = piece * (size // len(piece))
        repo.put_file("p1", "generic", "/big.bin", data)
        del data
        tracemalloc.start()
        try:
            backup = run(Engine(repo), body(str(tmp_path / "store"), compression=compression))
            assert backup.state is TaskState.FINISHED, backup.errors
            with SqliteRepository(tmp_path / "target.db") as target:
                restored = run(Engine(target), restore_body(str(backup.location)))
                _, peak = tracemalloc.get_traced_memory()
                assert restored.state is TaskState.FINISHED, restored.errors
                assert target.snapshot() == repo.snapshot()
        finally:
            tracemalloc.stop()
    return peak


@pytest.mark.slow
class TestLargeBlob:
    @pytest.mark.parametrize("compression", [False, True], ids=["folder", "zip"])
    def test_memory_stays_flat(self, tmp_path: Path, compression: bool) -> None:
        """A blob is hashed, compressed, written and restored in chunks: five times the
        blob, the same peak of the Python heap (within one chunk)."""
        small = peak_of_round_trip(tmp_path / "small", 4 << 20, compression=compression)
        large = peak_of_round_trip(tmp_path / "large", 20 << 20, compression=compression)
        assert large - small < 1 << 20, f"peak {small} bytes at 4 MiB, {large} at 20 MiB"
