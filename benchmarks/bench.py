"""Benchmark of repobackup on synthetic repositories, side by side with cp, tar+zstd and restic.

Run ``python3 benchmarks/bench.py --help``; docs/performance.md has the figures and the method.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synth  # noqa: E402 - a sibling module of this script

RUNS = HERE / "runs.py"
MB = 1_000_000  # peak RSS is reported in MB (10^6 bytes), as the target is written
MIB = synth.MIB
RSS_TARGET_MB = 200
TIME = shutil.which("time", path="/usr/bin:/bin")  # GNU time (Debian package "time")


# --- running and measuring child processes ------------------------------------------------------


@dataclass
class Measured:
    """One run of a child process: wall time, peak RSS, exit code and output."""

    label: str
    wall: float
    seconds: float  # the operation's own time (the wall time for external tools)
    cpu: float  # user and system CPU seconds of the process and those it waited for
    rss_mb: float
    returncode: int
    result: dict[str, Any] = field(default_factory=dict)
    size: int | None = None  # what the run produced, in bytes
    stderr: str = ""

    @property
    def ok(self) -> bool:
        """Whether the run exited cleanly and, for a repobackup run, finished without errors."""
        state = self.result.get("state")
        return (
            self.returncode == 0
            and state in (None, "FINISHED", "OK")
            and not self.result.get("errors")
        )


def measure(label: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Measured:
    """Run *argv* and measure it: wall time, and the peak RSS of its largest process.

    A child's ru_maxrss starts at the RSS of the process it was forked from (Linux carries the
    forking process's high-water mark across exec), so this process's own size would leak into
    every figure. GNU time, being tiny, forks the child instead and reports its peak.
    """
    os.sync()  # the previous run's writes must not be flushed on this run's time
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as peak,
    ):
        command = [TIME, "-f", "%M", "-o", peak.name, *argv] if TIME else list(argv)
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        kib = usage.ru_maxrss  # an upper bound, without GNU time (see above)
        if TIME:
            kib = int(peak.read().split()[-1])
    result: dict[str, Any] = {}
    if str(RUNS) in argv:
        # The child's result is its last JSON line (py-spy, when profiling, prints around it).
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            result = {"state": "BROKEN", "errors": [stdout[-500:]]}
    if not TIME and "hwm_kib" in result:
        kib = int(result["hwm_kib"])  # the child's own figure beats the upper bound
    seconds = float(result.get("seconds", wall))
    rss = kib * 1024 / MB
    cpu = usage.ru_utime + usage.ru_stime  # GNU time's own share is negligible
    return Measured(
        label, wall, seconds, cpu, rss, process.returncode, result, stderr=stderr[-2000:]
    )


def stored_blobs(task_dir: Path) -> int:
    """The blobs the unfinished runs in *task_dir* have stored so far (0 while none runs)."""
    with contextlib.suppress(OSError):
        return sum(
            len(files)
            for partial in task_dir.glob(".*.partial")
            for _, _, files in os.walk(partial / "blobs")
        )
    return 0


def tree_size(path: Path) -> int:
    """Bytes of the files under *path* (or of the file *path*)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(folder, name)).st_size
    return total


