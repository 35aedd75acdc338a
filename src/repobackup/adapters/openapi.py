"""The OpenAPI 3.0 document of the HTTP adapter: schemas derived from the model, with every
limit that task validation enforces stated where JSON Schema can say it."""

from __future__ import annotations

import enum
import importlib.util
import types
import typing
import unicodedata
from datetime import datetime
from typing import Any, Final

import attrs

from .._model import task as _model
from .._model.convert import json_name, to_json
from .._model.ids import TASK_ID
from .._model.rules import MAX_NAME
from .._model.select import REGEX_PREFIX
from .._tasks.store import MAX_PAGE_SIZE
from .._version import __version__
from .json import DEFAULT_PAGE_NUMBER, DEFAULT_PAGE_SIZE, MAX_PAGE_NUMBER

__all__ = ["BASE", "openapi_document"]

BASE: Final = "/job/api/job/backup"

_REF = "#/components/schemas/"
# Set by the engine, not by the caller; a request may carry them but they are ignored.
_READ_ONLY = frozenset(
    {
        "id",
        "state",
        "created_by",
        "created_date",
        "last_modified_by",
        "last_modified_date",
        "start_date",
        "end_date",
        "last_run",
    }
)


# The model gives these a default so that stored records lacking them can be read, but a
# request creating a task must carry them.
_REQUIRED_AT_CREATION = frozenset({(_model.BackupTask, "name")})


def _type_schema(kind: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        inner = _type_schema(members[0], schemas)
        # OpenAPI 3.0 ignores siblings of $ref, so a nullable reference goes through allOf.
        return (
            {"allOf": [inner], "nullable": True} if "$ref" in inner else {**inner, "nullable": True}
        )
    if origin is tuple:
        return {"type": "array", "items": _type_schema(typing.get_args(kind)[0], schemas)}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        if kind.__name__ not in schemas:
            schemas[kind.__name__] = {
                "type": "string",
                "enum": [member.value for member in kind],
                "description": _summary(kind),
            }
        return {"$ref": _REF + kind.__name__}
    if isinstance(kind, type) and attrs.has(kind):
        if kind.__name__ not in schemas:
            schemas[kind.__name__] = {}  # placeholder first: the model may refer to itself
            schemas[kind.__name__] = _class_schema(kind, schemas)
        return {"$ref": _REF + kind.__name__}
    simple: dict[Any, dict[str, Any]] = {
        str: {"type": "string"},
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        float: {"type": "number"},
        datetime: {"type": "string", "format": "date-time"},
    }
    return dict(simple[kind])


def _class_schema(cls: type, schemas: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        schema = _type_schema(hints[field.name], schemas)
        if field.default is attrs.NOTHING or (cls, field.name) in _REQUIRED_AT_CREATION:
            required.append(json_name(field.name))
        else:
            default = (
                field.default.factory()
                if isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
                else field.default
            )
            schema = _with(schema, default=to_json(default))
        if cls is _model.BackupTask and field.name in _READ_ONLY:
            schema = _with(schema, readOnly=True)
        properties[json_name(field.name)] = schema
    result: dict[str, Any] = {
        "type": "object",
        "description": _summary(cls),
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        result["required"] = required
    return result


def _with(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    if "$ref" in schema:
        return {"allOf": [schema], **extra}
    return {**schema, **extra}


def _summary(obj: Any) -> str:
    return (obj.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


def _envelope_schema(description: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["code", "message", "data", "traceId"],
        "properties": {
            "code": {"type": "integer", "description": "0 on success, else a message code"},
            "message": {"type": "string", "nullable": True},
            "data": data,
            "traceId": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        },
    }


def _response(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF + schema}}},
    }


_ERRORS: Final = {
    "400": "parameter missing (250103), invalid (250105) or body not JSON (250106)",
    "401": "authentication required (250114)",
    "500": "system error (250102)",
}


def _errors(*extra: tuple[str, str]) -> dict[str, Any]:
    pairs = [*_ERRORS.items(), *extra]
    return {status: _response(text, "ErrorEnvelope") for status, text in sorted(pairs)}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 description of the endpoints, its schemas derived from the model so
    the two cannot drift apart, and constrained as task validation is."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "repobackup backup and restore API",
            "version": __version__,
            "description": (
                "Create, start and list backup and restore tasks. Every response is an "
                "envelope {code, message, data, traceId}; code 0 means success. A request "
                "that the schemas accept is accepted, with two exceptions the schemas cannot "
                "know: a server started with allowed stores refuses a storeLocation outside "
                "them, and a server with an authorizer refuses callers it does not know."
            ),
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "repositoryUser": {"type": "apiKey", "in": "header", "name": "X-BKREPO-UID"},
            },
        },
        "security": [{"bearer": []}, {"repositoryUser": []}, {}],
    }


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    _type_schema(_model.BackupTask, schemas)
    _constrain(schemas)
    schemas["Problem"] = {
        "type": "object",
        "required": ["path", "message"],
        "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
    }
    schemas["BackupTaskPage"] = {
        "type": "object",
        "description": _summary(_model.Page),
        "required": [
            "pageNumber",
            "pageSize",
            "totalRecords",
            "totalPages",
            "records",
            "count",
            "page",
        ],
        "properties": {
            "pageNumber": {"type": "integer", "minimum": 1},
            "pageSize": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
            "totalRecords": {"type": "integer", "minimum": 0},
            "totalPages": {"type": "integer", "minimum": 0},
            "records": {"type": "array", "items": {"$ref": _REF + "BackupTask"}},
            "count": {"type": "integer", "description": "same as totalRecords"},
            "page": {"type": "integer", "description": "same as pageNumber"},
        },
    }
    schemas["TaskIdEnvelope"] = _envelope_schema(
        "the id of the new task", {"type": "string", "pattern": TASK_ID.pattern}
    )
    schemas["EmptyEnvelope"] = _envelope_schema(
        "the request was accepted", {"nullable": True, "enum": [None]}
    )
    schemas["TaskEnvelope"] = _envelope_schema("one task", {"$ref": _REF + "BackupTask"})
    schemas["TaskPageEnvelope"] = _envelope_schema(
        "one page of tasks", {"$ref": _REF + "BackupTaskPage"}
    )
    schemas["ErrorEnvelope"] = _envelope_schema(
        "an error; data lists the problems of a validation error, else null",
        {"type": "array", "items": {"$ref": _REF + "Problem"}, "nullable": True},
    )
    return schemas


