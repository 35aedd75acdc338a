"""Store faults: nothing incomplete under a final name, records re-read after a reset, and a
persistent S3 PUT outage ends a backup within seconds under FAST_FAIL and CONTINUE."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from faultproxy import FaultProxy, ProxyFault
from faults import FaultPlan, enospc_on_close, failing, permanent, reset_mid_read, transient
from repobackup import Engine, MemoryRepository, TaskState
from repobackup.cli import main


def source(files: int = 3) -> MemoryRepository:
    repo = MemoryRepository()
    repo.put_document("user", "admin", {"name": "admin"})
    repo.put_project("demo")
    repo.put_repository("demo", "libs")
    for index in range(files):
        repo.put_file("demo", "libs", f"/f{index}.bin", f"content {index}\n".encode() * 100)
    return repo


def backup(engine: Engine, location: str, **content: Any) -> Any:
    strategy = content.pop("strategy", "FAST_FAIL")
    body = {
        "name": "n",
        "storeLocation": location,
        "content": {"commonData": True, "projects": [{"projectRegex": "*"}], **content},
        "backupSetting": {"errorStrategy": strategy},
    }
    return engine.execute(engine.create_task(body))


def names(root: Path) -> set[str]:
    return {name for _, folders, files in os.walk(root) for name in folders + files}


class TestNothingIncompleteUnderAFinalName:
    def test_a_manifest_that_fails_on_close_is_never_left(self, tmp_path: Path) -> None:
        plan = FaultPlan().add(enospc_on_close(path="*manifest.json*"), failing("delete"))
        engine = Engine(source(), storage_options={"faulty": {"plan": plan}})
        summary = backup(engine, f"faulty://{tmp_path}")
        assert summary.state is TaskState.FAILED
        assert "No space left" in summary.errors[-1].message
        assert "manifest.json" not in names(tmp_path)

    def test_a_zip_that_fails_on_close_is_never_under_its_final_name(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        plan = FaultPlan().add(enospc_on_close(path="*.zip*"), failing("delete"))
        engine = Engine(source(), storage_options={"faulty": {"plan": plan}})
        summary = backup(engine, f"faulty://{tmp_path}", compression=True)
        assert summary.state is TaskState.FAILED
        assert not [n for n in names(tmp_path) if n.endswith(".zip")]
        assert [n for n in names(tmp_path) if n.endswith(".partial")]

    def test_ls_checks_the_end_record_not_the_name(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        engine = Engine(source())
        summary = backup(engine, str(tmp_path / "store"), compression=True)
        assert summary.state is TaskState.FINISHED
        zipped = Path(summary.location)
        zipped.write_bytes(zipped.read_bytes()[: zipped.stat().st_size // 2])
        code = main(["ls", str(tmp_path / "store")])
        out = capsys.readouterr().out
        line = next(line for line in out.splitlines() if zipped.name in line)
        assert "incomplete" in line, out
        assert code in (0, 1)


def test_a_records_member_reset_mid_read_is_read_again(tmp_path: Path) -> None:
    done = backup(Engine(source(files=400)), str(tmp_path / "store"))
    assert done.state is TaskState.FINISHED
    plan = FaultPlan().add(reset_mid_read(20_000, path="*node.jsonl", limit=2))
    location = "faulty://" + done.location
    target = MemoryRepository()
    engine = Engine(target, storage_options={"faulty": {"plan": plan}})
    task = engine.create_task(
        {
            "name": "r",
            "type": "DATA_RESTORE",
            "storeLocation": location,
            "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
            "backupSetting": {"errorStrategy": "FAST_FAIL"},
        }
    )
    summary = engine.execute(task)
    assert plan.failures["read"] == 2
    assert summary.state is TaskState.FINISHED, summary.errors
    assert summary.counts.records_failed == 0
    assert summary.counts.records_written >= 400


def test_a_store_outage_is_a_store_error_naming_protocol_and_path(tmp_path: Path) -> None:
    """A stat that keeps failing transiently ends, within the store_deadline option, with
    an error naming the store's protocol and the path."""
    plan = FaultPlan().add(permanent("info"))
    options = {"faulty": {"plan": plan, "store_deadline": 1.5}}
    engine = Engine(source(), storage_options=options)
    started = time.monotonic()
    summary = backup(engine, f"faulty://{tmp_path}/store")
    assert time.monotonic() - started < 10
    assert summary.state is TaskState.FAILED
    message = summary.errors[-1].message
    assert f"faulty://{tmp_path}/store" in message, message
    assert "ConnectionResetError" in message
    assert plan.failures["info"] > 1  # retried before giving up


@pytest.mark.slow
@pytest.mark.parametrize("where", ["every-put", "blob-puts"])
@pytest.mark.parametrize("strategy", ["FAST_FAIL", "CONTINUE"])
def test_a_persistent_put_outage_ends_the_backup_within_seconds(
    s3_proxy: FaultProxy, strategy: str, where: str
) -> None:
    fs = s3_proxy.filesystem()
    bucket = f"outage-{strategy.lower().replace('_', '-')}-{where}"
    fs.mkdir(bucket)
    path = "*/blobs/*" if where == "blob-puts" else None
    s3_proxy.add(ProxyFault(status=503, method="PUT", path=path))
    engine = Engine(source(files=40), storage_options={"s3": s3_proxy.options})
    started = time.monotonic()
    summary = backup(engine, f"s3://{bucket}/store", strategy=strategy)
    elapsed = time.monotonic() - started
    print(f"{strategy} {where}: ended {summary.state.name} after {elapsed:.1f} s")
    assert summary.state is TaskState.FAILED or summary.errors
    # FAST_FAIL stops at the first blob that fails; CONTINUE tries every blob (three whole
    # copies of about a second each), so its time grows with the number of blobs.
    assert elapsed < (20 if strategy == "FAST_FAIL" else 120)


def test_blob_writes_reset_now_and_then_are_copied_again_whole(tmp_path: Path) -> None:
    """A 5% connection-reset rate on writes still gives a complete backup: every blob whose
    write failed was copied again from the source, and verify finds it sound."""
    plan = FaultPlan(seed=3).add(transient("write", rate=0.05, path="*/blobs/*"))
    engine = Engine(source(files=60), storage_options={"faulty": {"plan": plan}})
    summary = backup(engine, f"faulty://{tmp_path}/store", strategy="CONTINUE")
    assert plan.failures["write"] > 0
    assert summary.state is TaskState.FINISHED, summary.errors
    assert not summary.errors
    assert summary.counts.blobs_failed == 0
    assert Engine(MemoryRepository()).verify(summary.location.removeprefix("faulty://")).ok
