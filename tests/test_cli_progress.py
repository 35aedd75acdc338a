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
    """On a terminal (a pty) the bar counts in MiB and files and ends as a done line with
    the totals, and the running note stays whole on its own line."""
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
    assert "30/30 files" in last
    assert "MB" not in screen.replace("MiB", "")
    assert "run summary" in out


def _status_and_summary(out: str) -> tuple[list[dict[str, object]], dict[str, object]]:
    *status, summary = [json.loads(line) for line in out.splitlines()]
    assert {line["messageType"] for line in status} == {"status"}
    assert summary["messageType"] == "summary"
    return status, summary


def test_json_status_counts_files_against_totals(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json status lines follow restic's status message: files and bytes done against
    their totals (a backup's from its sizing, a restore's and a verify's from the manifest),
    the fraction done and the seconds taken; verify's last line is its report."""
    store = tmp_path / "s"
    assert main(["backup", "-r", str(source), "--store", str(store), "--name", "n", "--all",
                 "--json"]) == EXIT_OK  # fmt: skip
    status, summary = _status_and_summary(capsys.readouterr().out)
    sized = [line for line in status if "totalFiles" in line]
    assert sized
    assert {(line["totalFiles"], line["totalBytes"]) for line in sized} == {(30, 30 * 64 * 1024)}
    assert (status[-1]["filesDone"], status[-1]["percentDone"]) == (30, 1.0)
    assert all(isinstance(line["secondsElapsed"], float) for line in status)
    location = str(summary["location"])

    assert main(["restore", "-r", str(tmp_path / "copy.db"), "--store", location, "--all",
                 "--json"]) == EXIT_OK  # fmt: skip
    status, summary = _status_and_summary(capsys.readouterr().out)
    assert summary["state"] == "FINISHED"
    assert {(line["totalFiles"], line["totalBytes"]) for line in status} == {(30, 30 * 64 * 1024)}
    assert status[-1]["filesDone"] == 30

    assert main(["verify", location, "--json"]) == EXIT_OK
    status, report = _status_and_summary(capsys.readouterr().out)
    assert report["ok"] is True
    assert all("taskId" not in line for line in status)
    assert {(line["totalFiles"], line["totalBytes"]) for line in status} == {(30, 30 * 64 * 1024)}
    last = status[-1]
    assert (last["phase"], last["filesDone"], last["bytesDone"]) == ("done", 30, 30 * 64 * 1024)
    assert last["recordsDone"] == report["records"]
