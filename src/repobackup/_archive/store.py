"""`Store`: the one boundary between the archive code and an fsspec filesystem.

Every call is retried while it fails transiently and every store failure becomes a StoreError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import random
import secrets
import shutil
import time
from collections.abc import Callable
from typing import IO, Any, TypeVar, cast

import fsspec
import tenacity
from fsspec.implementations.local import LocalFileSystem

from ..exceptions import RepoBackupError, StoreError, store_errors

__all__ = [
    "ATTEMPTS",
    "BASE",
    "DEADLINE",
    "PARTIAL",
    "Store",
    "deadline_of",
    "is_transient",
    "parse_partial",
    "partial_name",
    "partial_path",
    "publish",
    "path_type",
    "retrying",
    "retrying_whole",
    "store_errors",
]

T = TypeVar("T")

ATTEMPTS = 5
WHOLE_ATTEMPTS = 3  # tries of a whole transfer (a blob copied again from its source)
BASE = 0.2  # seconds; the n-th retry waits up to BASE * 2**n
MAX_DELAY = 5.0
DEADLINE = 60.0  # seconds one operation may spend, retries included
PARTIAL = ".partial"

# Exceptions that say "the network or the service hiccuped", named so that botocore,
# aiohttp and urllib3 need not be imported to recognise theirs.
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectionClosedError",
        "ConnectTimeoutError",
        "EndpointConnectionError",
        "ReadTimeoutError",
        "ProxyConnectionError",
        "IncompleteRead",
        "ResponseStreamingError",
        "ClientConnectionError",
        "ClientOSError",
        "ClientPayloadError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "FSTimeoutError",
        "ProtocolError",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ECONNREFUSED,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EAGAIN,
        errno.EBUSY,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
    }
)
# Failures that will not go away by asking again.
_PERMANENT = (
    RepoBackupError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    ValueError,
    TypeError,
)


def _transient_one(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
            return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def is_transient(exc: BaseException) -> bool:
    """Whether *exc* (or what caused it) is a failure worth trying again.

    s3fs turns botocore errors into OSErrors raised ``from`` the original, so the chain of
    causes is searched; a missing object or a refused permission is never transient.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_one(current):
            return True
        if current is not exc and isinstance(current, _PERMANENT):
            return False
        current = current.__cause__ or current.__context__
    return False


def _worth_retrying(exc: BaseException) -> bool:
    return not isinstance(exc, _PERMANENT) and is_transient(exc)


def _ours_worth_retrying(exc: BaseException) -> bool:
    return _worth_retrying(exc) or (isinstance(exc, StoreError) and is_transient(exc))


def retrying_whole(what: str, call: Callable[[], T], *, deadline: float = DEADLINE) -> T:
    """`retrying` for a call that is a whole transfer (a blob copied from its source): a
    `StoreError` caused by a transient failure is tried again too, from the start."""
    started = time.monotonic()
    try:
        # The first try goes without tenacity: nearly every transfer succeeds at once, and
        # the retrier's bookkeeping costs as much as copying a small blob.
        return call()
    except Exception as exc:
        if not _ours_worth_retrying(exc) or time.monotonic() - started >= deadline:
            raise
    time.sleep(random.uniform(0, BASE))
    retryer = tenacity.Retrying(
        # Fewer attempts than one request gets: each is a whole transfer, already retried
        # by the store's client for its own blips.
        stop=tenacity.stop_after_attempt(WHOLE_ATTEMPTS - 1)
        | tenacity.stop_after_delay(max(0.0, deadline - (time.monotonic() - started))),
        wait=tenacity.wait_random_exponential(multiplier=2 * BASE, max=MAX_DELAY),
        retry=tenacity.retry_if_exception(_ours_worth_retrying),
        reraise=True,
    )
    return retryer(call)