_TASK_ID_PARAMETER: Final = {
    "name": "taskId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": TASK_ID.pattern},
}


def _execute(operation_id: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": "Start a task now, in the background",
            "parameters": [_TASK_ID_PARAMETER],
            "responses": {
                "200": _response("the run has started", "EmptyEnvelope"),
                **_errors(
                    ("404", "no such task (250108)"),
                    ("409", "the task is already running (250128)"),
                ),
            },
        }
    }


def _list_parameters() -> list[dict[str, Any]]:
    return [
        {"name": "state", "in": "query", "schema": {"$ref": _REF + "TaskState"}},
        {
            "name": "lastRunState",
            "in": "query",
            "description": "only tasks whose last run ended in this state (extension): a "
            "recurring task whose last run failed is PENDING again, and found with FAILED",
            "x-repobackup-extension": True,
            "schema": {"$ref": _REF + "TaskState"},
        },
        {
            "name": "pageSize",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PAGE_SIZE,
                "default": DEFAULT_PAGE_SIZE,
            },
        },
        {
            "name": "pageNumber",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PAGE_NUMBER,
                "default": DEFAULT_PAGE_NUMBER,
            },
        },
    ]


def _paths() -> dict[str, Any]:
    return {
        BASE: {
            "post": {
                "operationId": "createTask",
                "summary": "Create a backup or restore task",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _REF + "BackupTask"}}},
                },
                "responses": {
                    "200": _response("the task was created", "TaskIdEnvelope"),
                    **_errors(("413", "request body too large (250105)")),
                },
            }
        },
        f"{BASE}/execute/{{taskId}}": _execute("executeTask"),
        "/api/job/backup/execute/{taskId}": _execute("executeTaskUnprefixed"),
        f"{BASE}/tasks": {
            "get": {
                "operationId": "listTasks",
                "summary": "List tasks, newest first",
                "parameters": _list_parameters(),
                "responses": {
                    "200": _response("one page of tasks", "TaskPageEnvelope"),
                    **_errors(),
                },
            }
        },
        **_extension_paths(),
    }


_NOT_FOUND: Final = ("404", "no such task (250108)")
_EXTENSION: Final = {"x-repobackup-extension": True, "tags": ["extensions"]}


