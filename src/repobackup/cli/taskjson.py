"""The task JSON that `backup` and `restore` build from their options, field by field as the
API takes it, so that the engine checks a command-line task exactly as an HTTP one."""

from __future__ import annotations

import argparse
import os
import posixpath
from typing import Any

from .._model.rules import name_problem
from .exits import UsageError
from .options import json_argument

__all__ = ["CONTENT_OPTIONS", "restore_name", "store_location", "task_json"]

CONTENT_OPTIONS = "--all, --common-data, a --project-… or --repo… option, or --content-json"


def _given_content(args: argparse.Namespace) -> tuple[dict[str, Any], list[Any]]:
    content: dict[str, Any] = {}
    projects: list[Any] = []
    given = None if args.content_json is None else json_argument(args.content_json)
    if isinstance(given, list):
        projects.extend(given)
    elif isinstance(given, dict):
        content.update(given)
        if isinstance(content.get("projects"), list):
            projects.extend(content["projects"])
    elif given is not None:
        raise UsageError("--content-json must hold a projects array or a content object")
    return content, projects


def _content(args: argparse.Namespace, *, backup: bool) -> dict[str, Any]:
    content, projects = _given_content(args)
    if args.all:
        content["commonData"] = True
        projects.append({"projectRegex": "*"})
    if args.common_data:
        content["commonData"] = True
    entry = {
        "projectId": args.project_id,
        "projectRegex": args.project_regex,
        "repoList": args.repo,
        "repoRegex": args.repo_regex,
        "excludeProjects": args.exclude_project,
        "excludeRepos": args.exclude_repo,
    }
    entry = {key: value for key, value in entry.items() if value is not None}
    if entry:
        projects.append(entry)
    if projects or "projects" in content:
        content["projects"] = projects
    if backup:
        if args.compress:
            content["compression"] = True
        if getattr(args, "encrypt", False):
            content["encryption"] = True
        if args.increment:
            content["increment"] = True
        if args.increment_date is not None:
            content["incrementDate"] = args.increment_date
    return content


def _setting(args: argparse.Namespace, *, backup: bool) -> dict[str, Any]:
    setting: dict[str, Any] = {}
    if args.error_strategy:
        setting["errorStrategy"] = args.error_strategy
    if args.no_space_check:
        setting["spaceCapCheck"] = False
    if not backup and args.conflict:
        setting["conflictStrategy"] = args.conflict
    if backup:
        rules = {
            f"keep{unit.capitalize()}": getattr(args, f"keep_{unit}")
            for unit in ("last", "daily", "weekly", "monthly", "yearly")
        }
        if any(value is not None for value in rules.values()):
            setting["retention"] = {k: v for k, v in rules.items() if v is not None}
    if args.cron is not None:
        setting["executionStrategy"] = "CRON_EXPRESSION"
        setting["executionPlan"] = {"executeImmediately": False, "cronExpression": args.cron}
    elif args.at is not None:
        setting["executionStrategy"] = "SPECIFIED_TIME"
        setting["executionPlan"] = {"executeImmediately": False, "executeTime": args.at}
    else:
        # This process runs the task itself; a `serve` sharing the task database must not
        # pick it up as due at creation and run it a second time.
        setting["executionPlan"] = {"executeImmediately": False}
    return setting


def task_json(args: argparse.Namespace, *, backup: bool) -> dict[str, Any]:
    """The task JSON the options of `backup` (or `restore`) describe."""
    name = args.name if backup or args.name is not None else restore_name(args.store)
    return {
        "name": name,
        "storeLocation": store_location(args.store),
        "type": "DATA_BACKUP" if backup else "DATA_RESTORE",
        "content": _content(args, backup=backup),
        "backupSetting": _setting(args, backup=backup),
    }


def restore_name(location: str) -> str:
    """A restore task's default name, after the backup it restores: ``restore-nightly`` for
    ``/backups/nightly``, ``restore-nightly-20241224.171354`` for one backup of it."""
    base = posixpath.basename(location.replace("\\", "/").rstrip("/")).removesuffix(".zip")
    name = f"restore-{base}" if base else "restore"
    return name if name_problem(name) is None else "restore"


def store_location(location: str) -> str:
    """A local folder as an absolute path: a task stored in the task database for a later run
    must not depend on the folder this command ran in. URLs pass through as given."""
    if not location.strip() or "://" in location or location.startswith("file:"):
        return location
    return os.path.abspath(location)
