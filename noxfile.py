"""Development sessions: tests (with coverage), lint, mypy, docs."""

import nox

nox.options.sessions = ["tests", "lint", "mypy"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite with branch coverage of the package."""
    session.install("-e", ".[tests]", "-c", "constraints.txt")
    session.run("pytest", "--cov=repobackup", "--cov-report=term", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "tools")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "tools")


@nox.session
def mypy(session: nox.Session) -> None:
    """mypy strict on the package and on tests/typing (the public API as users write it)."""
    session.install("-e", ".[dev]", "-c", "constraints.txt")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Run the code blocks of docs/ and README.md as tests."""
    session.install("-e", ".[tests]", "-c", "constraints.txt")
    session.run("pytest", "tests/test_docs.py", *session.posargs)
