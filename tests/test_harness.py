"""The fault-injection helpers themselves: the faulty filesystem, the S3 fault proxy, the
child-process runner and the raw HTTP client do what the hardening tests rely on."""

from __future__ import annotations

import errno
import http.server
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from botocore.exceptions import BotoCoreError

from faultproxy import FaultProxy, ProxyFault
from faults import (
    FaultPlan,
    connection_reset,
    enospc_on_close,
    enospc_on_write,
    failing,
    permanent,
    reset_mid_read,
    timeout,
    transient,
)
from helpers import make_repository
from hostile import GIB, MIB, run_cli, run_python
from rawhttp import RawConnection, exchange, request_bytes
from repobackup import Engine, MemoryRepository, TaskState

# --------------------------------------------------------------------------------------------
# The faulty filesystem


def _faulty(tmp_path: Path, plan: FaultPlan | None = None) -> tuple[Any, str]:
    options = {} if plan is None else {"plan": plan}
    fs, root = fsspec.core.url_to_fs(f"faulty://{tmp_path}", **options)
    return fs, root


def _exercise(fs: Any, root: str) -> list[Any]:
    """Every operation the hooks cover, with what each returned."""
    seen: list[Any] = []
    fs.makedirs(f"{root}/d/e", exist_ok=True)
    fs.pipe_file(f"{root}/d/a.bin", b"alpha" * 100)
    with fs.open(f"{root}/d/e/b.txt", "wb") as file:
        file.write(b"line 1\nline 2\n")
    with fs.open(f"{root}/d/e/b.txt", "rb") as file:
        seen.append([file.readline(), file.read(3), file.read()])
    with fs.open(f"{root}/d/e/b.txt", "r") as text:
        seen.append(list(text))
    fs.cp_file(f"{root}/d/a.bin", f"{root}/d/c.bin")
    fs.mv(f"{root}/d/c.bin", f"{root}/d/m.bin")
    fs.touch(f"{root}/d/t")
    seen.append(fs.cat_file(f"{root}/d/a.bin", start=3, end=9))
    seen.append(sorted(p.removeprefix(root) for p in fs.find(root)))
    seen.append(sorted(p.removeprefix(root) for p in fs.ls(f"{root}/d", detail=False)))
    seen.append(sorted(p.removeprefix(root) for p in fs.glob(f"{root}/d/*.bin")))
    seen.append([(d.removeprefix(root), sorted(f)) for d, _, f in fs.walk(root)])
    seen.append({k: v for k, v in fs.info(f"{root}/d/a.bin").items() if k in ("size", "type")})
    seen.append([fs.exists(f"{root}/d/m.bin"), fs.isfile(f"{root}/d"), fs.isdir(f"{root}/d")])
    seen.append([fs.exists(f"{root}/nope"), fs.size(f"{root}/d/m.bin")])
    fs.rm_file(f"{root}/d/t")
    fs.rm(f"{root}/d/e", recursive=True)
    seen.append(sorted(p.removeprefix(root) for p in fs.find(root)))
    with pytest.raises(FileNotFoundError):
        fs.info(f"{root}/nope")
    return seen


