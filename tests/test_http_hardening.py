"""The HTTP adapter safe by default: tasks point only under the allowed stores, and `serve`
frees a thread held by a client that stops sending, with a bounded number of workers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from rawhttp import RawConnection, exchange, request_bytes
from repobackup import Engine, MemoryRepository, SqliteRepository
from repobackup.adapters.wsgi import make_app

BASE = "/job/api/job/backup"


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(name="root")
def _root(tmp_path: Path) -> Path:
    root = tmp_path / "srv" / "backups"
    root.mkdir(parents=True)
    return root


@contextmanager
def serve_app(app: Any) -> Iterator[int]:
    server = make_server("127.0.0.1", 0, app, server_class=WSGIServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def post(port: int, path: str, body: Any) -> tuple[int | None, dict[str, Any]]:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Connection": "close"}
    reply = exchange("127.0.0.1", port, request_bytes("POST", path, body=data, headers=headers))
    return reply.status, json.loads(reply.body)


def task(location: str) -> dict[str, Any]:
    return {"name": "t", "storeLocation": location, "content": {"commonData": True}}


@pytest.fixture(name="port")
def _port(root: Path) -> Iterator[int]:
    engine = Engine(MemoryRepository())
    app = make_app(engine, allowed_stores=[str(root), "s3://bucket/prefix"])
    with serve_app(app) as port:
        yield port


class TestAllowedStores:
    @pytest.mark.parametrize(
        "where",
        ["{root}", "{root}/nightly", "file://{root}/x", "{root}/a/../b", "s3://bucket/prefix/n"],
    )
    def test_locations_under_an_allowed_place_are_accepted(
        self, port: int, root: Path, where: str
    ) -> None:
        status, answer = post(port, BASE, task(where.format(root=root)))
        assert (status, answer["code"]) == (200, 0), answer

    @pytest.mark.parametrize(
        "where",
        [
            "{root}-evil",
            "{root}/../elsewhere",
            "{root}/link/x",  # a link inside the root to a folder outside
            "/etc",
            "memory://{root}",
            "http://169.254.169.254/latest",
            "ftp://example.com/x",
            "s3://bucket/prefix-evil",
            "s3://bucket/prefix/../other",
            "s3://other/prefix",
            "simplecache::{root}",
        ],
    )
    def test_anything_else_gets_250105_naming_store_location(
        self, port: int, root: Path, where: str
    ) -> None:
        (root / "link").symlink_to(root.parent)
        status, answer = post(port, BASE, task(where.format(root=root)))
        assert (status, answer["code"]) == (400, 250105), answer
        assert "storeLocation" in answer["message"]

    def test_a_stored_task_outside_is_not_executed(self, root: Path, tmp_path: Path) -> None:
        engine = Engine(MemoryRepository())
        outside = engine.create_task(task(str(tmp_path / "outside")))
        inside = engine.create_task(task(str(root)))
        with serve_app(make_app(engine, allowed_stores=[str(root)])) as port:
            status, answer = post(port, f"{BASE}/execute/{outside}", None)
            assert (status, answer["code"]) == (400, 250105)
            assert "storeLocation" in answer["message"]
            assert post(port, f"{BASE}/execute/{inside}", None)[1]["code"] == 0
        engine.close()
        assert not (tmp_path / "outside").exists()

    def test_an_empty_list_allows_nothing(self, root: Path) -> None:
        with serve_app(make_app(Engine(MemoryRepository()), allowed_stores=[])) as port:
            status, answer = post(port, BASE, task(str(root)))
            assert (status, answer["code"]) == (400, 250105)


def spawn_serve(*args: str | Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "repobackup.cli", "serve", "--port", "0", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "REPOBACKUP_TOKEN"},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if match is None:
        process.kill()
        pytest.fail(f"serve did not start: {line!r} {process.communicate()[1]}")
    return process, int(match[1])


@pytest.mark.slow
def test_serve_frees_threads_held_by_clients_that_stop_sending(tmp_path: Path, root: Path) -> None:
    """Bodies shorter than their Content-Length: each connection is answered and closed once
    the read timeout runs out, with two workers, and a normal request is served after."""
    SqliteRepository(tmp_path / "source.db").close()
    process, port = spawn_serve(
        "-r", tmp_path / "source.db", "--store-root", root, "--http-workers", "2",
        "--read-timeout", "1",
    )  # fmt: skip
    try:
        stalled = [RawConnection("127.0.0.1", port) for _ in range(4)]
        started = time.monotonic()
        for conn in stalled:
            conn.send(request_bytes("POST", BASE, body=b'{"name":', content_length=1000))
        replies = [conn.receive(timeout=10) for conn in stalled]
        elapsed = time.monotonic() - started
        for conn in stalled:
            conn.close()
        assert all(r.closed and not r.timed_out for r in replies), replies
        assert {r.status for r in replies} == {408}
        # Four stalled clients through two workers: two rounds of the one-second timeout.
        assert elapsed < 8
        status, answer = post(port, BASE, task(str(root)))
        assert (status, answer["code"]) == (200, 0)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert "Traceback" not in err
