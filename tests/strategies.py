"""Hypothesis strategies for the task model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from repobackup import (
    BackupContent,
    BackupSetting,
    BackupTask,
    ConflictStrategy,
    ErrorStrategy,
    ExecutionPlan,
    ExecutionStrategy,
    ProjectContentInfo,
    TaskState,
    TaskType,
)

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
patterns = st.one_of(
    ids,
    st.just("*"),
    ids.map(lambda s: s[:3] + "*"),
    ids.map(lambda s: "?" + s),
)
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))]
)
times = st.builds(
    lambda naive, zone: naive.replace(tzinfo=zone, microsecond=naive.microsecond),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    zones,
)
id_tuples = st.none() | st.lists(ids, max_size=4).map(tuple)


@st.composite
def project_entries(draw: st.DrawFn) -> ProjectContentInfo:
    """An entry that sets at most one of each exclusive pair, as validation requires."""
    project = draw(st.sampled_from(["id", "regex", "none"]))
    repo = draw(st.sampled_from(["list", "regex", "none"]))
    return ProjectContentInfo(
        project_id=draw(ids) if project == "id" else None,
        project_regex=draw(patterns) if project == "regex" else None,
        repo_list=draw(st.lists(ids, max_size=4).map(tuple)) if repo == "list" else None,
        repo_regex=draw(patterns) if repo == "regex" else None,
        exclude_projects=draw(id_tuples),
        exclude_repos=draw(id_tuples),
    )


contents = st.builds(
    BackupContent,
    common_data=st.booleans(),
    compression=st.booleans(),
    increment=st.none() | st.booleans(),
    increment_date=st.none() | times,
    projects=st.lists(project_entries(), min_size=1, max_size=3).map(tuple),
)
plans = st.builds(
    ExecutionPlan,
    execute_immediately=st.booleans(),
    execute_time=st.none() | times,
    cron_expression=st.none() | st.sampled_from(["30 1 * * *", "0 0 2 ? * MON-FRI"]),
)
settings_ = st.builds(
    BackupSetting,
    conflict_strategy=st.sampled_from(ConflictStrategy),
    error_strategy=st.sampled_from(ErrorStrategy),
    execution_strategy=st.just(ExecutionStrategy.IMMEDIATELY),
    execution_plan=plans,
    space_cap_check=st.booleans(),
)
tasks = st.builds(
    BackupTask,
    name=names,
    store_location=st.just("/tmp/backups"),
    content=contents,
    id=st.none() | st.text(alphabet="0123456789abcdef", min_size=24, max_size=24),
    type=st.sampled_from(TaskType),
    backup_setting=settings_,
    state=st.sampled_from(TaskState),
    created_by=st.none() | names,
    created_date=st.none() | times,
    last_modified_by=st.none() | names,
    last_modified_date=st.none() | times,
    start_date=st.none() | times,
    end_date=st.none() | times,
)
