"""Encrypted against unencrypted compressed backups, side by side in one run, and the peak RSS
of an encrypted backup of a 1 GiB blob.

Run ``python benchmarks/encryption.py [MB]`` (default 1000 MB of mixed blobs); each backup runs
in a fresh child process, alternating the two kinds, and the medians are compared.
docs/performance.md, "Encryption", has the figures.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PASSPHRASE = "benchmark passphrase"
ROUNDS = 3
GIB = 1 << 30
SPEED_TARGET = 0.9
RSS_TARGET_MB = 200.0


def fill(path: str, total: int, one_blob: int) -> None:
    """A SQLite repository at *path*: half random, half text-like blobs of 64 KiB to 16 MiB
    summing to *total* bytes, or one blob of *one_blob* bytes."""
    from repobackup import SqliteRepository

    words = b"artifact node package version metadata checksum repository docker maven "
    with SqliteRepository(path) as repo:
        repo.put_project("bench")
        repo.put_repository("bench", "libs")
        if one_blob:
            chunk = os.urandom(1 << 20) + (words * 14_000)[: 1 << 20]
            data = (chunk * (one_blob // len(chunk) + 1))[:one_blob]
            repo.put_file("bench", "libs", "/huge.bin", data)
            return
        made, size, n = 0, 64 * 1024, 0
        while made < total:
            n += 1
            text = n % 2 == 0
            body = (words * (size // len(words) + 1))[:size] if text else os.urandom(size)
            repo.put_file("bench", "libs", f"/f{n}", n.to_bytes(4, "big") + body)
            made += size
            size = 64 * 1024 if size >= 16 << 20 else size * 4


def backup(repo_path: str, store: str, encrypted: bool) -> dict[str, Any]:
    """One compressed backup of the repository; its wall time and this process's peak RSS."""
    from repobackup import Engine, SqliteRepository, TaskState

    with SqliteRepository(repo_path, create=False) as repo:
        engine = Engine(repo, passphrase=PASSPHRASE if encrypted else None)
        task = engine.create_task(
            {
                "name": "bench",
                "storeLocation": store,
                "content": {
                    "projects": [{"projectRegex": "*"}],
                    "compression": True,
                    "encryption": encrypted,
                },
            }
        )
        started = time.perf_counter()
        summary = engine.execute(task)
        seconds = time.perf_counter() - started
    assert summary.state is TaskState.FINISHED, summary.errors
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "rss_mb": peak_kib * 1024 / 1e6, "bytes": summary.counts.bytes_read}


def child(*argv: str) -> dict[str, Any]:
    """Run this script's *argv* in a fresh interpreter; its JSON answer."""
    # The previous run's gigabytes must not be written back to disk during this one.
    os.sync()
    done = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, check=True
    )
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def _side_by_side(work: Path, repo: str) -> tuple[float, float]:
    """The median seconds of an unencrypted and an encrypted backup of *repo*, alternating
    which runs first so that neither always finds the caches warm."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(ROUNDS):
        for encrypted in (False, True) if round_ % 2 == 0 else (True, False):
            store = work / f"store-{int(encrypted)}-{round_}"
            answer = child("backup", repo, str(store), str(int(encrypted)))
            times[encrypted].append(answer["seconds"])
            shutil.rmtree(store)
    return statistics.median(times[False]), statistics.median(times[True])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "fill":
        fill(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        print("{}")
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "backup":
        print(json.dumps(backup(sys.argv[2], sys.argv[3], sys.argv[4] == "1")))
        return 0
    total = int(float(sys.argv[1]) * 1e6) if len(sys.argv) > 1 else 1_000_000_000
    work = Path(tempfile.mkdtemp(prefix="repobackup-enc-"))
    try:
        mixed = str(work / "mixed.db")
        child("fill", mixed, str(total), "0")
        tiny = str(work / "tiny.db")
        child("fill", tiny, "1", "0")
        print(f"compressed backups, median of {ROUNDS} alternating runs, each in a new process:")
        plain, sealed = _side_by_side(work, tiny)
        print(
            f"  one 64 KiB blob: {plain:.2f} s, encrypted {sealed:.2f} s: "
            f"{sealed - plain:.2f} s a run spends on its keys (scrypt, by design)"
        )
        fixed = sealed - plain
        plain, sealed = _side_by_side(work, mixed)
        mb = total / 1e6
        ratio = plain / sealed
        verdict = "met" if ratio >= SPEED_TARGET else "NOT met"
        print(
            f"  {mb:.0f} MB of mixed blobs: {plain:.2f} s ({mb / plain:.0f} MB/s), encrypted "
            f"{sealed:.2f} s ({mb / sealed:.0f} MB/s): {ratio:.2f}x "
            f"(target >= {SPEED_TARGET}x: {verdict})"
        )
        print(
            f"  the same without the fixed cost of the keys: {(plain - 0) / (sealed - fixed):.2f}x"
        )
        huge = str(work / "huge.db")
        child("fill", huge, "0", str(GIB))
        for encrypted in (True, False):
            result = child(
                "backup", huge, str(work / f"store-huge-{int(encrypted)}"), str(int(encrypted))
            )
            met = "met" if result["rss_mb"] <= RSS_TARGET_MB else "NOT met"
            print(
                f"one 1 GiB blob, {'encrypted' if encrypted else 'unencrypted'}: "
                f"{result['seconds']:.1f} s, peak RSS {result['rss_mb']:.1f} MB "
                f"(target <= {RSS_TARGET_MB:.0f} MB: {met})"
            )
            shutil.rmtree(work / f"store-huge-{int(encrypted)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
