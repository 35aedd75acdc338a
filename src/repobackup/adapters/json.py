"""`JsonApi`: the spec's three endpoints and the task-management extensions, as calls that take
raw input and return JSON envelopes.

Every call answers ``{"code", "message", "data", "traceId"}`` and never raises for bad input.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Final, TypedDict

from .._engine.engine import API
from .._model.convert import to_json
from .._model.task import BackupTask, TaskState
from .._tasks.store import MAX_PAGE_SIZE
from ..exceptions import (
    MalformedRequestError,
    Problem,
    RepoBackupError,
    TaskNotFoundError,
    TaskRunningError,
    ValidationError,
)

if TYPE_CHECKING:
    from .._engine.engine import Engine

__all__ = [
    "METHOD_NOT_ALLOWED",
    "PARAMETER_INVALID",
    "PARAMETER_MISSING",
    "REQUEST_NOT_JSON",
    "SUCCESS",
    "SYSTEM_ERROR",
    "TASK_NOT_FOUND",
    "TASK_RUNNING",
    "UNAUTHORIZED",
    "URL_NOT_FOUND",
    "Envelope",
    "JsonApi",
    "envelope",
    "new_trace_id",
    "parse_body",
    "problem_envelope",
]

logger = logging.getLogger("repobackup")

# The repository server's common message codes. The ones an error class already carries are
# taken from it, so a code has one home.
SUCCESS: Final = 0
SYSTEM_ERROR: Final = RepoBackupError.code
PARAMETER_MISSING: Final = 250103
PARAMETER_INVALID: Final = ValidationError.code
REQUEST_NOT_JSON: Final = MalformedRequestError.code
TASK_NOT_FOUND: Final = TaskNotFoundError.code
METHOD_NOT_ALLOWED: Final = 250112
UNAUTHORIZED: Final = 250114
TASK_RUNNING: Final = TaskRunningError.code
URL_NOT_FOUND: Final = 250130

_CLIENT_CODES = frozenset(
    {PARAMETER_MISSING, PARAMETER_INVALID, REQUEST_NOT_JSON, TASK_NOT_FOUND, TASK_RUNNING}
)
_MISSING = "required field missing"

# Bounds on what an error echoes back: a 10 MB field must not come back as a 10 MB message.
_MAX_TEXT = 200
_MAX_LISTED = 20
_MAX_DATA_PROBLEMS = 100

DEFAULT_PAGE_NUMBER: Final = 1
DEFAULT_PAGE_SIZE: Final = 20
# The repository server reads pageNumber into a Java int; beyond that the offset overflows.
MAX_PAGE_NUMBER: Final = 2**31 - 1

_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")


class Envelope(TypedDict):
    """The response body of every endpoint, as the repository server shapes it."""

    code: int
    message: str | None
    data: Any
    traceId: str


def new_trace_id() -> str:
    """A fresh random id (32 lowercase hex characters) tying a response to its log lines."""
    return secrets.token_hex(16)


def envelope(
    code: int = SUCCESS,
    message: str | None = None,
    data: Any = None,
    *,
    trace_id: str | None = None,
) -> Envelope:
    """An envelope with *code*, *message* and *data*; a fresh trace id unless one is given."""
    return {
        "code": code,
        "message": message,
        "data": data,
        "traceId": trace_id if trace_id is not None else new_trace_id(),
    }


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def parse_body(body: Any) -> Any:
    """The JSON data of a request body: bytes and str are parsed, anything else is taken as
    already-parsed data. Raise `MalformedRequestError` (250106) when bytes are not UTF-8 or
    the text is not valid JSON (NaN and Infinity, which Python's parser would allow, included).
    """
    if isinstance(body, bytearray | memoryview):
        body = bytes(body)
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedRequestError(
                f"request body is not valid UTF-8: byte 0x{exc.object[exc.start]:02x} "
                f"at offset {exc.start}"
            ) from None
    if not isinstance(body, str):
        return body
    if not body.strip():
        raise MalformedRequestError("request body is empty, expected a JSON object")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise MalformedRequestError("request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN, and integers beyond Python's digit limit
        raise MalformedRequestError(f"request body is not valid JSON: {_clip(str(exc))}") from None


def _problems_data(problems: tuple[Problem, ...]) -> list[dict[str, str]]:
    return [
        {"path": _clip(p.path), "message": _clip(p.message)} for p in problems[:_MAX_DATA_PROBLEMS]
    ]


def _validation_envelope(exc: ValidationError, trace_id: str) -> Envelope:
    problems = exc.problems or (Problem("$", "invalid input"),)
    if isinstance(exc, MalformedRequestError):
        code, lead = REQUEST_NOT_JSON, "request body is not valid JSON"
    elif all(p.message == _MISSING for p in problems):
        code, lead = PARAMETER_MISSING, "parameter missing"
    else:
        code, lead = PARAMETER_INVALID, "parameter invalid"
    listed = "; ".join(f"{_clip(p.path)}: {_clip(p.message)}" for p in problems[:_MAX_LISTED])
    if len(problems) > _MAX_LISTED:
        listed += f"; and {len(problems) - _MAX_LISTED} more"
    if isinstance(exc, MalformedRequestError) and len(problems) == 1 and problems[0].path == "$":
        message = _clip(problems[0].message, 2 * _MAX_TEXT)
    else:
        message = f"{lead}: {listed}"
    return envelope(code, message, _problems_data(problems), trace_id=trace_id)


def problem_envelope(problems: Iterable[Problem], *, trace_id: str | None = None) -> Envelope:
    """The envelope for a request with *problems*: 250103 when every problem is a missing
    field, else 250105; each problem named with its path in the message and listed in data."""
    return _validation_envelope(ValidationError(problems), trace_id or new_trace_id())


class JsonApi:
    """The spec's endpoints over an `Engine`: raw input in, envelope dict out.

    On success ``code`` is 0 and ``message`` null. On error ``code`` is the repository
    server's message code and ``message`` one human sentence; a validation error (250103,
    250105, 250106) names every problem with its JSON path in the message and also lists them
    in ``data`` as ``[{"path": ..., "message": ...}]`` so a client can point at the field;
    other errors have ``data`` null. Echoed values are clipped, so an oversized field never
    comes back whole. A system error (250102) is logged on the ``repobackup`` logger with its
    trace id and the message says only that, never a traceback.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __repr__(self) -> str:
        return f"<JsonApi engine={self.engine!r}>"

    def create_task(self, body: Any, *, user: str | None = None) -> Envelope:
        """Create a task from *body* (raw bytes, JSON text, or parsed data) on behalf of *user*;
        ``data`` is the new task's id."""
        trace_id = new_trace_id()
        try:
            data = parse_body(body)
            task_id = self.engine.create_task(data, user=user)
        except Exception as exc:
            return self._failure(exc, "create task", trace_id)
        return envelope(data=task_id, trace_id=trace_id)

    def execute_task(self, task_id: Any) -> Envelope:
        """Start the task now in the background and answer at once (``data`` null): 250108 when
        there is no such task, 250128 when it is running already."""
        trace_id = new_trace_id()
        try:
            task_id = _task_id(task_id)
            # submit() refuses these too, but checking first keeps the answer exact even
            # for an engine whose submit only schedules.
            if self.engine.get_task(task_id).state is TaskState.RUNNING:
                raise TaskRunningError(task_id)
            future = self.engine.submit(task_id, trigger=API)
        except Exception as exc:
            return self._failure(exc, "execute task", trace_id)
        future.add_done_callback(lambda done: _log_background_failure(done, task_id, trace_id))
        return envelope(trace_id=trace_id)

    def list_tasks(
        self,
        state: Any = None,
        page_size: Any = None,
        page_number: Any = None,
        *,
        last_run_state: Any = None,
    ) -> Envelope:
        """One page of tasks, newest first. Parameters come as query-string text or Python
        values: *state* a TaskState name (exact case), *page_size* 1..1000 (default 20),
        *page_number* from 1 (default 1), *last_run_state* (an extension) the state the last
        run ended in, so that a recurring task whose last run failed is found although it is
        PENDING again; an empty string counts as not given."""
        trace_id = new_trace_id()
        try:
            problems: list[Problem] = []
            wanted = _state_param(state, problems)
            last = _state_param(last_run_state, problems, name="lastRunState")
            size = _int_param("pageSize", page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, problems)
            number = _int_param(
                "pageNumber", page_number, DEFAULT_PAGE_NUMBER, MAX_PAGE_NUMBER, problems
            )
            if problems:
                raise ValidationError(problems)
            page = self.engine.list_tasks(
                wanted, page_number=number, page_size=size, last_run_state=last
            )
        except Exception as exc:
            return self._failure(exc, "list tasks", trace_id)
        return envelope(data=to_json(page), trace_id=trace_id)

    def get_task(self, task_id: Any) -> Envelope:
        """One task, its last run included (an extension); 250108 when there is no such task."""
        trace_id = new_trace_id()
        try:
            task = self.engine.get_task(_task_id(task_id))
        except Exception as exc:
            return self._failure(exc, "get task", trace_id)
        return envelope(data=_task_data(task), trace_id=trace_id)

    def delete_task(self, task_id: Any) -> Envelope:
        """Remove a task and its run history, never its backups (an extension; ``data``
        null): 250108 when there is no such task, 250128 while it runs."""
        trace_id = new_trace_id()
        try:
            self.engine.delete_task(_task_id(task_id))
        except Exception as exc:
            return self._failure(exc, "delete task", trace_id)
        return envelope(trace_id=trace_id)

    def set_enabled(self, task_id: Any, enabled: bool, *, user: str | None = None) -> Envelope:
        """Enable or disable a task (an extension); ``data`` is the task as it is now. A
        disabled task is never started by a scheduler; execute still runs it."""
        trace_id = new_trace_id()
        try:
            task = self.engine.set_enabled(_task_id(task_id), enabled, user=user)
        except Exception as exc:
            return self._failure(exc, "enable task" if enabled else "disable task", trace_id)
        return envelope(data=_task_data(task), trace_id=trace_id)

    @staticmethod
    def _failure(exc: Exception, operation: str, trace_id: str) -> Envelope:
        if isinstance(exc, ValidationError):
            return _validation_envelope(exc, trace_id)
        if isinstance(exc, RepoBackupError) and exc.code != SYSTEM_ERROR:
            if exc.code not in _CLIENT_CODES:
                # Store and backend failures are the operator's to see, with the cause.
                logger.error("%s failed (traceId %s)", operation, trace_id, exc_info=exc)
            return envelope(exc.code, _clip(exc.message, 2 * _MAX_TEXT), trace_id=trace_id)
        logger.error("%s failed unexpectedly (traceId %s)", operation, trace_id, exc_info=exc)
        return envelope(
            SYSTEM_ERROR,
            f"system error; the server log has the details under traceId {trace_id}",
            trace_id=trace_id,
        )