def remove(path: Path) -> None:
    """Delete a file or folder if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def warm(*paths: Path) -> None:
    """Read everything once, so every tool starts with the same warm page cache."""
    for path in paths:
        files = [path] if path.is_file() else [Path(d, n) for d, _, ns in os.walk(path) for n in ns]
        for name in files:
            with open(name, "rb") as file:
                while file.read(1 << 20):
                    pass


# --- the benchmark ------------------------------------------------------------------------------


class Bench:
    """One invocation: the measured runs, round after round, and where they write.

    Nothing a run writes is deleted before the invocation ends: on this kind of disk, writing
    into blocks freed a moment ago costs several times more than writing into settled ones,
    which would charge one tool for another's clean-up. Each round writes into a folder of
    its own; the fastest of each measure's rounds and their median are reported, with the
    highest peak RSS of them all.
    """

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.samples: dict[str, list[Measured]] = collections.defaultdict(list)
        self.profiles: dict[str, Path] = {}

    def say(self, text: str) -> None:
        print(text, flush=True)

    def best(self, label: str, *, median: bool = False) -> Measured | None:
        """The fastest clean run of *label* (the others were disturbed more), or with *median*
        one taking the median time; either carries the highest peak RSS of all the runs,
        since the memory bound must hold for every run."""
        runs = self.samples.get(label)
        if not runs:
            return None
        ranked = sorted(runs, key=lambda m: (not m.ok, m.seconds))
        chosen = copy.copy(ranked[0])
        if median:
            chosen.seconds = statistics.median(m.seconds for m in runs)
        chosen.rss_mb = max(m.rss_mb for m in runs)
        return chosen

    def keep(self, measured: Measured) -> Measured:
        self.samples[measured.label].append(measured)
        status = "ok" if measured.ok else f"PROBLEM {measured.result.get('state')}"
        size = f", {measured.size / MIB:.1f} MiB" if measured.size is not None else ""
        self.say(
            f"  {measured.label:<20} {measured.seconds:7.2f} s (wall {measured.wall:6.2f} s, "
            f"CPU {measured.cpu:6.2f} s)  peak RSS {measured.rss_mb:6.1f} MB{size}  {status}"
        )
        if not measured.ok:
            for error in measured.result.get("errors") or []:
                self.say(f"      {error}")
            if measured.stderr.strip():
                self.say("      " + measured.stderr.strip().replace("\n", "\n      ")[-1500:])
        return measured

    def child(self, label: str, spec: dict[str, Any]) -> Measured:
        """A repobackup operation in a child process of its own."""
        spec = {"workers": self.args.workers, **spec}
        argv = [sys.executable, str(RUNS), json.dumps(spec)]
        if self.args.profile:
            folder = Path(self.args.profile)
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{label}.txt"
            argv = [
                "py-spy",
                "record",
                "--rate",
                "250",
                "--format",
                "raw",
                "--threads",
                "-o",
                str(target),
                "--",
                *argv,
            ]
            self.profiles[label] = target
        return measure(label, argv)

    # -- repobackup runs

    def backup(
        self,
        label: str,
        out: Path,
        db: Path,
        blobs: Path,
        *,
        compression: bool,
        since: str | None = None,
        **extra: Any,
    ) -> Measured:
        spec = {
            "op": "backup",
            "db": str(db),
            "blobs": str(blobs),
            "store": str(out),
            "name": extra.pop("name", label),
            "compression": compression,
            "since": since,
            **extra,
        }
        measured = self.child(label, spec)
        location = measured.result.get("location")
        measured.size = tree_size(Path(location)) if location else None
        return self.keep(measured)

    def resumed(self, label: str, out: Path, db: Path, blobs: Path, total: int) -> Measured:
        """A plain backup killed (SIGKILL) once 90% of its blobs are stored, then run again:
        the second run is the one measured."""
        spec = {"op": "backup", "db": str(db), "blobs": str(blobs), "store": str(out),
                "name": "resumed", "tasks": str(out.with_suffix(".tasks.sqlite")),
                "workers": self.args.workers}  # fmt: skip
        log = out.with_suffix(".first-run.log")
        # The first run kills itself as it opens the blob at 90%: watching its folder from
        # here comes too late, as a scan takes about as long as the last tenth of the blobs.
        first = {**spec, "kill_after": int(0.9 * total)}
        with log.open("w") as errors:
            child = subprocess.run([sys.executable, str(RUNS), json.dumps(first)],
                                   stdout=errors, stderr=errors, check=False)  # fmt: skip
        ended = child.returncode if child.returncode != -signal.SIGKILL else None
        stored = stored_blobs(out / "resumed")
        self.say(f"  (killed the first run with {stored} of {total} blobs stored)")
        if ended is not None:
            self.say(f"  (the first run had ended first, exit {ended}: {log.read_text()[-800:]})")
        return self.backup(label, out, db, blobs, compression=False, name="resumed",
                           tasks=spec["tasks"])  # fmt: skip

    def restore(self, label: str, out: Path, location: str) -> Measured:
        spec = {
            "op": "restore",
            "db": str(out / "repo.db"),
            "blobs": str(out / "blobs"),
            "location": location,
        }
        out.mkdir(parents=True)
        return self.keep(self.child(label, spec))

    def verify(self, label: str, location: str) -> Measured:
        return self.keep(self.child(label, {"op": "verify", "location": location}))

    # -- the tools beside it

    def external(
        self, label: str, argv: list[str], output: Path, env: dict[str, str] | None = None
    ) -> Measured:
        measured = measure(label, argv, {**os.environ, **(env or {})})
        measured.size = tree_size(output) if output.exists() else None
        return self.keep(measured)

    def restic(self, out: Path, blobs: Path) -> Measured | None:
        if shutil.which("restic") is None:
            self.say("  restic is not installed (apt-get install restic): left out")
            return None
        env = {
            "RESTIC_PASSWORD": "benchmark",
            "RESTIC_REPOSITORY": str(out),
            "RESTIC_CACHE_DIR": str(out.with_name(out.name + "-cache")),
        }
        subprocess.run(
            ["restic", "init", "--quiet"],
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        argv = ["restic", "backup", "--quiet", "--host", "bench", str(blobs)]
        return self.external("restic backup", argv, out, env)

    # -- the two modes

    def rounds(self) -> range:
        return range(1 if self.args.profile else self.args.repeat)

    def records_mode(self, count: int) -> dict[str, Any]:
        params = synth.Params("records", records=count, projects=10, repos=10)
        built = synth.build(params, self.cache(), say=self.say)
        self.say(
            f"records mode: {built.records} records, {built.distinct_blobs} tiny blobs, "
            f"database {built.database_bytes / MIB:.1f} MiB"
        )
        self.check_space(3 * built.database_bytes)
        warm(built.database, built.blobs)
        self.settle()
        for number in self.rounds():
            folder = self.work / f"records-{number}"
            for kind, compression in (("plain", False), ("compressed", True)):
                label = f"records-{kind}"
                made = self.backup(
                    label, folder / label, built.database, built.blobs, compression=compression
                )
                location = made.result.get("location")
                if location:
                    self.restore(f"{label}-restore", folder / f"{label}-restore", location)
                    self.verify(f"{label}-verify", location)
        rows = []
        for kind in ("plain", "compressed"):
            backup = self.best(f"records-{kind}")
            archive = backup.size if backup else None
            for what, suffix in (("backup", ""), ("restore", "-restore"), ("verify", "-verify")):
                measured = self.best(f"records-{kind}{suffix}")
                median = self.best(f"records-{kind}{suffix}", median=True)
                if measured is not None and median is not None:
                    rows.append(
                        self._records_row(f"{what} ({kind})", measured, median, built, archive)
                    )
        return {"repository": built.stats(), "rows": rows}

    @staticmethod
    def _records_row(
        run: str, m: Measured, median: Measured, built: synth.Built, archive: int | None
    ) -> dict[str, Any]:
        return {
            "run": run,
            "seconds": round(m.seconds, 2),
            "median s": round(median.seconds, 2),
            "CPU s": round(m.cpu, 2),
            "records/s": round(built.records / m.seconds) if m.seconds else None,
            "MiB/s": round((archive or 0) / MIB / m.seconds, 1) if m.seconds else None,
            "archive MiB": round((archive or 0) / MIB, 1),
            "peak RSS MB": round(m.rss_mb, 1),
            "ok": m.ok,
        }

    def files_mode(self, total_bytes: int) -> dict[str, Any]:
        params = synth.Params("files", total_bytes=total_bytes)
        built = synth.build(params, self.cache(), say=self.say)
        self.say(
            f"files mode: {built.files} files, {built.logical_bytes / MIB:.0f} MiB "
            f"({built.distinct_blobs} distinct blobs, {built.blob_bytes / MIB:.0f} MiB in the "
            f"blob folder), {built.records} records"
        )
        self.check_space(7 * built.blob_bytes)
        warm(built.database, built.blobs)
        self.settle()
        source, name = built.blobs, built.blobs.name
        for number in self.rounds():
            folder = self.work / f"files-{number}"
            folder.mkdir(parents=True)
            self.external("cp -r", ["cp", "-r", str(source), str(folder / "cp")], folder / "cp")
            tarball = folder / "blobs.tar.zst"
            argv = ["tar", "-I", "zstd -3 -T0", "-cf", str(tarball), "-C", str(source.parent), name]
            self.external("tar zstd-3", argv, tarball)
            self.restic(folder / "restic", source)
            db = built.database
            plain = self.backup("full-plain", folder / "plain", db, source, compression=False)
            packed = self.backup("full-compressed", folder / "zip", db, source, compression=True)
            for kind, made in (("plain", plain), ("compressed", packed)):
                location = made.result.get("location")
                if location:
                    self.verify(f"verify-{kind}", location)
                    self.restore(f"restore-{kind}", folder / f"restore-{kind}", location)
            # 1% of the files get new content in a copy of the repository, then an increment.
            changed_db, changed_blobs = synth.clone(built, folder / "changed")
            changed = synth.change_files(built, changed_db, changed_blobs)
            self.say(f"  (changed {changed} files for the incremental backup)")
            self.resumed("resumed-plain", folder / "resumed", db, source, built.distinct_blobs)
            for kind in self.args.executors:
                self.backup(f"full-compressed {kind}", folder / f"zip-{kind}", db, source,
                            compression=True, executor=kind)  # fmt: skip
            self.backup(
                "incremental-plain",
                folder / "incremental",
                changed_db,
                changed_blobs,
                compression=False,
                since=synth.INCREMENT_SINCE.isoformat(),
            )
        return {"repository": built.stats(), **self._files_table(built.blob_bytes)}

    def _files_table(self, source: int) -> dict[str, Any]:
        names = {
            "cp -r": "cp -r of the blob folder",
            "tar zstd-3": "tar -I 'zstd -3 -T0' of the blob folder",
            "restic backup": "restic backup of the blob folder",
            "full-plain": "repobackup full backup, plain",
            "full-compressed": "repobackup full backup, compressed",
            "incremental-plain": "repobackup incremental backup (1% of files changed), plain",
            "restore-plain": "repobackup restore from the plain backup",
            "restore-compressed": "repobackup restore from the compressed backup",
            "verify-plain": "repobackup verify of the plain backup",
            "verify-compressed": "repobackup verify of the compressed backup",
            "resumed-plain": "repobackup plain backup run again after a kill at 90%",
            **{
                f"full-compressed {kind}": f"repobackup full backup, compressed, on {kind}"
                for kind in self.args.executors
            },
        }
        best = {label: self.best(label) for label in names}
        median = {label: self.best(label, median=True) for label in names}

        def figure(view: dict[str, Measured | None], kind: str, label: str) -> float | None:
            m = view[label]
            if m is None:
                return None
            if kind == "speed":
                return source / MIB / m.seconds if m.seconds else None
            if kind == "size":
                return m.size / MIB if m.size is not None else None
            return m.seconds

        runs = [
            {
                "run": names[label],
                "seconds": round(m.seconds, 2),
                "median s": round(med.seconds, 2),
                "CPU s": round(m.cpu, 2),
                "MiB/s": round(figure(best, "speed", label) or 0, 1),
                "output MiB": round(m.size / MIB, 1) if m.size is not None else None,
                "peak RSS MB": round(m.rss_mb, 1),
                "ok": m.ok,
            }
            for label, m in best.items()
            if m is not None and (med := median[label]) is not None
        ]
        peak = max((m.rss_mb for m in best.values() if m is not None), default=0.0)
        zip_, plain = "full-compressed", "full-plain"
        targets = [  # measure, what is compared, numerator, denominator, bound
            ("compressed backup speed / tar+zstd-3 speed", "speed", zip_, "tar zstd-3", ">=", 1.0),
            ("compressed backup speed / restic speed", "speed", zip_, "restic backup", ">=", 2.0),
            ("compressed archive size / restic repository size", "size", zip_, "restic backup",
             "<=", 1.05),
            ("plain backup speed / cp -r speed", "speed", plain, "cp -r", ">=", 0.5),
            ("incremental (1% changed) time / full backup time", "seconds", "incremental-plain",
             plain, "<=", 0.05),
            ("resumed after a kill at 90% time / full backup time", "seconds", "resumed-plain",
             plain, "<=", 0.25),
            ("restore speed / backup speed, plain", "speed", "restore-plain", plain, ">=", 1.0),
            ("restore speed / backup speed, compressed", "speed", "restore-compressed", zip_,
             ">=", 1.0),
        ]  # fmt: skip

        def ratio(view: dict[str, Measured | None], kind: str, a: str, b: str) -> float | None:
            top, bottom = figure(view, kind, a), figure(view, kind, b)
            return round(top / bottom, 3) if top is not None and bottom else None

        def met(value: float | None, op: str, goal: float) -> bool | None:
            return None if value is None else (value >= goal if op == ">=" else value <= goal)

        ratios = [
            {
                "measure": name,
                "best of runs": value,
                "median of runs": ratio(median, kind, a, b),
                "target": f"{op} {goal}",
                "met": met(value, op, goal),
            }
            for name, kind, a, b, op, goal in targets
            for value in [ratio(best, kind, a, b)]
        ]
        ratios.append(
            {
                "measure": "peak RSS of any run (MB)",
                "best of runs": round(peak, 1),
                "median of runs": None,
                "target": f"<= {RSS_TARGET_MB}",
                "met": peak <= RSS_TARGET_MB,
            }
        )
        return {"runs": runs, "ratios": ratios}

    def cache(self) -> Path:
        return Path(self.args.workdir) / "cache"

    def check_space(self, per_round: int) -> None:
        """Stop early when the rounds would not fit on the disk (others need it too)."""
        needed = per_round * len(self.rounds()) + 5 * synth.GIB
        free = shutil.disk_usage(self.work).free
        if needed > free:
            raise SystemExit(
                f"the runs need about {needed / synth.GIB:.1f} GiB under {self.work}, "
                f"{free / synth.GIB:.1f} GiB is free: use fewer --repeat or another --workdir"
            )

    def settle(self) -> None:
        """Let the disk finish what earlier deletions left it to do (see the class doc)."""
        os.sync()
        if self.args.settle:
            self.say(f"  (waiting {self.args.settle:g} s for the disk to settle)")
            time.sleep(self.args.settle)


# --- reporting ----------------------------------------------------------------------------------


def markdown(rows: list[dict[str, Any]]) -> str:
    """*rows* as a Markdown table."""
    if not rows:
        return ""
    heads = list(rows[0])
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        cells = ["" if row[h] is None else str(row[h]) for h in heads]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def conditions() -> dict[str, Any]:
    """What the figures depend on: the machine, its load, the tools' versions."""

    def version(argv: list[str]) -> str | None:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            return None
        return (out.stdout or out.stderr).strip().splitlines()[0]

    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "restic": version(["restic", "version"]),
        "zstd": version(["zstd", "--version"]),
        "tar": version(["tar", "--version"]),
    }


