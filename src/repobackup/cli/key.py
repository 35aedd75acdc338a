"""`repobackup key add|passwd|list|remove TASKFOLDER`: the passphrases of a task folder's
encrypted backups; they change the key files only, never a backup's data."""

from __future__ import annotations

import argparse
import posixpath
from typing import Any

from .._archive.layout import open_store
from .._archive.sealing import KEYS
from ..exceptions import ValidationError
from .exits import EXIT_OK, UsageError
from .options import Parents
from .output import Output
from .passwords import add_password_option, read_passphrase

__all__ = ["register"]

_HINT = "encrypted backups need the 'cryptography' package: pip install 'repobackup[crypto]'"


def register(commands: Any, parents: Parents) -> None:
    """Add `key` and its subcommands to the subparsers *commands*."""
    key = commands.add_parser(
        "key",
        parents=[parents.common],
        help="add, change, list or remove the passphrases of a task folder",
        description="Manage the key files of a task folder's encrypted backups (its keys/ "
        "folder). Each passphrase wraps the same master key, so adding, changing or "
        "removing one rewrites key files only: no backup is re-encrypted. The current "
        "passphrase comes from --password-file or REPOBACKUP_PASSWORD, a new one from "
        "--new-password-file.",
    )
    actions = key.add_subparsers(dest="key_action", metavar="ACTION", required=True)
    texts = {
        "add": "add a passphrase (the current one must open the keys)",
        "passwd": "replace the passphrase that opens the keys by a new one",
        "list": "list the key files: id, key set, when each was made",
        "remove": "remove the key file KEY_ID (another passphrase must open the key set)",
    }
    for name, text in texts.items():
        action = actions.add_parser(name, parents=[parents.common], help=text, description=text)
        action.add_argument("folder", metavar="TASKFOLDER", help="a task folder (or URL)")
        if name == "remove":
            action.add_argument("key_id", metavar="KEY_ID", help="the id `key list` shows")
        if name != "list":
            add_password_option(action)
        if name in ("add", "passwd"):
            add_password_option(action, flag="--new-password-file")
        action.set_defaults(handler=_key)


def _key(args: argparse.Namespace, out: Output) -> int:
    try:
        from .._archive import keys
    except ImportError:
        raise ValidationError(_HINT) from None
    fs, path = open_store(args.folder)
    keys_dir = posixpath.join(path.rstrip("/"), KEYS)
    action = args.key_action
    if action == "list":
        found = keys.list_keys(fs, keys_dir)
        rows = [[k.id, k.key_set, k.created.isoformat()] for k in found]
        if args.json:
            out.json([dict(zip(("id", "keySet", "created"), row, strict=True)) for row in rows])
        else:
            out.table(f"key files in {args.folder}", ["id", "key set", "created"], rows)
        return EXIT_OK
    current = _needed(read_passphrase(args), "--password-file FILE or REPOBACKUP_PASSWORD")
    if action == "remove":
        keys.remove_key(fs, keys_dir, args.key_id, current)
        out.say(f"removed key {args.key_id} from {args.folder}")
        return EXIT_OK
    new = _needed(read_passphrase(args, dest="new_password_file"), "--new-password-file FILE")
    if action == "add":
        made = keys.add_passphrase(fs, keys_dir, current, new)
    else:
        made = keys.change_passphrase(fs, keys_dir, current, new)
    if args.json:
        out.json({"id": made.id, "keySet": made.key_set})
    else:
        out.say(f"{'added' if action == 'add' else 'changed to'} key {made.id} in {args.folder}")
    return EXIT_OK


def _needed(passphrase: str | None, where: str) -> str:
    if passphrase is None:
        raise UsageError(f"this needs a passphrase: give {where}")
    return passphrase
