"""A zip backup on S3 (moto, through the counting proxy) is read in large shared blocks:
a handful of requests, not one per member and per chunk, and the same checks as before."""

from __future__ import annotations

import os

from faultproxy import FaultProxy
from repobackup import Engine, MemoryRepository, TaskState

SMALL, LARGE = 60, 2


def source() -> MemoryRepository:
    repo = MemoryRepository()
    repo.put_document("user", "admin", {"name": "admin"})
    repo.put_project("demo")
    repo.put_repository("demo", "libs")
    for index in range(SMALL):
        repo.put_file("demo", "libs", f"/small{index}.bin", os.urandom(200_000))
    for index in range(LARGE):
        repo.put_file("demo", "libs", f"/large{index}.bin", os.urandom(5 << 20))
    return repo


def task(name: str, location: str, kind: str = "DATA_BACKUP") -> dict[str, object]:
    content = {"commonData": True, "projects": [{"projectRegex": "*"}], "compression": True}
    return {"name": name, "type": kind, "storeLocation": location, "content": content}


def test_a_zip_on_s3_is_read_in_large_blocks(s3_proxy: FaultProxy) -> None:
    s3_proxy.filesystem().mkdir("zipblocks")
    options = {"s3": s3_proxy.options}
    repo = source()
    engine = Engine(repo, storage_options=options)
    backup = engine.execute(engine.create_task(task("n", "s3://zipblocks/store")))
    assert backup.state is TaskState.FINISHED, backup.errors
    assert backup.location is not None
    s3_proxy.reset()
    assert engine.verify(backup.location).ok
    # 23 MB of members in blocks of 16 MiB, plus the end record and central directory: ranged
    # reads of each member (and of each MiB of the large ones) took more than 70 requests.
    gets = s3_proxy.requests["GET"]
    print(f"verify: {gets} GET requests for {SMALL + LARGE} blobs")
    assert gets <= 12
    target = MemoryRepository()
    restorer = Engine(target, storage_options=options)
    restored = restorer.execute(restorer.create_task(task("r", backup.location, "DATA_RESTORE")))
    assert restored.state is TaskState.FINISHED, restored.errors
    assert target.snapshot() == repo.snapshot()
