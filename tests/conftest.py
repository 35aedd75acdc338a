"""Shared fixtures and hypothesis profiles."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=50
)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=50)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# --- S3: one moto server per session, reached over real HTTP -------------------------------

import collections.abc  # noqa: E402
import typing  # noqa: E402

import pytest  # noqa: E402

if typing.TYPE_CHECKING:
    from s3server import S3Server


@pytest.fixture(scope="session", name="s3")
def _s3() -> collections.abc.Iterator[S3Server]:
    """A moto S3 server for the session; shut down (thread joined) at the end."""
    from s3server import S3Server

    server = S3Server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="s3_env")
def _s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server, reachable through the AWS_* environment variables alone."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return s3


# --- A small repository to back up, for the archive, verify and S3 tests -------------------

import datetime  # noqa: E402

ARCHIVE_T0 = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)


def fill_archive_source(repo: typing.Any) -> None:
    """Common data, two projects, three repositories; text, random, archive-like, duplicate
    and empty files; everything modified at ``ARCHIVE_T0``."""
    when = ARCHIVE_T0
    repo.put_document("user", "admin", {"name": "admin", "roles": ["ADMIN"]}, modified=when)
    repo.put_document("permission", "p1", {"actions": ["READ"], "ü": None}, modified=when)
    for project, repos in (("p1", ("generic", "maven")), ("p2", ("generic",))):
        repo.put_project(project, modified=when)
        for name in repos:
            repo.put_repository(project, name, modified=when)
            text = f"{project}/{name} text content\n".encode() * 400
            repo.put_file(project, name, "/docs/readme.txt", text, modified=when)
            repo.put_file(project, name, "/bin/random.bin", os.urandom(20_000), modified=when)
            jar = b"PK\x03\x04" + os.urandom(5_000)
            repo.put_file(project, name, "/lib/a.jar", jar, modified=when)
            repo.put_file(project, name, "/same.txt", b"shared by all\n" * 50, modified=when)
            repo.put_file(project, name, "/empty", b"", modified=when)


@pytest.fixture(name="archive_source")
def _archive_source(tmp_path: typing.Any) -> collections.abc.Iterator[typing.Any]:
    """A SqliteRepository filled by `fill_archive_source`."""
    from repobackup import SqliteRepository

    with SqliteRepository(str(tmp_path / "archive-source.db")) as repo:
        fill_archive_source(repo)
        yield repo


# --- Fault injection: a faulty filesystem, moto behind a fault proxy ------------------------

if typing.TYPE_CHECKING:
    from faultproxy import FaultProxy

    from faults import FaultPlan


@pytest.fixture(name="fault_plan")
def _fault_plan() -> collections.abc.Iterator[FaultPlan]:
    """A fresh `FaultPlan` (no faults, seed 0) that ``faulty://`` and ``faultymem://`` use
    when their storage options name none; the ``faultymem://`` store starts empty."""
    from faults import FaultPlan, reset_memory

    previous = FaultPlan.current
    FaultPlan.current = plan = FaultPlan(seed=0)
    reset_memory()
    try:
        yield plan
    finally:
        FaultPlan.current = previous
        reset_memory()


@pytest.fixture(scope="session", name="s3_proxy_session")
def _s3_proxy_session(s3: S3Server) -> collections.abc.Iterator[FaultProxy]:
    from faultproxy import FaultProxy

    with FaultProxy(s3.endpoint) as proxy:
        yield proxy


@pytest.fixture(name="s3_proxy")
def _s3_proxy(s3_proxy_session: FaultProxy) -> collections.abc.Iterator[FaultProxy]:
    """A `FaultProxy` in front of the session's moto server, with no faults and zeroed
    counters at the start and the end of each test. ``s3_proxy.options`` are s3fs options
    that reach moto through it; ``s3_proxy.filesystem()`` is a fresh s3fs on it."""
    s3_proxy_session.reset()
    try:
        yield s3_proxy_session
    finally:
        s3_proxy_session.reset()
