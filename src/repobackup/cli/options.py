"""The option groups commands share: the global options (valid before or after the command),
the repository options and the task options, with the argument types they use."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from .exits import UsageError

__all__ = [
    "GLOBAL_DEFAULTS",
    "Parents",
    "Register",
    "global_options",
    "json_argument",
    "make_parents",
    "port",
    "positive",
    "source_zone",
    "zone",
]

GLOBAL_DEFAULTS = {"debug": False, "plain": False, "quiet": False, "verbose": False, "json": False}


def json_argument(text: str) -> Any:
    """``--content-json``: JSON text, or the path of a file holding it (read when the command
    runs, so that the parser alone never touches the disk)."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        source = "--content-json"
        raw = text
    else:
        source = text
        try:
            raw = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--content-json: cannot read {text!r}: {exc.strerror}") from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"--content-json: {source} is not valid JSON: {exc}") from None


def positive(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0 picks a free port), got {value}")
    return value


def zone(text: str) -> tzinfo:
    """An IANA time zone name (``Asia/Shanghai``, ``UTC``)."""
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"not a time zone name (an IANA name such as Asia/Shanghai): {text!r}"
        ) from None


def source_zone(parser: argparse.ArgumentParser) -> None:
    """``--source-zone``: the zone of a bk-repo backup's offset-less times."""
    parser.add_argument(
        "--source-zone",
        type=zone,
        metavar="ZONE",
        help="for a backup of the original server (bk-repo): the zone its times without "
        "offset are in, an IANA name (default: this machine's zone)",
    )


def global_options() -> argparse.ArgumentParser:
    """The global options; a fresh parser each call (`set_defaults` on the top parser
    changes its actions, which must not reach the commands' copies)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options (before or after the command)")
    # SUPPRESS: an option given before the command is not reset by the command's default.
    flags = [
        (("--json",), "print the result as JSON (for scripts)"),
        (("-v", "--verbose"), "more notes on stderr (such as why a check was skipped)"),
        (("-q", "--quiet"), "no progress or notes on stderr"),
        (("--plain",), "plain text output even when rich is installed"),
        (("--debug",), "show tracebacks and debug logging"),
    ]
    for names, text in flags:
        group.add_argument(*names, action="store_true", default=argparse.SUPPRESS, help=text)
    return common


def _repository_options() -> argparse.ArgumentParser:
    repository = argparse.ArgumentParser(add_help=False)
    repository.add_argument(
        "--repository",
        "-r",
        required=True,
        metavar="REPO",
        help="a SQLite repository path, or NAME:ARG for a backend registered under the "
        "entry-point group repobackup.backends (built in: sqlite:PATH, memory:)",
    )
    repository.add_argument(
        "--tasks-db",
        metavar="PATH",
        help="the task database (default: REPO.tasks.sqlite beside a SQLite repository, "
        "else kept in memory)",
    )
    repository.add_argument(
        "--workers",
        type=positive,
        metavar="N",
        help="blob copies in parallel (default: every core on a local store, 4 per core "
        "on an object store)",
    )
    repository.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="run the blob copies on the dask.distributed cluster whose scheduler is at "
        "ADDRESS, e.g. tcp://10.0.0.5:8786 (needs repobackup[dask]; see docs/scaling.md)",
    )
    repository.add_argument(
        "--dask-timeout",
        type=positive,
        default=30,
        metavar="SECONDS",
        help="how long to try reaching --dask-scheduler before giving up (default: 30)",
    )
    return repository


def _content_options(task: argparse.ArgumentParser) -> None:
    select = task.add_argument_group("content (one projects entry; --content-json for any number)")
    select.add_argument("--all", action="store_true", help="common data and every project")
    select.add_argument("--common-data", action="store_true", help="commonData: true")
    select.add_argument("--project-id", metavar="ID", help="projectId")
    select.add_argument("--project-regex", metavar="PATTERN", help="projectRegex")
    select.add_argument("--repo", action="append", metavar="NAME", help="repoList (repeatable)")
    select.add_argument("--repo-regex", metavar="PATTERN", help="repoRegex")
    select.add_argument(
        "--exclude-project", action="append", metavar="ID", help="excludeProjects (repeatable)"
    )
    select.add_argument(
        "--exclude-repo", action="append", metavar="NAME", help="excludeRepos (repeatable)"
    )
    select.add_argument(
        "--content-json",
        metavar="FILE|JSON",
        help="a projects array, or a whole content object, as JSON text or a file",
    )


def _task_options() -> argparse.ArgumentParser:
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument(
        "--store",
        required=True,
        metavar="LOCATION",
        help="storeLocation: a folder or fsspec URL (s3://bucket/path)",
    )
    task.add_argument(
        "--profile",
        metavar="NAME",
        help="the AWS profile for an s3:// store (default: AWS_PROFILE, else the AWS_* "
        "environment variables)",
    )
    _content_options(task)
    setting = task.add_argument_group("setting")
    setting.add_argument(
        "--error-strategy",
        choices=["CONTINUE", "FAST_FAIL"],
        type=str.upper,
        help="errorStrategy (default CONTINUE)",
    )
    setting.add_argument("--no-space-check", action="store_true", help="spaceCapCheck: false")
    schedule = setting.add_mutually_exclusive_group()
    schedule.add_argument(
        "--cron",
        metavar="EXPR",
        help="create a CRON_EXPRESSION task (Unix or Quartz cron) for `scheduler` to run",
    )
    schedule.add_argument(
        "--at",
        metavar="TIME",
        help="create a SPECIFIED_TIME task (ISO 8601) for `scheduler` to run",
    )
    return task


@attrs.frozen
class Parents:
    """The option groups a command's parser takes as parents."""

    common: argparse.ArgumentParser
    repository: argparse.ArgumentParser
    task: argparse.ArgumentParser


Register = Callable[[Any, Parents], None]
"""Adds one command's parser to the subparsers action, with its handler as ``handler``."""


def make_parents() -> Parents:
    """Fresh option groups (argparse parents are copied into each parser that uses them)."""
    return Parents(global_options(), _repository_options(), _task_options())
