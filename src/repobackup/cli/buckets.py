"""S3 from the command line: the storage options a `--profile` gives, and the check that a
backup's bucket exists (created only with `--create-bucket`, never because of a typo)."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

from .exits import UsageError

__all__ = ["S3_PROTOCOLS", "check_bucket", "storage_options"]

S3_PROTOCOLS = ("s3", "s3a")


def _bucket(location: str) -> str | None:
    """The bucket of an s3:// location, else None."""
    parts = urlsplit(location)
    return parts.netloc or None if parts.scheme.lower() in S3_PROTOCOLS else None


def storage_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The fsspec options by protocol the options give: ``--profile`` names the AWS profile
    (else botocore reads AWS_PROFILE and the AWS_* variables itself)."""
    profile = getattr(args, "profile", None)
    if profile is None:
        return {}
    return {protocol: {"profile": profile} for protocol in S3_PROTOCOLS}


def _filesystem(options: dict[str, dict[str, Any]]) -> Any:
    try:
        import s3fs
    except ImportError:
        raise UsageError("an s3:// store needs s3fs: pip install 'repobackup[s3]'") from None
    return s3fs.S3FileSystem(skip_instance_cache=True, **options.get("s3", {}))


def check_bucket(location: str, args: argparse.Namespace) -> None:
    """For an s3:// *location*: a UsageError naming the bucket when it does not exist, unless
    ``--create-bucket`` was given, which creates it. Other locations are left alone."""
    bucket = _bucket(location)
    if bucket is None:
        return
    fs = _filesystem(storage_options(args))
    try:
        exists = bool(fs.exists(bucket))
    except PermissionError:
        # Listing may be refused to a user who may still write under a prefix: let the run
        # find out, naming the object it could not write.
        return
    except OSError as exc:
        raise UsageError(f"cannot reach bucket {bucket!r} of {location}: {exc}") from None
    if exists:
        return
    if not getattr(args, "create_bucket", False):
        raise UsageError(
            f"bucket {bucket!r} does not exist (storeLocation {location}); nothing was "
            "created. Check the name, or give --create-bucket to create it"
        )
    try:
        fs.mkdir(bucket)
    except OSError as exc:
        raise UsageError(f"cannot create bucket {bucket!r}: {exc}") from None
