"""Tests for `repobackup.adapters.wsgi`: the endpoints over a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import Response, Server, serving
from helpers import engine_fixture as _engine  # noqa: F401 - the engine fixture
from repobackup import Engine, SqliteRepository, TaskState, ValidationError, to_json
from repobackup.adapters.wsgi import (
    bearer_token_authorizer,
    http_status,
    make_app,
    openapi_document,
)
from spec_examples import SPEC_BACKUP, SPEC_RESTORE

TRACE_ID = re.compile(r"[0-9a-f]{32}")
BASE = "/job/api/job/backup"


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> str:
    store = tmp_path / "store"
    store.mkdir()
    return str(store)


@pytest.fixture(name="server")
def _server(engine: Engine) -> Iterator[Server]:
    with serving(make_app(engine)) as server:
        yield server


def task_json(name: str, store: str) -> dict[str, Any]:
    """A minimal valid task."""
    return {"name": name, "storeLocation": store, "content": {"commonData": True}}


def assert_envelope(response: Response, status: int, code: int, *fragments: str) -> None:
    """The response has *status*, a JSON envelope with *code*, and every fragment in its
    message."""
    assert response.status == status, response
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json
    assert set(body) == {"code", "message", "data", "traceId"}, body
    assert body["code"] == code, body
    assert TRACE_ID.fullmatch(body["traceId"])
    for fragment in fragments:
        assert fragment in body["message"], (fragment, body["message"])


class TestCreate:
    def test_spec_backup_example(self, server: Server, engine: Engine, store: str) -> None:
        """The spec's backup body creates a task; the X-BKREPO-UID header is its creator."""
        response = server.create(SPEC_BACKUP % json.dumps(store), {"X-BKREPO-UID": "alice"})
        assert_envelope(response, 200, 0)
        assert response.json["message"] is None
        task = engine.get_task(response.json["data"])
        assert (task.name, task.store_location, task.created_by) == ("test", store, "alice")

    def test_spec_restore_example(self, server: Server, engine: Engine, tmp_path: Path) -> None:
        """The spec's restore body creates a DATA_RESTORE task."""
        location = str(tmp_path / "test1" / "test1-20241224.171354.zip")
        response = server.create(SPEC_RESTORE % json.dumps(location))
        assert_envelope(response, 200, 0)
        assert engine.get_task(response.json["data"]).type.value == "DATA_RESTORE"

    def test_creator_defaults_to_anonymous(
        self, server: Server, engine: Engine, store: str
    ) -> None:
        """Without authorize and without X-BKREPO-UID the creator is anonymous."""
        response = server.create(json.dumps(task_json("t", store)))
        assert engine.get_task(response.json["data"]).created_by == "anonymous"

    def test_utf8_user_header(self, server: Server, engine: Engine, store: str) -> None:
        """A UTF-8 X-BKREPO-UID header names the creator correctly."""
        response = server.create(
            json.dumps(task_json("t", store)), {"X-BKREPO-UID": "张三".encode()}
        )
        assert engine.get_task(response.json["data"]).created_by == "张三"

    @pytest.mark.parametrize(
        ("body", "status", "code", "fragments"),
        [
            (b"{", 400, 250106, ["not valid JSON"]),
            (b"\xff\xfe", 400, 250106, ["UTF-8"]),
            (b"", 400, 250106, ["empty"]),
            (b"[]", 400, 250105, ["expected an object"]),
            (b'{"name": 1}', 400, 250105, ["$.name", "$.storeLocation"]),
            (b"{}", 400, 250103, ["$.name", "$.storeLocation", "$.content"]),
        ],
    )
    def test_bad_bodies(
        self, server: Server, body: bytes, status: int, code: int, fragments: list[str]
    ) -> None:
        """A bad body gets 400 with the code and a message naming the field."""
        assert_envelope(server.create(body), status, code, *fragments)

    def test_declared_body_over_the_cap_is_413(self, server: Server) -> None:
        """A body declared larger than 1 MiB is refused with 413 before it is read."""
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            conn.putrequest("POST", BASE)
            conn.putheader("Content-Length", str(2 << 20))
            conn.endheaders(b"{}")
            response = conn.getresponse()
            result = Response(response.status, response.headers, response.read())
        finally:
            conn.close()
        assert_envelope(result, 413, 250105, "too large")

    def test_cap_is_configurable(self, engine: Engine, store: str) -> None:
        """With max_body set, a real body just over it gets 413 and one under it is read."""
        body = json.dumps(task_json("t", store)).encode()
        with serving(make_app(engine, max_body=len(body))) as server:
            assert_envelope(server.create(body), 200, 0)
            assert_envelope(server.create(body + b" "), 413, 250105, str(len(body)))

    def test_bad_content_length(self, server: Server) -> None:
        """A Content-Length that is not a number gets 400 naming the header."""
        response = server.request("POST", BASE, None, {"Content-Length": "abc"})
        assert_envelope(response, 400, 250105, "Content-Length")


