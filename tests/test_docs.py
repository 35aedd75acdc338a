"""Tests that the documentation cannot rot: every ```python block of docs/*.md and README.md
runs, and every ``repobackup`` command shown in a shell block parses."""

from __future__ import annotations

import os
import re
import shlex
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from repobackup.cli import build_parser
from repobackup.testing import SourceConformance, TargetConformance

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SHELL = {"sh", "shell", "bash", "console"}


def blocks(page: Path, language: str) -> list[tuple[int, str, str]]:
    """``(line, info, code)`` of each fenced block of *language* on *page*, in order."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        words = match["info"].split()
        if words and words[0] == language:
            line = text.count("\n", 0, match.start()) + 2
            found.append((line, match["info"], match["body"]))
    return found


def run_page(page: Path, module_name: str) -> types.ModuleType:
    """Run the runnable python blocks of *page* in order, in one module namespace that
    pickle can find (a backend's reopener is pickled), and return that module."""
    module = types.ModuleType(module_name)
    module.__file__ = str(page)
    sys.modules[module_name] = module
    for line, info, code in blocks(page, "python"):
        if "no-run" in info.split():
            continue
        compiled = compile("\n" * (line - 1) + code, str(page), "exec")
        exec(compiled, module.__dict__)
    return module


@pytest.fixture(name="scratch")
def _scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("docs_page_") and "backend" not in n]:
        del sys.modules[name]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_blocks_run(page: Path, scratch: Path) -> None:
    """The page's python blocks run in order, in an empty folder, without an error."""
    run_page(page, f"docs_page_{page.stem.replace('-', '_')}")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_shown_commands_parse(page: Path) -> None:
    """Each ``repobackup`` command in the page's shell blocks has options the CLI knows."""
    parser = build_parser()
    for language in SHELL:
        for _, _, code in blocks(page, language):
            for line, words in _commands(code):
                if words[0] != "repobackup":
                    continue
                try:
                    parser.parse_args(words[1:])
                except SystemExit as exc:
                    if exc.code != 0:  # --help and --version exit 0
                        pytest.fail(f"{page.name}: {line!r} does not parse")


def _commands(code: str) -> Iterator[tuple[str, list[str]]]:
    """``(line, words)`` of each command of a shell block: prompts and comments dropped,
    continuations joined, ``a && b`` and ``a | b`` split, leading ``NAME=value`` dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    for raw in joined.splitlines():
        line = raw.strip().removeprefix("$ ")
        if not line or line.startswith("#"):
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", "|", ";", "&"):
                while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
                    words.pop(0)
                if words:
                    yield line, words
                words = []
            else:
                words.append(token)


def test_pages_have_runnable_python() -> None:
    """Each page written for the library has python blocks that run (not only no-run)."""
    for name in ("index.md", "tutorial.md", "embedding.md", "api.md"):
        runnable = [b for b in blocks(ROOT / "docs" / name, "python") if "no-run" not in b[1]]
        assert runnable, f"docs/{name} has no runnable python block"


@pytest.fixture(name="backend_class", scope="module")
def _backend_class(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """DocumentRepository as docs/embedding.md defines it (the page runs once, in its own
    folder; its module stays importable so that the reopener pickles)."""
    folder = tmp_path_factory.mktemp("embedding")
    before = Path.cwd()
    os.chdir(folder)
    try:
        module = run_page(ROOT / "docs" / "embedding.md", "docs_page_embedding_backend")
    finally:
        os.chdir(before)
    yield module.DocumentRepository
    sys.modules.pop("docs_page_embedding_backend", None)


@pytest.fixture(name="backend")
def _backend(backend_class: Any, tmp_path: Path) -> Iterator[Any]:
    backend = backend_class(tmp_path / "conformance.db", tmp_path / "conformance.blobs")
    yield backend
    backend.close()


class TestDocumentedSource(SourceConformance):
    """The backend written out in docs/embedding.md passes the Source conformance suite."""


class TestDocumentedTarget(TargetConformance):
    """The backend written out in docs/embedding.md passes the Target conformance suite."""


def test_command_extraction() -> None:
    """Shell lines are split as a shell would, so the parse check sees the real options."""
    code = (
        '$ TOKEN="$(cat f)" repobackup serve -r x.db --host 0.0.0.0 # comment\n'
        "repobackup ls a && repobackup verify 'b c' | tail\n"
        "repobackup backup -r x.db \\\n    --store s --name n --all\n"
    )
    assert [words for _, words in _commands(code)] == [
        ["repobackup", "serve", "-r", "x.db", "--host", "0.0.0.0"],
        ["repobackup", "ls", "a"],
        ["repobackup", "verify", "b c"],
        ["tail"],
        ["repobackup", "backup", "-r", "x.db", "--store", "s", "--name", "n", "--all"],
    ]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["backup", "--no-such-option"])