class TestFaultyFileSystem:
    def test_without_faults_it_is_the_wrapped_filesystem(
        self, tmp_path: Path, fault_plan: FaultPlan
    ) -> None:
        """With no fault every operation gives what fsspec's local filesystem gives, and
        each is counted once."""
        (tmp_path / "plain").mkdir()
        (tmp_path / "faulty").mkdir()
        plain = _exercise(fsspec.filesystem("file"), str(tmp_path / "plain"))
        fs, root = _faulty(tmp_path / "faulty")
        assert _exercise(fs, root) == plain
        assert fault_plan.failures == {}
        assert fault_plan.calls["pipe"] == 1
        assert fault_plan.calls["open"] == 3
        assert fault_plan.calls["write"] == 1

    def test_the_memory_variant_has_its_own_store(self, fault_plan: FaultPlan) -> None:
        """faultymem:// behaves as memory:// without sharing its store."""
        plain = _exercise(fsspec.filesystem("memory"), "/harness-plain")
        fsspec.filesystem("memory").rm("/harness-plain", recursive=True)
        fs, root = fsspec.core.url_to_fs("faultymem://harness")
        assert _exercise(fs, root) == plain
        assert not fsspec.filesystem("memory").exists("/harness")
        assert fault_plan.calls["pipe"] == 1

    def test_the_memory_variant_injects_faults_too(self, fault_plan: FaultPlan) -> None:
        """ENOSPC on close truncates a faultymem:// object in place; a read resets mid-way."""
        fault_plan.add(enospc_on_close(keep=0.25, path="*.zip"), reset_mid_read(3, limit=1))
        fs, root = fsspec.core.url_to_fs("faultymem://faults")
        file = fs.open(f"{root}/a.zip", "wb")
        file.write(b"z" * 400)
        with pytest.raises(OSError, match="No space"):
            file.close()
        assert fs.cat_file(f"{root}/a.zip") == b"z" * 100
        with fs.open(f"{root}/a.zip", "rb") as reader:
            assert reader.read(10) == b"zzz"
            with pytest.raises(ConnectionResetError):
                reader.read(10)
        assert fault_plan.failures == {"close": 1, "read": 1}

    def test_nth_calls_fail_transiently(self, tmp_path: Path) -> None:
        """Faults fire on exactly the chosen calls of the chosen operation, counted."""
        plan = FaultPlan(transient("info", nth=(2, 3)), transient("ls", nth=(1,), error=timeout))
        fs, root = _faulty(tmp_path, plan)
        outcomes = []
        for _ in range(4):
            try:
                fs.info(root)
                outcomes.append(0)
            except ConnectionResetError as exc:
                outcomes.append(exc.errno)
        assert outcomes == [0, errno.ECONNRESET, errno.ECONNRESET, 0]
        with pytest.raises(TimeoutError):
            fs.ls(root)
        assert fs.ls(root) == []
        assert plan.calls == {"info": 4, "ls": 2}
        assert plan.failures == {"info": 2, "ls": 1}

    def test_a_seeded_rate_repeats(self, tmp_path: Path) -> None:
        """A rate draws from the plan's seeded RNG: the same seed fails the same calls."""

        def pattern(seed: int) -> list[bool]:
            plan = FaultPlan(transient("info", rate=0.3), seed=seed)
            fs, root = _faulty(tmp_path, plan)
            failed = []
            for _ in range(300):
                try:
                    fs.exists(root)
                    failed.append(False)
                except ConnectionResetError:
                    failed.append(True)
            assert plan.failures["info"] == sum(failed)
            return failed

        first = pattern(7)
        assert first == pattern(7)
        assert first != pattern(8)
        assert 60 < sum(first) < 120

    def test_permanent_failures_and_limits(self, tmp_path: Path) -> None:
        """A permanent fault fails every call from its first; a limit caps the failures."""
        plan = FaultPlan(permanent("mkdir", from_call=2), transient("cat", rate=1.0, limit=2))
        fs, root = _faulty(tmp_path, plan)
        fs.makedirs(f"{root}/one")
        for name in ("two", "three"):
            with pytest.raises(ConnectionResetError):
                fs.makedirs(f"{root}/{name}")
        assert sorted(os.listdir(tmp_path)) == ["one"]
        fs.pipe_file(f"{root}/f", b"x")
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(fs.cat_file(f"{root}/f"))
            except ConnectionResetError:
                outcomes.append(b"reset")
        assert outcomes == [b"reset", b"reset", b"x", b"x"]

    def test_faults_match_paths_and_modes(self, tmp_path: Path) -> None:
        """A fault with a path glob or a mode only hits the calls that match."""
        plan = FaultPlan(permanent("open", mode="w", path="*.zip"))
        fs, root = _faulty(tmp_path, plan)
        fs.pipe_file(f"{root}/ok.txt", b"fine")
        with fs.open(f"{root}/ok.txt", "rb") as file:
            assert file.read() == b"fine"
        with pytest.raises(ConnectionResetError):
            fs.open(f"{root}/b.zip", "wb")
        assert not (tmp_path / "b.zip").exists()

    def test_enospc_on_write_leaves_what_fitted(self, tmp_path: Path) -> None:
        """ENOSPC after N bytes writes those N bytes, then fails, as a full disk does."""
        plan = FaultPlan(enospc_on_write(after_bytes=10))
        fs, root = _faulty(tmp_path, plan)
        file = fs.open(f"{root}/out", "wb")
        file.write(b"0123")
        with pytest.raises(OSError, match="No space") as caught:
            file.write(b"456789abcdef")
        assert caught.value.errno == errno.ENOSPC
        with pytest.raises(OSError, match="No space"):
            file.write(b"more")
        file.close()
        assert (tmp_path / "out").read_bytes() == b"0123456789"
        assert plan.failures == {"write": 2}

    def test_enospc_on_close_and_a_failing_delete(self, tmp_path: Path) -> None:
        """ENOSPC on close leaves a truncated file under its final name; a failing delete
        cannot remove it."""
        plan = FaultPlan(enospc_on_close(keep=0.5), failing("delete"))
        fs, root = _faulty(tmp_path, plan)
        file = fs.open(f"{root}/final.zip", "wb")
        file.write(b"x" * 1000)
        with pytest.raises(OSError, match="No space"):
            file.close()
        assert (tmp_path / "final.zip").stat().st_size == 500
        with pytest.raises(PermissionError):
            fs.rm(f"{root}/final.zip")
        with pytest.raises(PermissionError):
            fs.rm_file(f"{root}/final.zip")
        assert (tmp_path / "final.zip").exists()
        assert plan.failures == {"close": 1, "delete": 2}

    def test_failing_stat(self, tmp_path: Path) -> None:
        """A stat fault makes info and exists raise instead of answering."""
        plan = FaultPlan(failing("info", error=lambda: OSError(errno.EIO, "I/O error")))
        fs, root = _faulty(tmp_path, plan)
        for call in (fs.info, fs.exists, fs.isfile, fs.size):
            with pytest.raises(OSError, match="I/O error"):
                call(root)
        assert plan.failures["info"] == 4

    def test_a_read_resets_mid_stream(self, tmp_path: Path) -> None:
        """A stream gives the bytes before the boundary, then resets; with a limit of one the
        next stream reads whole."""
        (tmp_path / "big").write_bytes(bytes(range(256)) * 40)
        plan = FaultPlan(reset_mid_read(after_bytes=1000, limit=1))
        fs, root = _faulty(tmp_path, plan)
        file = fs.open(f"{root}/big", "rb")
        got = b"".join(file.read(300) for _ in range(4))
        with pytest.raises(ConnectionResetError):
            file.read(300)
        file.close()
        assert got == (tmp_path / "big").read_bytes()[:1000]
        with fs.open(f"{root}/big", "rb") as file:
            assert file.read() == (tmp_path / "big").read_bytes()
        assert plan.failures == {"read": 1}

    def test_readinto_and_lines_pass_the_plan_too(self, tmp_path: Path) -> None:
        """readinto, readline and iteration are reads the plan sees."""
        (tmp_path / "lines").write_bytes(b"one\ntwo\nthree\n")
        plan = FaultPlan(reset_mid_read(after_bytes=8))
        fs, root = _faulty(tmp_path, plan)
        with fs.open(f"{root}/lines", "rb") as file:
            buffer = bytearray(4)
            assert file.readinto(buffer) == 4
            assert next(file) == b"two\n"
            with pytest.raises(ConnectionResetError):
                list(file)

    def test_it_works_across_threads(self, tmp_path: Path) -> None:
        """Counters stay exact when many threads call at once."""
        plan = FaultPlan(transient("info", rate=0.2, error=connection_reset), seed=3)
        fs, root = _faulty(tmp_path, plan)
        caught = [0] * 8

        def hammer(slot: int) -> None:
            for _ in range(250):
                try:
                    fs.info(root)
                except ConnectionResetError:
                    caught[slot] += 1

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert plan.calls["info"] == 2000
        assert plan.failures["info"] == sum(caught)
        assert 300 < sum(caught) < 500

    def test_the_engine_reaches_it_by_url_and_storage_options(self, tmp_path: Path) -> None:
        """A backup to faulty:// and its restore work with no faults and are counted; an
        outage on every write fails the backup with the injected error named."""
        plan = FaultPlan()
        options = {"faulty": {"plan": plan}}
        source = make_repository()
        body = {
            "name": "nightly",
            "storeLocation": f"faulty://{tmp_path}",
            "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
        }
        engine = Engine(source, storage_options=options)
        backup = engine.execute(engine.create_task(body))
        assert backup.state is TaskState.FINISHED, backup.errors
        assert backup.location is not None
        assert plan.calls["open"] > 0, plan.calls
        target = MemoryRepository()
        restore = dict(body, name="restore", type="DATA_RESTORE", storeLocation=backup.location)
        engine = Engine(target, storage_options=options)
        assert engine.execute(engine.create_task(restore)).state is TaskState.FINISHED
        assert target.snapshot() == source.snapshot()

        plan.add(permanent(("open", "pipe"), mode="w"))
        engine = Engine(source, storage_options=options)
        failed = engine.execute(engine.create_task(dict(body, name="other")))
        assert failed.state is TaskState.FAILED
        assert "injected" in failed.errors[-1].message


