"""Tests for `repobackup.adapters.json.JsonApi`: envelopes, error codes and messages."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import engine_fixture as _engine  # noqa: F401 - the engine fixture
from repobackup import Engine, TaskState
from repobackup.adapters.json import JsonApi, new_trace_id, parse_body
from repobackup.exceptions import MalformedRequestError
from spec_examples import SPEC_BACKUP, SPEC_RESTORE

TRACE_ID = re.compile(r"[0-9a-f]{32}")
TASK_ID = re.compile(r"[0-9a-f]{24}")

# The record of the spec's list example, reduced to its keys.
SPEC_RECORD_KEYS = {
    "id",
    "createdBy",
    "createdDate",
    "lastModifiedBy",
    "lastModifiedDate",
    "startDate",
    "endDate",
    "state",
    "content",
    "storeLocation",
    "backupSetting",
    "type",
}
SPEC_CONTENT_KEYS = {"commonData", "compression", "projects", "increment", "incrementDate"}
SPEC_ENTRY_KEYS = {
    "projectId",
    "projectRegex",
    "repoList",
    "repoRegex",
    "excludeProjects",
    "excludeRepos",
}
SPEC_SETTING_KEYS = {
    "conflictStrategy",
    "errorStrategy",
    "executionStrategy",
    "executionPlan",
    "spaceCapCheck",
}
SPEC_PLAN_KEYS = {"executeImmediately", "executeTime", "cronExpression"}
SPEC_PAGE_KEYS = {
    "pageNumber",
    "pageSize",
    "totalRecords",
    "totalPages",
    "records",
    "count",
    "page",
}


@pytest.fixture(name="api")
def _api(engine: Engine) -> JsonApi:
    return JsonApi(engine)


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> str:
    store = tmp_path / "store"
    store.mkdir()
    return str(store)


def backup_body(store: str) -> str:
    """The spec's backup request body with *store* as its storeLocation."""
    return SPEC_BACKUP % json.dumps(store)


def task_json(name: str, store: str) -> dict[str, Any]:
    """A minimal valid task."""
    return {"name": name, "storeLocation": store, "content": {"commonData": True}}


def assert_envelope(env: Mapping[str, Any]) -> None:
    """*env* is an envelope: exactly the four keys, an int code, a fresh-looking trace id."""
    assert set(env) == {"code", "message", "data", "traceId"}
    assert isinstance(env["code"], int)
    assert TRACE_ID.fullmatch(env["traceId"])
    json.dumps(env)  # JSON-serialisable as it stands


def assert_error(env: Mapping[str, Any], code: int, *fragments: str) -> None:
    """*env* is an error with *code* whose message contains every fragment."""
    assert_envelope(env)
    assert env["code"] == code, env
    assert isinstance(env["message"], str)
    for fragment in fragments:
        assert fragment in env["message"], (fragment, env["message"])


class TestParseBody:
    def test_bytes_and_text_parse_the_same(self) -> None:
        """Raw bytes and JSON text give the same data; parsed data passes through."""
        data = {"a": [1, "ü"]}
        text = json.dumps(data, ensure_ascii=False)
        assert parse_body(text.encode()) == parse_body(text) == parse_body(data) == data

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            (b"\xff\xfe", "UTF-8"),
            (b"{", "not valid JSON"),
            (b"", "empty"),
            ("   ", "empty"),
            (b"NaN", "NaN"),
            (b'{"a": Infinity}', "Infinity"),
            (b"[" * 100_000, "not valid JSON"),
        ],
    )
    def test_malformed_bodies_are_refused(self, body: bytes | str, fragment: str) -> None:
        """Bodies that are not UTF-8 JSON raise MalformedRequestError saying why."""
        with pytest.raises(MalformedRequestError, match=fragment):
            parse_body(body)


