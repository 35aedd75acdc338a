"""`build_parser`: the ``repobackup`` parser, to which each command module adds its own."""

from __future__ import annotations

import argparse

from .._version import __version__
from . import backup, demo, key, ls, restore, retention, run, scheduler, serve, tasks, verify
from .options import GLOBAL_DEFAULTS, Register, global_options, make_parents

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``repobackup`` (also used to check the documented commands)."""
    parents = make_parents()
    parser = argparse.ArgumentParser(
        prog="repobackup",
        description="Back up and restore an artifact repository: projects, repositories, "
        "files and common data.",
        epilog="Exit codes: 0 done, 1 failed, 2 usage error, 3 finished with errors, "
        "130 interrupted, 143 terminated (see docs/cli.md).",
        parents=[global_options()],
    )
    parser.set_defaults(**GLOBAL_DEFAULTS)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    registers: list[Register] = [
        demo.register,
        backup.register,
        restore.register,
        run.register,
        verify.register,
        ls.register,
        retention.register,
        tasks.register,
        scheduler.register,
        serve.register,
        key.register,
    ]
    for register in registers:
        register(commands, parents)
    return parser