def _log_background_failure(future: Future[Any], task_id: str, trace_id: str) -> None:
    # A run records its own failures in the task; an exception here is a fault of the run
    # machinery, and with nobody waiting on the future the log is the only place it shows.
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        logger.error(
            "background run of task %s failed (traceId %s)", task_id, trace_id, exc_info=exc
        )


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and value == "")


def _task_data(task: BackupTask) -> Any:
    # The converter leaves ``enabled`` out while true, so that a listing keeps the spec's
    # shape; an extension answering one task says it either way.
    data = to_json(task)
    data["enabled"] = task.enabled
    return data


def _task_id(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError([Problem("taskId", "expected a string")])
    return value


def _state_param(value: Any, problems: list[Problem], *, name: str = "state") -> TaskState | None:
    if not _given(value):
        return None
    if isinstance(value, TaskState):
        return value
    if isinstance(value, str) and value in TaskState.__members__:
        return TaskState[value]
    allowed = ", ".join(TaskState.__members__)
    shown = _clip(repr(value)) if isinstance(value, str) else f"a {type(value).__name__}"
    problems.append(Problem(name, f"unknown value {shown}, expected one of {allowed}"))
    return None


def _int_param(name: str, value: Any, default: int, maximum: int, problems: list[Problem]) -> int:
    if not _given(value):
        return default
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    if number is None:
        shown = _clip(repr(value)) if isinstance(value, str) else f"a {type(value).__name__}"
        problems.append(Problem(name, f"expected an integer, got {shown}"))
        return default
    if not 1 <= number <= maximum:
        problems.append(Problem(name, f"must be between 1 and {maximum}, got {_clip(str(number))}"))
        return default
    return number
