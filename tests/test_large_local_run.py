"""A large backup between local folders with no executor given: with ``processes=True`` the
engine moves its blobs on a process pool of its own, and the backups it writes verify and
restore identical; by default a script without a main guard backs up on threads."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from repobackup import Engine, SqliteRepository

pytestmark = pytest.mark.slow

MIB = 1 << 20


def build(path: Path) -> dict[str, str]:
    """A repository of 300 MiB of files (above the size that takes a pool), half random and
    half text, plus small ones; returns full path to sha256."""
    repo = SqliteRepository(str(path / "repo.db"))
    repo.put_project("p")
    repo.put_repository("p", "r")
    files: dict[str, str] = {}
    text = b"".join(b"line %d of a text file that compresses\n" % n for n in range(40_000))
    for number in range(6):
        data = os.urandom(50 * MIB) if number % 2 else (b"%d\n" % number + text * 30)[: 50 * MIB]
        repo.put_file("p", "r", f"/big{number}.bin", data)
        files[f"/big{number}.bin"] = hashlib.sha256(data).hexdigest()
    for number in range(200):
        data = os.urandom(100 + number * 37)
        repo.put_file("p", "r", f"/small/{number}.txt", data)
        files[f"/small/{number}.txt"] = hashlib.sha256(data).hexdigest()
    repo.close()
    return files


@pytest.mark.parametrize("compression", [False, True])
def test_large_local_backup_restores_identical(tmp_path: Path, compression: bool) -> None:
    files = build(tmp_path)
    store = tmp_path / "store"
    with (
        SqliteRepository(str(tmp_path / "repo.db"), create=False) as source,
        Engine(source, processes=True) as engine,
    ):
        summary = engine.execute(
            engine.create_task(
                {
                    "name": "big",
                    "storeLocation": str(store),
                    "content": {"projects": [{"projectId": "p"}], "compression": compression},
                }
            )
        )
        assert summary.state.value == "FINISHED", summary.errors
        assert summary.counts.blobs_written == len(set(files.values()))
        assert summary.counts.bytes_read > 256 * MIB
        assert summary.location is not None
        assert engine.verify(summary.location).ok
    backup = Path(summary.location)
    entries = [backup, *backup.rglob("*")] if backup.is_dir() else [backup]
    assert {stat.S_IMODE(p.stat().st_mode) for p in entries if p.is_file()} == {0o600}
    assert not [p.name for p in (store / "big").iterdir() if p.name.startswith(".")]

    target = SqliteRepository(str(tmp_path / "restored.db"))
    with Engine(source=target, target=target) as engine:
        restored = engine.execute(
            engine.create_task(
                {
                    "name": "back",
                    "type": "DATA_RESTORE",
                    "storeLocation": summary.location,
                    "content": {"projects": [{"projectId": "p"}]},
                }
            )
        )
    assert restored.state.value == "FINISHED", restored.errors
    for full_path, digest in files.items():
        assert hashlib.sha256(target.read_file("p", "r", full_path)).hexdigest() == digest
    target.close()


UNGUARDED = """
import sys
from repobackup import Engine, SqliteRepository

# No `if __name__ == "__main__":` here: a process pool's workers would run this again.
with SqliteRepository(sys.argv[1], create=False) as source, Engine(source) as engine:
    summary = engine.execute(engine.create_task({
        "name": "plain", "storeLocation": sys.argv[2],
        "content": {"projects": [{"projectId": "p"}]},
    }))
print(summary.state.value, summary.counts.blobs_written, len(summary.notes))
"""


def test_a_script_without_a_main_guard_backs_up_on_threads(tmp_path: Path) -> None:
    """The library's default starts no process pool: a script with its backup at the top
    level (as the docs' examples are) backs up 300 MiB in one process, once."""
    files = build(tmp_path)
    script = tmp_path / "nightly.py"
    script.write_text(UNGUARDED)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "repo.db"), str(tmp_path / "store")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["FINISHED", str(len(set(files.values())))]
    assert "RuntimeError" not in done.stderr
    assert len(list((tmp_path / "store" / "plain").iterdir())) == 1
