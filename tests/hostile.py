"""Run a Python snippet or a `repobackup` command in a child process under resource limits, for
the tests of hostile inputs: a memory cap, a CPU cap, a wall-clock timeout, and its peak RSS.

    result = run_cli(["restore", ...], memory=1 << 30, timeout=20)
    assert result.returncode == 1 and result.peak_rss < 200 << 20 and not result.timed_out

How the peak is measured: a child's ``ru_maxrss`` starts at the RSS of the process it was
forked from (Linux carries that high-water mark across exec), so a child forked straight from
the test process would report the test process's size. A small launcher (a bare interpreter
that imports nothing of ours, about 10 MiB) forks the payload instead, sets its limits, execs
it, enforces the timeout and reads its rusage with ``os.wait4``; that figure is the payload's
own peak, plus at most the launcher's few MiB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

__all__ = ["GIB", "MIB", "ChildResult", "run_cli", "run_command", "run_python"]

MIB = 1 << 20
GIB = 1 << 30

# The launcher, run as ``python -c LAUNCHER spec.json result.json``. It must stay small: its
# own RSS is the floor of every figure.
_LAUNCHER = r"""
import json, os, resource, signal, sys, time
spec = json.load(open(sys.argv[1]))
started = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.setpgid(0, 0)
        for name, (soft, hard) in spec["limits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if spec["cwd"] is not None:
            os.chdir(spec["cwd"])
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except BaseException as exc:
        os.write(2, f"launcher: {type(exc).__name__}: {exc}\n".encode())
    os._exit(127)
deadline = started + spec["timeout"]
timed_out = False
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() >= deadline:
        timed_out = True
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        done, status, usage = os.wait4(pid, 0)
        break
    time.sleep(0.005)
elapsed = time.monotonic() - started
try:  # whatever the payload left behind in its group (pools, children of its own)
    os.killpg(pid, signal.SIGKILL)
except ProcessLookupError:
    pass
result = {"status": status, "elapsed": elapsed, "maxrss_kib": usage.ru_maxrss,
          "timed_out": timed_out, "cpu": usage.ru_utime + usage.ru_stime}
with open(sys.argv[2], "w") as out:
    json.dump(result, out)
"""

# Extra seconds the test process allows the launcher before it kills the whole session.
_GRACE = 15.0


@attrs.frozen
class ChildResult:
    """How a child ended: exit code (negative: killed by that signal), output, wall time in
    seconds, peak RSS in bytes, whether the timeout killed it, and its CPU seconds."""

    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    peak_rss: int
    timed_out: bool
    cpu: float

    @property
    def peak_rss_mib(self) -> float:
        """The peak RSS in MiB."""
        return self.peak_rss / MIB

    @property
    def killed_by(self) -> signal.Signals | None:
        """The signal that ended the child, if one did."""
        return signal.Signals(-self.returncode) if self.returncode < 0 else None


def run_command(
    argv: Sequence[str | os.PathLike[str]],
    *,
    memory: int | None = GIB,
    cpu: int | None = 60,
    timeout: float = 60.0,
    file_size: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: bytes | None = None,
) -> ChildResult:
    """Run *argv* in a child under limits and wait for it, never longer than *timeout* s.

    *memory* caps the address space (RLIMIT_AS, bytes), *cpu* the CPU seconds (RLIMIT_CPU:
    SIGXCPU, then SIGKILL one second later), *file_size* the size of any file it writes
    (RLIMIT_FSIZE: a Python child gets EFBIG). None leaves a limit as it is. *env*
    replaces the environment (default: this process's). The child runs in its own process
    group; at the timeout that whole group is killed with SIGKILL.
    """
    limits: dict[str, tuple[int, int]] = {}
    if memory is not None:
        limits["RLIMIT_AS"] = (memory, memory)
    if cpu is not None:
        # SIGXCPU at the soft limit says why; SIGKILL a second later if it is caught.
        limits["RLIMIT_CPU"] = (cpu, cpu + 1)
    if file_size is not None:
        limits["RLIMIT_FSIZE"] = (file_size, file_size)
    program = [os.fspath(arg) for arg in argv]
    if os.sep not in program[0]:
        import shutil

        found = shutil.which(program[0])
        if found is None:
            raise FileNotFoundError(f"no such program: {program[0]!r}")
        program[0] = found
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        spec_path = Path(scratch, "spec.json")
        result_path = Path(scratch, "result.json")
        spec = {
            "argv": program,
            "env": dict(os.environ if env is None else env),
            "cwd": None if cwd is None else os.fspath(cwd),
            "limits": limits,
            "timeout": timeout,
        }
        spec_path.write_text(json.dumps(spec))
        process = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER, str(spec_path), str(result_path)],
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(input, timeout=timeout + _GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        if not result_path.exists():
            died = f"the launcher died ({process.returncode})"
            raise RuntimeError(f"{died}: {err.decode(errors='replace')[-2000:]}")
        result = json.loads(result_path.read_text())
    return ChildResult(
        returncode=os.waitstatus_to_exitcode(result["status"]),
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        elapsed=result["elapsed"],
        peak_rss=result["maxrss_kib"] * 1024,
        timed_out=result["timed_out"],
        cpu=result["cpu"],
    )


def run_python(code: str, **limits: object) -> ChildResult:
    """Run the Python *code* (``python -c``) in a child under `run_command`'s limits."""
    return run_command([sys.executable, "-c", code], **limits)  # type: ignore[arg-type]


def run_cli(args: Sequence[str | os.PathLike[str]], **limits: object) -> ChildResult:
    """Run ``repobackup ARGS`` (``python -m repobackup.cli``) in a child under limits."""
    argv = [sys.executable, "-m", "repobackup.cli", *map(os.fspath, args)]
    return run_command(argv, **limits)  # type: ignore[arg-type]
