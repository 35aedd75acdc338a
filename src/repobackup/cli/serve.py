"""`repobackup serve`: the JSON API over HTTP with a scheduler running due tasks, a line logged
as each run starts and ends; loopback only unless a bearer token guards it."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import socketserver
import threading
from types import FrameType
from typing import Any, NoReturn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .exits import EXIT_OK, UsageError
from .opening import open_engine
from .options import Parents, port
from .output import Output
from .passwords import add_password_option
from .runlog import LOG_FORMATS, RunLog
from .scheduler import STOP_TIMEOUT, stop_runs

__all__ = ["DEFAULT_PORT", "MIN_TOKEN", "TOKEN_ENV", "register"]

TOKEN_ENV = "REPOBACKUP_TOKEN"
MIN_TOKEN = 16
DEFAULT_PORT = 8080
DEFAULT_WORKERS = 8
READ_TIMEOUT = 30.0


def register(commands: Any, parents: Parents) -> None:
    """Add `serve` to the subparsers *commands*."""
    serve = commands.add_parser(
        "serve",
        parents=[parents.common, parents.repository],
        help="serve the JSON API and run scheduled tasks",
        description="Serve the backup API over HTTP and run due tasks. Binds 127.0.0.1; any "
        f"other address needs a bearer token (--token or {TOKEN_ENV}).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="the lines for each run's start and end: text (default) or JSON lines",
    )
    serve.add_argument(
        "--token",
        help=f"bearer token callers must send (prefer the {TOKEN_ENV} environment variable: "
        "a command line is visible to other users)",
    )
    serve.add_argument(
        "--store-root",
        action="append",
        metavar="PLACE",
        help="a folder or URL (s3://bucket/prefix) under which tasks created or run over HTTP "
        "may keep backups; may be given more than once. Without it no task may be created "
        "or run over HTTP",
    )
    serve.add_argument(
        "--http-workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"requests served at once (default {DEFAULT_WORKERS}); more wait to be accepted",
    )
    serve.add_argument(
        "--read-timeout",
        type=float,
        default=READ_TIMEOUT,
        help=f"seconds a client may pause while sending a request (default {READ_TIMEOUT:g})",
    )
    # Scheduled tasks may write encrypted backups: the passphrase for them.
    add_password_option(serve)
    serve.set_defaults(handler=_serve)


class _BoundedServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server with one thread per request, at most *workers* at once: when all are
    busy the next connection waits in the listen backlog, so clients cannot make it start
    threads without bound. For production, run the app under gunicorn or waitress."""

    daemon_threads = True
    workers = 8

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(self.workers)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _handler(read_timeout: float) -> type[WSGIRequestHandler]:
    class Handler(WSGIRequestHandler):
        # socketserver applies this to every read of the connection: a client that stops
        # sending (a body shorter than its Content-Length) frees its thread when it runs out.
        timeout = read_timeout

    return Handler


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Stop(BaseException):
    """SIGTERM: leave the serving loop the way Ctrl-C does."""


def _raise_stop(signum: int, frame: FrameType | None) -> NoReturn:
    raise _Stop


def _token(args: argparse.Namespace) -> str | None:
    token: str | None = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if token is not None and len(token.strip()) < MIN_TOKEN:
        raise UsageError(f"the bearer token must be at least {MIN_TOKEN} characters")
    if token is None and not _is_loopback(args.host):
        raise UsageError(
            f"refusing to serve on {args.host} without a bearer token: anyone who reaches it "
            f"could restore over your data. Set {TOKEN_ENV} (or --token) and send "
            "'Authorization: Bearer <token>'"
        )
    return token


def _serve(args: argparse.Namespace, out: Output) -> int:
    from wsgiref.simple_server import make_server

    from .._engine.scheduler import Scheduler
    from ..adapters.wsgi import bearer_token_authorizer, make_app

    token = _token(args)
    if args.http_workers < 1 or not 0 < args.read_timeout <= 3600:
        raise UsageError("--http-workers must be at least 1 and --read-timeout 0 to 3600 seconds")
    log = RunLog(out, json=args.log_format == "json")
    with contextlib.ExitStack() as stack:
        # The repository is a source of backups: a missing one is an error, never created.
        engine = open_engine(
            stack, args, restore=False, on_start=log.started, on_finish=log.finished
        )
        log.engine = engine
        authorize = bearer_token_authorizer(token) if token is not None else None
        try:
            app = make_app(engine, authorize=authorize, allowed_stores=args.store_root or [])
        except ValueError as exc:
            raise UsageError(f"--store-root: {exc}") from None
        server_class = type("Server", (_BoundedServer,), {"workers": args.http_workers})
        try:
            server: WSGIServer = make_server(
                args.host,
                args.port,
                app,
                server_class=server_class,
                handler_class=_handler(args.read_timeout),
            )
        except OSError as exc:
            raise UsageError(f"cannot bind {args.host}:{args.port}: {exc.strerror}") from None
        stack.callback(server.server_close)
        host, bound = str(server.server_address[0]), int(server.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        # The address first: a run's start line must not come before it.
        out.say(f"serving http://{shown}:{bound}/job/api/job/backup")
        scheduler = Scheduler(engine)
        scheduler.start()
        stack.callback(scheduler.stop)
        out.note(
            "scheduler running; "
            + ("bearer token required" if token else "no token: local callers only")
            + (f"; stores under {', '.join(args.store_root)}" if args.store_root else "")
            + "; Ctrl-C stops"
        )
        stopped_by = _serve_until_stopped(server)
        scheduler.stop()
        if stopped_by is not None:
            # As `scheduler` does: the runs under way are cancelled, and end FAILED.
            stop_runs(log, engine, stopped_by, EXIT_OK, STOP_TIMEOUT, who="serve")
    return EXIT_OK


def _serve_until_stopped(server: WSGIServer) -> str | None:
    """Serve until SIGTERM or Ctrl-C; which of them stopped it."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return "Ctrl-C"
    except _Stop:
        return "SIGTERM"
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return None
