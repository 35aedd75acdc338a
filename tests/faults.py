"""A fault-injecting fsspec filesystem for the tests: fsspec's real local (``faulty://``) and
memory (``faultymem://``) filesystems whose operations fail as a `FaultPlan` says.

A plan is a list of `Fault`s, each naming operations and when they fail (a rate drawn from a
seeded RNG, chosen call numbers, every call from one on, or once a stream passed N bytes).
The local one is deliberately not a LocalFileSystem (code has local shortcuts that would
bypass the faults): it is a generic store whose objects are files on disk, written in place.
The plan counts every call per operation, so a test can assert that retries happened::

    plan = FaultPlan(seed=1).add(transient("write", rate=0.01))
    engine = Engine(repo, storage_options={"faulty": {"plan": plan}})
    engine.execute(engine.create_task({..., "storeLocation": f"faulty://{tmp_path}"}))
    assert plan.failures["write"] > 0

Without ``plan`` in the storage options a filesystem uses `FaultPlan.current`, which the
``fault_plan`` fixture of conftest.py sets to a fresh plan for each test.

Operations (the names faults and counters use): ``open`` (also ``mode`` "r" or "w" on the
fault), ``read``, ``write``, ``close`` (on open files), ``info`` (info, exists, isfile,
isdir, lexists, size, modified, created), ``ls`` (ls, find, glob, walk), ``cat`` (cat_file),
``pipe`` (pipe_file), ``mkdir`` (mkdir, makedirs), ``delete`` (rm, rm_file, rmdir), ``move``
(mv), ``copy`` (cp_file), ``touch``. Only the outermost operation of a call is counted and
can fail (``exists`` calling ``info`` is one ``info``), as one request to a network store is.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import attrs
import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractFileSystem

__all__ = [
    "OPERATIONS",
    "Fault",
    "FaultPlan",
    "FaultyFile",
    "FaultyLocalFileSystem",
    "FaultyMemoryFileSystem",
    "connection_reset",
    "enospc_on_close",
    "enospc_on_write",
    "failing",
    "no_space",
    "permanent",
    "reset_memory",
    "reset_mid_read",
    "timeout",
    "transient",
]

OPERATIONS = frozenset(
    {"open", "read", "write", "close", "info", "ls", "cat", "pipe", "mkdir", "delete"}
    | {"move", "copy", "touch"}
)

ErrorFactory = Callable[[], BaseException]


def connection_reset() -> BaseException:
    """A connection reset by the peer, as a network store raises it (errno ECONNRESET)."""
    return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer (injected)")


def timeout() -> BaseException:
    """A timed-out request (errno ETIMEDOUT)."""
    return TimeoutError(errno.ETIMEDOUT, "Connection timed out (injected)")


def no_space() -> BaseException:
    """A full disk (errno ENOSPC)."""
    return OSError(errno.ENOSPC, "No space left on device (injected)")


def _ops(value: str | tuple[str, ...]) -> tuple[str, ...]:
    ops = (value,) if isinstance(value, str) else tuple(value)
    unknown = set(ops) - OPERATIONS
    if unknown:
        raise ValueError(f"unknown operations {sorted(unknown)}; known: {sorted(OPERATIONS)}")
    return ops


@attrs.define
class Fault:
    """When some operations fail and with what.

    A matching call (its operation in ``ops``, its path, without the protocol, matching
    the ``path`` glob, its file mode starting with ``mode``) fails when it is one of the
    call numbers in ``nth`` (1-based, counted over the calls this fault matches), or its
    number is ``from_call`` or more, or the seeded RNG draws under ``rate``; at most
    ``limit`` times in all.

    For ``read`` and ``write``, ``after_bytes`` makes the fault wait until that many bytes
    went through the open file (seeks do not count): the bytes before the boundary go
    through, then the call fails. For ``close``, ``keep`` is the fraction of the file's
    bytes left in place before the error, as a disk that filled up while flushing leaves it.
    """

    ops: tuple[str, ...] = attrs.field(converter=_ops)
    error: ErrorFactory = connection_reset
    rate: float = 0.0
    nth: frozenset[int] = attrs.field(default=frozenset(), converter=frozenset)
    from_call: int | None = None
    limit: int | None = None
    path: str | None = None
    mode: str | None = None
    after_bytes: int | None = None
    keep: float = 1.0
    seen: int = attrs.field(default=0, init=False)
    fired: int = attrs.field(default=0, init=False)

    def _applies(self, op: str, path: str, mode: str) -> bool:
        return (
            op in self.ops
            and (self.path is None or fnmatch.fnmatchcase(path, self.path))
            and (self.mode is None or mode.startswith(self.mode))
        )

    def _due(self, rng: random.Random) -> bool:
        if self.limit is not None and self.fired >= self.limit:
            return False
        if self.seen in self.nth or (self.from_call is not None and self.seen >= self.from_call):
            return True
        return self.rate > 0 and rng.random() < self.rate


def transient(
    ops: str | tuple[str, ...],
    *,
    rate: float = 0.0,
    nth: tuple[int, ...] = (),
    error: ErrorFactory = connection_reset,
    **where: Any,
) -> Fault:
    """Calls of *ops* fail with a connection reset (or *error*) at *rate*, or on the *nth*
    calls; every other call works."""
    return Fault(ops, error=error, rate=rate, nth=frozenset(nth), **where)


def permanent(
    ops: str | tuple[str, ...],
    *,
    from_call: int = 1,
    error: ErrorFactory = connection_reset,
    **where: Any,
) -> Fault:
    """Every call of *ops* fails from call number *from_call* on (an outage)."""
    return Fault(ops, error=error, from_call=from_call, **where)


def failing(ops: str | tuple[str, ...], **fault: Any) -> Fault:
    """Calls of *ops* fail with a permission error (errno EACCES) as *fault* says
    (default: every call): a delete or a stat that cannot succeed however often it is tried."""
    fault.setdefault("error", lambda: PermissionError(errno.EACCES, "Permission denied"))
    if not {"rate", "nth", "from_call"} & set(fault):
        fault["from_call"] = 1
    return Fault(ops, **fault)


def enospc_on_write(after_bytes: int = 0, **where: Any) -> Fault:
    """Writing fails with ENOSPC once *after_bytes* bytes went into a file (every file
    matching *where*, each counted on its own)."""
    return Fault("write", error=no_space, from_call=1, after_bytes=after_bytes, **where)


def enospc_on_close(keep: float = 0.5, **where: Any) -> Fault:
    """Closing a file opened for writing fails with ENOSPC, leaving the fraction *keep* of
    its bytes in place (under its final name where the filesystem writes in place)."""
    return Fault("close", error=no_space, from_call=1, keep=keep, **where)


def reset_mid_read(after_bytes: int, **fault: Any) -> Fault:
    """A read stream gives *after_bytes* bytes, then its connection is reset (every stream
    matching, unless ``nth``, ``rate`` or ``limit`` says otherwise)."""
    if not {"rate", "nth", "from_call"} & set(fault):
        fault["from_call"] = 1
    return Fault("read", after_bytes=after_bytes, **fault)


class FaultPlan:
    """The faults a filesystem injects, and the count of every call per operation.

    Thread-safe: one lock guards the counters and the RNG. With threads the order of the
    calls varies between runs, so a seeded rate gives the same draws but not necessarily
    to the same calls.
    """

    current: ClassVar[FaultPlan]

    def __init__(self, *faults: Fault, seed: int = 0) -> None:
        self.faults: list[Fault] = list(faults)
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.injected: list[tuple[str, str, str]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<FaultPlan {len(self.faults)} faults, calls {dict(self.calls)}>"

    def add(self, *faults: Fault) -> FaultPlan:
        """Add *faults*; return the plan."""
        with self._lock:
            self.faults.extend(faults)
        return self

    def clear(self) -> None:
        """Remove every fault (the counters stay)."""
        with self._lock:
            self.faults.clear()

    def reset_counts(self) -> None:
        """Zero the call and failure counters."""
        with self._lock:
            self.calls.clear()
            self.failures.clear()
            self.injected.clear()

    def check(self, op: str, path: str, mode: str = "", *, defer: bool = False) -> Fault | None:
        """Count a call of *op* on *path*; raise the error of a fault that is due.

        With *defer* the due fault is returned instead, for the caller to fire with `fire`
        where it must (at a stream's byte boundary, after a partial close).
        """
        with self._lock:
            self.calls[op] += 1
            for fault in self.faults:
                if fault._applies(op, path, mode):
                    fault.seen += 1
                    if fault._due(self._rng):
                        if defer:
                            return fault
                        raise self._fire(fault, op, path)
        return None

    def fire(self, fault: Fault, op: str, path: str) -> BaseException:
        """Record that *fault* fires now on *op* of *path*; return its error to raise."""
        with self._lock:
            return self._fire(fault, op, path)

    def _fire(self, fault: Fault, op: str, path: str) -> BaseException:
        fault.fired += 1
        self.failures[op] += 1
        error = fault.error()
        self.injected.append((op, path, repr(error)))
        return error


FaultPlan.current = FaultPlan()

_depth = threading.local()


def _inside_operation() -> bool:
    return getattr(_depth, "level", 0) > 0


@contextmanager
def _outermost() -> Iterator[bool]:
    level = getattr(_depth, "level", 0)
    _depth.level = level + 1
    try:
        yield level == 0
    finally:
        _depth.level = level


def _hooked(op: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: _FaultMixin, path: Any, *args: Any, **kwargs: Any) -> Any:
        with _outermost() as outermost:
            if outermost:
                self.plan.check(op, str(path))
            return method(self, path, *args, **kwargs)

    return wrapper


class FaultyFile:
    """An open file of a faulty filesystem: reads, writes and close pass the plan first."""

    def __init__(self, raw: Any, plan: FaultPlan, path: str, mode: str) -> None:
        self._raw = raw
        self._plan = plan
        self._path = path
        self._mode = mode
        self._read = 0
        self._written = 0
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __enter__(self) -> FaultyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    @property
    def closed(self) -> bool:
        return self._closed or bool(getattr(self._raw, "closed", False))

    def _room(self, op: str, done: int, wanted: int) -> tuple[int, Fault | None]:
        """How many of *wanted* bytes (-1: all) may pass, and the fault that fails right
        after them; raises when a fault is due now."""
        if _inside_operation():  # part of an operation already counted (cat_file, pipe_file)
            return wanted, None
        fault = self._plan.check(op, self._path, self._mode, defer=True)
        if fault is None:
            return wanted, None
        if fault.after_bytes is None or fault.after_bytes <= done:
            raise self._plan.fire(fault, op, self._path)
        room = fault.after_bytes - done
        if wanted < 0 or wanted > room:
            return room, fault
        return wanted, None

    def _take(self, call: Callable[[int], bytes], size: int | None) -> bytes:
        wanted = -1 if size is None or size < 0 else size
        room, _ = self._room("read", self._read, wanted)
        # A stream that reaches its boundary gives the bytes before it; the next read fails.
        data = call(room)
        self._read += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._take(self._raw.read, size)

    def read1(self, size: int = -1) -> bytes:
        return self._take(getattr(self._raw, "read1", self._raw.read), size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._take(self._raw.readline, size)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    readinto1 = readinto

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        room, fault = self._room("write", self._written, view.nbytes)
        if fault is not None:
            # The disk takes what fits, then fails: a partial write, as ENOSPC leaves one.
            self._written += self._raw.write(bytes(view[:room]))
            raise self._plan.fire(fault, "write", self._path)
        written: int = self._raw.write(data)
        self._written += written
        return written

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        writing = ("r" not in self._mode or "+" in self._mode) and not _inside_operation()
        fault = self._plan.check("close", self._path, self._mode, defer=True) if writing else None
        if fault is None:
            self._raw.close()
            return
        if hasattr(self._raw, "flush"):
            self._raw.flush()
        self._raw.truncate(int(self._written * fault.keep))
        self._raw.close()
        raise self._plan.fire(fault, "close", self._path)


_HOOKS = {
    "info": ("info", "exists", "isfile", "isdir", "lexists", "size", "modified", "created"),
    "ls": ("ls", "find", "glob", "walk"),
    "cat": ("cat_file",),
    "pipe": ("pipe_file",),
    "mkdir": ("mkdir", "makedirs"),
    "delete": ("rm", "rm_file", "rmdir"),
    "move": ("mv",),
    "copy": ("cp_file",),
    "touch": ("touch",),
}


class _FaultMixin:
    """The hooks, put in front of a real filesystem class by `_faulty`."""

    plan: FaultPlan

    def __init__(self, *args: Any, plan: FaultPlan | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan if plan is not None else FaultPlan.current

    def _open(self, path: Any, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        with _outermost() as outermost:
            if outermost:
                self.plan.check("open", str(path), mode)
            raw = super()._open(path, mode, *args, **kwargs)  # type: ignore[misc]
        return FaultyFile(raw, self.plan, self._strip_protocol(path), mode)  # type: ignore[attr-defined]


def _faulty(base: type, protocol: str, doc: str, **attributes: Any) -> type:
    namespace: dict[str, Any] = {"__doc__": doc, "protocol": protocol, "cachable": False}
    namespace.update(attributes)
    for op, names in _HOOKS.items():
        for name in names:
            namespace[name] = _hooked(op, getattr(base, name))
    namespace["__module__"] = __name__
    return type(f"Faulty{base.__name__.lstrip('_')}", (_FaultMixin, base), namespace)


class _LocalStore(AbstractFileSystem):
    """fsspec's local filesystem seen through the generic interface only: not an instance of
    LocalFileSystem, so code treats it as any store (no local shortcuts past the faults)."""

    root_marker = "/"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.local = LocalFileSystem()

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return LocalFileSystem._strip_protocol(str(path).removeprefix("faulty://"))

    def ls(self, path: Any, detail: bool = True, **kwargs: Any) -> Any:
        return self.local.ls(path, detail=detail, **kwargs)

    def info(self, path: Any, **kwargs: Any) -> Any:
        return self.local.info(path, **kwargs)

    def _open(self, path: Any, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        return self.local._open(path, mode, *args, **kwargs)

    def mkdir(self, path: Any, create_parents: bool = True, **kwargs: Any) -> None:
        self.local.mkdir(path, create_parents=create_parents, **kwargs)

    def makedirs(self, path: Any, exist_ok: bool = False) -> None:
        self.local.makedirs(path, exist_ok=exist_ok)

    def rmdir(self, path: Any) -> None:
        self.local.rmdir(path)

    def rm_file(self, path: Any) -> None:
        self.local.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        self.local.rm(path, recursive=recursive, maxdepth=maxdepth)

    def cp_file(self, path1: Any, path2: Any, **kwargs: Any) -> None:
        self.local.cp_file(path1, path2, **kwargs)

    def mv(self, path1: Any, path2: Any, recursive: bool = False, **kwargs: Any) -> None:
        self.local.mv(path1, path2, recursive=recursive, **kwargs)

    def touch(self, path: Any, truncate: bool = True, **kwargs: Any) -> None:
        self.local.touch(path, truncate=truncate, **kwargs)

    def modified(self, path: Any) -> Any:
        return self.local.modified(path)

    def created(self, path: Any) -> Any:
        return self.local.created(path)


FaultyLocalFileSystem: type[AbstractFileSystem] = _faulty(
    _LocalStore,
    "faulty",
    "Files on the local disk under ``faulty://``, with the faults of its plan. It is not a "
    "LocalFileSystem, so the code under test takes its generic store path.",
)


@classmethod  # type: ignore[misc]
def _strip_memory_protocol(cls: type, path: Any) -> Any:
    return MemoryFileSystem._strip_protocol(str(path).removeprefix("faultymem://"))


FaultyMemoryFileSystem: type[MemoryFileSystem] = _faulty(
    MemoryFileSystem,
    "faultymem",
    "fsspec's memory filesystem under ``faultymem://``, with its own store (`reset_memory`).",
    store={},
    pseudo_dirs=[""],
    _strip_protocol=_strip_memory_protocol,
)


def reset_memory() -> None:
    """Empty the store of ``faultymem://``."""
    FaultyMemoryFileSystem.store.clear()
    FaultyMemoryFileSystem.pseudo_dirs[:] = [""]


# Registered by import path, as installed filesystems are, so that task validation knows them.
fsspec.register_implementation("faulty", f"{__name__}.FaultyLocalFileSystem", clobber=True)
fsspec.register_implementation("faultymem", f"{__name__}.FaultyMemoryFileSystem", clobber=True)
