"""`repobackup verify`: read a whole backup against its hashes without restoring it;
exit 0 when sound, 1 with each problem named by backup and member."""

from __future__ import annotations

import argparse
from typing import Any

from .._archive.verify import verify
from .._model.convert import to_json
from .exits import EXIT_FAILED, EXIT_OK
from .options import Parents, source_zone
from .output import Output, plural
from .passwords import add_password_option

__all__ = ["register"]


def register(commands: Any, parents: Parents) -> None:
    """Add `verify` to the subparsers *commands*."""
    command = commands.add_parser(
        "verify",
        parents=[parents.common],
        help="check every member and blob of a backup against its hashes",
        description="Read a backup without restoring it: the manifest, every member's size "
        "and sha256, every record line, every blob against its sha256. For a task folder, "
        "its newest backup and the ones it follows. Exit code 0 when the backup is sound, "
        "1 when a problem was found (each one is listed).",
    )
    command.add_argument(
        "location", metavar="LOCATION", help="a backup folder or .zip, or a task folder"
    )
    add_password_option(command)
    source_zone(command)
    command.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace, out: Output) -> int:
    with out.progress("verify") as bar:
        report = verify(args.location, zone=args.source_zone, on_progress=bar)
        out.end_progress()  # the bar's last line, before the result
    if args.json:
        # As a run's: the status lines, then the report as restic's summary message.
        out.json_line({"messageType": "summary", **to_json(report)})
    elif report.ok and report.notes:  # a bk-repo backup: no manifest, no marker
        out.say(
            f"ok: {args.location}: {plural(report.records, 'record')} read and "
            f"{plural(report.blobs, 'blob')} match their sha256 names"
        )
    elif report.ok:
        out.say(
            f"ok: {args.location}: {plural(report.members, 'member')}, "
            f"{plural(report.records, 'record')} and {plural(report.blobs, 'blob')} match "
            "their hashes"
            + (f" ({len(report.backups)} backups)" if len(report.backups) > 1 else "")
        )
    else:
        problems = len(report.problems) + report.problems_dropped
        out.table(
            f"{plural(problems, 'problem')} in {args.location}",
            ["backup", "member", "problem"],
            [[p.backup, p.member, p.message] for p in report.problems],
        )
        if report.problems_dropped:
            out.say(f"… and {report.problems_dropped} more")
    for note in () if args.json else report.notes:
        out.say(f"note: {note}")
    if not report.ok:
        out.error(f"{args.location} did not verify")
    return EXIT_OK if report.ok else EXIT_FAILED
