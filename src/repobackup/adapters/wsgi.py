"""`make_app`: a plain WSGI application serving the spec's three endpoints, the task-management
extensions, /metrics and the OpenAPI document; `bearer_token_authorizer`: serve's token check."""

from __future__ import annotations

import hmac
import http
import json
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl

from ..exceptions import Problem
from .json import (
    METHOD_NOT_ALLOWED,
    PARAMETER_INVALID,
    PARAMETER_MISSING,
    REQUEST_NOT_JSON,
    SUCCESS,
    SYSTEM_ERROR,
    TASK_NOT_FOUND,
    TASK_RUNNING,
    UNAUTHORIZED,
    URL_NOT_FOUND,
    Envelope,
    JsonApi,
    envelope,
    problem_envelope,
)
from .openapi import BASE, openapi_document
from .stores import AllowedStores

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

    from .._engine.engine import Engine

__all__ = [
    "MAX_BODY",
    "Authorize",
    "bearer_token_authorizer",
    "http_status",
    "make_app",
    "openapi_document",
]

logger = logging.getLogger("repobackup")

Authorize = Callable[["WSGIEnvironment"], str]
"""Who is calling: takes the WSGI environ, returns the user name, raises to refuse."""

MAX_BODY: Final = 1 << 20
"""Largest request body read (bytes); a task is a few hundred bytes, so this is generous."""

_EXECUTE = re.compile(r"(?:/job)?/api/job/backup/execute/([^/]+)")
_TASK = re.compile(r"(?:/job)?/api/job/backup/([^/]+)")
_SWITCH = re.compile(r"(?:/job)?/api/job/backup/([^/]+)/(enable|disable)")
_RESERVED = frozenset({"tasks", "openapi.json", "execute"})
_MAX_USER = 128
_MAX_QUERY_FIELDS = 50

_STATUS: Final = {
    SUCCESS: 200,
    PARAMETER_MISSING: 400,
    PARAMETER_INVALID: 400,
    REQUEST_NOT_JSON: 400,
    UNAUTHORIZED: 401,
    TASK_NOT_FOUND: 404,
    URL_NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    TASK_RUNNING: 409,
    SYSTEM_ERROR: 500,
}

_JSON_HEADERS: Final = [
    ("Content-Type", "application/json; charset=utf-8"),
    # Task listings name storage locations and users: no cache should keep them.
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
]


def http_status(code: int) -> int:
    """The HTTP status that goes with an envelope *code* (500 for codes it does not know,
    such as the library's own 2509xx failures of a store or backend)."""
    return _STATUS.get(code, 500)


class _Text(bytes):
    """A body in the Prometheus text format rather than JSON."""


class _Refusal(Exception):
    """A request answered before it reaches an endpoint (401, 404, 405, 413, bad header)."""

    def __init__(self, status: int, body: Envelope, headers: Iterable[tuple[str, str]] = ()):
        super().__init__(body["message"])
        self.status = status
        self.body = body
        self.headers = list(headers)


def _unauthorized() -> _Refusal:
    # Same words whatever went wrong, so a caller learns nothing about what exists.
    return _Refusal(
        401,
        envelope(UNAUTHORIZED, "authentication required"),
        [("WWW-Authenticate", 'Bearer realm="repobackup"')],
    )


def _wsgi_text(value: str) -> str:
    # WSGI hands header and path bytes over as latin-1 text; clients send UTF-8.
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _valid_user(name: str) -> bool:
    return 0 < len(name) <= _MAX_USER and not any(
        unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in name
    )


def _header_user(environ: WSGIEnvironment) -> str | None:
    """The X-BKREPO-UID header, as the repository server's gateway sets it; None if absent,
    PermissionError if it cannot be a user name."""
    raw = environ.get("HTTP_X_BKREPO_UID")
    if raw is None or not raw.strip():
        return None
    name = _wsgi_text(raw).strip()
    if not _valid_user(name):
        raise PermissionError("X-BKREPO-UID is not a valid user name")
    return name


def bearer_token_authorizer(token: str) -> Authorize:
    """An `Authorize` that admits requests carrying ``Authorization: Bearer <token>``; the user
    is the X-BKREPO-UID header when present, else ``"admin"``. Refusals raise PermissionError."""
    if not isinstance(token, str) or not token.strip():
        raise ValueError("the bearer token must be a non-empty string")
    expected = token.encode("utf-8")

    def authorize(environ: WSGIEnvironment) -> str:
        scheme, _, credentials = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        try:
            given = credentials.strip().encode("latin-1")
        except UnicodeEncodeError:
            given = b""
        # compare_digest takes as long for a near miss as for a far one.
        matched = hmac.compare_digest(given, expected)
        if scheme.lower() != "bearer" or not matched:
            raise PermissionError("missing or wrong bearer token")
        return _header_user(environ) or "admin"

    return authorize