# --------------------------------------------------------------------------------------------
# moto behind the fault proxy


def _quick(proxy: FaultProxy) -> Any:
    """An s3fs through the proxy that tries each request once, so that faults show at once."""
    fs = proxy.filesystem(config_kwargs={"retries": {"total_max_attempts": 1}})
    fs.retries = 1
    return fs


@pytest.mark.slow
class TestFaultProxy:
    def test_without_faults_s3fs_works_through_it(self, s3_proxy: FaultProxy) -> None:
        """Buckets, writes, reads, listings and deletes go through, each request counted."""
        fs = s3_proxy.filesystem()
        fs.mkdir("harness-plain")
        fs.pipe_file("harness-plain/a", b"alpha" * 10_000)
        fs.pipe_file("harness-plain/b", b"")
        assert fs.cat_file("harness-plain/a") == b"alpha" * 10_000
        assert fs.cat_file("harness-plain/a", start=5, end=10) == b"alpha"
        assert sorted(fs.ls("harness-plain")) == ["harness-plain/a", "harness-plain/b"]
        fs.rm("harness-plain/b")
        assert not fs.exists("harness-plain/b")
        assert s3_proxy.requests["PUT"] >= 3
        assert s3_proxy.requests["GET"] >= 3
        assert s3_proxy.injected == {}

    def test_an_outage_of_every_put(self, s3_proxy: FaultProxy) -> None:
        """With every PUT answered 503 a write fails after its retries, reads still work, and
        once the fault is cleared the write succeeds."""
        fs = s3_proxy.filesystem(config_kwargs={"retries": {"total_max_attempts": 2}})
        fs.retries = 1
        fs.mkdir("harness-outage")
        fs.pipe_file("harness-outage/old", b"old")
        s3_proxy.add(ProxyFault(status=503, method="PUT"))
        before = s3_proxy.requests["PUT"]
        with pytest.raises(OSError, match="injected by the fault proxy"):
            fs.pipe_file("harness-outage/new", b"new")
        assert s3_proxy.requests["PUT"] - before == s3_proxy.injected["PUT"] == 2
        assert fs.cat_file("harness-outage/old") == b"old"
        s3_proxy.clear()
        fs.pipe_file("harness-outage/new", b"new")
        assert fs.cat_file("harness-outage/new") == b"new"

    def test_a_fraction_of_500s_is_absorbed_by_retries(self, s3_proxy: FaultProxy) -> None:
        """A 30 % rate of 500s is injected, and s3fs's own retries hide it."""
        fs = s3_proxy.filesystem()
        fs.mkdir("harness-rate")
        s3_proxy.add(ProxyFault(status=500, rate=0.3))
        for index in range(20):
            fs.pipe_file(f"harness-rate/k{index}", b"v")
        s3_proxy.clear()
        assert len(fs.ls("harness-rate", refresh=True)) == 20
        assert s3_proxy.injected["PUT"] > 0

    @pytest.mark.parametrize("reset", [False, True])
    def test_a_dropped_connection(self, s3_proxy: FaultProxy, reset: bool) -> None:
        """Connections closed (or reset) without a reply fail the read; once the fault is
        cleared the read works. A fault with a limit fires that many times only."""
        fs = _quick(s3_proxy)
        folder = f"harness-drop-{reset}"
        fs.mkdir(folder)
        fs.pipe_file(f"{folder}/x", b"data")
        s3_proxy.add(ProxyFault(drop=True, reset=reset, method="GET", path="*/x*"))
        with pytest.raises((OSError, BotoCoreError)):
            fs.cat_file(f"{folder}/x")
        dropped = s3_proxy.injected["GET"]
        assert dropped >= 1
        s3_proxy.clear()
        assert fs.cat_file(f"{folder}/x") == b"data"
        s3_proxy.add(ProxyFault(drop=True, reset=reset, method="GET", limit=1))
        assert s3_proxy.filesystem().cat_file(f"{folder}/x") == b"data"  # retried
        assert s3_proxy.injected["GET"] == dropped + 1

    def test_the_engine_reaches_moto_through_it(self, s3_proxy: FaultProxy) -> None:
        """A backup to S3 through the proxy and its restore work, and the proxy saw them."""
        bucket = "harness-engine"
        s3_proxy.filesystem().mkdir(bucket)
        options = {"s3": s3_proxy.options}
        source = make_repository()
        body = {
            "name": "nightly",
            "storeLocation": f"s3://{bucket}/store",
            "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
        }
        engine = Engine(source, storage_options=options)
        backup = engine.execute(engine.create_task(body))
        assert backup.state is TaskState.FINISHED, backup.errors
        assert backup.location is not None
        target = MemoryRepository()
        restore = dict(body, name="restore", type="DATA_RESTORE", storeLocation=backup.location)
        engine = Engine(target, storage_options=options)
        assert engine.execute(engine.create_task(restore)).state is TaskState.FINISHED
        assert target.snapshot() == source.snapshot()
        assert s3_proxy.requests["PUT"] > 0