class TestCreateTask:
    def test_spec_backup_example(self, api: JsonApi, engine: Engine, store: str) -> None:
        """The spec's backup body creates a task and answers its id with code 0."""
        env = api.create_task(backup_body(store).encode(), user="alice")
        assert_envelope(env)
        assert env["code"] == 0
        assert env["message"] is None
        assert TASK_ID.fullmatch(env["data"])
        task = engine.get_task(env["data"])
        assert task.name == "test"
        assert task.store_location == store
        assert task.created_by == "alice"
        assert task.last_modified_by == "alice"
        assert task.state is TaskState.PENDING

    def test_spec_restore_example(self, api: JsonApi, engine: Engine, tmp_path: Path) -> None:
        """The spec's restore body creates a DATA_RESTORE task."""
        location = str(tmp_path / "test1" / "test1-20241224.171354.zip")
        env = api.create_task((SPEC_RESTORE % json.dumps(location)).encode())
        assert env["code"] == 0, env
        task = engine.get_task(env["data"])
        assert task.type.value == "DATA_RESTORE"
        assert task.store_location == location

    @pytest.mark.parametrize("form", ["bytes", "str", "parsed"])
    def test_every_body_form_is_accepted(
        self, api: JsonApi, engine: Engine, store: str, form: str
    ) -> None:
        """Bytes, JSON text and already-parsed data create the same task."""
        text = backup_body(store)
        body = {"bytes": text.encode(), "str": text, "parsed": json.loads(text)}[form]
        env = api.create_task(body)
        assert env["code"] == 0, env
        assert engine.get_task(env["data"]).content.common_data is True

    def test_user_defaults_to_the_engine_user(
        self, api: JsonApi, engine: Engine, store: str
    ) -> None:
        """Without a user the task is created by the engine's default user."""
        env = api.create_task(backup_body(store))
        assert engine.get_task(env["data"]).created_by == engine.user

    @pytest.mark.parametrize(
        ("body", "code", "fragments"),
        [
            (b"{", 250106, ["not valid JSON"]),
            (b"\xff\xfe", 250106, ["UTF-8"]),
            (b"", 250106, ["empty"]),
            ("[]", 250105, ["$", "expected an object, got an array"]),
            ("null", 250105, ["$", "expected an object, got null"]),
            (5, 250105, ["$", "expected an object, got a number"]),
            ({"name": 1}, 250105, ["$.name", "expected a string", "$.storeLocation"]),
            ({}, 250103, ["$.name", "$.storeLocation", "$.content", "required field missing"]),
            ({"name": "x", "content": {"commonData": True}}, 250103, ["$.storeLocation"]),
            (
                {"name": "x", "storeLocation": "/s", "content": {"commonData": True}, "zzz": 1},
                250105,
                ["zzz", "unknown field"],
            ),
            (
                {"name": "x", "storeLocation": "/s", "content": {"commonData": True}, "type": "Q"},
                250105,
                ["$.type", "'Q'"],
            ),
            (
                {"name": "a..b", "storeLocation": "/s", "content": {"commonData": True}},
                250105,
                ["$.name", ".."],
            ),
            (
                {"name": "x", "storeLocation": "/s", "content": {"projects": [{"projectId": 7}]}},
                250105,
                ["$.content.projects[0].projectId"],
            ),
        ],
    )
    def test_bad_bodies_get_a_code_naming_the_field(
        self, api: JsonApi, body: Any, code: int, fragments: list[str]
    ) -> None:
        """Each bad body gets its error code and a message naming the offending field."""
        assert_error(api.create_task(body), code, *fragments)

    def test_problems_are_listed_in_data(self, api: JsonApi) -> None:
        """A validation error lists every problem with its path in data."""
        env = api.create_task({"name": 1})
        assert sorted(env["data"], key=lambda p: p["path"]) == [
            {"path": "$.content", "message": "required field missing"},
            {"path": "$.name", "message": "expected a string, got a number"},
            {"path": "$.storeLocation", "message": "required field missing"},
        ]

    def test_missing_and_invalid_together_is_invalid(self, api: JsonApi) -> None:
        """A missing field with an invalid one is reported as 250105, not 250103."""
        env = api.create_task({"name": 1, "content": {"commonData": True}})
        assert_error(env, 250105, "$.name", "$.storeLocation")

    def test_huge_values_are_not_echoed_whole(self, api: JsonApi, store: str) -> None:
        """A 10 MB name or enum value comes back as 250105 with a short message."""
        body = task_json("n" * 10_000_000, store) | {"type": "T" * 10_000_000}
        env = api.create_task(body)
        assert_error(env, 250105, "$.name", "$.type")
        assert len(json.dumps(env)) < 5_000

    def test_trace_ids_are_fresh(self, api: JsonApi, store: str) -> None:
        """Every envelope, success or error, carries its own trace id."""
        ids = {api.create_task(backup_body(store))["traceId"], api.create_task(b"{")["traceId"]}
        ids.add(api.create_task(b"{")["traceId"])
        assert len(ids) == 3

    def test_unexpected_failure_is_a_logged_system_error(
        self, api: JsonApi, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An exception the engine did not expect becomes 250102, logged with its traceback
        under the trace id, and the message leaks nothing of it."""

        class Exploding(Mapping[str, Any]):
            def __getitem__(self, key: str) -> Any:
                raise RuntimeError("secret detail")

            def __iter__(self) -> Iterator[str]:
                return iter(["name"])

            def __len__(self) -> int:
                return 1

        with caplog.at_level(logging.ERROR, logger="repobackup"):
            env = api.create_task(Exploding())
        assert_error(env, 250102, env["traceId"])
        assert "secret" not in env["message"]
        assert "Traceback" not in env["message"]
        assert env["data"] is None
        logged = [r for r in caplog.records if env["traceId"] in r.getMessage()]
        assert logged
        assert logged[0].exc_info is not None
        assert "secret detail" in str(logged[0].exc_info[1])


class TestExecuteTask:
    def test_starts_the_task_in_the_background(
        self, api: JsonApi, engine: Engine, store: str
    ) -> None:
        """A known task is started and the call answers code 0 with null data; the run ends
        FINISHED or FAILED, never left RUNNING."""
        task_id = engine.create_task(task_json("run", store))
        env = api.execute_task(task_id)
        assert_envelope(env)
        assert (env["code"], env["message"], env["data"]) == (0, None, None)
        engine.close()  # waits for the background run
        task = engine.get_task(task_id)
        assert task.state in (TaskState.FINISHED, TaskState.FAILED)
        assert task.start_date is not None
        assert task.last_run is not None

    @pytest.mark.parametrize("task_id", ["0123456789abcdef01234567", "../etc/passwd", ""])
    def test_unknown_task_is_not_found(self, api: JsonApi, task_id: str) -> None:
        """An id no task has gets 250108 naming the id."""
        assert_error(api.execute_task(task_id), 250108, repr(task_id))

    def test_non_string_id_is_invalid(self, api: JsonApi) -> None:
        """A task id that is not a string gets 250105 naming taskId."""
        assert_error(api.execute_task(5), 250105, "taskId")

    def test_running_task_is_refused(self, api: JsonApi, engine: Engine, store: str) -> None:
        """A task already running (here held by another owner) gets 250128."""
        task_id = engine.create_task(task_json("busy", store))
        engine.tasks.start(task_id, owner="elsewhere", now=engine.now())
        assert_error(api.execute_task(task_id), 250128, task_id)
        assert engine.get_task(task_id).state is TaskState.RUNNING

    def test_huge_id_is_clipped(self, api: JsonApi) -> None:
        """A 10 MB task id is not echoed whole."""
        env = api.execute_task("x" * 10_000_000)
        assert_error(env, 250108, "xxxx")
        assert len(env["message"]) < 1_000


class TestListTasks:
    def test_defaults_and_spec_shape(self, api: JsonApi, engine: Engine, store: str) -> None:
        """Without parameters the first 20 tasks come back, in the spec's page and record
        shape."""
        engine.create_task(json.loads(backup_body(store)))
        env = api.list_tasks()
        assert (env["code"], env["message"]) == (0, None)
        page = env["data"]
        assert set(page) == SPEC_PAGE_KEYS
        assert (page["pageNumber"], page["pageSize"], page["count"], page["page"]) == (1, 20, 1, 1)
        record = page["records"][0]
        assert set(record) >= SPEC_RECORD_KEYS
        assert set(record["content"]) == SPEC_CONTENT_KEYS
        assert set(record["content"]["projects"][0]) == SPEC_ENTRY_KEYS
        assert set(record["backupSetting"]) == SPEC_SETTING_KEYS
        assert set(record["backupSetting"]["executionPlan"]) == SPEC_PLAN_KEYS
        assert record["state"] == "PENDING"
        assert record["storeLocation"] == store

    @pytest.mark.parametrize(("size", "number"), [("2", "2"), (2, 2), (" 2 ", "+2")])
    def test_strings_and_ints_page_alike(
        self, api: JsonApi, engine: Engine, store: str, size: Any, number: Any
    ) -> None:
        """pageSize and pageNumber are read from query-string text or ints alike."""
        ids = [engine.create_task(task_json(f"t{i}", store)) for i in range(5)]
        page = api.list_tasks(page_size=size, page_number=number)["data"]
        assert (page["pageSize"], page["pageNumber"], page["totalRecords"]) == (2, 2, 5)
        assert page["totalPages"] == 3
        newest_first = ids[::-1]
        assert [r["id"] for r in page["records"]] == newest_first[2:4]

    def test_empty_strings_mean_not_given(self, api: JsonApi, engine: Engine, store: str) -> None:
        """`?state=&pageSize=&pageNumber=` lists like no parameters at all."""
        engine.create_task(task_json("t", store))
        env = api.list_tasks("", "", "")
        assert env["code"] == 0, env
        assert (env["data"]["pageSize"], env["data"]["totalRecords"]) == (20, 1)

    @pytest.mark.parametrize("state", ["RUNNING", TaskState.RUNNING])
    def test_state_filters(
        self, api: JsonApi, engine: Engine, store: str, state: str | TaskState
    ) -> None:
        """Only tasks in the given state are listed."""
        busy = engine.create_task(task_json("busy", store))
        engine.create_task(task_json("idle", store))
        engine.tasks.start(busy, owner="elsewhere", now=engine.now())
        records = api.list_tasks(state)["data"]["records"]
        assert [r["id"] for r in records] == [busy]

    @pytest.mark.parametrize(
        ("params", "fragments"),
        [
            ({"state": "FOO"}, ["state", "'FOO'", "PENDING"]),
            ({"state": "pending"}, ["state", "'pending'"]),
            ({"state": 3}, ["state"]),
            ({"page_size": 0}, ["pageSize", "between 1 and 1000"]),
            ({"page_size": "1001"}, ["pageSize", "1001"]),
            ({"page_size": 100_000}, ["pageSize"]),
            ({"page_size": "abc"}, ["pageSize", "'abc'"]),
            ({"page_size": "1.5"}, ["pageSize"]),
            ({"page_size": True}, ["pageSize"]),
            ({"page_number": 0}, ["pageNumber"]),
            ({"page_number": -1}, ["pageNumber"]),
            ({"page_number": "-1"}, ["pageNumber"]),
            ({"page_number": "٣"}, ["pageNumber"]),
            ({"page_number": "9" * 100}, ["pageNumber"]),
        ],
    )
    def test_bad_parameters_are_invalid(
        self, api: JsonApi, params: dict[str, Any], fragments: list[str]
    ) -> None:
        """A bad state, pageSize or pageNumber gets 250105 naming the parameter."""
        env = api.list_tasks(**params)
        assert_error(env, 250105, *fragments)
        assert env["data"][0]["path"] == fragments[0]

    def test_every_bad_parameter_is_named(self, api: JsonApi) -> None:
        """All bad parameters are reported together."""
        env = api.list_tasks("FOO", "0", "x")
        assert_error(env, 250105, "state", "pageSize", "pageNumber")
        assert [p["path"] for p in env["data"]] == ["state", "pageSize", "pageNumber"]

    @given(
        state=st.one_of(st.none(), st.sampled_from(["PENDING", "FAILED", "X"]), st.text()),
        size=st.one_of(st.none(), st.integers(-5, 1200), st.text(max_size=6)),
        number=st.one_of(st.none(), st.integers(-5, 3), st.text(max_size=6)),
    )
    def test_any_parameters_get_an_envelope(self, state: Any, size: Any, number: Any) -> None:
        """Whatever the parameters, the answer is an envelope: 0 when each is absent or in
        range, else 250105."""
        api = JsonApi(Engine(object()))

        def valid(value: Any, low: int, high: int) -> bool:
            if value is None or value == "":
                return True
            if isinstance(value, str):
                if not re.fullmatch(r"[+-]?[0-9]+", value.strip()):
                    return False
                value = int(value.strip())
            return low <= value <= high

        ok = (
            (state in (None, "") or state in TaskState.__members__)
            and valid(size, 1, 1000)
            and valid(number, 1, 2**31 - 1)
        )
        env = api.list_tasks(state, size, number)
        assert_envelope(env)
        assert env["code"] == (0 if ok else 250105), env


def test_new_trace_id_is_32_hex() -> None:
    """Trace ids are 32 lowercase hex characters and differ between calls."""
    first, second = new_trace_id(), new_trace_id()
    assert TRACE_ID.fullmatch(first)
    assert first != second