class TestExecute:
    @pytest.mark.parametrize("prefix", ["/job/api/job/backup", "/api/job/backup"])
    def test_starts_the_task(self, server: Server, engine: Engine, store: str, prefix: str) -> None:
        """Both spellings of the execute path start the task and answer 200 at once."""
        task_id = engine.create_task(task_json("t", store))
        response = server.request("POST", f"{prefix}/execute/{task_id}")
        assert_envelope(response, 200, 0)
        assert response.json["data"] is None
        engine.close()
        assert engine.get_task(task_id).state in (TaskState.FINISHED, TaskState.FAILED)

    def test_unknown_task_is_404(self, server: Server) -> None:
        """An unknown task id gets 404 with code 250108 naming the id."""
        response = server.request("POST", f"{BASE}/execute/0123456789abcdef01234567")
        assert_envelope(response, 404, 250108, "0123456789abcdef01234567")

    def test_running_task_is_409(self, server: Server, engine: Engine, store: str) -> None:
        """A task that is already running gets 409 with code 250128."""
        task_id = engine.create_task(task_json("t", store))
        engine.tasks.start(task_id, owner="elsewhere", now=engine.now())
        assert_envelope(server.request("POST", f"{BASE}/execute/{task_id}"), 409, 250128)

    def test_missing_id_is_an_unknown_url(self, server: Server) -> None:
        """The execute path without an id is not an endpoint."""
        assert_envelope(server.request("POST", f"{BASE}/execute/"), 404, 250130)


class TestList:
    def test_spec_shape_and_paging(self, server: Server, engine: Engine, store: str) -> None:
        """Tasks come back newest first in the spec's page shape, paged by the query."""
        ids = [engine.create_task(task_json(f"t{i}", store)) for i in range(3)]
        response = server.request("GET", f"{BASE}/tasks?pageSize=2&pageNumber=1")
        assert_envelope(response, 200, 0)
        page = response.json["data"]
        assert (page["totalRecords"], page["totalPages"], page["count"], page["page"]) == (
            3,
            2,
            3,
            1,
        )
        assert [r["id"] for r in page["records"]] == ids[::-1][:2]
        assert page["records"][0]["backupSetting"]["executionPlan"]["executeImmediately"] is True

    def test_empty_parameters_mean_defaults(
        self, server: Server, engine: Engine, store: str
    ) -> None:
        """`?state=&pageSize=&pageNumber=` gives the first page of 20."""
        engine.create_task(task_json("t", store))
        response = server.request("GET", f"{BASE}/tasks?state=&pageSize=&pageNumber=")
        assert_envelope(response, 200, 0)
        assert (response.json["data"]["pageSize"], response.json["data"]["count"]) == (20, 1)

    def test_state_filter(self, server: Server, engine: Engine, store: str) -> None:
        """?state=RUNNING lists only running tasks."""
        busy = engine.create_task(task_json("busy", store))
        engine.create_task(task_json("idle", store))
        engine.tasks.start(busy, owner="elsewhere", now=engine.now())
        response = server.request("GET", f"{BASE}/tasks?state=RUNNING")
        assert [r["id"] for r in response.json["data"]["records"]] == [busy]

    @pytest.mark.parametrize(
        ("query", "fragments"),
        [
            ("state=FOO", ["state", "FOO"]),
            ("pageSize=0", ["pageSize"]),
            ("pageSize=1001", ["pageSize"]),
            ("pageSize=x", ["pageSize"]),
            ("pageNumber=0", ["pageNumber"]),
            ("pageNumber=-1", ["pageNumber"]),
            ("state=PENDING&state=FAILED", ["state", "more than once"]),
            ("state=%ff", ["state", "UTF-8"]),
        ],
    )
    def test_bad_query(self, server: Server, query: str, fragments: list[str]) -> None:
        """A bad query parameter gets 400 with 250105 naming it."""
        response = server.request("GET", f"{BASE}/tasks?{query}")
        assert_envelope(response, 400, 250105, *fragments)


