"""What a task's folder in the store keeps: `plan_retention`/`apply_retention` decide on and
remove a task's own old backups (restic's rules), `remove_leftovers` an interrupted run's."""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import attrs
import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..exceptions import ArchiveError, DecryptionError, store_errors
from .catalog import entries, list_names, open_backup
from .layout import BACKUP_NAME, STAMP_FORMAT
from .manifest import MANIFEST, failed_blobs_of, failed_records_of, follows_of, task_id_of
from .store import Store, parse_partial

__all__ = [
    "RESERVED",
    "RetentionDecision",
    "Policy",
    "apply_retention",
    "plan_retention",
    "remove_leftovers",
]

#: A local run holds its backup's name with an empty hidden ``.<final><RESERVED>`` file,
#: created exclusively, until it has published the backup (see run_backup).
RESERVED = ".reserved"

# A run takes the next free second when its own is taken (see run_backup), so its backup's
# stamp can be a few seconds after its start.
LEFTOVER_WINDOW = timedelta(seconds=10)


@attrs.frozen
class Policy:
    """How many backups of a task to keep: the newest *last*, and the newest of each of the
    newest *daily* days, *weekly* ISO weeks, *monthly* months and *yearly* years that hold
    one (restic's ``forget --keep-*`` rules). None leaves a rule out."""

    last: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None

    def __attrs_post_init__(self) -> None:
        for field in attrs.fields(Policy):
            value = getattr(self, field.name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"keep_{field.name}: must be an integer of 1 or more, got {value!r}"
                )

    @property
    def empty(self) -> bool:
        """Whether no rule is set (then nothing is ever removed)."""
        return all(getattr(self, field.name) is None for field in attrs.fields(Policy))

    def describe(self) -> str:
        """The rules that are set, as ``keepLast 3, keepDaily 7``."""
        return ", ".join(
            f"keep{field.name.capitalize()} {getattr(self, field.name)}"
            for field in attrs.fields(Policy)
            if getattr(self, field.name) is not None
        )


@attrs.frozen
class RetentionDecision:
    """What retention does with one complete backup of a task folder, and why."""

    name: str  # without ".zip", as manifests name the backup an increment follows
    path: str
    created: datetime
    keep: bool
    reasons: tuple[str, ...]


@attrs.frozen
class _Backup:
    """A complete backup in a task folder, as its manifest describes it."""

    name: str
    path: str
    created: datetime
    follows: str | None
    task_id: str | None
    sound: bool  # no record or blob failed when it was written


# The calendar buckets of restic's policy (internal/data/snapshot_policy.go), in its order.
def _bucket_day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _bucket_week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _bucket_month(moment: datetime) -> str:
    return moment.strftime("%Y-%m")


def _bucket_year(moment: datetime) -> str:
    return moment.strftime("%Y")


_BUCKETS: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("daily", _bucket_day),
    ("weekly", _bucket_week),
    ("monthly", _bucket_month),
    ("yearly", _bucket_year),
)


def plan_retention(
    fs: fsspec.AbstractFileSystem,
    task_dir: str,
    policy: Policy | int,
    *,
    task_id: str | None = None,
    tz: tzinfo | None = None,
    keep: Iterable[str] = (),
) -> list[RetentionDecision]:
    """What `apply_retention` would keep and remove in *task_dir*, newest first, with why.

    Only complete backups that the task *task_id* wrote (their manifest's ``taskId``) are
    decided on; with *task_id* None, every complete backup of the task name the folder is
    named after. Another task's backups, and those whose manifest names no task, are kept
    and listed as such. The rules are restic's: going from the newest, a backup is kept
    when it is one of the newest ``last``, or the newest of a calendar day, ISO week, month
    or year (in zone *tz*) while that rule has buckets left; the oldest backup is kept by
    a rule that still has buckets left. Then: the backups named in *keep* (the one a run
    has just written), the newest backup with no failed record or blob, and every backup
    a kept increment follows are kept too.
    """
    if not isinstance(policy, Policy):
        policy = Policy(last=policy)
    if policy.empty:
        raise ValueError(
            "retention: set at least one of keepLast, keepDaily, keepWeekly, "
            "keepMonthly and keepYearly"
        )
    zone = tz or UTC
    task_dir = task_dir.rstrip("/")
    backups = _complete_backups(fs, task_dir)
    own = [b for b in backups if task_id is None or b.task_id == task_id]
    reasons: dict[str, list[str]] = {b.name: [] for b in own}
    _apply_rules(own, policy, zone, reasons)
    wanted = {name.removesuffix(".zip") for name in keep}
    for backup in own:
        if backup.name in wanted:
            reasons[backup.name].append("just written")
    sound = next((b for b in own if b.sound), None)
    if sound is not None:
        reasons[sound.name].append("newest backup with no failed record or blob")
    _keep_chains(own, reasons)
    decisions = []
    for backup in backups:
        if backup.name in reasons:
            why = reasons[backup.name]
            decisions.append(
                RetentionDecision(
                    backup.name,
                    backup.path,
                    backup.created,
                    bool(why),
                    tuple(why) or ("no rule keeps it",),
                )
            )
        else:
            whose = (
                f"written by task {backup.task_id}"
                if backup.task_id
                else "its manifest names no task"
            )
            decisions.append(
                RetentionDecision(
                    backup.name, backup.path, backup.created, True, (f"not this task's: {whose}",)
                )
            )
    return decisions


