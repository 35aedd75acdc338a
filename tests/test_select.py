"""Selection of projects and repositories: patterns, precedence, exclusion, union."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repobackup import ProjectContentInfo, compile_pattern, select
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