class TestRouting:
    @pytest.mark.parametrize("path", ["/", "/job/api/job/backup/", "/job/api/job/backupx", "/x/y"])
    def test_unknown_path_is_404(self, server: Server, path: str) -> None:
        """A path that is no endpoint gets 404 with code 250130."""
        assert_envelope(server.request("GET", path), 404, 250130)

    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("GET", BASE, "POST"),
            ("DELETE", BASE, "POST"),
            ("POST", f"{BASE}/tasks", "GET"),
            ("GET", f"{BASE}/execute/0123456789abcdef01234567", "POST"),
            ("PUT", "/api/job/backup/execute/0123456789abcdef01234567", "POST"),
            ("POST", f"{BASE}/openapi.json", "GET"),
        ],
    )
    def test_wrong_method_is_405(
        self, server: Server, method: str, path: str, allowed: str
    ) -> None:
        """A known path with the wrong method gets 405, code 250112 and an Allow header."""
        response = server.request(method, path)
        assert_envelope(response, 405, 250112, method, allowed)
        assert response.headers["Allow"] == allowed

    def test_openapi_document(self, server: Server, engine: Engine, store: str) -> None:
        """The OpenAPI document is JSON describing the three endpoints with the model's
        schemas, and every field of a listed task is in the BackupTask schema."""
        response = server.request("GET", f"{BASE}/openapi.json")
        assert response.status == 200
        document = response.json
        assert document["openapi"].startswith("3.0")
        paths = document["paths"]
        assert set(paths[BASE]) == {"post"}
        assert set(paths[f"{BASE}/execute/{{taskId}}"]) == {"post"}
        assert set(paths["/api/job/backup/execute/{taskId}"]) == {"post"}
        assert set(paths[f"{BASE}/tasks"]) == {"get"}
        schemas = document["components"]["schemas"]
        for name in (
            "BackupTask",
            "BackupContent",
            "ProjectContentInfo",
            "BackupSetting",
            "ExecutionPlan",
            "BackupTaskPage",
            "TaskPageEnvelope",
            "ErrorEnvelope",
        ):
            assert name in schemas
        assert set(schemas["BackupTask"]["required"]) == {"name", "storeLocation", "content"}
        task = engine.get_task(engine.create_task(task_json("t", store)))
        listed = to_json(task)
        assert set(listed) <= set(schemas["BackupTask"]["properties"])
        assert set(listed["content"]) <= set(schemas["BackupContent"]["properties"])
        assert set(listed["backupSetting"]) <= set(schemas["BackupSetting"]["properties"])
        # openapi-spec-validator comes with moto[server], one of the test dependencies.
        validator = pytest.importorskip("openapi_spec_validator")
        validator.validate(document)
        refs = re.findall(r'"#/components/schemas/([A-Za-z]+)"', response.raw.decode())
        assert set(refs) <= set(schemas)


