"""Tests for progress while a run goes: `--json` streams restic-style status lines then the
summary message; a terminal gets a bar that ends on one clean line (a real pty)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from repobackup import SqliteRepository
from repobackup.cli import EXIT_OK, main


@pytest.fixture(name="source")
def _source(tmp_path: Path) -> Path:
    path = tmp_path / "source.db"
    with SqliteRepository(path) as repo:
        repo.put_project("alpha")
        repo.put_repository("alpha", "libs")
        for number in range(30):
            repo.put_file("alpha", "libs", f"/f{number}.bin", os.urandom(64 * 1024))
    return path


def test_json_streams_status_then_summary(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json: one JSON object a line, status messages (phase, bytes, records, totals) and
    the summary message last, with the run's figures."""
    code = main(["backup", "-r", str(source), "--store", str(tmp_path / "s"), "--name", "n",
                 "--all", "--json"])  # fmt: skip
    assert code == EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    *status, summary = lines
    assert status
    assert {line["messageType"] for line in status} == {"status"}
    assert status[-1]["phase"] == "done"
    assert status[-1]["recordsDone"] == 32
    assert status[-1]["bytesDone"] == 30 * 64 * 1024
    assert all(line["bytesDone"] <= line.get("totalBytes", line["bytesDone"]) for line in status)
    assert summary["messageType"] == "summary"
    assert summary["state"] == "FINISHED"
    assert summary["counts"]["bytesWritten"] == 30 * 64 * 1024


def test_bar_on_a_terminal_ends_clean(source: Path, tmp_path: Path) -> None:
    """On a terminal (a pty) the bar counts in MiB and ends as a done line with the total,
    and the running note stays whole on its own line."""
    pytest.importorskip("rich")
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "repobackup.cli", "backup", "-r", str(source), "--store",
         str(tmp_path / "s"), "--name", "n", "--all"],
        stdout=subprocess.PIPE, stderr=follower, text=True,
        env={**os.environ, "COLUMNS": "150", "TERM": "xterm"},
    )  # fmt: skip
    os.close(follower)
    out, _ = process.communicate(timeout=120)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    raw = b"".join(chunks).decode("utf-8", "replace")
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw).replace("\r\n", "\n")
    assert process.returncode == EXIT_OK, screen
    assert "backup 'n' running\n" in screen
    lines = [line.split("\r")[-1] for line in screen.splitlines() if line.strip()]
    last = lines[-1]
    assert "backup done" in last
    assert "1.9/1.9 MiB" in last
    assert "32 records" in last
    assert "MB" not in screen.replace("MiB", "")
    assert "run summary" in out