def _task_paths(suffix: str) -> dict[str, Any]:
    """One task: GET (with its last run) and DELETE (the task and its history, never its
    backups); extensions beside the spec's endpoints."""
    return {
        "parameters": [_TASK_ID_PARAMETER],
        "get": {
            "operationId": "getTask" + suffix,
            "summary": "One task, its last run included (extension)",
            **_EXTENSION,
            "responses": {
                "200": _response("the task", "TaskEnvelope"),
                **_errors(_NOT_FOUND),
            },
        },
        "delete": {
            "operationId": "deleteTask" + suffix,
            "summary": "Remove a task and its run history; its backups stay (extension)",
            **_EXTENSION,
            "responses": {
                "200": _response("the task was removed", "EmptyEnvelope"),
                **_errors(_NOT_FOUND, ("409", "the task is running (250128)")),
            },
        },
    }


def _switch(action: str, suffix: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"{action}Task{suffix}",
            "summary": f"{action.capitalize()} the task: a scheduler "
            + ("may start it again" if action == "enable" else "never starts it")
            + " (extension)",
            **_EXTENSION,
            "parameters": [_TASK_ID_PARAMETER],
            "responses": {
                "200": _response("the task as it is now", "TaskEnvelope"),
                **_errors(_NOT_FOUND),
            },
        }
    }


def _extension_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for base, suffix in ((BASE, ""), (BASE.removeprefix("/job"), "Unprefixed")):
        paths[f"{base}/{{taskId}}"] = _task_paths(suffix)
        for action in ("enable", "disable"):
            paths[f"{base}/{{taskId}}/{action}"] = _switch(action, suffix)
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Per-task gauges in the Prometheus text format (extension)",
            **_EXTENSION,
            "responses": {
                "200": {
                    "description": "the metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "501": _response("prometheus_client is not installed", "ErrorEnvelope"),
            },
        }
    }
    return paths


# --- the limits validation enforces, as JSON Schema ---------------------------------------


