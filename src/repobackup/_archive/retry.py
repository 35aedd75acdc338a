"""Retries of store calls that failed for a passing reason (5xx, SlowDown, timeouts, resets).

`retrying` runs one call again with exponential backoff and full jitter a bounded number of times.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..exceptions import RepoBackupError, StoreError

__all__ = ["ATTEMPTS", "BASE", "is_transient", "path_type", "retrying"]

T = TypeVar("T")

ATTEMPTS = 5
BASE = 0.2  # seconds; the n-th retry waits up to BASE * 2**n
MAX_DELAY = 5.0

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


def retrying(
    what: str,
    call: Callable[[], T],
    *,
    attempts: int = ATTEMPTS,
    base: float = BASE,
) -> T:
    """The result of ``call()``, tried up to *attempts* times while it fails transiently.

    Waits a random time up to ``base * 2**n`` (at most five seconds) before the n-th retry,
    so that many clients backing off at once spread out. A transient failure that outlasts
    the attempts becomes a `StoreError` naming *what*; any other failure is raised as is,
    at once. Only calls that can be repeated whole belong here (opens, listings, ranged
    reads, removals): a half-written stream cannot be replayed.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(attempts):
        try:
            return call()
        except _PERMANENT:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts - 1:
                raise StoreError(
                    f"{what}: failed {attempts} times, last with {type(exc).__name__}: {exc}"
                ) from exc
            time.sleep(random.uniform(0, min(MAX_DELAY, base * 2**attempt)))
    raise AssertionError("unreachable")  # pragma: no cover


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
