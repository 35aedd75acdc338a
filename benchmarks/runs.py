"""One measured repobackup operation (backup, restore or verify), run as a child process.

``python3 benchmarks/runs.py '<json>'`` prints one JSON line: the timing, the run summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, BinaryIO

from repobackup import Engine, SqliteRepository, SqliteTaskStore, to_json


def _high_water_kib() -> int:
    """The peak resident set of this process so far (VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def _executor(spec: dict[str, Any]) -> Iterator[Executor | None]:
    """``executor``: none (the engine's own threads), ``processes`` (a process pool of
    ``workers``), or ``dask:N`` (a LocalCluster of N single-threaded worker processes)."""
    kind = spec.get("executor") or ""
    if not kind:
        yield None
    elif kind == "processes":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(spec.get("workers"), mp_context=context) as pool:
            yield pool
            WORKERS_CPU.append(_workers_cpu(pool, spec.get("workers") or os.cpu_count() or 1))
    else:
        import distributed

        count = int(kind.partition(":")[2] or 2)
        with (
            distributed.LocalCluster(
                n_workers=count,
                processes=True,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client.get_executor(pure=False, retries=2)


#: The CPU seconds the pool's worker processes spent (their own rusage, asked at the end).
WORKERS_CPU: list[float] = []


def _cpu_seconds() -> tuple[int, float]:
    time.sleep(0.2)  # long enough for every worker to take one of these
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return os.getpid(), usage.ru_utime + usage.ru_stime


def _workers_cpu(pool: Executor, workers: int) -> float:
    """The CPU seconds of the pool's workers so far, each asked once or more."""
    seen: dict[int, float] = {}
    for pid, seconds in [
        f.result() for f in [pool.submit(_cpu_seconds) for _ in range(workers * 2)]
    ]:
        seen[pid] = max(seconds, seen.get(pid, 0.0))
    return round(sum(seen.values()), 3)


def _summary(summary: Any) -> dict[str, Any]:
    data = to_json(summary)
    return {
        "state": data.get("state"),
        "location": data.get("location"),
        "counts": data.get("counts"),
        "errors": (data.get("errors") or [])[:5],
        "notes": data.get("notes"),
    }


def _dying(opens: int) -> type[SqliteRepository]:
    """A repository that kills its process (SIGKILL) as blob *opens* is opened: a run cut
    short at a known point, for the resumed run after it (blob copies on threads here)."""

    class Dying(SqliteRepository):
        opened = 0

        def open_blob(self, sha256: str) -> BinaryIO:
            Dying.opened += 1
            if Dying.opened >= opens:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().open_blob(sha256)

        def reopener(self) -> None:  # type: ignore[override]
            return None  # copies on threads here, where the opens are counted

    return Dying


def backup(spec: dict[str, Any]) -> dict[str, Any]:
    """A full or incremental backup of the repository at ``db``/``blobs`` into ``store``."""
    content: dict[str, Any] = {
        "commonData": True,
        "projects": [{"projectRegex": "*"}],
        "compression": bool(spec.get("compression")),
    }
    if spec.get("since"):
        content.update(increment=True, incrementDate=spec["since"])
    tasks = SqliteTaskStore(spec["tasks"]) if spec.get("tasks") else None
    kind = _dying(spec["kill_after"]) if spec.get("kill_after") else SqliteRepository
    with kind(spec["db"], spec["blobs"]) as repo, _executor(spec) as executor:
        # processes=True: as the command line has it (this script keeps its work under a
        # main guard, so a pool's workers may import it).
        engine = Engine(
            repo, max_workers=spec.get("workers"), executor=executor, tasks=tasks, processes=True
        )
        # A run killed before (see bench.py's resumed run) is ended first, as the CLI does:
        # what it stored waits for this run to resume from.
        engine.recover_interrupted()
        task = engine.create_task(
            {"name": spec["name"], "storeLocation": spec["store"], "content": content}
        )
        started = time.perf_counter()
        summary = engine.execute(task)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, **_summary(summary)}


def restore(spec: dict[str, Any]) -> dict[str, Any]:
    """A restore of the backup at ``location`` into a new repository at ``db``/``blobs``."""
    with SqliteRepository(spec["db"], spec["blobs"]) as repo, _executor(spec) as executor:
        engine = Engine(repo, max_workers=spec.get("workers"), executor=executor, processes=True)
        task = engine.create_task(
            {
                "name": "restore",
                "storeLocation": spec["location"],
                "type": "DATA_RESTORE",
                "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
            }
        )
        started = time.perf_counter()
        summary = engine.execute(task)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, **_summary(summary)}


def verify(spec: dict[str, Any]) -> dict[str, Any]:
    """A verification of the backup at ``location``."""
    from repobackup._archive.verify import verify as check

    started = time.perf_counter()
    report = check(spec["location"], max_workers=spec.get("workers") or 4)
    seconds = time.perf_counter() - started
    problems = [str(problem) for problem in list(report.problems)[:5]]
    return {"seconds": seconds, "state": "OK" if report.ok else "PROBLEMS", "errors": problems}


OPERATIONS = {"backup": backup, "restore": restore, "verify": verify}


def main() -> None:
    """Run the operation the JSON argument describes and print its result as JSON."""
    spec = json.loads(sys.argv[1])
    result = OPERATIONS[spec["op"]](spec)
    result["hwm_kib"] = _high_water_kib()
    if WORKERS_CPU:
        result["workers_cpu"] = WORKERS_CPU[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
