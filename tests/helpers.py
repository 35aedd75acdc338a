"""Small test doubles shared by the test modules: a hand-moved clock, a tiny repository,
an engine fixture, a WSGI app served on 127.0.0.1 with a client for it."""

from __future__ import annotations

import http.client
import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from repobackup import Engine, MemoryRepository, SqliteRepository


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **amount: float) -> datetime:
        self.now += timedelta(**amount)
        return self.now


def make_repository() -> MemoryRepository:
    """A small repository: one project, one repository, two files."""
    repo = MemoryRepository()
    repo.put_project("demo")
    repo.put_repository("demo", "libs")
    repo.put_file("demo", "libs", "/a.jar", b"alpha")
    repo.put_file("demo", "libs", "/b.jar", b"beta")
    return repo


def one_file_database(path: Path) -> Path:
    """A SQLite repository at *path*: project ``alpha``, repository ``libs``, one file."""
    with SqliteRepository(path) as repo:
        repo.put_project("alpha")
        repo.put_repository("alpha", "libs")
        repo.put_file("alpha", "libs", "/a.bin", b"alpha bytes")
    return path


@pytest.fixture(name="engine")
def engine_fixture(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a fresh SQLite repository, closed after the test."""
    engine = Engine(SqliteRepository(str(tmp_path / "repo.db")))
    yield engine
    engine.close()


BASE = "/job/api/job/backup"


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request."""

    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """A request handler that keeps the access log out of the test output."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(app: Any) -> Iterator[Server]:
    """Serve *app* on an ephemeral port of 127.0.0.1 for the duration of the block."""
    server = make_server(
        "127.0.0.1", 0, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Server(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Response:
    """What came back: status, headers and the parsed JSON body."""

    def __init__(self, status: int, headers: http.client.HTTPMessage, raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw

    @property
    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.raw.decode("utf-8"))

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.raw[:300]!r}>"


class Server:
    """A client of the served app."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> Response:
        """Send one request and read the whole answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            conn.close()

    def create(self, body: bytes | str, headers: dict[str, Any] | None = None) -> Response:
        """POST a task."""
        return self.request(
            "POST", BASE, body, {"Content-Type": "application/json"} | (headers or {})
        )


class BlockingRepository(MemoryRepository):
    """A repository whose blob reads wait until the test lets them go (`go_on`); `reading` is
    set once a run is reading, so the test knows the task is RUNNING."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = threading.Event()
        self.go_on = threading.Event()
        self.put_project("demo")
        self.put_repository("demo", "libs")
        self.put_file("demo", "libs", "/a.jar", b"alpha")

    def open_blob(self, sha256: str) -> Any:
        self.reading.set()
        self.go_on.wait(timeout=30)
        return super().open_blob(sha256)


# --- Units below the public API -------------------------------------------------------------
# A few tests exercise private units directly (the zip writer and reader, retention, the
# retry policy, the scheduler's due time). They reach them through these names only, so that
# moving a private module changes this block and no test.

from repobackup._archive import crypto, keys  # noqa: E402  (the encryption primitives)
from repobackup._archive.retention import apply_retention, remove_leftovers  # noqa: E402
from repobackup._archive.store import is_transient, retrying  # noqa: E402
from repobackup._archive.zipreader import ZipReader  # noqa: E402
from repobackup._archive.zipwriter import ZipWriter, worth_compressing  # noqa: E402
from repobackup._engine.scheduler import due_at  # noqa: E402

MANIFEST = "manifest.json"

__all__ = [
    "MANIFEST",
    "Clock",
    "ZipReader",
    "ZipWriter",
    "apply_retention",
    "blob_member",
    "crypto",
    "due_at",
    "engine_fixture",
    "is_transient",
    "keys",
    "make_repository",
    "remove_leftovers",
    "retrying",
    "worth_compressing",
]


def blob_member(sha256: str, *, compressed: bool) -> str:
    """A blob's member path, as docs/format.md writes it: blobs/<sha[0:2]>/<sha[2:4]>/<sha>,
    with .zst when it is a zstd frame."""
    return f"blobs/{sha256[:2]}/{sha256[2:4]}/{sha256}" + (".zst" if compressed else "")


def last_json(text: str) -> Any:
    """The JSON a command printed: the whole output when it is one document, else its last
    line (a --json run prints status lines, then its summary message last)."""
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(text.strip().splitlines()[-1])


#: The modified time of every record that `record_line` writes, as the archive holds it.
RECORD_T0 = "2026-03-01T12:00:00+00:00"


def record_line(collection: str, key: str, document: Any, **fields: Any) -> bytes:
    """One record line of a backup's records member, written by hand as docs/format.md
    describes it, for tests that craft archives (projectId, repoName, blob, size in
    *fields*)."""
    data = {
        "collection": collection,
        "projectId": fields.get("projectId"),
        "repoName": fields.get("repoName"),
        "key": key,
        "modified": RECORD_T0,
        "deleted": False,
        "blob": fields.get("blob"),
        "size": fields.get("size", 0),
        "document": document,
    }
    return json.dumps(data).encode() + b"\n"
