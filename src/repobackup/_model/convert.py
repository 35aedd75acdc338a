"""The one JSON converter: camelCase names, strict types, every problem reported with its path."""

from __future__ import annotations

import enum
import re
import typing
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

from ..exceptions import Problem, ValidationError
from .task import (
    BackupTask,
    ConflictStrategy,
    ErrorStrategy,
    ExecutionStrategy,
    Page,
    TaskState,
    TaskType,
)
from .times import format_datetime, naive_zone, parse_datetime

__all__ = ["converter", "from_json", "json_name", "parse_new_task", "to_json"]

T = TypeVar("T")

converter = make_converter(forbid_extra_keys=True)

# Extension fields (not in the spec) are left out of the JSON while they hold their default
# (None; ``enabled``: true), so that the spec's own shapes come out exactly as the spec shows.
_OMIT_IF_NONE = {
    ("BackupSetting", "retention"),
    ("BackupTask", "last_run"),
    ("BackupTask", "enabled"),
    ("BackupContent", "encryption"),
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_name(attribute: str) -> str:
    """The JSON (camelCase) name of a model attribute, as the converter writes it."""
    return _camel(attribute)


def _strict(kind: type, label: str) -> Any:
    def structure(value: Any, _: Any) -> Any:
        # bool is an int in Python; JSON keeps them apart, so do we.
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {label}, got a boolean")
        if not isinstance(value, kind):
            raise TypeError(f"expected {label}, got {_json_kind(value)}")
        return value

    return structure


_JSON_KINDS: tuple[tuple[Any, str], ...] = (
    (type(None), "null"),
    (bool, "a boolean"),  # before int: a bool is an int in Python
    (int | float, "a number"),
    (str, "a string"),
    (list | tuple, "an array"),
    (Mapping, "an object"),
)


def _json_kind(value: Any) -> str:
    """How JSON would call the kind of *value* ("a string", "null", ...)."""
    return next(
        (label for kind, label in _JSON_KINDS if isinstance(value, kind)), type(value).__name__
    )


for _kind, _label in ((bool, "a boolean"), (int, "an integer"), (str, "a string")):
    converter.register_structure_hook(_kind, _strict(_kind, _label))


def _structure_datetime(value: Any, _: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 string, got {_json_kind(value)}")
    return parse_datetime(value)


converter.register_structure_hook(datetime, _structure_datetime)
converter.register_unstructure_hook(datetime, format_datetime)


def _enum_hook(cls: type[enum.Enum]) -> Any:
    allowed = ", ".join(str(member.value) for member in cls)

    def structure(value: Any, _: Any) -> enum.Enum:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except (ValueError, TypeError):
            raise ValueError(f"unknown value {value!r}, expected one of {allowed}") from None

    return structure


# Each enum by class: the str-valued enums are str subclasses and would else get the str hook.
for _enum in (TaskType, TaskState, ConflictStrategy, ErrorStrategy, ExecutionStrategy):
    converter.register_structure_hook(_enum, _enum_hook(_enum))
    converter.register_unstructure_hook(_enum, lambda member: member.value)


def _is_homogeneous_tuple(cls: Any) -> bool:
    args = typing.get_args(cls)
    return typing.get_origin(cls) is tuple and len(args) == 2 and args[1] is Ellipsis


def _tuple_hook(cls: Any) -> Any:
    item_type = typing.get_args(cls)[0]
    inner = converter.get_structure_hook(item_type)

    def structure(value: Any, _: Any) -> tuple[Any, ...]:
        # A string is iterable, but "abc" is not the list ["a", "b", "c"].
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected an array, got {_json_kind(value)}")
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(inner(item, item_type))
            except Exception as exc:
                exc.__notes__ = [
                    *getattr(exc, "__notes__", []),
                    cattrs.IterableValidationNote(
                        f"Structuring {cls} @ index {index}", index, item_type
                    ),
                ]
                errors.append(exc)
        if errors:
            raise cattrs.IterableValidationError(f"While structuring {cls}", errors, cls)
        return tuple(items)

    return structure


converter.register_structure_hook_factory(_is_homogeneous_tuple, _tuple_hook)


def _attrs_overrides(cls: type) -> dict[str, Any]:
    return {
        field.name: override(
            rename=_camel(field.name),
            omit_if_default=(cls.__name__, field.name) in _OMIT_IF_NONE,
        )
        for field in attrs.fields(cls)
    }


def _is_page(cls: Any) -> bool:
    return cls is Page or typing.get_origin(cls) is Page


def _unstructure_factory(cls: Any) -> Any:
    base = make_dict_unstructure_fn(cls, converter, **_attrs_overrides(_attrs_class(cls)))
    if not _is_page(cls):
        return base

    def unstructure_page(page: Any) -> dict[str, Any]:
        data = base(page)
        data["count"] = page.total_records
        data["page"] = page.page_number
        return data

    return unstructure_page


def _structure_factory(cls: Any) -> Any:
    target = _attrs_class(cls)
    base = make_dict_structure_fn(
        cls, converter, _cattrs_forbid_extra_keys=not _is_page(cls), **_attrs_overrides(target)
    )

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {_json_kind(value)}")
        if _is_page(cls):
            value = {k: v for k, v in value.items() if k not in ("count", "page")}
        return base(value, cls)

    return structure


def _attrs_class(cls: Any) -> type:
    return typing.get_origin(cls) or cls  # type: ignore[no-any-return]


def _is_attrs(cls: Any) -> bool:
    return attrs.has(_attrs_class(cls))


converter.register_unstructure_hook_factory(_is_attrs, _unstructure_factory)
converter.register_structure_hook_factory(_is_attrs, _structure_factory)


def to_json(obj: Any) -> Any:
    """Turn a model object (or a list of them) into JSON-compatible data in the spec's camelCase."""
    return converter.unstructure(obj)


_PATH_TAIL = re.compile(r"^(?P<message>.*) @ (?P<path>\$.*)$", re.DOTALL)


def problems_from(exc: Exception) -> list[Problem]:
    """The problems of a cattrs structuring error, each with its JSON path."""
    problems = []
    for line in cattrs.transform_error(exc, format_exception=_format_exception):
        match = _PATH_TAIL.match(line)
        if match:
            problems.append(Problem(_camel_path(match["path"]), match["message"]))
        else:
            problems.append(Problem("$", line))
    return problems


def _camel_path(path: str) -> str:
    # transform_error names attributes; the caller sent (and reads) the JSON names.
    return re.sub(r"\.([A-Za-z0-9_]+)", lambda m: "." + _camel(m[1]), path)


def _format_exception(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown field(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, TypeError | ValueError):
        text = str(exc)
        if (
            text.startswith("expected")
            or text.startswith("unknown value")
            or text.startswith("not an ISO")
        ):
            return text
        return f"invalid value: {text}" if text else "invalid value"
    return f"invalid value: {exc}"


def from_json(cls: type[T], data: Any, *, tz: tzinfo | None = None) -> T:
    """Build a *cls* from JSON data, or raise `ValidationError` listing every problem.

    Times without an offset are read in *tz* (default: the machine's local zone). For a
    `BackupTask` the behaviour rules (safe name, patterns, cron, schedule) are checked too,
    except that a task being read may lack a name (the spec's listed records have none); new
    tasks go through `parse_new_task`. Whatever this accepts, it accepts again from
    `to_json` of the result.
    """
    return _structure(cls, data, tz=tz, creating=False)


def parse_new_task(data: Any, *, tz: tzinfo | None = None) -> BackupTask:
    """A task about to be created: `from_json` plus the rules only creation has (a name)."""
    return _structure(BackupTask, data, tz=tz, creating=True)


def _structure(cls: type[T], data: Any, *, tz: tzinfo | None, creating: bool) -> T:
    problems: list[Problem] = []
    result: Any = None
    with naive_zone(tz):
        try:
            result = converter.structure(data, cls)
        except Exception as exc:
            problems.extend(problems_from(exc))
        if cls is BackupTask:
            from .rules import task_problems

            # A task being read is checked in the form `to_json` writes it, so that whatever
            # was read once reads again from its own output (defaults filled in included).
            checked = data if creating or result is None else converter.unstructure(result)
            problems.extend(
                p for p in task_problems(checked, creating=creating) if p not in problems
            )
    if problems:
        raise ValidationError(problems)
    return typing.cast(T, result)
