"""The passphrase of encrypted backups on the command line: ``--password-file FILE`` or the
``REPOBACKUP_PASSWORD`` variable, as restic names them."""

from __future__ import annotations

import argparse
import os

from .exits import UsageError

__all__ = ["ENVIRONMENT", "add_password_option", "read_passphrase"]

ENVIRONMENT = "REPOBACKUP_PASSWORD"
#: A password file is small; a larger one is most likely the wrong file.
_MAX_FILE = 64 * 1024


def add_password_option(parser: argparse.ArgumentParser, *, flag: str = "--password-file") -> None:
    """Add the option naming a file that holds the passphrase of encrypted backups."""
    parser.add_argument(
        flag,
        metavar="FILE",
        dest=flag.lstrip("-").replace("-", "_"),
        help=f"read the passphrase of encrypted backups from FILE (its first line); "
        f"default: the {ENVIRONMENT} environment variable",
    )


def read_passphrase(args: argparse.Namespace, *, dest: str = "password_file") -> str | None:
    """The passphrase the options or the environment give, or None; UsageError when the
    file cannot be read or is empty."""
    path = getattr(args, dest, None)
    if path is None:
        value = os.environ.get(ENVIRONMENT) if dest == "password_file" else None
        return value or None
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_FILE + 1)
    except OSError as exc:
        raise UsageError(f"--password-file {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_FILE:
        raise UsageError(f"--password-file {path}: larger than {_MAX_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"--password-file {path}: not UTF-8 text") from None
    # The first line, without its line ending (as restic reads a password file).
    line = text.splitlines()[0] if text else ""
    if not line:
        raise UsageError(f"--password-file {path}: the file is empty")
    return line
