"""Selection of projects and repositories: patterns, precedence, exclusion, union."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repobackup import (
    Engine,
    MemoryRepository,
    ProjectContentInfo,
    TaskState,
    compile_pattern,
    select,
)
from repobackup.exceptions import ValidationError
from strategies import ids, project_entries

TREE = {
    "alpha": ["docker-local", "generic", "maven-remote"],
    "beta": ["generic", "npm"],
    "gamma": [],
    "alpha2": ["generic"],
}


def run(*entries: ProjectContentInfo, tree: dict[str, list[str]] = TREE) -> dict[str, list[str]]:
    return select(entries, tree, lambda p: tree[p])


class TestPatterns:
    @pytest.mark.parametrize(
        ("pattern", "value", "matched"),
        [
            ("*", "anything", True),
            ("*", "", True),
            ("alpha", "alpha", True),
            ("alpha", "alpha2", False),
            ("alp*", "alpha2", True),
            ("?eta", "beta", True),
            ("?eta", "zbeta", False),
            ("a.b", "axb", False),
            ("a.b", "a.b", True),
            ("re:al(pha|x)\\d?", "alpha2", True),
            ("re:alpha", "alpha2", False),
            ("re:.*", "x\ny", True),
        ],
    )
    def test_patterns_match_the_whole_id(self, pattern: str, value: str, matched: bool) -> None:
        """Wildcards and re: patterns are matched against the whole id."""
        assert (compile_pattern(pattern).fullmatch(value) is not None) is matched

    def test_bad_regex_names_the_pattern(self) -> None:
        """A regular expression that does not compile raises ValueError naming it."""
        with pytest.raises(ValueError, match=r"invalid regular expression 're:\['"):
            compile_pattern("re:[")


class TestSelect:
    def test_project_id_is_exact(self) -> None:
        """projectId selects exactly that project with all its repositories."""
        assert run(ProjectContentInfo(project_id="alpha")) == {"alpha": TREE["alpha"]}

    def test_project_regex(self) -> None:
        """projectRegex selects every matching project."""
        assert set(run(ProjectContentInfo(project_regex="alpha*"))) == {"alpha", "alpha2"}

    def test_project_id_wins_over_nothing_else(self) -> None:
        """An entry without projectId and projectRegex selects every project."""
        assert set(run(ProjectContentInfo())) == set(TREE)

    def test_repo_list(self) -> None:
        """repoList selects those repositories only; unknown names select nothing."""
        entry = ProjectContentInfo(project_id="alpha", repo_list=("generic", "nope"))
        assert run(entry) == {"alpha": ["generic"]}

    def test_repo_regex(self) -> None:
        """repoRegex selects the matching repositories."""
        entry = ProjectContentInfo(repo_regex="*-*")
        assert run(entry) == {
            "alpha": ["docker-local", "maven-remote"],
            "alpha2": [],
            "beta": [],
            "gamma": [],
        }

    def test_exclusions(self) -> None:
        """excludeProjects and excludeRepos remove what the entry would select."""
        entry = ProjectContentInfo(
            project_regex="*", exclude_projects=("beta", "gamma"), exclude_repos=("generic",)
        )
        assert run(entry) == {"alpha": ["docker-local", "maven-remote"], "alpha2": []}

    def test_entries_are_united(self) -> None:
        """Two entries select the union of what each selects."""
        first = ProjectContentInfo(project_id="alpha", repo_list=("generic",))
        second = ProjectContentInfo(project_id="alpha", repo_list=("npm", "maven-remote"))
        assert run(first, second) == {"alpha": ["generic", "maven-remote"]}

    def test_no_entries_select_nothing(self) -> None:
        """Without entries no project is selected."""
        assert select(None, TREE, lambda p: TREE[p]) == {}

    def test_repositories_are_listed_only_for_selected_projects(self) -> None:
        """The repositories of a project no entry matches are never asked for."""
        asked: list[str] = []

        def repositories(project: str) -> list[str]:
            asked.append(project)
            return TREE[project]

        select([ProjectContentInfo(project_id="beta")], TREE, repositories)
        assert asked == ["beta"]


trees = st.dictionaries(ids, st.lists(ids, max_size=5, unique=True), max_size=6)


class TestSelectProperties:
    @given(trees)
    def test_star_selects_everything(self, tree: dict[str, list[str]]) -> None:
        """projectRegex "*" with no other field selects every project and repository."""
        assert run(ProjectContentInfo(project_regex="*"), tree=tree) == {
            p: sorted(r) for p, r in tree.items()
        }

    @given(trees, st.lists(project_entries(), min_size=1, max_size=4), st.data())
    def test_an_exclusion_always_wins(
        self, tree: dict[str, list[str]], entries: list[ProjectContentInfo], data: st.DataObject
    ) -> None:
        """A project or repository excluded by every entry is never selected."""
        if not tree:
            return
        project = data.draw(st.sampled_from(sorted(tree)))
        excluded = [
            ProjectContentInfo(
                project_id=e.project_id,
                project_regex=e.project_regex,
                repo_list=e.repo_list,
                repo_regex=e.repo_regex,
                exclude_projects=(*(e.exclude_projects or ()), project),
                exclude_repos=e.exclude_repos,
            )
            for e in entries
        ]
        assert project not in run(*excluded, tree=tree)

    @given(trees, st.lists(project_entries(), max_size=4), st.randoms())
    def test_union_is_order_independent(
        self, tree: dict[str, list[str]], entries: list[ProjectContentInfo], rnd: object
    ) -> None:
        """Shuffling the entries never changes the selection."""
        shuffled = list(entries)
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        assert run(*entries, tree=tree) == run(*shuffled, tree=tree)

    @given(trees, st.lists(project_entries(), max_size=4))
    def test_selection_is_the_union_of_single_entries(
        self, tree: dict[str, list[str]], entries: list[ProjectContentInfo]
    ) -> None:
        """Selecting with several entries equals uniting what each selects alone."""
        united: dict[str, set[str]] = {}
        for entry in entries:
            for project, repos in run(entry, tree=tree).items():
                united.setdefault(project, set()).update(repos)
        assert run(*entries, tree=tree) == {p: sorted(r) for p, r in sorted(united.items())}


# --------------------------------------------------------------------------------------------
# Patterns that cannot hang: every match ends within a bounded time

# `re` takes seconds here and doubles with every extra character: each way of splitting the
# run of a's between the groups is tried before the final "!" fails the match.
CATASTROPHIC = "re:(a+)+$"
# One the matching engine cannot shortcut either: it runs until the deadline.
EXPONENTIAL = "re:(a|aa)+$"
# A bound well above the deadline (0.5 s), well below the seconds `re` took.
BOUND = 2.0


def _timed(pattern: str, value: str) -> tuple[bool | str, float]:
    started = time.monotonic()
    try:
        result: bool | str = compile_pattern(pattern).fullmatch(value) is not None
    except ValidationError as exc:
        result = exc.message
    return result, time.monotonic() - started


class TestBoundedMatching:
    @pytest.mark.parametrize("length", [29, 100])
    def test_the_catastrophic_pattern_ends_at_once(self, length: int) -> None:
        """re:(a+)+$ against an id of 29 or 100 characters that almost matches ends quickly
        with the right answer, and matches the id that does match."""
        result, elapsed = _timed(CATASTROPHIC, "a" * (length - 1) + "!")
        assert (result, elapsed < BOUND) == (False, True)
        assert _timed(CATASTROPHIC, "a" * length)[0] is True

    def test_a_wildcard_that_backtracks_ends_at_once(self) -> None:
        """Wildcards backtrack too: `re` took 18 s for this one against 100 a's."""
        result, elapsed = _timed("*a*a*a*a*a*a*b", "a" * 100)
        assert (result, elapsed < BOUND) == (False, True)

    @pytest.mark.parametrize("length", [29, 100])
    def test_a_match_past_the_deadline_is_an_error_naming_the_pattern(self, length: int) -> None:
        """A pattern that would run for ages ends at the deadline with an error that names it."""
        result, elapsed = _timed(EXPONENTIAL, "a" * (length - 1) + "!")
        assert elapsed < BOUND
        if length == 29:  # small enough to finish: the answer is right
            assert result is False
        else:
            assert isinstance(result, str)
            assert "'re:(a|aa)+$' took more than 0.5 s to match the id 'aaaa" in result

    def test_a_run_with_a_hanging_pattern_fails_naming_the_field(self, tmp_path: Path) -> None:
        """A backup whose projectRegex would hang on a project id ends FAILED at once, and
        its error names the entry's field and the pattern; no traceback, no hang."""
        repo = MemoryRepository()
        repo.put_project("a" * 60 + "!")
        engine = Engine(repo)
        body = {
            "name": "nightly",
            "storeLocation": str(tmp_path),
            "content": {"projects": [{"projectId": "other"}, {"projectRegex": EXPONENTIAL}]},
        }
        started = time.monotonic()
        summary = engine.execute(engine.create_task(body))
        assert time.monotonic() - started < BOUND
        assert summary.state is TaskState.FAILED
        message = summary.errors[-1].message
        assert message.startswith("$.content.projects[1].projectRegex: pattern 're:(a|aa)+$'")

    @pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
    @pytest.mark.parametrize(
        ("pattern", "value", "matched"),
        [
            ("re:\\w+", "é1_", True),  # Unicode word characters, as `re` on str
            ("re:[[a]]", "[]", True),  # "[" or "a", then "]": no nested set as in version 1
            ("re:a{,2}", "aa", True),
            ("re:(?i)STRASSE", "straße", False),  # simple case folding, as `re`
            ("re:(?i)k", "\u212a", True),  # the Kelvin sign folds to k in `re` too
        ],
    )
    def test_regular_expressions_mean_what_they_mean_to_re(
        self, pattern: str, value: str, matched: bool
    ) -> None:
        """Where the engines could differ the match is what Python's `re` gives."""
        expected = re.fullmatch(pattern[3:], value, re.DOTALL) is not None
        assert expected is matched
        assert (compile_pattern(pattern).fullmatch(value) is not None) is matched

    @pytest.mark.parametrize("pattern", ["re:\\p{L}+", "re:(?V1)a", "re:\\m", "re:a++b(?"])
    def test_what_re_refuses_is_refused(self, pattern: str) -> None:
        """Syntax only the other engine knows is refused, with `re`'s reason."""
        with pytest.raises(ValueError, match="invalid regular expression"):
            compile_pattern(pattern)
