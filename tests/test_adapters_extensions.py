"""Tests for the HTTP extensions beside the spec's endpoints: one task (GET, DELETE), enable and
disable, lastRunState on the listing, and /metrics, over a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import BASE, BlockingRepository, Server, make_repository, serving
from repobackup import Engine, Scheduler, SqliteTaskStore, TaskState
from repobackup.adapters.json import JsonApi
from repobackup.adapters.wsgi import make_app, openapi_document

UNPREFIXED = BASE.removeprefix("/job")


def body(store: Path, *, cron: str | None = None, name: str = "nightly") -> dict[str, Any]:
    """A backup task of the demo project, recurring when *cron* is given."""
    setting: dict[str, Any] = {}
    if cron is not None:
        setting = {
            "executionStrategy": "CRON_EXPRESSION",
            "executionPlan": {"cronExpression": cron},
            "errorStrategy": "FAST_FAIL",
        }
    return {
        "name": name,
        "storeLocation": str(store),
        "content": {"projects": [{"projectId": "demo"}]},
        "backupSetting": setting,
    }


@pytest.fixture(name="tasks")
def _tasks(tmp_path: Path) -> Iterator[SqliteTaskStore]:
    store = SqliteTaskStore(tmp_path / "tasks.db")
    yield store
    store.close()


@pytest.fixture(name="engine")
def _engine(tasks: SqliteTaskStore) -> Iterator[Engine]:
    with Engine(make_repository(), tasks=tasks) as engine:
        yield engine


@pytest.fixture(name="server")
def _server(engine: Engine) -> Iterator[Server]:
    with serving(make_app(engine)) as server:
        yield server


def test_get_task_with_its_last_run(server: Server, engine: Engine, tmp_path: Path) -> None:
    """GET {taskId} answers the task, `enabled` and its last run included, with or without
    the /job prefix; an unknown id is 404 with 250108."""
    task_id = engine.create_task(body(tmp_path / "store"))
    engine.execute(task_id)
    for base in (BASE, UNPREFIXED):
        response = server.request("GET", f"{base}/{task_id}")
        assert response.status == 200, response
        data = response.json["data"]
        assert data["id"] == task_id
        assert data["enabled"] is True
        assert data["lastRun"]["state"] == "FINISHED"
        assert data["lastRun"]["counts"]["recordsWritten"] > 0
    missing = server.request("GET", f"{BASE}/{'0' * 24}")
    assert (missing.status, missing.json["code"]) == (404, 250108)


def test_disable_then_enable(server: Server, engine: Engine, tmp_path: Path) -> None:
    """POST .../disable keeps the scheduler from starting a due task; .../enable lets it."""
    task_id = engine.create_task(body(tmp_path / "store", cron="* * * * *"))
    response = server.request("POST", f"{BASE}/{task_id}/disable", headers={"X-BKREPO-UID": "ops"})
    assert response.status == 200, response
    assert response.json["data"]["enabled"] is False
    assert response.json["data"]["lastModifiedBy"] == "ops"
    assert Scheduler(engine).next_run(task_id) is None
    assert engine.get_task(task_id).enabled is False
    response = server.request("POST", f"{UNPREFIXED}/{task_id}/enable")
    assert response.json["data"]["enabled"] is True
    assert Scheduler(engine).next_run(task_id) is not None
    wrong = server.request("GET", f"{BASE}/{task_id}/enable")
    assert (wrong.status, wrong.json["code"], wrong.headers["Allow"]) == (405, 250112, "POST")
    missing = server.request("POST", f"{BASE}/{'0' * 24}/disable")
    assert (missing.status, missing.json["code"]) == (404, 250108)


def test_delete_removes_the_task(server: Server, engine: Engine, tmp_path: Path) -> None:
    """DELETE {taskId} removes the task and its history; the backup stays in the store."""
    store = tmp_path / "store"
    task_id = engine.create_task(body(store))
    engine.execute(task_id)
    before = sorted(store.rglob("*"))
    response = server.request("DELETE", f"{BASE}/{task_id}")
    assert (response.status, response.json["code"], response.json["data"]) == (200, 0, None)
    assert engine.list_tasks().total_records == 0
    assert sorted(store.rglob("*")) == before
    again = server.request("DELETE", f"{BASE}/{task_id}")
    assert (again.status, again.json["code"]) == (404, 250108)


def test_delete_while_running_is_409(tmp_path: Path) -> None:
    """A running task is not deleted: 409 with 250128; once it ended, it can be."""
    source = BlockingRepository()
    with Engine(source) as engine, serving(make_app(engine)) as server:
        task_id = engine.create_task(body(tmp_path / "store"))
        future = engine.submit(task_id)
        assert source.reading.wait(timeout=30)
        response = server.request("DELETE", f"{BASE}/{task_id}")
        assert (response.status, response.json["code"]) == (409, 250128)
        source.go_on.set()
        assert future.result(timeout=60).state is TaskState.FINISHED
        assert server.request("DELETE", f"{BASE}/{task_id}").status == 200


def test_list_by_last_run_state(tmp_path: Path, tasks: SqliteTaskStore) -> None:
    """lastRunState=FAILED finds a recurring task whose run failed, though it is PENDING."""
    source = make_repository()
    source.fail_records.add("/a.jar")
    with Engine(source, tasks=tasks) as engine, serving(make_app(engine)) as server:
        failing = engine.create_task(body(tmp_path / "a", cron="0 2 * * *"))
        engine.create_task(body(tmp_path / "b", name="other"))
        assert engine.execute(failing).state is TaskState.FAILED
        by_state = server.request("GET", f"{BASE}/tasks?state=FAILED")
        assert by_state.json["data"]["totalRecords"] == 0
        found = server.request("GET", f"{BASE}/tasks?lastRunState=FAILED")
        assert [t["id"] for t in found.json["data"]["records"]] == [failing]
        bad = server.request("GET", f"{BASE}/tasks?lastRunState=BROKEN")
        assert (bad.status, bad.json["code"]) == (400, 250105)
        assert "lastRunState" in bad.json["message"]


def test_json_api_extensions(engine: Engine, tmp_path: Path) -> None:
    """JsonApi has the same calls, answering envelopes and never raising for bad input."""
    api = JsonApi(engine)
    task_id = engine.create_task(body(tmp_path / "store"))
    assert api.get_task(task_id)["data"]["id"] == task_id
    assert api.set_enabled(task_id, False, user="ops")["data"]["enabled"] is False
    assert api.get_task(42)["code"] == 250105
    assert api.delete_task(task_id)["code"] == 0
    assert api.delete_task(task_id)["code"] == 250108


def test_openapi_documents_the_extensions() -> None:
    """Every extension is in the OpenAPI document, marked as one; the task schema has
    `enabled`; the listing takes lastRunState."""
    document = openapi_document()
    paths = document["paths"]
    for base in (BASE, UNPREFIXED):
        assert set(paths[f"{base}/{{taskId}}"]) >= {"get", "delete"}
        assert "post" in paths[f"{base}/{{taskId}}/enable"]
        assert "post" in paths[f"{base}/{{taskId}}/disable"]
        assert paths[f"{base}/{{taskId}}"]["delete"]["x-repobackup-extension"] is True
    assert "/metrics" in paths
    assert "enabled" in document["components"]["schemas"]["BackupTask"]["properties"]
    names = [p["name"] for p in paths[f"{BASE}/tasks"]["get"]["parameters"]]
    assert "lastRunState" in names
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document)