def _apply_rules(
    own: list[_Backup], policy: Policy, zone: tzinfo, reasons: dict[str, list[str]]
) -> None:
    """Mark the backups restic's rules keep; *own* is newest first."""
    left = {"last": policy.last or 0}
    last_seen: dict[str, str | None] = {"last": None}
    for rule, _ in _BUCKETS:
        left[rule] = getattr(policy, rule) or 0
        last_seen[rule] = None
    for number, backup in enumerate(own):
        oldest = number == len(own) - 1
        if left["last"] > 0:
            left["last"] -= 1
            reasons[backup.name].append("last")
        moment = backup.created.astimezone(zone)
        for rule, bucket in _BUCKETS:
            if left[rule] <= 0:
                continue
            value = bucket(moment)
            if value != last_seen[rule] or oldest:
                prefix = "oldest " if value == last_seen[rule] else ""
                last_seen[rule] = value
                left[rule] -= 1
                reasons[backup.name].append(f"{prefix}{rule} {value}")


def _keep_chains(own: list[_Backup], reasons: dict[str, list[str]]) -> None:
    """Keep every backup a kept increment follows: removing a link would leave the
    increments after it impossible to restore."""
    by_name = {backup.name: backup for backup in own}
    for backup in own:
        if not reasons[backup.name]:
            continue
        seen: set[str] = set()
        current = backup
        while current.follows and current.follows not in seen:
            seen.add(current.follows)
            base = by_name.get(current.follows)
            if base is None:
                break
            why = f"followed by {current.name}"
            if why not in reasons[base.name]:
                reasons[base.name].append(why)
            current = base


def apply_retention(
    fs: fsspec.AbstractFileSystem,
    task_dir: str,
    policy: Policy | int,
    *,
    task_id: str | None = None,
    tz: tzinfo | None = None,
    keep: Iterable[str] = (),
) -> list[str]:
    """Remove the backups `plan_retention` decides to remove; return their paths, newest
    first. Newest first: an increment goes before the backup it follows, so a removal that
    stops half way never leaves an increment without its base."""
    removed = []
    for decision in plan_retention(fs, task_dir, policy, task_id=task_id, tz=tz, keep=keep):
        if not decision.keep:
            _remove_backup(fs, decision.path)
            removed.append(decision.path)
    return removed


def _stamps(started: datetime, tz: tzinfo, until: datetime | None) -> set[str]:
    """The stamps a run started at *started* may have named its backup with."""
    first = started.astimezone(tz).replace(microsecond=0)
    last = first + LEFTOVER_WINDOW
    if until is not None:
        last = min(last, until.astimezone(tz).replace(microsecond=0))
    return {
        (first + timedelta(seconds=s)).strftime(STAMP_FORMAT)
        for s in range(int((last - first).total_seconds()) + 1)
    }