def summarize_profile(path: Path, top: int = 15) -> str:
    """The functions a py-spy raw profile spent most samples in: self and inclusive."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")[1:]]  # drop thread
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{path.name}: {total} samples", "  self:"]
    lines += [f"    {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, help="records mode: a repository of N records")
    parser.add_argument("--gib", type=float, help="files mode: a repository of about G GiB")
    parser.add_argument("--quick", action="store_true", help="20k records and 50 MiB, in a minute")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measure (best kept)")
    parser.add_argument("--workers", type=int, default=None, help="the engine's max_workers")
    parser.add_argument(
        "--executors",
        nargs="*",
        default=["processes", "dask:1", "dask:2"],
        help="extra compressed backups on these executors (processes, dask:N)",
    )
    parser.add_argument("--workdir", default=str(HERE / "out"), help="cache and scratch space")
    parser.add_argument("--profile", metavar="DIR", help="run repobackup under py-spy into DIR")
    parser.add_argument(
        "--settle", type=float, default=15, help="seconds the disk gets before the first run"
    )
    parser.add_argument("--summarize", metavar="FILE", nargs="+", help="summarize py-spy files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The benchmark's command line."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.summarize:
        for name in args.summarize:
            print(summarize_profile(Path(name)))
        return 0
    if args.quick:
        args.records = args.records or 20_000
        args.gib = args.gib or 50 / 1024
        args.settle = 0
    if not args.records and not args.gib:
        parser.error("give --records N, --gib G or --quick")

    workdir = Path(args.workdir)
    work = workdir / f"run-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, work)
    report: dict[str, Any] = {"conditions": conditions(), "args": vars(args)}
    bench.say(f"{report['conditions']['date']}, load {report['conditions']['load_average']}")
    try:
        if args.records:
            report["records_mode"] = bench.records_mode(args.records)
        if args.gib:
            report["files_mode"] = bench.files_mode(int(args.gib * synth.GIB))
    finally:
        remove(work)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]

    print()
    if "records_mode" in report:
        print(f"## Records mode ({args.records} records)\n")
        print(markdown(report["records_mode"]["rows"]) + "\n")
    if "files_mode" in report:
        print(f"## Files mode ({args.gib:g} GiB)\n")
        print(markdown(report["files_mode"]["runs"]) + "\n")
        print(markdown(report["files_mode"]["ratios"]) + "\n")
    print(
        f"load average before {report['conditions']['load_average']}, after "
        f"{report['load_average_after']}"
    )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = workdir / f"results-{stamp}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"results: {out}")
    for path in bench.profiles.values():
        if path.exists():
            print(summarize_profile(path))
    failed = sorted({m.label for runs in bench.samples.values() for m in runs if not m.ok})
    if failed:
        print("runs with problems: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