def _rejecting(environ: dict[str, Any]) -> str:
    raise PermissionError("no")


def _broken(environ: dict[str, Any]) -> str:
    raise RuntimeError("the auth service is down")


class TestAuthorization:
    @pytest.mark.parametrize("authorize", [_rejecting, _broken])
    @pytest.mark.parametrize(
        ("method", "path"),
        [("POST", BASE), ("GET", f"{BASE}/tasks"), ("GET", "/nothing/here"), ("PUT", BASE)],
    )
    def test_refused_everywhere_alike(
        self, engine: Engine, authorize: Callable[[dict[str, Any]], str], method: str, path: str
    ) -> None:
        """A refusing authorize gets 401 with 250114 and the same words for every path,
        known or not, so nothing about what exists leaks."""
        with serving(make_app(engine, authorize=authorize)) as server:
            response = server.request(method, path, b"{}")
        assert_envelope(response, 401, 250114)
        assert response.json["message"] == "authentication required"
        assert response.json["data"] is None
        assert "WWW-Authenticate" in response.headers

    def test_authorize_names_the_creator(self, engine: Engine, store: str) -> None:
        """The user authorize returns is the task's creator, whatever the header says."""
        with serving(make_app(engine, authorize=lambda environ: "root")) as server:
            response = server.create(json.dumps(task_json("t", store)), {"X-BKREPO-UID": "eve"})
        assert engine.get_task(response.json["data"]).created_by == "root"

    @pytest.mark.parametrize("user", ["", 5, "x" * 129])
    def test_authorize_returning_no_user_is_refused(self, engine: Engine, user: Any) -> None:
        """An authorize that returns something that is not a user name gets 401."""
        with serving(make_app(engine, authorize=lambda environ: user)) as server:
            assert_envelope(server.request("GET", f"{BASE}/tasks"), 401, 250114)

    def test_invalid_user_header_is_refused(self, server: Server) -> None:
        """An X-BKREPO-UID that cannot be a user name gets 401."""
        response = server.request("GET", f"{BASE}/tasks", None, {"X-BKREPO-UID": "a\x01b"})
        assert_envelope(response, 401, 250114)

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer s3cret-token-x"},
            {"Authorization": "Basic s3cret-token"},
            {"Authorization": "s3cret-token"},
            {"Authorization": "Bearer"},
            {"Authorization": b"Bearer " + "ü".encode()},
        ],
    )
    def test_bearer_token_refuses_wrong_tokens(
        self, engine: Engine, headers: dict[str, Any]
    ) -> None:
        """Without the exact bearer token every request gets 401."""
        app = make_app(engine, authorize=bearer_token_authorizer("s3cret-token"))
        with serving(app) as server:
            assert_envelope(server.request("GET", f"{BASE}/tasks", None, headers), 401, 250114)

    def test_bearer_token_admits_and_names_the_user(self, engine: Engine, store: str) -> None:
        """With the token a request is served; the creator is X-BKREPO-UID, else admin."""
        app = make_app(engine, authorize=bearer_token_authorizer("s3cret-token"))
        auth = {"Authorization": "Bearer s3cret-token"}
        with serving(app) as server:
            first = server.create(json.dumps(task_json("a", store)), auth)
            second = server.create(
                json.dumps(task_json("b", store)), auth | {"X-BKREPO-UID": "bob"}
            )
            listed = server.request(
                "GET", f"{BASE}/tasks", None, {"authorization": "bearer s3cret-token"}
            )
        assert engine.get_task(first.json["data"]).created_by == "admin"
        assert engine.get_task(second.json["data"]).created_by == "bob"
        assert_envelope(listed, 200, 0)

    @pytest.mark.parametrize("token", ["", "  "])
    def test_empty_token_is_refused_at_setup(self, token: str) -> None:
        """An empty token would admit anyone, so it is refused up front."""
        with pytest.raises(ValueError, match="token"):
            bearer_token_authorizer(token)


