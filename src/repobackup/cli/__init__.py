"""The ``repobackup`` command line: one module per command, `main(argv)` returning the exit code.

The exit codes are stable (docs/cli.md); rich draws tables and progress bars when installed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from .._archive.sealing import passphrase_scope
from ..exceptions import RepoBackupError, TaskNotFoundError, ValidationError
from .exits import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Terminated,
    UsageError,
    terminate_like_interrupt,
)
from .output import Output, plural
from .parser import build_parser
from .passwords import read_passphrase
from .serve import TOKEN_ENV
from .taskjson import CONTENT_OPTIONS

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "TOKEN_ENV",
    "build_parser",
    "main",
]

log = logging.getLogger("repobackup")

# Optional packages whose absence our extras fix: the hint names the extra, not the package.
_EXTRAS = {"s3fs": "s3", "rich": "cli"}


class _LogFormatter(logging.Formatter):
    """Log lines as ``warning: message``; the traceback only with --debug."""

    def __init__(self, debug: bool) -> None:
        super().__init__("%(levelname)s: %(message)s")
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            if self.debug:
                return text + "\n" + self.formatException(record.exc_info)
            error = record.exc_info[1]
            text += f" ({type(error).__name__}: {error})"
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with *argv* (default: ``sys.argv[1:]``); return the exit code.

    0 finished with no error; 1 failed (a task FAILED, a backup did not verify, a fatal
    error); 2 usage or validation error; 3 finished with some records or blobs failed;
    130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse reported
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(plain=args.plain, quiet=args.quiet, verbose=args.verbose, json=args.json)
    handler = logging.StreamHandler(out.stderr)
    handler.setFormatter(_LogFormatter(args.debug))
    previous_level, previous_propagate = log.level, log.propagate
    log.addHandler(handler)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    log.setLevel(level)
    log.propagate = False
    try:
        with terminate_like_interrupt():
            return _run(args, out)
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)
        log.propagate = previous_propagate


def _run(args: argparse.Namespace, out: Output) -> int:
    try:
        with passphrase_scope(read_passphrase(args)):
            code: int = args.handler(args, out)
    except Terminated:
        out.error("terminated; the run ended FAILED, and nothing unfinished looks complete")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        out.error("interrupted; an unfinished backup is removed, never left looking complete")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away between two writes that Output did not make itself.
        out.closed = True
        return EXIT_OK
    except Exception as exc:
        code = _failed(exc, args, out)
        if args.json:
            # A script reading stdout gets the outcome too, not an empty document.
            out.json_line(_error_json(exc, code))
    return code


def _error_json(exc: Exception, code: int) -> dict[str, Any]:
    message = exc.message if isinstance(exc, RepoBackupError) else str(exc)
    data: dict[str, Any] = {"messageType": "error", "exitCode": code, "error": message}
    if isinstance(exc, ValidationError):
        data["problems"] = [{"path": p.path, "message": p.message} for p in exc.problems]
    return data


def _failed(exc: Exception, args: argparse.Namespace, out: Output) -> int:
    """Report *exc* as one line (the traceback only with --debug); return its exit code."""
    if isinstance(exc, UsageError):
        out.error(str(exc))
        return EXIT_USAGE
    if isinstance(exc, ValidationError):
        out.error(f"invalid {args.command} task ({plural(len(exc.problems), 'problem')}):")
        for problem in exc.problems:
            out.detail(f"  {problem.path}: {problem.message}")
            if problem.path == "$.content" and args.command in ("backup", "restore"):
                out.detail(f"    (give {CONTENT_OPTIONS})")
            if problem.path == "$.storeLocation" and (hint := _install_hint(problem.message)):
                out.detail(f"    ({hint})")
        return EXIT_USAGE
    if isinstance(exc, TaskNotFoundError):
        out.error(exc.message)
        return EXIT_USAGE
    if isinstance(exc, RepoBackupError):
        out.error(exc.message)
    elif isinstance(exc, ImportError) and (hint := _install_hint(str(exc))):
        out.error(f"{exc}: {hint}")
    elif isinstance(exc, OSError):
        out.error(str(exc))
    else:
        out.error(
            f"{type(exc).__name__}: {exc}"
            + ("" if args.debug else " (--debug shows the traceback)")
        )
    if args.debug:
        out.detail(traceback.format_exc().rstrip())
    return EXIT_FAILED


def _install_hint(message: str) -> str | None:
    """How to install what *message* says is missing, by our extra where one has it."""
    for package, extra in _EXTRAS.items():
        if package in message:
            return f"pip install 'repobackup[{extra}]'"
    return None


if __name__ == "__main__":
    sys.exit(main())
