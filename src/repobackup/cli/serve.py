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
from wsgiref.simple_server import WSGIServer

from .exits import EXIT_OK, UsageError
from .opening import open_engine
from .options import Parents, port
from .output import Output
from .runlog import LOG_FORMATS, RunLog

__all__ = ["DEFAULT_PORT", "MIN_TOKEN", "TOKEN_ENV", "register"]

TOKEN_ENV = "REPOBACKUP_TOKEN"
MIN_TOKEN = 16
DEFAULT_PORT = 8080


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
    serve.set_defaults(handler=_serve)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request, so a slow client does not block the rest."""

    daemon_threads = True


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
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from .._engine.scheduler import Scheduler
    from ..adapters.wsgi import bearer_token_authorizer, make_app

    token = _token(args)
    log = RunLog(out, json=args.log_format == "json")
    with contextlib.ExitStack() as stack:
        # The repository is a source of backups: a missing one is an error, never created.
        engine = open_engine(
            stack, args, restore=False, on_progress=log.progress, on_finish=log.finished
        )
        log.engine = engine
        authorize = bearer_token_authorizer(token) if token is not None else None
        app = make_app(engine, authorize=authorize)
        try:
            server = make_server(
                args.host,
                args.port,
                app,
                server_class=_ThreadingServer,
                handler_class=WSGIRequestHandler,
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
            + "; Ctrl-C stops"
        )
        _serve_until_stopped(server, out)
    return EXIT_OK


def _serve_until_stopped(server: WSGIServer, out: Output) -> None:
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, _Stop):
        out.note("stopping: waiting for running tasks to end")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