# --- whatever comes in, an envelope goes out ----------------------------------------------

PATHS = [
    BASE,
    f"{BASE}/tasks",
    f"{BASE}/openapi.json",
    f"{BASE}/execute/",
    "/api/job/backup/execute/",
    "/job/api",
    "/",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
TASKISH = st.fixed_dictionaries(
    {},
    optional={
        "name": JSON_VALUES,
        "storeLocation": JSON_VALUES,
        "content": JSON_VALUES
        | st.fixed_dictionaries(
            {},
            optional={
                "commonData": JSON_VALUES,
                "projects": JSON_VALUES,
                "incrementDate": JSON_VALUES,
            },
        ),
        "type": JSON_VALUES,
        "backupSetting": JSON_VALUES,
    },
)
BODIES = st.one_of(
    st.none(),
    st.binary(max_size=64),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    TASKISH.map(lambda v: json.dumps(v).encode()),
)
QUERIES = st.one_of(
    st.just(""),
    st.dictionaries(
        st.sampled_from(["state", "pageSize", "pageNumber", "other"]),
        st.text(max_size=8),
        max_size=3,
    ).map(urlencode),
    st.text(max_size=20).map(lambda text: quote(text, safe="=&")),
)


@pytest.fixture(name="fuzz_server", scope="module")
def _fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    engine = Engine(SqliteRepository(str(tmp_path_factory.mktemp("fuzz") / "repo.db")))
    with serving(make_app(engine)) as server:
        yield server
    engine.close()


TARGETS = st.builds(
    lambda path, suffix, query: path + quote(suffix, safe="/") + (f"?{query}" if query else ""),
    st.sampled_from(PATHS),
    st.one_of(st.just(""), st.text(min_size=1, max_size=30)),
    QUERIES,
)
USER_HEADERS = st.one_of(
    st.just({}),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=10).map(
        lambda uid: {"X-BKREPO-UID": uid}
    ),
)


