"""`AllowedStores`: the places an HTTP caller's tasks may read and write backups, and the
check that a storeLocation lies under one of them once `..`, links and protocols are resolved."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable

import fsspec

__all__ = ["AllowedStores", "normalise_location"]

# Names fsspec gives the same filesystem.
_ALIASES = {"local": "file", "s3a": "s3", "gcs": "gs"}


def normalise_location(location: str) -> tuple[str, str]:
    """(protocol, path) of *location* with `..` and `.` resolved; a local path is made
    absolute with its links resolved. ValueError for a location that cannot be compared:
    empty, chained (``a::b``), or with a NUL."""
    if not isinstance(location, str) or not location.strip() or "\x00" in location:
        raise ValueError("expected a folder or URL")
    if "::" in location:
        raise ValueError("chained URLs are not accepted")
    protocol = str(fsspec.utils.get_protocol(location)).lower()
    protocol = _ALIASES.get(protocol, protocol)
    if protocol == "file":
        path = location.split("://", 1)[1] if "://" in location else location
        return protocol, os.path.realpath(os.path.expanduser(path))
    rest = location.split("://", 1)[1] if "://" in location else location
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    # A root of "/" keeps ".." from climbing above the bucket or host.
    path = posixpath.normpath("/" + rest.lstrip("/"))
    return protocol, path


class AllowedStores:
    """A list of places (local folders, or URLs with their protocol such as
    ``s3://bucket/prefix``) under which a task's storeLocation must lie."""

    def __init__(self, places: Iterable[str]) -> None:
        if isinstance(places, str):
            raise TypeError("allowed_stores must be a list of places, not one string")
        self.places = tuple(normalise_location(place) for place in places)

    def __repr__(self) -> str:
        return f"AllowedStores({[f'{p}://{r}' for p, r in self.places]!r})"

    def problem(self, location: object) -> str | None:
        """None when *location* lies under an allowed place, else why it is refused."""
        if not isinstance(location, str):
            return None  # not a location at all: validation names that
        if not self.places:
            return "no store location is allowed on this server (start it with --store-root)"
        try:
            protocol, path = normalise_location(location)
        except ValueError as exc:
            return f"not an allowed store location: {exc}"
        for allowed_protocol, root in self.places:
            if protocol != allowed_protocol:
                continue
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return None
        return "not under a store location this server allows"
