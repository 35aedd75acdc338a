"""Which projects and repositories a task covers: wildcard/regex patterns and the selection rule.

One function, `select`, serves backup (over the live repository) and restore (over a backup).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence

from .task import ProjectContentInfo

__all__ = ["Matcher", "compile_pattern", "select"]

Matcher = Callable[[str], bool]

REGEX_PREFIX = "re:"


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a selection pattern into a regular expression matched against the whole id.

    ``*`` matches any run of characters and ``?`` exactly one; every other character stands
    for itself. A pattern starting with ``re:`` is a Python regular expression instead.
    Raises ValueError with the reason when a regular expression does not compile.
    """
    if pattern.startswith(REGEX_PREFIX):
        try:
            return re.compile(pattern[len(REGEX_PREFIX) :], re.DOTALL)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def matches(pattern: str, value: str) -> bool:
    """Whether *value* (a whole id) matches the selection *pattern*."""
    return compile_pattern(pattern).fullmatch(value) is not None


def _project_matches(entry: ProjectContentInfo, project: str) -> bool:
    if entry.exclude_projects and project in entry.exclude_projects:
        return False
    if entry.project_id is not None:
        return project == entry.project_id
    if entry.project_regex is not None:
        return matches(entry.project_regex, project)
    return True


def _repo_matches(entry: ProjectContentInfo, repo: str) -> bool:
    if entry.exclude_repos and repo in entry.exclude_repos:
        return False
    if entry.repo_list is not None:
        return repo in entry.repo_list
    if entry.repo_regex is not None:
        return matches(entry.repo_regex, repo)
    return True


def select(
    entries: Sequence[ProjectContentInfo] | None,
    projects: Iterable[str],
    repositories: Callable[[str], Iterable[str]],
) -> dict[str, list[str]]:
    """Map each selected project to its selected repositories (both sorted).

    For each entry a project matches by projectId (exact), else projectRegex, else every
    project; excludeProjects removes. Within a matched project a repository matches by
    repoList, else repoRegex, else every repository; excludeRepos removes. Entries are united.
    *repositories* is called only for projects some entry matches. A selected project carries
    its project-level records even when none of its repositories is selected.
    """
    chosen: dict[str, set[str]] = {}
    for project in projects:
        matching = [entry for entry in entries or () if _project_matches(entry, project)]
        if not matching:
            continue
        repos = chosen.setdefault(project, set())
        for repo in repositories(project):
            if any(_repo_matches(entry, repo) for entry in matching):
                repos.add(repo)
    return {project: sorted(repos) for project, repos in sorted(chosen.items())}
