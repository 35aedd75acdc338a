"""Peak memory and speed of a backup and restore of one huge blob (default 4 GiB).

``python3 benchmarks/bigblob.py --gib 4`` prints one row per operation, each run in a child.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs.py"
MIB = 1 << 20
BLOCK = 4 * MIB


def make_repository(folder: Path, size: int) -> None:
    """A repository holding one file of *size* bytes, written in blocks (half text-like, half
    random, so that zstd has work to do), its blob put in place beside the database."""
    from repobackup import Record, SqliteRepository

    blobs = folder / "blobs"
    staging = folder / "staging"
    folder.mkdir(parents=True)
    digest = hashlib.sha256()
    text = b"".join(f"{n:08d} a line of text in a big file\n".encode() for n in range(BLOCK // 40))
    with staging.open("wb") as out:
        written = 0
        number = 0
        while written < size:
            block = text[:BLOCK] if number % 2 else os.urandom(BLOCK)
            block = block[: size - written]
            out.write(block)
            digest.update(block)
            written += len(block)
            number += 1
    sha = digest.hexdigest()
    final = blobs / sha[:2] / sha[2:4] / sha
    final.parent.mkdir(parents=True)
    staging.rename(final)
    with SqliteRepository(folder / "repo.db", blobs) as repo:
        repo.put_project("p")
        repo.put_repository("p", "r")
        record = Record(
            collection="node", key="/big.bin", document={"fullPath": "/big.bin"},
            project_id="p", repo_name="r", blob=sha, size=size, modified=datetime.now(UTC),
        )  # fmt: skip
        repo.apply([record], "OVERWRITE")


def child(spec: dict[str, object]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(RUNS), json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=float, default=4.0)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    size = int(args.gib * 1024 * MIB)
    work = Path(tempfile.mkdtemp(prefix="bigblob-", dir=args.workdir))
    try:
        make_repository(work / "source", size)
        print("| run | seconds | MiB/s | peak RSS MB |\n|---|---|---|---|")
        for compression in (False, True):
            kind = "compressed" if compression else "plain"
            store = work / f"store-{kind}"
            backup = child({"op": "backup", "db": str(work / "source/repo.db"),
                            "blobs": str(work / "source/blobs"), "store": str(store),
                            "name": "big", "compression": compression})  # fmt: skip
            rows = [(f"backup, {kind}", backup)]
            restored = work / f"restored-{kind}"
            restored.mkdir()
            rows.append((f"restore, {kind}", child({"op": "restore",
                         "db": str(restored / "repo.db"), "blobs": str(restored / "blobs"),
                         "location": backup["location"]})))  # fmt: skip
            for label, result in rows:
                seconds = float(str(result["seconds"]))
                rss = int(str(result["hwm_kib"])) * 1024 / 1e6
                print(f"| {label} | {seconds:.1f} | {size / MIB / seconds:.0f} | {rss:.0f} |")
            shutil.rmtree(restored)
            shutil.rmtree(store)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