def _excluded_name_characters() -> str:
    """A regex character class body for what a task name may not hold: '/', '\\', and the
    control, format and line/paragraph separator characters of the BMP (`name_problem` also
    refuses the few format characters beyond it, which the description names)."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        if unicodedata.category(chr(code)) in ("Cc", "Cf", "Zl", "Zp"):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    body = "".join(
        f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}" for low, high in ranges
    )
    return "/\\\\" + body


NAME_PATTERN: Final = (
    rf"^(?=[\s\S]*\S)(?![\s\S]*\.\.)(?!\.$)[^{_excluded_name_characters()}]{{1,{MAX_NAME}}}$"
)

# Protocols a storeLocation may name that are known to be installed wherever this runs; others
# may be installed too (the description says so), but the schema only promises these.
_PROTOCOLS = ("file", "local", "memory")


def _store_pattern() -> str:
    protocols = [*_PROTOCOLS, *(["s3", "s3a"] if importlib.util.find_spec("s3fs") else [])]
    named = "|".join(protocols)
    # fsspec reads the protocol before the first '::' or '://'; without either it is a path.
    return rf"^(?=[\s\S]*\S)(?:(?:{named})(?:::|://)[\s\S]*|(?![\s\S]*(?:::|://))[\s\S]+)$"


# Wildcard patterns always compile; after 're:' the schema only admits literal text, which
# always compiles too (validation accepts any Python regular expression there).
_SELECTION_PATTERN: Final = (
    rf"^(?!{REGEX_PREFIX})[\s\S]+$|^{REGEX_PREFIX}[^\\\\^$.|?*+()\[\]{{}}]*$"
)

# A common subset of the cron syntax that is always valid and always fires: the schema admits
# these; validation accepts the whole syntax of docs/scheduling.md.
_UNIX_CRON = (
    r"(?:\*|\*/[1-9]|[1-5]?[0-9]) (?:\*|1?[0-9]|2[0-3]) (?:\*|[1-9]|1[0-9]|2[0-8])"
    r" (?:\*|[1-9]|1[0-2]) (?:\*|[0-7]|MON-FRI)"
)
_QUARTZ_TIME = r"[1-5]?[0-9] (?:\*|\*/[1-9]|[1-5]?[0-9]) (?:\*|1?[0-9]|2[0-3])"
_QUARTZ_DAYS = (
    r"(?:(?:\*|[1-9]|1[0-9]|2[0-8]|L|LW|L-[1-9]|[1-9]W|1[0-9]W|2[0-8]W) (?:\*|[1-9]|1[0-2]) \?"
    r"|\? (?:\*|[1-9]|1[0-2]) (?:\*|[1-7]|[1-7]L|[1-7]#[1-4]|MON-FRI))"
)
CRON_PATTERN: Final = (
    rf"^(?:{_UNIX_CRON}|{_QUARTZ_TIME} {_QUARTZ_DAYS}(?: (?:19[7-9][0-9]|20[0-9][0-9]))?)$"
)


def _string(schema: dict[str, Any], **limits: Any) -> None:
    """Add *limits* to a property schema, merging descriptions."""
    description = limits.pop("description", None)
    schema.update(limits)
    if description:
        schema["description"] = description


def _constrain(schemas: dict[str, Any]) -> None:
    task = schemas["BackupTask"]["properties"]
    _string(
        task["name"],
        minLength=1,
        maxLength=MAX_NAME,
        pattern=NAME_PATTERN,
        description=(
            f"One safe path component of 1-{MAX_NAME} characters: not blank, no '/', '\\\\', "
            "'..', control or format characters, and not '.'. Required when a task is created; "
            "a listed task read back may lack it."
        ),
    )
    _string(
        task["storeLocation"],
        minLength=1,
        pattern=_store_pattern(),
        description=(
            "Where backups go (a restore: the backup to read). A local path, or a URL whose "
            "protocol fsspec knows and is installed (the pattern names those always present; "
            "s3:// with s3fs). A server started with allowed stores also requires it to lie "
            "under one of them. A DATA_RESTORE location is checked to name a backup when it runs."
        ),
    )
    _constrain_content(schemas)
    _constrain_setting(schemas)


def _constrain_content(schemas: dict[str, Any]) -> None:
    content = schemas["BackupContent"]
    content["anyOf"] = [
        {"required": ["commonData"], "properties": {"commonData": {"enum": [True]}}},
        {"required": ["projects"], "properties": {"projects": {"type": "array", "minItems": 1}}},
    ]
    content["description"] += " It must have something to do: commonData, or a projects entry."
    content["properties"]["encryption"]["description"] = (
        "Encrypt and authenticate every backup (format 2); runs need the engine's passphrase."
    )
    entry = schemas["ProjectContentInfo"]
    props = entry["properties"]
    _string(props["projectId"], minLength=1)
    for key in ("projectRegex", "repoRegex"):
        _string(
            props[key],
            minLength=1,
            pattern=_SELECTION_PATTERN,
            description=(
                "A wildcard pattern ('*' any run, '?' one character) matched against the whole "
                f"id, or '{REGEX_PREFIX}' and a Python regular expression (the schema admits "
                "literal text there; validation compiles any expression)."
            ),
        )
    entry["not"] = {
        "anyOf": [
            {
                "required": ["projectId", "projectRegex"],
                "properties": {
                    "projectId": {"type": "string"},
                    "projectRegex": {"type": "string"},
                },
            },
            {
                "required": ["repoList", "repoRegex"],
                "properties": {"repoList": {"type": "array"}, "repoRegex": {"type": "string"}},
            },
        ]
    }
    entry["description"] += " Set at most one of projectId/projectRegex and of repoList/repoRegex."


def _constrain_setting(schemas: dict[str, Any]) -> None:
    plan = schemas["ExecutionPlan"]["properties"]
    _string(
        plan["cronExpression"],
        pattern=CRON_PATTERN,
        description=(
            "A Unix (5 fields, cronie's rules) or Quartz (6-7 fields, seconds first) cron "
            "expression; see docs/scheduling.md for the whole syntax. The pattern admits a "
            "common subset; validation accepts every form Quartz and cronie accept and refuses "
            "an expression that never fires."
        ),
    )
    setting = schemas["BackupSetting"]

    def needs(strategy: str, field: str, kind: dict[str, Any]) -> dict[str, Any]:
        return {
            "required": ["executionStrategy", "executionPlan"],
            "properties": {
                "executionStrategy": {"enum": [strategy]},
                "executionPlan": {"required": [field], "properties": {field: kind}},
            },
        }

    setting["anyOf"] = [
        {"properties": {"executionStrategy": {"enum": ["IMMEDIATELY"]}}},
        needs("SPECIFIED_TIME", "executeTime", {"type": "string", "format": "date-time"}),
        needs("CRON_EXPRESSION", "cronExpression", {"type": "string"}),
    ]
    setting["description"] += (
        " SPECIFIED_TIME needs executionPlan.executeTime, CRON_EXPRESSION needs "
        "executionPlan.cronExpression."
    )
    for rule in schemas["Retention"]["properties"].values():
        _string(rule, minimum=1)