# --------------------------------------------------------------------------------------------
# Children under limits


@pytest.mark.slow  # child processes, seconds each
class TestHostileRunner:
    def test_a_quiet_child(self) -> None:
        """Output, exit code and a small peak come back from a child that does little."""
        result = run_python("import sys; print('out'); print('err', file=sys.stderr); exit(3)")
        assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert not result.timed_out
        assert result.killed_by is None
        assert 1 * MIB < result.peak_rss < 40 * MIB

    def test_input_reaches_the_child(self) -> None:
        """Bytes given as input are the child's stdin."""
        result = run_python("import sys; print(sys.stdin.read()[::-1])", input=b"abc")
        assert result.stdout == "cba\n"

    def test_allocating_past_the_memory_limit_fails(self) -> None:
        """A child that asks for more than its address-space limit gets a MemoryError, and
        its peak stays under the limit."""
        result = run_python("x = bytearray(2 << 30)", memory=512 * MIB)
        assert result.returncode == 1
        assert "MemoryError" in result.stderr
        assert result.peak_rss < 512 * MIB

    def test_the_peak_is_the_childs_own(self) -> None:
        """A child that touches 200 MiB reports a peak a little above 200 MiB: not the test
        process's size, not a figure below what it used."""
        result = run_python("x = bytearray(200 << 20); print(len(x))", memory=GIB)
        assert result.returncode == 0, result.stderr
        assert 200 * MIB <= result.peak_rss < 260 * MIB

    def test_a_sleeping_child_is_killed_at_the_timeout(self) -> None:
        """A child that would sleep for a minute is killed after its one-second timeout."""
        result = run_python("import time; time.sleep(60)", timeout=1.0)
        assert result.timed_out
        assert result.killed_by is signal.SIGKILL
        assert 1.0 <= result.elapsed < 3.0

    def test_the_timeout_kills_the_childs_own_children(self, tmp_path: Path) -> None:
        """A grandchild started by the child dies with it at the timeout."""
        code = (
            "import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(tmp_path / 'pid')!r}, 'w').write(str(child.pid))\n"
            "time.sleep(60)\n"
        )
        result = run_python(code, timeout=1.5)
        assert result.timed_out
        grandchild = Path(f"/proc/{(tmp_path / 'pid').read_text()}/stat")
        # Gone, or dead and waiting for init to reap it (state Z): not running either way.
        assert not grandchild.exists() or grandchild.read_text().split(") ")[1][0] == "Z"

    def test_a_spinning_child_is_stopped_by_its_cpu_limit(self) -> None:
        """A busy loop ends on its CPU limit (SIGXCPU) before its wall-clock timeout."""
        result = run_python("while True: pass", cpu=1, timeout=20)
        assert not result.timed_out
        assert result.killed_by in (signal.SIGXCPU, signal.SIGKILL)
        assert 0.5 <= result.cpu < 3.0  # the kernel counts CPU time in ticks

    def test_a_file_size_limit(self, tmp_path: Path) -> None:
        """A child that writes past its file-size limit gets EFBIG, and the file stops there."""
        code = f"open({str(tmp_path / 'big')!r}, 'wb').write(bytes(2 << 20))"
        result = run_python(code, file_size=MIB)
        assert "File too large" in result.stderr
        assert (tmp_path / "big").stat().st_size == MIB

    def test_a_cli_command(self) -> None:
        """run_cli runs the repobackup command line of this checkout."""
        result = run_cli(["--version"], memory=GIB, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("repobackup ")


# --------------------------------------------------------------------------------------------
# Raw-socket HTTP


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers a POST with its body reversed, a GET with its path; reads bodies as told."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client gave up first (the timeout tests), nothing to say
            self.close_connection = True

    def do_GET(self) -> None:
        self._answer(self.path.encode())

    def do_POST(self) -> None:
        try:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        except TimeoutError:
            self.close_connection = True
            return
        self._answer(body[::-1])


@pytest.fixture(name="echo_server")
def _echo_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    handler = type("Handler", (_Echo,), {"timeout": getattr(request, "param", None)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class TestRawHttp:
    def test_a_whole_request_gets_its_reply(self, echo_server: tuple[str, int]) -> None:
        """A well-formed request is answered; status, headers and body are parsed."""
        data = request_bytes("POST", "/x", body=b"hello", headers={"Connection": "close"})
        reply = exchange(*echo_server, data, timeout=5)
        assert (reply.status, reply.body, reply.closed, reply.timed_out) == (
            200,
            b"olleh",
            True,
            False,
        )
        assert reply.headers["content-length"] == "5"

    def test_until_stops_reading_on_a_kept_alive_connection(
        self, echo_server: tuple[str, int]
    ) -> None:
        """On a kept-alive connection the read stops at the marker, and the connection serves
        the next request."""
        with RawConnection(*echo_server) as connection:
            for path in ("/one", "/two"):
                connection.send(request_bytes("GET", path))
                reply = connection.receive(timeout=5, until=path.encode())
                assert (reply.status, reply.body, reply.closed) == (200, path.encode(), False)

    def test_a_short_body_holds_a_server_without_a_timeout(
        self, echo_server: tuple[str, int]
    ) -> None:
        """A body shorter than its Content-Length gets no answer from a server that waits
        for the rest: the read ends on the client's timeout, the connection still open."""
        data = request_bytes("POST", "/x", body=b"short", content_length=100)
        reply = exchange(*echo_server, data, timeout=0.5)
        assert (reply.data, reply.closed, reply.timed_out) == (b"", False, True)
        assert 0.5 <= reply.elapsed < 2

    @pytest.mark.parametrize("echo_server", [0.3], indirect=True)
    def test_a_server_with_a_read_timeout_lets_go(self, echo_server: tuple[str, int]) -> None:
        """A server with a read timeout closes the connection of a short body on its own."""
        data = request_bytes("POST", "/x", body=b"short", content_length=100)
        reply = exchange(*echo_server, data, timeout=5)
        assert (reply.closed, reply.timed_out) == (True, False)
        assert 0.3 <= reply.elapsed < 2

    def test_a_half_closed_request_and_no_status(self, echo_server: tuple[str, int]) -> None:
        """A header line too long gets a 431 after a half close; a request line without a
        version is answered HTTP/0.9 style, with no status line: status None."""
        replies = []
        for line in (b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", b"NOT-HTTP\r\n\r\n"):
            with RawConnection(*echo_server) as connection:
                connection.send(line)
                connection.shutdown_write()
                replies.append(connection.receive(timeout=5))
        assert [reply.status for reply in replies] == [431, None]
        assert all(reply.closed for reply in replies)
        assert b"Bad request" in replies[1].data