class TestAnyRequest:
    @settings(max_examples=60)
    @given(method=st.sampled_from(METHODS), target=TARGETS, body=BODIES, headers=USER_HEADERS)
    def test_every_answer_is_an_envelope(
        self,
        fuzz_server: Server,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> None:
        """Any method, path, query and body gets a JSON envelope whose HTTP status matches its
        code, and never a 500: bad input is the caller's error, not the system's."""
        response = fuzz_server.request(method, target, body, headers)
        envelope = response.json
        if (
            method == "GET"
            and target.split("?", maxsplit=1)[0] == "/job/api/job/backup/openapi.json"
        ):
            assert envelope["openapi"].startswith("3.")  # the one answer that is a document
            return
        assert set(envelope) == {"code", "message", "data", "traceId"}
        assert TRACE_ID.fullmatch(envelope["traceId"])
        assert response.status != 500, envelope
        assert "Traceback" not in (envelope["message"] or "")
        assert response.status == http_status(envelope["code"]) or response.status == 413
        if envelope["code"] != 0:
            assert isinstance(envelope["message"], str)
            assert envelope["message"]


# --- the OpenAPI document against the application, by schemathesis ---------------------------

SCHEMATHESIS_EXAMPLES = 150


def _schemathesis_statuses(operation: Any) -> list[int]:
    """Run schemathesis' generated cases for *operation* with all its checks; the statuses."""
    statuses: list[int] = []

    @settings(max_examples=SCHEMATHESIS_EXAMPLES, deadline=None, database=None)
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call_and_validate()
        statuses.append(response.status_code)

    run()
    return statuses


@pytest.mark.slow
def test_schema_valid_requests_are_accepted(tmp_path: Path) -> None:
    """A bounded schemathesis run, in process against the WSGI app: every check passes (no
    server error, statuses and bodies as documented, a schema-valid request accepted), and at
    most 5% of the schema-valid requests are rejected (400)."""
    schemathesis = pytest.importorskip("schemathesis")
    engine = Engine(SqliteRepository(str(tmp_path / "repo.db")))
    try:
        app = make_app(engine)
        schema = schemathesis.openapi.from_wsgi(f"{BASE}/openapi.json", app)
        outcomes = {
            f"{method} {path}": _schemathesis_statuses(schema[path][method])
            for method, path in (
                ("POST", BASE),
                ("GET", f"{BASE}/tasks"),
                ("POST", f"{BASE}/execute/{{taskId}}"),
            )
        }
        for name, statuses in outcomes.items():
            rejected = sum(1 for status in statuses if status == 400)
            assert statuses, name
            assert rejected <= 0.05 * len(statuses), (name, rejected, len(statuses))
    finally:
        engine.close()


def _request_schema_validator() -> Any:
    """A validator of a create-task body against the served document's BackupTask schema."""
    validators = pytest.importorskip("openapi_schema_validator")
    referencing = pytest.importorskip("referencing")
    document = openapi_document()
    resource = referencing.Resource.from_contents(
        document, default_specification=referencing.jsonschema.DRAFT4
    )
    registry = referencing.Registry().with_resource("urn:api", resource)
    return validators.OAS30WriteValidator(
        {"$ref": "urn:api#/components/schemas/BackupTask"}, registry=registry
    )


_GOOD_BODY: dict[str, Any] = {
    "name": "nightly",
    "storeLocation": "/srv/backups",
    "content": {"commonData": True},
}


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"name": ""}, "$.name"),
        ({"name": "x" * 129}, "$.name"),
        ({"name": "a/b"}, "$.name"),
        ({"name": "a\\b"}, "$.name"),
        ({"name": "a..b"}, "$.name"),
        ({"name": "."}, "$.name"),
        ({"name": "   "}, "$.name"),
        ({"name": "tab\there"}, "$.name"),
        ({"storeLocation": ""}, "$.storeLocation"),
        ({"storeLocation": "nosuch://bucket"}, "$.storeLocation"),
        ({"content": {"commonData": False}}, "$.content"),
        ({"content": {"projects": []}}, "$.content"),
        ({"content": {"projects": [{"projectId": "a", "projectRegex": "b*"}]}}, "$.content"),
        ({"content": {"projects": [{"repoList": ["a"], "repoRegex": "b*"}]}}, "$.content"),
        ({"content": {"projects": [{"projectRegex": ""}]}}, "$.content"),
        ({"content": {"projects": [{"projectRegex": "re:["}]}}, "$.content"),
        ({"content": {"projects": [{"projectId": ""}]}}, "$.content"),
        ({"type": "DATA_COPY"}, "$.type"),
        ({"backupSetting": {"conflictStrategy": "MERGE"}}, "$.backupSetting"),
        ({"backupSetting": {"executionStrategy": "SPECIFIED_TIME"}}, "$.backupSetting"),
        ({"backupSetting": {"executionStrategy": "CRON_EXPRESSION"}}, "$.backupSetting"),
        (
            {"backupSetting": {"executionPlan": {"cronExpression": "0 0 30 2 *"}}},
            "$.backupSetting",
        ),
        ({"backupSetting": {"retention": {"keepLast": 0}}}, "$.backupSetting"),
    ],
)
def test_schema_states_the_limits_validation_enforces(
    engine: Engine, change: dict[str, Any], path: str
) -> None:
    """A body that task validation refuses is refused by the OpenAPI schema too."""
    body = {**_GOOD_BODY, **change}
    with pytest.raises(ValidationError) as caught:
        engine.create_task(body)
    assert any(problem.path.startswith(path) for problem in caught.value.problems)
    validator = _request_schema_validator()
    assert not validator.is_valid(body), body
    assert validator.is_valid(_GOOD_BODY)
