"""The task model and its JSON mapping."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repobackup
from repobackup import (
    BackupContent,
    BackupTask,
    ConflictStrategy,
    Page,
    ProjectContentInfo,
    TaskState,
    TaskType,
    from_json,
    to_json,
)
from strategies import tasks

BACKUP_BODY: dict[str, Any] = {
    "name": "test",
    "storeLocation": "F:\\backuptest",
    "content": {"commonData": True, "compression": True, "projects": [{"projectRegex": "*"}]},
}
RESTORE_BODY: dict[str, Any] = {
    "name": "test1-restore",
    "storeLocation": "F:\\backuptest\\test1\\test1-20241224.171354.zip",
    "type": "DATA_RESTORE",
    "content": {"commonData": True, "compression": True, "projects": [{"projectRegex": "*"}]},
}
LISTED_PAGE: dict[str, Any] = {
    "pageNumber": 1,
    "pageSize": 1,
    "totalRecords": 7,
    "totalPages": 7,
    "records": [
        {
            "id": "675ab19767a452255ba84d8b",
            "createdBy": "xxxx",
            "createdDate": "2024-12-12T17:50:15.123+08:00",
            "lastModifiedBy": "xxx",
            "lastModifiedDate": "2024-12-12T17:50:15.123+08:00",
            "startDate": "2024-12-12T17:50:16+08:00",
            "endDate": "2024-12-12T17:51:00+08:00",
            "state": "FINISHED",
            "content": {
                "commonData": False,
                "compression": False,
                "projects": [
                    {
                        "projectId": "backuptest",
                        "projectRegex": None,
                        "repoList": None,
                        "repoRegex": None,
                        "excludeProjects": None,
                        "excludeRepos": None,
                    }
                ],
                "increment": None,
                "incrementDate": None,
            },
            "storeLocation": "F:\\backuptest",
            "backupSetting": {
                "conflictStrategy": "SKIP",
                "errorStrategy": "CONTINUE",
                "executionStrategy": "IMMEDIATELY",
                "executionPlan": {
                    "executeImmediately": True,
                    "executeTime": None,
                    "cronExpression": None,
                },
                "spaceCapCheck": True,
            },
            "type": "DATA_BACKUP",
        }
    ],
    "count": 7,
    "page": 1,
}


class TestSpecExamples:
    def test_backup_body_parses_with_spec_defaults(self) -> None:
        """The spec's backup request body parses, with the spec's defaults filled in."""
        task = from_json(BackupTask, BACKUP_BODY)
        assert task.name == "test"
        assert task.type is TaskType.DATA_BACKUP
        assert task.content.projects == (ProjectContentInfo(project_regex="*"),)
        assert task.backup_setting.conflict_strategy is ConflictStrategy.OVERWRITE
        assert task.backup_setting.execution_plan.execute_immediately is True
        assert task.backup_setting.space_cap_check is True

    def test_restore_body_parses(self) -> None:
        """The spec's restore request body parses as a DATA_RESTORE task."""
        task = from_json(BackupTask, RESTORE_BODY)
        assert task.type is TaskType.DATA_RESTORE
        assert task.store_location.endswith("test1-20241224.171354.zip")

    @pytest.mark.parametrize("body", [BACKUP_BODY, RESTORE_BODY])
    def test_request_bodies_round_trip(self, body: dict[str, Any]) -> None:
        """A request body survives JSON → model → JSON → model unchanged."""
        task = from_json(BackupTask, body)
        assert from_json(BackupTask, json.loads(json.dumps(to_json(task)))) == task

    def test_listed_page_round_trips_exactly(self) -> None:
        """The spec's listed page comes back key for key, count and page included."""
        page = from_json(Page[BackupTask], LISTED_PAGE)
        assert page.total_records == 7
        assert page.records[0].state is TaskState.FINISHED
        expected = copy.deepcopy(LISTED_PAGE)
        expected["records"][0]["name"] = ""  # the listing example omits the name
        assert to_json(page) == expected
        assert from_json(Page[BackupTask], to_json(page)) == page

    def test_task_json_has_the_spec_keys_only(self) -> None:
        """A task without extension values serialises to exactly the spec's keys."""
        record = LISTED_PAGE["records"][0]
        out = to_json(from_json(BackupTask, record))
        assert set(out) == set(record) | {"name"}


