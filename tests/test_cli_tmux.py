"""Tests for the progress bars as a terminal shows them: backup, restore and verify run in a
real tmux pane of 120 by 30; the bar counts bytes and files against their totals and ends
on one clean finish line. Skipped where tmux is not installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from repobackup import SqliteRepository

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

FILES = 40
SIZE = 256 * 1024
TOTAL = f"{FILES * SIZE / 1024 / 1024:.1f}"  # "10.0" (MiB)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


class Pane:
    """A tmux session of its own (its own server socket), 120 columns by 30 lines, whose
    raw output is also logged, so that the frames drawn between two captures are seen."""

    def __init__(self, folder: Path) -> None:
        self.socket = f"repobackup-test-{uuid.uuid4().hex[:8]}"
        self.log = folder / "pane.log"
        self._tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "30", "bash --norc")
        self._tmux("pipe-pane", "-t", "t", "-o", f"cat >> {self.log}")
        python = os.path.dirname(sys.executable)
        pythonpath = os.environ.get("PYTHONPATH", "")
        self.type(f"export PATH={python}:$PATH PYTHONPATH={pythonpath} TERM=xterm-256color")
        self.type(f"cd {folder} && clear")

    def _tmux(self, *argv: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *argv], capture_output=True, text=True, check=True
        )
        return done.stdout

    def type(self, line: str) -> None:
        self._tmux("send-keys", "-t", "t", line, "Enter")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def run(self, command: str, timeout: float = 60) -> tuple[str, str]:
        """Run *command* in the pane; the screen when it has ended, and the raw frames it
        drew meanwhile (escape sequences removed)."""
        self.type("clear")
        time.sleep(0.2)
        start = self.log.stat().st_size if self.log.exists() else 0
        marker = uuid.uuid4().hex[:8]
        self.type(f"{command}; echo done-{marker}=$?")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(rf"^done-{marker}=\d+", screen, re.MULTILINE):
                raw = self.log.read_bytes()[start:].decode("utf-8", "replace")
                return screen, ANSI.sub("", raw)
            time.sleep(0.1)
        pytest.fail(f"{command} did not end: {self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False)


@pytest.fixture(name="pane")
def _pane(tmp_path: Path) -> Iterator[Pane]:
    pane = Pane(tmp_path)
    try:
        yield pane
    finally:
        pane.close()


def _finish_line(screen: str, what: str) -> str:
    lines = [line for line in screen.splitlines() if f"{what} done" in line]
    assert len(lines) == 1, screen
    return lines[0]


def _check_bar(screen: str, raw: str, what: str) -> None:
    """The bar's finish line shows the bytes and files reached against their totals, with
    the rate and the time; every frame drawn counted in binary units, never past a total."""
    assert re.search(r"^done-\w+=0$", screen, re.MULTILINE), screen
    line = _finish_line(screen, what)
    assert line.startswith(f"✓ {what} done"), line
    assert f" {TOTAL}/{TOTAL} MiB " in line, line
    assert f" {FILES}/{FILES} files " in line, line
    assert re.search(r" [\d.]+ [KMG]iB/s ", line), line
    assert re.search(r"elapsed \d+:\d\d:\d\d$", line.rstrip()), line
    frames = re.findall(r"([\d.]+)/([\d.]+) MiB .*? (\d+)/(\d+) files", raw)
    assert frames, raw
    for done_bytes, total_bytes, done_files, total_files in frames:
        assert float(done_bytes) <= float(total_bytes)
        assert int(done_files) <= int(total_files)
        assert (total_bytes, int(total_files)) == (TOTAL, FILES)
    assert not re.search(r"\d MB\b|\d kB\b", raw), raw


def test_bars_of_backup_restore_and_verify(pane: Pane, tmp_path: Path) -> None:
    with SqliteRepository(tmp_path / "source.db") as repo:
        repo.put_project("alpha")
        repo.put_repository("alpha", "libs")
        for number in range(FILES):
            repo.put_file("alpha", "libs", f"/f{number}.bin", os.urandom(SIZE))
    cli = "python -m repobackup.cli"

    screen, raw = pane.run(f"{cli} backup -r source.db --store store --name n --all --workers 1")
    _check_bar(screen, raw, "backup")
    assert "backup 'n' running" in screen
    (zip_or_folder,) = (tmp_path / "store" / "n").iterdir()
    location = zip_or_folder.relative_to(tmp_path)

    screen, raw = pane.run(f"{cli} restore -r copy.db --store {location} --all")
    _check_bar(screen, raw, "restore")

    screen, raw = pane.run(f"{cli} verify {location}")
    _check_bar(screen, raw, "verify")
    assert f"ok: {location}" in screen