def retrying(
    what: str,
    call: Callable[[], T],
    *,
    attempts: int = ATTEMPTS,
    base: float = BASE,
    deadline: float = DEADLINE,
) -> T:
    """The result of ``call()``, tried up to *attempts* times and for at most *deadline*
    seconds while it fails transiently.

    Waits a random time up to ``base * 2**n`` (at most five seconds) before the n-th retry,
    so that many clients backing off at once spread out. A transient failure that outlasts
    the retries becomes a `StoreError` naming *what*; any other failure is raised as is,
    at once. Only calls that can be repeated whole belong here (opens, listings, ranged
    reads, removals): a half-written stream cannot be replayed.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    retryer = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(deadline),
        wait=tenacity.wait_random_exponential(multiplier=base, max=MAX_DELAY),
        retry=tenacity.retry_if_exception(_worth_retrying),
    )
    try:
        return retryer(call)
    except tenacity.RetryError as exc:
        last = exc.last_attempt
        error = last.exception()
        raise StoreError(
            f"{what}: failed {last.attempt_number} times, last with {type(error).__name__}: {error}"
        ) from error


def path_type(fs: Any, path: str, what: str) -> str | None:
    """What is at *path*: ``"file"``, ``"directory"`` (or another fsspec type), or None
    when nothing is; transient failures are retried.

    fsspec's generic ``exists``, ``isfile`` and ``isdir`` answer False to *any* error, so a
    dropped connection would read as "absent"; ``info`` raises, and only a missing path
    means absent.
    """

    def probe() -> str | None:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return None
        return str(info.get("type", "file"))

    return retrying(what, probe)


def partial_path(final_path: str) -> str:
    """A fresh partial path beside *final_path*, unique to the caller (see `partial_name`)."""
    parent, base = posixpath.split(final_path)
    return posixpath.join(parent, partial_name(base, secrets.token_hex(6)))


def publish(partial: str, final: str) -> None:
    """Give the finished local *partial* (file or folder) its *final* name, never replacing
    anything there: FileExistsError when the name is taken."""
    if os.path.isdir(partial):
        if os.path.lexists(final):
            raise FileExistsError(f"{final} already exists")
        try:
            os.rename(partial, final)  # fails too when a non-empty folder appeared meanwhile
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise FileExistsError(f"{final} already exists") from None
            raise
        return
    try:
        os.link(partial, final)  # creates the name exclusively, or fails with EEXIST
    except FileExistsError:
        raise FileExistsError(f"{final} already exists") from None
    except OSError:
        # A file system without hard links: the check and the rename are two steps there.
        if os.path.lexists(final):
            raise FileExistsError(f"{final} already exists") from None
        os.rename(partial, final)
        return
    os.unlink(partial)


def partial_name(final: str, token: str) -> str:
    """The hidden name a backup called *final* is written under until it is complete:
    ``.<final>.<token>.partial``; *token* is unique to the run."""
    return f".{final}.{token}{PARTIAL}"


def parse_partial(entry: str) -> str | None:
    """The final name a partial entry stands for, or None when *entry* is not partial.
    Also reads the ``.<final>.partial`` of older versions."""
    if not (entry.startswith(".") and entry.endswith(PARTIAL)):
        return None
    inner = entry[1 : -len(PARTIAL)]
    head, dot, token = inner.rpartition(".")
    if dot and len(token) == 12 and all(c in "0123456789abcdef" for c in token):
        return head
    return inner


def deadline_of(fs: Any) -> float:
    """The seconds one operation on *fs* may take, retries included: its ``store_deadline``
    storage option, else `DEADLINE`."""
    value = getattr(fs, "repobackup_deadline", None)
    return float(value) if isinstance(value, (int, float)) else DEADLINE


class Store:
    """One fsspec filesystem seen through retries and our errors. *deadline* bounds the
    seconds one operation may spend retrying."""

    def __init__(self, fs: fsspec.AbstractFileSystem, *, deadline: float | None = None) -> None:
        self.fs = fs
        # The store_deadline storage option, set on the filesystem when it was opened.
        self.deadline = deadline if deadline is not None else deadline_of(fs)

    def __repr__(self) -> str:
        return f"<Store {type(self.fs).__name__}>"

    def url(self, path: str) -> str:
        """*path* with the store's protocol, as errors name it (a local path as it is)."""
        if self.local:
            return path
        protocol = self.fs.protocol
        name = protocol[0] if isinstance(protocol, (tuple, list)) else str(protocol)
        return path if "://" in path else f"{name}://{path}"

    @property
    def local(self) -> bool:
        """Whether the store is the local disk (renames are atomic there)."""
        return isinstance(self.fs, LocalFileSystem)

    def _do(self, what: str, call: Callable[[], T]) -> T:
        with store_errors(what):
            return retrying(what, call, deadline=self.deadline)

    def kind(self, path: str) -> str | None:
        """``"file"``, ``"directory"`` or None when nothing is at *path*."""
        with store_errors(f"checking {self.url(path)}"):
            return path_type(self.fs, path, f"checking {self.url(path)}")

    def exists(self, path: str) -> bool:
        return self.kind(path) is not None

    def info(self, path: str, *, what: str | None = None) -> dict[str, Any]:
        """The store's details of *path*; *what* names the operation in errors."""
        return self._do(what or f"checking {self.url(path)}", lambda: dict(self.fs.info(path)))

    def names(self, path: str, *, fresh: bool = True) -> list[str]:
        """The names in the folder *path*, sorted (none when it is not a folder). With
        *fresh*, a cached listing is dropped first: it could hide a new backup."""
        path = path.rstrip("/")
        if self.kind(path) != "directory":
            return []
        if fresh:
            self.fs.invalidate_cache(path)
        listed = self._do(f"listing {self.url(path)}", lambda: self.fs.ls(path, detail=False))
        return sorted(os.path.basename(p.rstrip("/")) for p in listed)

    def open(self, path: str, mode: str = "rb") -> IO[bytes]:
        """*path* opened in binary *mode*; only the open is retried, never a half-done
        stream. A local file is opened with io directly: fsspec's wrapper costs more than
        reading or writing a small blob does."""
        if self.local:
            return self._do(f"opening {self.url(path)}", lambda: cast(IO[bytes], open(path, mode)))
        return self._do(
            f"opening {self.url(path)}", lambda: cast(IO[bytes], self.fs.open(path, mode))
        )

    def find(self, path: str) -> list[str]:
        """Every file under the folder *path*, as paths relative to it."""
        root = path.rstrip("/")
        found = self._do(f"listing {self.url(root)}", lambda: self.fs.find(root))
        return [posixpath.relpath(self.fs._strip_protocol(p), root) for p in found]

    def read_range(self, path: str, start: int, end: int, *, what: str | None = None) -> bytes:
        """Bytes *start* to *end* of *path*; *what* names the operation in errors."""
        return self._do(
            what or f"reading {self.url(path)}",
            lambda: bytes(self.fs.cat_file(path, start=start, end=end)),
        )

    def write_bytes(self, path: str, data: bytes) -> None:
        self._do(f"writing {self.url(path)}", lambda: self.fs.pipe_file(path, data))

    def makedirs(self, path: str) -> None:
        self._do(f"creating {self.url(path)}", lambda: self.fs.makedirs(path, exist_ok=True))

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove *path*; nothing there already is fine."""

        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path, recursive=recursive)

        self._do(f"removing {self.url(path)}", rm)

    def move(self, source: str, destination: str) -> None:
        self._do(f"renaming {self.url(source)}", lambda: self.fs.mv(source, destination))

    def free_space(self, path: str) -> int | None:
        """Free bytes where *path* would be written, or None where that cannot be known."""
        if not self.local:
            return None
        probe = path
        while probe and not os.path.exists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        try:
            return shutil.disk_usage(probe or ".").free
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise StoreError(f"checking free space at {path}: {exc}") from exc