def abort_uploads(
    fs: fsspec.AbstractFileSystem,
    task_dir: str,
    task_name: str,
    started: datetime,
    tz: tzinfo,
    *,
    until: datetime | None = None,
) -> list[str]:
    """Abort the open multipart uploads that a run of *task_name* started at *started* left
    under *task_dir* on an S3 store (its zip, never completed); return their keys. Nothing
    on a store without multipart uploads."""
    call = getattr(fs, "call_s3", None)
    if not callable(call) or not hasattr(fs, "split_path"):
        return []
    bucket, prefix, _ = fs.split_path(task_dir.rstrip("/"))
    prefix = prefix.rstrip("/") + "/"
    stamps = _stamps(started, tz, until)
    aborted = []
    listing = call("list_multipart_uploads", Bucket=bucket, Prefix=prefix)
    for upload in listing.get("Uploads", []) or []:
        key = upload.get("Key", "")
        name = key[len(prefix) :]
        # The zip is uploaded under its partial name; older runs wrote the final name.
        final = parse_partial(name)
        match = BACKUP_NAME.match(final if final is not None else name)
        if match is None or match["name"] != task_name or match["stamp"] not in stamps:
            continue
        call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        aborted.append(f"{bucket}/{key}")
    return aborted


def remove_leftovers(
    fs: fsspec.AbstractFileSystem,
    task_dir: str,
    task_name: str,
    started: datetime,
    tz: tzinfo,
    *,
    until: datetime | None = None,
) -> list[str]:
    """Remove what a run of *task_name* started at *started* left in *task_dir* without
    completing it; return the paths removed.

    That is its hidden ``.<name>-<stamp>[.zip].<token>.partial`` work in progress and its
    ``.<name>-<stamp>[.zip].reserved`` hold on the name, and on stores
    written in place (object stores) a ``<name>-<stamp>[.zip]`` that holds no complete
    backup. The stamp is *started* in zone *tz* (the zone the run named its backup in), or
    a few seconds after it, and not after *until* (a later stamp is a later run's). A
    complete backup is never removed.
    """
    task_dir = task_dir.rstrip("/")
    stamps = _stamps(started, tz, until)
    in_place = not isinstance(fs, LocalFileSystem)
    removed = []
    for entry in list_names(fs, task_dir):
        final = parse_partial(entry)
        if final is None and entry.startswith(".") and entry.endswith(RESERVED):
            final = entry[1 : -len(RESERVED)]
        partial = final is not None
        name = final if final is not None else entry
        match = BACKUP_NAME.match(name)
        if match is None or match["name"] != task_name or match["stamp"] not in stamps:
            continue
        path = posixpath.join(task_dir, entry)
        if partial or (in_place and not _is_complete(fs, path)):
            _remove_backup(fs, path)
            removed.append(path)
    return removed


def _complete_backups(fs: fsspec.AbstractFileSystem, task_dir: str) -> list[_Backup]:
    """The complete backups of the task *task_dir* is named after, newest first."""
    backups = []
    for entry in entries(fs, task_dir, task_name=posixpath.basename(task_dir.rstrip("/"))):
        manifest = _manifest(fs, entry.path)
        if manifest is None:
            continue
        backups.append(
            _Backup(
                name=entry.backup_name,
                path=entry.path,
                created=_created(manifest, entry.stamp),
                follows=follows_of(manifest),
                task_id=task_id_of(manifest),
                sound=not failed_blobs_of(manifest) and not failed_records_of(manifest),
            )
        )
    return backups


def _created(manifest: Mapping[str, Any], stamp: str) -> datetime:
    """When the backup's run started: its manifest's ``created``, else its name's stamp."""
    created = manifest.get("created")
    if isinstance(created, str):
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(created)
            if moment.tzinfo is not None:
                return moment
    return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC)


def _manifest(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    """The manifest of the backup at *path*, or None when it is not a complete backup."""
    try:
        reader = open_backup(fs, path, path)
    except ArchiveError:
        return None
    try:
        return reader.manifest
    finally:
        reader.close()


def _is_complete(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        open_backup(fs, path, path).close()
    except DecryptionError:
        return True  # encrypted, and no key here to tell: never removed on a guess
    except ArchiveError:
        return False
    return True


def _remove_backup(fs: fsspec.AbstractFileSystem, path: str) -> None:
    store = Store(fs)
    with store_errors(f"removing {path!r}"):
        kind = store.kind(path)
        if kind == "directory":
            # The manifest goes first: a removal that stops half way leaves an incomplete
            # backup, which nothing mistakes for a complete one.
            store.remove(posixpath.join(path, MANIFEST))
            store.remove(path, recursive=True)
        elif kind is not None:
            store.remove(path)
