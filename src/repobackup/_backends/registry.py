"""Repository backends by name, for the command line: the built-in ``sqlite`` and ``memory``,
and third-party ones registered under the entry-point group ``repobackup.backends``.

A backend is a callable taking one string (what follows ``NAME:`` on the command line; may be
empty) and returning an object that implements `Source` and, to restore into it, `Target`::

    # pyproject.toml of a package providing one
    [project.entry-points."repobackup.backends"]
    mongo = "repobackup_mongo:open_repository"
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ..exceptions import BackendError

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendFactory",
    "UnknownBackendError",
    "available_backends",
    "load_backend",
    "open_repository",
    "sqlite_path",
]

ENTRY_POINT_GROUP = "repobackup.backends"

BackendFactory = Callable[[str], Any]
"""Opens a repository from the text after ``NAME:``; returns a Source (and usually a Target)."""

# A backend name is at least two characters, so that a Windows drive letter (``C:\data``) is
# read as a path, not as a backend named ``C``.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]+")


class UnknownBackendError(BackendError, LookupError):
    """No backend has the given name; the message lists the available ones."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(
            f"unknown repository backend {name!r}; available: {', '.join(available)}. "
            f"A third-party backend comes from a package that registers it under the "
            f"entry-point group {ENTRY_POINT_GROUP!r}: install that package "
            f"(pip install <package>) into this environment, then name it as {name}:ARG."
        )
        self.name = name
        self.available = available


def _open_sqlite(argument: str) -> Any:
    from .sqlite import SqliteRepository

    if not argument:
        raise ValueError("the sqlite backend needs a database path: sqlite:PATH")
    return SqliteRepository(argument)


def _open_memory(argument: str) -> Any:
    from .memory import MemoryRepository

    if argument:
        raise ValueError(f"the memory backend takes no argument, got {argument!r}")
    return MemoryRepository()


_BUILTIN: dict[str, BackendFactory] = {"memory": _open_memory, "sqlite": _open_sqlite}


def _registered() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        # The first distribution on the path wins, as Python's own import would.
        found.setdefault(entry.name, entry)
    return found


def available_backends() -> dict[str, str]:
    """Every backend name with where it comes from (``built-in`` or the entry point's value)."""
    names = {name: "built-in" for name in _BUILTIN}
    for name, entry in _registered().items():
        names.setdefault(name, entry.value)
    return dict(sorted(names.items()))


def load_backend(name: str) -> BackendFactory:
    """The factory of backend *name*; UnknownBackendError listing the available names.

    Built-in names come first, so a package cannot take over ``sqlite`` or ``memory``.
    """
    if name in _BUILTIN:
        return _BUILTIN[name]
    entry = _registered().get(name)
    if entry is None:
        raise UnknownBackendError(name, list(available_backends()))
    try:
        factory = entry.load()
    except Exception as exc:
        raise BackendError(
            f"repository backend {name!r} ({entry.value}) failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not callable(factory):
        raise BackendError(f"repository backend {name!r} ({entry.value}) is not callable")
    return factory  # type: ignore[no-any-return]


def split_spec(spec: str) -> tuple[str, str]:
    """``(name, argument)`` of a repository spec: ``NAME:ARG``, or ``("sqlite", spec)`` for a
    plain path (including a Windows path such as ``C:\\data\\repo.db``)."""
    name, colon, argument = spec.partition(":")
    if colon and _NAME.fullmatch(name):
        return name, argument
    return "sqlite", spec


def sqlite_path(spec: str) -> str | None:
    """The database path when *spec* names a SQLite repository, else None."""
    name, argument = split_spec(spec)
    return argument if name == "sqlite" and argument else None


def open_repository(spec: str) -> Any:
    """Open the repository *spec* names: a SQLite database path, or ``NAME:ARG`` for the
    backend registered as NAME. UnknownBackendError for a name nobody registered;
    BackendError when the backend fails to open."""
    if not spec:
        raise ValueError("a repository must be named: a SQLite path or NAME:ARG")
    name, argument = split_spec(spec)
    factory = load_backend(name)
    try:
        return factory(argument)
    except Exception as exc:
        raise BackendError(
            f"opening repository {spec!r} with backend {name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
