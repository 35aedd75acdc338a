"""Prometheus metrics of a task store: per task, the state and figures of its last run, read from
the store at each scrape (right after a restart and across processes) by a custom collector."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._model.task import BackupTask, RunSummary, TaskState
from .._tasks.store import all_tasks

if TYPE_CHECKING:
    from .._tasks.store import TaskStore

__all__ = [
    "CONTENT_TYPE",
    "MetricsUnavailableError",
    "TaskStoreCollector",
    "render_metrics",
    "write_metrics_file",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of the Prometheus text format."""

INSTALL_HINT = "pip install 'repobackup[metrics]'"
_HISTORY = 50  # runs looked through for the last success


class MetricsUnavailableError(RuntimeError):
    """prometheus_client is not installed (the ``metrics`` extra)."""

    def __init__(self) -> None:
        super().__init__(f"metrics need prometheus_client: {INSTALL_HINT}")


def _last_success(store: TaskStore, task: BackupTask) -> RunSummary | None:
    run = task.last_run
    if run is not None and run.state is TaskState.FINISHED:
        return run
    assert task.id is not None
    return next((r for r in store.runs(task.id, _HISTORY) if r.state is TaskState.FINISHED), None)


class TaskStoreCollector:
    """A prometheus_client collector over *store*: register it with a ``CollectorRegistry``
    (or call `render_metrics`). Every metric is labelled ``task_id`` and ``name``."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def describe(self) -> list[Any]:
        # Nothing described ahead: registering must not read the store.
        return []

    def collect(self) -> Iterator[Any]:
        """The metric families, read from the store now."""
        from prometheus_client.core import GaugeMetricFamily

        labels = ["task_id", "name"]

        def gauge(name: str, text: str, extra: tuple[str, ...] = ()) -> Any:
            return GaugeMetricFamily(f"repobackup_task_{name}", text, labels=[*labels, *extra])

        enabled = gauge("enabled", "1 when the scheduler may start the task, 0 when disabled")
        state = gauge(
            "last_run_state", "1 for the state the last run ended in (label state)", ("state",)
        )
        success = gauge("last_success_timestamp_seconds", "when the last FINISHED run ended")
        ended = gauge("last_run_end_timestamp_seconds", "when the last run ended")
        duration = gauge("last_run_duration_seconds", "how long the last run took")
        written = gauge("last_run_bytes_written", "bytes the last run wrote")
        read = gauge("last_run_bytes_read", "bytes the last run read")
        errors = gauge("last_run_errors", "errors the last run recorded (failed records included)")
        for task in all_tasks(self.store):
            ids = [task.id or "", task.name]
            enabled.add_metric(ids, 1.0 if task.enabled else 0.0)
            run = task.last_run
            good = _last_success(self.store, task)
            if good is not None and good.ended is not None:
                success.add_metric(ids, good.ended.timestamp())
            if run is None:
                continue
            for value in (TaskState.FINISHED, TaskState.FAILED):
                state.add_metric([*ids, value.value], 1.0 if run.state is value else 0.0)
            if run.ended is not None:
                ended.add_metric(ids, run.ended.timestamp())
                duration.add_metric(ids, (run.ended - run.started).total_seconds())
            written.add_metric(ids, float(run.counts.bytes_written))
            read.add_metric(ids, float(run.counts.bytes_read))
            count = len(run.errors) + run.errors_dropped
            errors.add_metric(ids, float(max(count, run.counts.records_failed)))
        yield from (enabled, state, success, ended, duration, written, read, errors)


def render_metrics(store: TaskStore) -> bytes:
    """The metrics of *store* in the Prometheus text format; `MetricsUnavailableError`
    without prometheus_client."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        raise MetricsUnavailableError() from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TaskStoreCollector(store))
    data: bytes = generate_latest(registry)
    return data


def write_metrics_file(store: TaskStore, path: str) -> None:
    """Write the metrics of *store* to *path* atomically (a temporary file in the same folder,
    then a rename), so node_exporter's textfile collector never reads half a file."""
    data = render_metrics(store)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".repobackup-", suffix=".prom.tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
