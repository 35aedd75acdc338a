"""Repository backends by name, for the command line: the built-in ``sqlite`` and ``memory``,
and third-party ones registered under the entry-point group ``repobackup.backends``.

A backend is a callable taking one string (what follows ``NAME:`` on the command line; may be
empty) and returning an object that implements `Source` and, to restore into it, `Target`::

    # pyproject.toml of a package providing one
    [project.entry-points."repobackup.backends"]
    mongo = "repobackup_mongo:open_repository"

A factory that also takes a keyword argument ``create`` is told whether it may create a
repository that does not exist (`open_repository` passes ``create=False`` for a repository to
back up, verify or list); one that does not take it is called with the string alone. The
built-ins are defined here only, not as entry points of this package, so there is one source.
"""

from __future__ import annotations

import inspect
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
    "takes_create",
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


def _open_sqlite(argument: str, *, create: bool = True) -> Any:
    from .sqlite import SqliteRepository

    if not argument:
        raise ValueError("the sqlite backend needs a database path: sqlite:PATH")
    return SqliteRepository(argument, create=create)


def _open_memory(argument: str, *, create: bool = True) -> Any:
    # A new, empty repository every time: there is nothing that could be missing.
    del create
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


def takes_create(factory: BackendFactory) -> bool:
    """Whether *factory* accepts the keyword argument ``create``."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a callable whose signature cannot be read
        return False
    return any(
        (p.name == "create" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        or p.kind is p.VAR_KEYWORD
        for p in parameters
    )


def open_repository(spec: str, *, create: bool = True) -> Any:
    """Open the repository *spec* names: a SQLite database path, or ``NAME:ARG`` for the
    backend registered as NAME. UnknownBackendError for a name nobody registered;
    BackendError when the backend fails to open.

    With ``create=False`` a repository that does not exist is an error and nothing is
    created: the SQLite backend's FileNotFoundError comes out as it is (not wrapped), so a
    caller can tell a missing repository from one that fails to open. The option reaches
    factories that take ``create``; others are called as before.
    """
    if not spec:
        raise ValueError("a repository must be named: a SQLite path or NAME:ARG")
    name, argument = split_spec(spec)
    factory = load_backend(name)
    try:
        if takes_create(factory):
            return factory(argument, create=create)  # type: ignore[call-arg]
        return factory(argument)
    except Exception as exc:
        if not create and isinstance(exc, FileNotFoundError):
            raise
        raise BackendError(
            f"opening repository {spec!r} with backend {name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
