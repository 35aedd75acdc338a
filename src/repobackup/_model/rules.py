"""Behaviour rules a task must meet at creation (DESIGN section 3), checked on the raw JSON so
that every problem is found even when the types are also wrong."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

import fsspec

from ..exceptions import Problem
from .cron import parse_cron
from .select import compile_pattern

__all__ = ["name_problem", "task_problems"]

MAX_NAME = 128


def name_problem(name: str) -> str | None:
    """Why *name* is not one safe path component, or None when it is."""
    if not name.strip():
        return "must not be empty"
    if len(name) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters, got {len(name)}"
    if "/" in name or "\\" in name:
        return "must not contain '/' or '\\'"
    if ".." in name or name == ".":
        return "must not contain '..' or be '.'"
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in name):
        return "must not contain control characters"
    return None


def _location_problem(location: str) -> str | None:
    if not location.strip():
        return "must not be empty"
    protocol = fsspec.utils.get_protocol(location)
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        return f"unknown storage protocol {protocol!r}"
    except ImportError as exc:
        # Known to fsspec, but its package is not installed: say which one.
        return f"storage protocol {protocol!r} is not installed: {exc}"
    return None


def _get(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, Mapping) else None


def task_problems(data: Any, *, creating: bool = False) -> list[Problem]:
    """Every rule the raw task JSON breaks (type errors are the converter's to report).

    *creating* adds the rules of a new task: a name is required.
    """
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        return problems
    if creating and "name" not in data:
        problems.append(Problem("$.name", "required field missing"))

    name = data.get("name")
    # A task read back may have no name (it reads as ""); a new one must have a safe one.
    if isinstance(name, str) and (creating or name) and (why := name_problem(name)):
        problems.append(Problem("$.name", why))
    location = data.get("storeLocation")
    if isinstance(location, str) and (why := _location_problem(location)):
        problems.append(Problem("$.storeLocation", why))

    content = data.get("content")
    if isinstance(content, Mapping):
        problems.extend(_content_problems(content))

    setting = data.get("backupSetting")
    plan = _get(setting, "executionPlan")
    strategy = _get(setting, "executionStrategy")
    execute_time = _get(plan, "executeTime")
    cron = _get(plan, "cronExpression")
    if strategy == "SPECIFIED_TIME" and execute_time is None:
        problems.append(
            Problem("$.backupSetting.executionPlan.executeTime", "required for SPECIFIED_TIME")
        )
    if strategy == "CRON_EXPRESSION" and cron is None:
        problems.append(
            Problem("$.backupSetting.executionPlan.cronExpression", "required for CRON_EXPRESSION")
        )
    if isinstance(cron, str):
        try:
            parse_cron(cron)
        except ValueError as exc:
            problems.append(Problem("$.backupSetting.executionPlan.cronExpression", str(exc)))
    problems.extend(_retention_problems(_get(setting, "retention")))
    return problems


RETENTION_FIELDS = ("keepLast", "keepDaily", "keepWeekly", "keepMonthly", "keepYearly")


def _retention_problems(retention: Any) -> list[Problem]:
    """Each keep rule is an integer of at least 1 (type errors are the converter's)."""
    problems = []
    for key in RETENTION_FIELDS:
        value = _get(retention, key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            problems.append(Problem(f"$.backupSetting.retention.{key}", "must be at least 1"))
    return problems


def _content_problems(content: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    projects = content.get("projects")
    has_projects = isinstance(projects, list) and len(projects) > 0
    if content.get("commonData") is not True and not has_projects:
        problems.append(
            Problem("$.content", "nothing to do: set commonData or at least one projects entry")
        )
    if isinstance(projects, list):
        for index, entry in enumerate(projects):
            if isinstance(entry, Mapping):
                problems.extend(_entry_problems(f"$.content.projects[{index}]", entry))
    return problems


def _entry_problems(path: str, entry: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    if entry.get("projectId") is not None and entry.get("projectRegex") is not None:
        problems.append(Problem(path, "set at most one of projectId and projectRegex"))
    if entry.get("repoList") is not None and entry.get("repoRegex") is not None:
        problems.append(Problem(path, "set at most one of repoList and repoRegex"))
    for key in ("projectRegex", "repoRegex"):
        pattern = entry.get(key)
        if isinstance(pattern, str):
            if not pattern:
                problems.append(Problem(f"{path}.{key}", "must not be empty"))
                continue
            try:
                compile_pattern(pattern)
            except ValueError as exc:
                problems.append(Problem(f"{path}.{key}", str(exc)))
    project_id = entry.get("projectId")
    if isinstance(project_id, str) and not project_id:
        problems.append(Problem(f"{path}.projectId", "must not be empty"))
    return problems
