"""Tests for S3 from the command line against moto's server on 127.0.0.1: credentials from the
AWS_* environment, and a backup that never creates a bucket unless --create-bucket is given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers import one_file_database
from repobackup.cli import EXIT_OK, EXIT_USAGE, main

if TYPE_CHECKING:
    from s3server import S3Server

pytestmark = pytest.mark.slow


@pytest.fixture(name="source")
def _source(tmp_path: Path) -> Path:
    return one_file_database(tmp_path / "source.db")


def backup(source: Path, store: str, *extra: str) -> int:
    return main(["backup", "-r", str(source), "--store", store, "--name", "n", "--all",
                 "--no-space-check", *extra])  # fmt: skip


def test_existing_bucket_from_the_environment(
    s3_env: S3Server, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the AWS_* variables set, a backup to an existing bucket works with no options."""
    bucket = s3_env.new_bucket()
    assert backup(source, f"s3://{bucket}/backups", "--json") == EXIT_OK
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["state"] == "FINISHED"
    assert s3_env.filesystem().find(f"{bucket}/backups")


def test_missing_bucket_is_an_error_and_not_created(
    s3_env: S3Server, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped bucket is a usage error naming it; nothing is created."""
    bucket = s3_env.new_bucket("typo") + "-missing"
    assert backup(source, f"s3://{bucket}/backups") == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"bucket {bucket!r} does not exist" in err
    assert "--create-bucket" in err
    assert not s3_env.filesystem().exists(bucket)


def test_create_bucket_creates_it(
    s3_env: S3Server, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--create-bucket creates the missing bucket, then backs up into it."""
    bucket = s3_env.new_bucket("fresh") + "-new"
    assert backup(source, f"s3://{bucket}/backups", "--create-bucket") == EXIT_OK, (
        capsys.readouterr().err
    )
    fs = s3_env.filesystem()
    assert fs.exists(bucket)
    assert [p for p in fs.find(f"{bucket}/backups") if p.endswith("manifest.json")]
