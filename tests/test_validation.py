"""Validation of tasks: every problem reported at once, each with its JSON path."""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest

from private import parse_new_task
from repobackup import BackupTask, Engine, MemoryRepository, ValidationError, from_json

GOOD: dict[str, Any] = {
    "name": "nightly",
    "storeLocation": "/tmp/backups",
    "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
}


def problems_of(body: Any, *, creating: bool = True) -> dict[str, str]:
    """Map each reported JSON path to its messages, joined by " | " (fails if valid)."""
    parse = parse_new_task if creating else functools.partial(from_json, BackupTask)
    with pytest.raises(ValidationError) as caught:
        parse(body)
    found: dict[str, str] = {}
    for problem in caught.value.problems:
        found[problem.path] = " | ".join(filter(None, [found.get(problem.path), problem.message]))
    return found


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one dotted path set to *value* (``None`` stays a JSON null)."""
    body = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return body


class TestRequiredAndTypes:
    def test_missing_required_fields_are_each_named(self) -> None:
        """A body without name, storeLocation and content names all three."""
        problems = problems_of({})
        assert problems["$.name"] == "required field missing"
        assert problems["$.storeLocation"] == "required field missing"
        assert problems["$.content"] == "required field missing"

    @pytest.mark.parametrize(
        ("path", "value", "expected"),
        [
            ("name", 5, "expected a string, got a number"),
            ("storeLocation", ["x"], "expected a string, got an array"),
            ("content.commonData", "true", "expected a boolean, got a string"),
            ("content.projects", {"projectId": "a"}, "expected an array, got an object"),
            ("content.increment", 1, "expected a boolean, got a number"),
            ("backupSetting.spaceCapCheck", None, "expected a boolean, got null"),
            ("backupSetting.executionPlan", "now", "expected an object, got a string"),
        ],
    )
    def test_wrong_types_name_the_field(self, path: str, value: Any, expected: str) -> None:
        """A value of the wrong JSON type is reported at its path with both kinds named."""
        assert problems_of(with_(path, value))["$." + path] == expected

    def test_a_string_is_not_taken_for_a_list(self) -> None:
        """repoList "abc" is an error, never the list ["a", "b", "c"]."""
        body = with_("content.projects", [{"projectId": "p", "repoList": "abc"}])
        assert problems_of(body)["$.content.projects[0].repoList"] == (
            "expected an array, got a string"
        )

    def test_list_items_are_checked_with_their_index(self) -> None:
        """A bad item of an array is reported with its index."""
        body = with_("content.projects", [{"projectId": "p", "excludeRepos": ["a", 7]}])
        assert "$.content.projects[0].excludeRepos[1]" in problems_of(body)

    def test_body_must_be_an_object(self) -> None:
        """A JSON array or null as the body is a problem at the root."""
        assert problems_of([1, 2]) == {"$": "expected an object, got an array"}
        assert problems_of(None) == {"$": "expected an object, got null"}

    def test_unknown_fields_are_named(self) -> None:
        """Unknown fields are errors listing their names, at every level."""
        body = with_("content.projectz", [])
        body["colour"] = "blue"
        problems = problems_of(body)
        assert problems["$"] == "unknown field(s): colour"
        assert problems["$.content"] == "unknown field(s): projectz"


class TestEnums:
    @pytest.mark.parametrize(
        ("path", "allowed"),
        [
            ("type", "DATA_BACKUP, DATA_RESTORE"),
            ("backupSetting.conflictStrategy", "SKIP, OVERWRITE"),
            ("backupSetting.errorStrategy", "CONTINUE, FAST_FAIL"),
            ("backupSetting.executionStrategy", "IMMEDIATELY, SPECIFIED_TIME, CRON_EXPRESSION"),
        ],
    )
    def test_unknown_enum_values_list_the_allowed_ones(self, path: str, allowed: str) -> None:
        """An unknown enum value names the field, the value and every allowed value."""
        message = problems_of(with_(path, "NOPE"))["$." + path]
        assert message == f"unknown value 'NOPE', expected one of {allowed}"


class TestRules:
    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("", "must not be empty"),
            ("a/b", "must not contain '/' or '\\'"),
            ("a\\b", "must not contain '/' or '\\'"),
            ("..", "must not contain '..' or be '.'"),
            ("x..y", "must not contain '..' or be '.'"),
            ("tab\there", "must not contain control characters"),
            ("n" * 129, "must be at most 128 characters, got 129"),
        ],
    )
    def test_unsafe_names_are_refused(self, name: str, reason: str) -> None:
        """A name must be one safe path component of 1 to 128 characters."""
        assert problems_of(with_("name", name))["$.name"] == reason

    def test_empty_store_location_is_refused(self) -> None:
        """storeLocation must not be empty."""
        assert problems_of(with_("storeLocation", " "))["$.storeLocation"] == "must not be empty"

    def test_unknown_store_protocol_is_refused(self) -> None:
        """A storeLocation whose protocol fsspec does not know is named."""
        message = problems_of(with_("storeLocation", "nosuch://bucket/x"))["$.storeLocation"]
        assert message == "unknown storage protocol 'nosuch'"

    def test_a_task_with_nothing_to_do_is_refused(self) -> None:
        """Without commonData and without projects there is nothing to back up."""
        body = with_("content", {"commonData": False, "projects": []})
        assert problems_of(body)["$.content"].startswith("nothing to do")

    def test_conflicting_fields_of_an_entry_are_refused(self) -> None:
        """projectId with projectRegex, or repoList with repoRegex, is a problem."""
        entry = {"projectId": "a", "projectRegex": "a*", "repoList": ["r"], "repoRegex": "r*"}
        problems = problems_of(with_("content.projects", [entry]))
        assert "projectId and projectRegex" in problems["$.content.projects[0]"]
        body = with_("content.projects", [{"repoList": ["r"], "repoRegex": "r*"}])
        assert "repoList and repoRegex" in problems_of(body)["$.content.projects[0]"]

    def test_patterns_must_compile(self) -> None:
        """A re: pattern that does not compile is reported with the regex error."""
        body = with_("content.projects", [{"projectRegex": "*", "repoRegex": "re:(unclosed"}])
        message = problems_of(body)["$.content.projects[0].repoRegex"]
        assert message.startswith("invalid regular expression 're:(unclosed'")

    def test_unparseable_dates_are_named(self) -> None:
        """incrementDate and executeTime must be ISO 8601."""
        body = with_("content.incrementDate", "yesterday")
        assert "not an ISO 8601" in problems_of(body)["$.content.incrementDate"]
        body = with_("backupSetting.executionPlan.executeTime", "25:00")
        assert "not an ISO 8601" in problems_of(body)["$.backupSetting.executionPlan.executeTime"]

    def test_specified_time_needs_an_execute_time(self) -> None:
        """A SPECIFIED_TIME task without executeTime is refused."""
        body = with_("backupSetting.executionStrategy", "SPECIFIED_TIME")
        path = "$.backupSetting.executionPlan.executeTime"
        assert problems_of(body)[path] == "required for SPECIFIED_TIME"

    def test_cron_strategy_needs_a_valid_expression(self) -> None:
        """A CRON_EXPRESSION task needs a cron expression that parses."""
        body = with_("backupSetting.executionStrategy", "CRON_EXPRESSION")
        path = "$.backupSetting.executionPlan.cronExpression"
        assert problems_of(body)[path] == "required for CRON_EXPRESSION"
        body["backupSetting"]["executionPlan"] = {"cronExpression": "61 * * * *"}
        assert path in problems_of(body)

    def test_retention_must_keep_at_least_one(self) -> None:
        """retention.keepLast below 1 is refused."""
        body = with_("backupSetting.retention", {"keepLast": 0})
        assert problems_of(body)["$.backupSetting.retention.keepLast"] == "must be at least 1"

    def test_every_problem_is_reported_at_once(self) -> None:
        """Type errors and rule violations in one body all come back together."""
        body = {
            "name": "../etc",
            "storeLocation": "",
            "type": "BACKUP",
            "content": {"commonData": "yes", "projects": [{"projectId": "a", "projectRegex": "b"}]},
        }
        assert set(problems_of(body)) == {
            "$.name",
            "$.storeLocation",
            "$.type",
            "$.content.commonData",
            "$.content.projects[0]",
        }

    def test_a_name_is_required_only_to_create(self) -> None:
        """A listed record may lack a name; a task to create may not."""
        body = copy.deepcopy(GOOD)
        del body["name"]
        assert from_json(BackupTask, body).name == ""
        assert problems_of(body) == {"$.name": "required field missing"}


class TestEngineCreate:
    def test_create_rejects_with_every_problem(self, tmp_path: Any) -> None:
        """Engine.create_task raises ValidationError with the problems and stores nothing."""
        engine = Engine(object())  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as caught:
            engine.create_task({"name": "", "content": {}})
        assert {p.path for p in caught.value.problems} >= {"$.name", "$.storeLocation"}
        assert engine.list_tasks().total_records == 0

    def test_create_assigns_the_engine_fields(self, tmp_path: Any) -> None:
        """A created task gets a time-ordered 24-hex id, PENDING, creator and dates."""
        engine = Engine(object(), user="alice")  # type: ignore[arg-type]
        body = with_("storeLocation", str(tmp_path))
        first, second = engine.create_task(body), engine.create_task(body)
        assert len(first) == 24
        assert int(first, 16) >= 0
        assert first[:8] <= second[:8]
        task = engine.get_task(first)
        assert task.state.value == "PENDING"
        assert task.created_by == "alice"
        assert task.created_date is not None
        assert task.created_date.tzinfo is not None


CRON_PATH = "$.backupSetting.executionPlan.cronExpression"


def _cron_task(expression: str) -> dict[str, Any]:
    body = with_("backupSetting.executionStrategy", "CRON_EXPRESSION")
    body["backupSetting"]["executionPlan"] = {"cronExpression": expression}
    return body


class TestCronAtCreation:
    @pytest.mark.parametrize(
        "expression",
        [
            "0 15 10 L-1W,L-1 * ? 2010",  # Quartz's own testIsValidExpression
            "0 0 0 1,L * ?",
            "0 0 0 2W,16 * ?",
            "0 0 0 LW * ?",
            "0 0 12 ? * 6#3",
            "1 1 1-7 * */7",
            "* * */1 * 3",
            "@daily",
        ],
    )
    def test_reference_forms_are_accepted(self, expression: str) -> None:
        """Every form Quartz or cronie accepts is accepted when the task is created."""
        engine = Engine(MemoryRepository())
        task_id = engine.create_task(_cron_task(expression))
        assert engine.get_task(task_id).backup_setting.execution_plan.cron_expression == expression

    @pytest.mark.parametrize(
        ("expression", "field"),
        [
            ("0 0 0 ? * SAT,SUN,L", "day-of-week"),  # Quartz's testQuartz640
            ("0/5 * * 32W 1 ?", "day-of-month"),  # Quartz's testQtz96
            ("0 0 /24 ? * 2-6", "hour"),  # Quartz's testHourRangeIntervalAfterSlash
            ("0 0 * * * *", "day-of-month"),  # Quartz's testQuartz621
            ("0 0 L * *", "day-of-month"),  # Quartz syntax in a Unix expression
            ("5/15 * * * *", "minute"),  # cronie takes no step after a single number
            ("* * 5-1 * *", "day-of-month"),  # cronsim's lopsided range
        ],
    )
    def test_refused_forms_name_the_field(self, expression: str, field: str) -> None:
        """What the reference refuses is refused at creation, the message naming the field."""
        engine = Engine(MemoryRepository())
        with pytest.raises(ValidationError) as caught:
            engine.create_task(_cron_task(expression))
        messages = [p.message for p in caught.value.problems if p.path == CRON_PATH]
        assert messages, caught.value.problems
        assert field in messages[0], messages
