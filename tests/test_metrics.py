"""Tests for the Prometheus metrics: `GET /metrics` scraped from a real HTTP server on
127.0.0.1 and parsed with prometheus_client's own parser, and the textfile writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import make_repository, serving
from repobackup import Engine, SqliteTaskStore, TaskState
from repobackup.adapters.metrics import render_metrics, write_metrics_file
from repobackup.adapters.wsgi import make_app

parser = pytest.importorskip("prometheus_client.parser")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of *text* by name and labels."""
    found = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def task(store: Path, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "storeLocation": str(store),
        "content": {"projects": [{"projectId": "demo"}]},
        "backupSetting": {"errorStrategy": "FAST_FAIL"},
    }


def test_metrics_per_task_from_the_store(tmp_path: Path) -> None:
    """Per task: last run state, last success time, duration, bytes, errors, labelled by
    id and name; read from the store, so a second engine (a restart) serves the same."""
    tasks = SqliteTaskStore(tmp_path / "tasks.db")
    source = make_repository()
    with Engine(source, tasks=tasks) as engine:
        good = engine.create_task(task(tmp_path / "a", "good"))
        bad = engine.create_task(task(tmp_path / "b", "bad"))
        ran = engine.execute(good)
        source.fail_records.add("/a.jar")
        assert engine.execute(bad).state is TaskState.FAILED
        engine.set_enabled(bad, False)
    tasks.close()
    reopened = SqliteTaskStore(tmp_path / "tasks.db")
    with Engine(make_repository(), tasks=reopened) as engine, serving(make_app(engine)) as srv:
        response = srv.request("GET", "/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        found = samples(response.raw.decode("utf-8"))
    reopened.close()

    def value(name: str, task_id: str, task_name: str, **extra: str) -> float:
        labels = frozenset({"task_id": task_id, "name": task_name, **extra}.items())
        return found[f"repobackup_task_{name}", labels]

    assert value("last_run_state", good, "good", state="FINISHED") == 1
    assert value("last_run_state", good, "good", state="FAILED") == 0
    assert value("last_run_state", bad, "bad", state="FAILED") == 1
    assert ran.ended is not None
    assert value("last_success_timestamp_seconds", good, "good") == pytest.approx(
        ran.ended.timestamp()
    )
    assert (
        "repobackup_task_last_success_timestamp_seconds",
        frozenset({"task_id": bad, "name": "bad"}.items()),
    ) not in found
    assert value("last_run_duration_seconds", good, "good") >= 0
    assert value("last_run_bytes_written", good, "good") == ran.counts.bytes_written > 0
    assert value("last_run_bytes_read", good, "good") == ran.counts.bytes_read
    assert value("last_run_errors", good, "good") == 0
    assert value("last_run_errors", bad, "bad") >= 1
    assert value("enabled", good, "good") == 1
    assert value("enabled", bad, "bad") == 0


def test_metrics_file_is_written_whole(tmp_path: Path) -> None:
    """write_metrics_file leaves the text the endpoint serves, and no temporary file."""
    tasks = SqliteTaskStore(tmp_path / "tasks.db")
    with Engine(make_repository(), tasks=tasks) as engine:
        engine.execute(engine.create_task(task(tmp_path / "a", "good")))
        target = tmp_path / "prom" / "repobackup.prom"
        target.parent.mkdir()
        write_metrics_file(tasks, str(target))
        assert target.read_bytes() == render_metrics(tasks)
        assert [p.name for p in target.parent.iterdir()] == ["repobackup.prom"]
        assert any(
            name == "repobackup_task_last_run_state" for name, _ in samples(target.read_text())
        )
    tasks.close()