class TestTimes:
    def test_naive_times_are_read_in_the_given_zone(self) -> None:
        """A time without offset is read in the zone the caller names."""
        zone = timezone(timedelta(hours=8))
        body = copy.deepcopy(BACKUP_BODY)
        body["content"]["incrementDate"] = "2024-12-24T17:13:54"
        task = from_json(BackupTask, body, tz=zone)
        assert task.content.increment_date == datetime(2024, 12, 24, 17, 13, 54, tzinfo=zone)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2024-12-24T09:13:54Z", datetime(2024, 12, 24, 9, 13, 54, tzinfo=UTC)),
            ("2024-12-24 17:13:54+08:00", datetime(2024, 12, 24, 9, 13, 54, tzinfo=UTC)),
            ("2024-12-24", datetime(2024, 12, 24, tzinfo=UTC)),
        ],
    )
    def test_iso_forms_are_accepted(self, text: str, expected: datetime) -> None:
        """Offsets, Z, a space separator and a bare date are all read."""
        body = copy.deepcopy(BACKUP_BODY)
        body["content"]["incrementDate"] = text
        task = from_json(BackupTask, body, tz=UTC)
        assert task.content.increment_date == expected

    def test_output_carries_an_offset(self) -> None:
        """Times are written as ISO 8601 with their offset."""
        moment = datetime(2024, 12, 24, 17, 13, 54, tzinfo=timezone(timedelta(hours=8)))
        assert to_json(BackupContent(increment_date=moment))["incrementDate"] == (
            "2024-12-24T17:13:54+08:00"
        )


class TestRoundTrip:
    @given(tasks)
    def test_any_task_round_trips(self, task: BackupTask) -> None:
        """Every task survives to_json → JSON text → from_json unchanged."""
        data = json.loads(json.dumps(to_json(task)))
        assert from_json(BackupTask, data) == task

    def test_enums_serialise_as_plain_strings(self) -> None:
        """Enum values come out as plain str, so any JSON encoder takes them."""
        assert type(to_json(TaskState.RUNNING)) is str


def test_public_names_are_exported() -> None:
    """The contract names of DESIGN section 2 are importable from the package."""
    for name in (
        "ProjectContentInfo",
        "BackupContent",
        "ExecutionPlan",
        "BackupSetting",
        "BackupTask",
        "RunSummary",
        "Page",
        "TaskType",
        "TaskState",
        "ConflictStrategy",
        "ErrorStrategy",
        "ExecutionStrategy",
        "to_json",
        "from_json",
        "Engine",
    ):
        assert hasattr(repobackup, name), name


# Values a hand-written or foreign task body may hold where the model expects something else.
_ODD_VALUES = st.sampled_from(
    [
        None,
        "",
        " ",
        "x",
        "*",
        "re:[",
        0,
        -1,
        1,
        True,
        False,
        [],
        {},
        "2024-12-24T17:13:54",
        "0 0 * * *",
        "0 0 12 L-2 * ?",
        "not cron",
        "SKIP",
        "CRON_EXPRESSION",
        "SPECIFIED_TIME",
    ]
)


def _mangle(draw: st.DrawFn, value: object, depth: int) -> object:
    """*value* with some keys dropped and some leaves swapped for odd values."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            action = draw(st.sampled_from(["keep"] * 8 + ["drop", "swap"]))
            if action == "drop":
                continue
            out[key] = draw(_ODD_VALUES) if action == "swap" else _mangle(draw, item, depth + 1)
        return out
    if isinstance(value, list) and depth < 6:
        return [_mangle(draw, item, depth + 1) for item in value]
    return value


@st.composite
def mangled_tasks(draw: st.DrawFn) -> dict[str, object]:
    """The JSON of a valid task with keys dropped and values swapped at random."""
    mangled = _mangle(draw, to_json(draw(tasks)), 0)
    assert isinstance(mangled, dict)
    return mangled


class TestReadingAcceptsItsOwnOutput:
    def test_listed_record_round_trips(self) -> None:
        """The spec's listed record has no name; read, written and read again it is the same."""
        record = LISTED_PAGE["records"][0]
        assert "name" not in record
        task = from_json(BackupTask, record)
        again = from_json(BackupTask, json.loads(json.dumps(to_json(task))))
        assert again == task
        assert again.name == ""

    def test_creation_still_requires_a_safe_name(self) -> None:
        """A new task without a name, or with an empty one, is refused naming $.name."""
        engine = repobackup.Engine(repobackup.MemoryRepository())
        record = {key: value for key, value in LISTED_PAGE["records"][0].items() if key != "id"}
        for body in (record, {**record, "name": ""}):
            with pytest.raises(repobackup.ValidationError) as caught:
                engine.create_task(body)
            assert "$.name" in {problem.path for problem in caught.value.problems}

    @settings(max_examples=300)
    @given(data=mangled_tasks())
    def test_whatever_is_accepted_is_accepted_again(self, data: dict[str, Any]) -> None:
        """Task JSON with keys dropped and values swapped: if from_json takes it, it takes its
        own output too, and reads the same task back."""
        try:
            task = from_json(BackupTask, data, tz=UTC)
        except repobackup.ValidationError:
            return
        again = from_json(BackupTask, json.loads(json.dumps(to_json(task))), tz=UTC)
        assert again == task
