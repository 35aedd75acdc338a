"""One measured repobackup operation (backup, restore or verify), run as a child process.

``python3 benchmarks/runs.py '<json>'`` prints one JSON line: the timing, the run summary.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from repobackup import Engine, SqliteRepository, to_json


def _high_water_kib() -> int:
    """The peak resident set of this process so far (VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _summary(summary: Any) -> dict[str, Any]:
    data = to_json(summary)
    return {
        "state": data.get("state"),
        "location": data.get("location"),
        "counts": data.get("counts"),
        "errors": (data.get("errors") or [])[:5],
        "notes": data.get("notes"),
    }


def backup(spec: dict[str, Any]) -> dict[str, Any]:
    """A full or incremental backup of the repository at ``db``/``blobs`` into ``store``."""
    content: dict[str, Any] = {
        "commonData": True,
        "projects": [{"projectRegex": "*"}],
        "compression": bool(spec.get("compression")),
    }
    if spec.get("since"):
        content.update(increment=True, incrementDate=spec["since"])
    with SqliteRepository(spec["db"], spec["blobs"]) as repo:
        engine = Engine(repo, max_workers=spec.get("workers"))
        task = engine.create_task(
            {"name": spec["name"], "storeLocation": spec["store"], "content": content}
        )
        started = time.perf_counter()
        summary = engine.execute(task)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, **_summary(summary)}


def restore(spec: dict[str, Any]) -> dict[str, Any]:
    """A restore of the backup at ``location`` into a new repository at ``db``/``blobs``."""
    with SqliteRepository(spec["db"], spec["blobs"]) as repo:
        engine = Engine(repo, max_workers=spec.get("workers"))
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
    print(json.dumps(result))


if __name__ == "__main__":
    main()