def _read_body(environ: WSGIEnvironment, limit: int) -> bytes:
    stream = environ["wsgi.input"]
    raw = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not raw:
        # Without a length only a server that marks its input as terminated (chunked
        # requests) may be read to the end; anything else has no body.
        if not environ.get("wsgi.input_terminated"):
            return b""
        data: bytes = stream.read(limit + 1)
        if len(data) > limit:
            raise _too_large(limit)
        return data
    if not raw.isascii() or not raw.isdigit():
        raise _Refusal(
            400,
            problem_envelope([Problem("Content-Length", "expected a non-negative integer")]),
        )
    length = int(raw)
    if length > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    remaining = length
    try:
        while remaining > 0:
            chunk = stream.read(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except (TimeoutError, OSError):
        # The server's read timeout ran out (a client that sent less than it announced).
        raise _Refusal(
            408, envelope(PARAMETER_INVALID, "the request body did not arrive in time")
        ) from None
    if remaining > 0:
        raise _Refusal(
            400,
            problem_envelope([Problem("Content-Length", "the body is shorter than announced")]),
        )
    return b"".join(chunks)


def _too_large(limit: int) -> _Refusal:
    return _Refusal(
        413, envelope(PARAMETER_INVALID, f"request body is too large: at most {limit} bytes")
    )


def _query(environ: WSGIEnvironment) -> dict[str, str]:
    """The query parameters by name, each decoded as UTF-8; a name given twice is refused."""
    try:
        pairs = parse_qsl(
            str(environ.get("QUERY_STRING", "")),
            keep_blank_values=True,
            encoding="latin-1",
            max_num_fields=_MAX_QUERY_FIELDS,
        )
    except ValueError:
        raise _Refusal(
            400, problem_envelope([Problem("query", "too many query parameters")])
        ) from None
    params: dict[str, str] = {}
    problems: list[Problem] = []
    for raw_name, raw_value in pairs:
        name = _wsgi_text(raw_name)
        try:
            value = raw_value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            problems.append(Problem(name[:50], "not valid UTF-8"))
            continue
        if name in params:
            problems.append(Problem(name[:50], "given more than once"))
        params[name] = value
    if problems:
        raise _Refusal(400, problem_envelope(problems))
    return params


class _App:
    """The WSGI callable `make_app` returns."""

    def __init__(
        self,
        engine: Engine,
        authorize: Authorize | None,
        max_body: int,
        allowed: AllowedStores | None,
    ) -> None:
        self.api = JsonApi(engine)
        self._authorize = authorize
        self._max_body = max_body
        self._allowed = allowed
        self._openapi = json.dumps(openapi_document(), indent=2).encode("utf-8")

    def __repr__(self) -> str:
        return f"<repobackup WSGI app engine={self.api.engine!r}>"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request: authorize, route, call the endpoint, send the envelope."""
        headers: list[tuple[str, str]] = []
        try:
            user = self._user(environ)
            status, payload = self._dispatch(environ, user)
        except _Refusal as refusal:
            status, payload, headers = refusal.status, refusal.body, refusal.headers
        except Exception as exc:
            trace_id = envelope()["traceId"]
            logger.error("request failed unexpectedly (traceId %s)", trace_id, exc_info=exc)
            status = 500
            payload = envelope(
                SYSTEM_ERROR,
                f"system error; the server log has the details under traceId {trace_id}",
                trace_id=trace_id,
            )
        if isinstance(payload, bytes):
            body = bytes(payload)  # wsgiref writes bytes only, not a subclass
        else:
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        kind = _JSON_HEADERS
        if isinstance(payload, _Text):
            from .metrics import CONTENT_TYPE

            kind = [("Content-Type", CONTENT_TYPE), *_JSON_HEADERS[1:]]
        start_response(
            f"{status} {http.HTTPStatus(status).phrase}",
            [*kind, ("Content-Length", str(len(body))), *headers],
        )
        return [body]

    def _user(self, environ: WSGIEnvironment) -> str:
        if self._authorize is None:
            try:
                return _header_user(environ) or "anonymous"
            except PermissionError:
                raise _unauthorized() from None
        try:
            user = self._authorize(environ)
        except PermissionError:
            raise _unauthorized() from None
        except Exception as exc:
            # A refusal that is not a PermissionError may be a fault of the hook itself.
            logger.warning(
                "authorize hook raised %s; answering 401", type(exc).__name__, exc_info=exc
            )
            raise _unauthorized() from None
        if not isinstance(user, str) or not _valid_user(user):
            logger.warning(
                "authorize hook returned a %s, not a user name; answering 401", type(user).__name__
            )
            raise _unauthorized()
        return user

    def _dispatch(self, environ: WSGIEnvironment, user: str) -> tuple[int, Envelope | bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = _wsgi_text(str(environ.get("PATH_INFO", "")))
        result: Envelope
        if path == BASE:
            self._allow(method, "POST")
            body = _read_body(environ, self._max_body)
            self._check_store(_body_location(body))
            result = self.api.create_task(body, user=user)
        elif match := _EXECUTE.fullmatch(path):
            self._allow(method, "POST")
            self._check_store(self._task_location(match[1]))
            result = self.api.execute_task(match[1])
        elif path == f"{BASE}/tasks":
            self._allow(method, "GET")
            query = _query(environ)
            result = self.api.list_tasks(
                query.get("state"),
                query.get("pageSize"),
                query.get("pageNumber"),
                last_run_state=query.get("lastRunState"),
            )
        elif path == f"{BASE}/openapi.json":
            self._allow(method, "GET")
            return 200, self._openapi
        elif path == "/metrics":
            self._allow(method, "GET")
            return self._metrics()
        else:
            result = self._task_route(method, path, user)
        return http_status(result["code"]), result

    def _task_route(self, method: str, path: str, user: str) -> Envelope:
        """The extensions on one task: GET and DELETE it, POST .../enable or .../disable."""
        if (match := _SWITCH.fullmatch(path)) and match[1] not in _RESERVED:
            self._allow(method, "POST")
            return self.api.set_enabled(match[1], match[2] == "enable", user=user)
        if (match := _TASK.fullmatch(path)) and match[1] not in _RESERVED:
            self._allow(method, "GET", "DELETE")
            if method == "DELETE":
                return self.api.delete_task(match[1])
            return self.api.get_task(match[1])
        raise _Refusal(404, envelope(URL_NOT_FOUND, f"URL not found: {_clip(path)}"))

    def _metrics(self) -> tuple[int, Envelope | bytes]:
        from .metrics import MetricsUnavailableError, render_metrics

        try:
            return 200, _Text(render_metrics(self.api.engine.tasks))
        except MetricsUnavailableError as exc:
            return 501, envelope(SYSTEM_ERROR, str(exc))

    def _check_store(self, location: object) -> None:
        """Refuse (250105 naming storeLocation) a location outside the allowed stores."""
        if self._allowed is None or location is None:
            return
        if (why := self._allowed.problem(location)) is not None:
            raise _Refusal(400, problem_envelope([Problem("storeLocation", why)]))

    def _task_location(self, task_id: str) -> str | None:
        # A task stored by other means (the command line) may point anywhere: executing it
        # over HTTP is held to the same places. A missing task is the endpoint's answer.
        try:
            return self.api.engine.get_task(task_id).store_location
        except Exception:
            return None

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            listed = ", ".join(allowed)
            raise _Refusal(
                405,
                envelope(
                    METHOD_NOT_ALLOWED,
                    f"method {_clip(method)} is not allowed here; use {' or '.join(allowed)}",
                ),
                [("Allow", listed)],
            )


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _body_location(body: bytes) -> object:
    """The storeLocation a request body names, or None when it names none (the endpoint
    then answers for the body itself)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data.get("storeLocation") if isinstance(data, dict) else None


def make_app(
    engine: Engine,
    *,
    authorize: Authorize | None = None,
    allowed_stores: Iterable[str] | None = None,
    max_body: int = MAX_BODY,
) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
    """A WSGI application serving *engine* at the spec's paths.

    ``POST /job/api/job/backup`` creates a task; ``POST /job/api/job/backup/execute/{taskId}``
    (also without ``/job``) starts one; ``GET /job/api/job/backup/tasks`` lists them;
    ``GET /job/api/job/backup/openapi.json`` describes all three. Every answer is a JSON
    envelope. *authorize* decides who is calling before any routing, so an unauthorized
    caller gets 401 (code 250114) for every path; without it the X-BKREPO-UID header names
    the user, else ``"anonymous"``. Bodies over *max_body* bytes get 413.

    *allowed_stores* lists the places (local folders, or URLs with their protocol such as
    ``s3://bucket/prefix``) under which a task's storeLocation must lie, after ``..``, links
    and protocol are normalised (``/srv/backups-evil`` is not under ``/srv/backups``); a task
    pointing anywhere else gets 250105 naming ``storeLocation``, when created and when
    executed. None allows any location the server's user can reach (docs/api.md, "Threat
    model"); an empty list allows none.
    """
    allowed = None if allowed_stores is None else AllowedStores(allowed_stores)
    return _App(engine, authorize, max_body, allowed)
