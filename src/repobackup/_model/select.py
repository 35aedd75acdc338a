"""Which projects and repositories a task covers: wildcard/regex patterns and the selection rule.

One function, `select`, serves backup (over the live repository) and restore (over a backup).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence

import attrs
import regex

from ..exceptions import Problem, ValidationError
from .task import ProjectContentInfo

__all__ = ["MATCH_TIMEOUT", "IdPattern", "Matcher", "compile_pattern", "select"]

Matcher = Callable[[str], bool]

REGEX_PREFIX = "re:"

MATCH_TIMEOUT = 0.5
"""Seconds one id may take to match one pattern; past it the match fails the run."""

# The `regex` engine runs the match because it can stop one at a deadline (`re` cannot, so
# `re:(a+)+$` against a long id ran for minutes). Its VERSION0 mode is the one made to behave
# as `re` does, and every pattern is compiled by `re` first, so a pattern `re` refuses (with
# `re`'s message) or would read differently, such as `\p{L}` or `(?V1)`, never reaches it.
_FLAGS = regex.VERSION0 | regex.DOTALL


@attrs.frozen
class IdPattern:
    """A compiled selection pattern; `fullmatch` matches a whole id within `MATCH_TIMEOUT`."""

    pattern: str
    """The selection pattern as written (``alp*`` or ``re:...``)."""
    _compiled: regex.Pattern[str] = attrs.field(repr=False)

    def fullmatch(self, value: str) -> regex.Match[str] | None:
        """The match of the whole of *value*, or None.

        Raises ValidationError naming the pattern and the id when matching takes longer
        than `MATCH_TIMEOUT` seconds.
        """
        try:
            return self._compiled.fullmatch(value, timeout=MATCH_TIMEOUT)
        except TimeoutError:
            shown = value if len(value) <= 60 else f"{value[:57]}..."
            raise ValidationError(
                f"pattern {self.pattern!r} took more than {MATCH_TIMEOUT:g} s to match the id "
                f"{shown!r}; write it without nested repetition"
            ) from None


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> IdPattern:
    """Compile a selection pattern into an `IdPattern` matched against the whole id.

    ``*`` matches any run of characters and ``?`` exactly one; every other character stands
    for itself. A pattern starting with ``re:`` is a Python regular expression instead.
    Raises ValueError with the reason when a regular expression does not compile.
    """
    if pattern.startswith(REGEX_PREFIX):
        source = pattern[len(REGEX_PREFIX) :]
        try:
            re.compile(source, re.DOTALL)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    else:
        parts = []
        for char in pattern:
            if char == "*":
                parts.append(".*")
            elif char == "?":
                parts.append(".")
            else:
                parts.append(re.escape(char))
        source = "".join(parts)
    return IdPattern(pattern, regex.compile(source, _FLAGS))


def matches(pattern: str, value: str) -> bool:
    """Whether *value* (a whole id) matches the selection *pattern*."""
    return compile_pattern(pattern).fullmatch(value) is not None


def _field_matches(index: int, field: str, pattern: str, value: str) -> bool:
    try:
        return matches(pattern, value)
    except ValidationError as exc:
        where = f"$.content.projects[{index}].{field}"
        raise ValidationError([Problem(where, p.message) for p in exc.problems]) from None


def _project_matches(index: int, entry: ProjectContentInfo, project: str) -> bool:
    if entry.exclude_projects and project in entry.exclude_projects:
        return False
    if entry.project_id is not None:
        return project == entry.project_id
    if entry.project_regex is not None:
        return _field_matches(index, "projectRegex", entry.project_regex, project)
    return True


def _repo_matches(index: int, entry: ProjectContentInfo, repo: str) -> bool:
    if entry.exclude_repos and repo in entry.exclude_repos:
        return False
    if entry.repo_list is not None:
        return repo in entry.repo_list
    if entry.repo_regex is not None:
        return _field_matches(index, "repoRegex", entry.repo_regex, repo)
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

    Raises ValidationError naming the entry's field and its pattern when an id takes longer
    than `MATCH_TIMEOUT` seconds to match it.
    """
    indexed = list(enumerate(entries or ()))
    chosen: dict[str, set[str]] = {}
    for project in projects:
        matching = [(i, entry) for i, entry in indexed if _project_matches(i, entry, project)]
        if not matching:
            continue
        repos = chosen.setdefault(project, set())
        for repo in repositories(project):
            if any(_repo_matches(i, entry, repo) for i, entry in matching):
                repos.add(repo)
    return {project: sorted(repos) for project, repos in sorted(chosen.items())}
