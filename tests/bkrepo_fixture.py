"""Writes backups exactly as the original server's job service does (spec/bkrepo-backup-format.md).

Jackson's indented lines with the line breaks removed, offset-less local times, project.json in
every repository folder, ``bk+store``, as a folder or as a DEFLATE zip with data descriptors.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

STAMP = "20241224.171354"
TIME = "2024-12-24T17:13:54.123"  # the server's local time, no offset


def jackson(value: Any, level: int = 0) -> str:
    """*value* as Jackson's DefaultPrettyPrinter writes it, before the line breaks go."""
    if isinstance(value, dict):
        if not value:
            return "{ }"
        inner = "\n" + "  " * (level + 1)
        entries = (
            f"{json.dumps(k, ensure_ascii=False)} : {jackson(v, level + 1)}"
            for k, v in value.items()
        )
        return "{" + inner + ("," + inner).join(entries) + "\n" + "  " * level + "}"
    if isinstance(value, list):
        if not value:
            return "[ ]"
        return "[ " + ", ".join(jackson(v, level) for v in value) + " ]"
    return json.dumps(value, ensure_ascii=False)


def line(document: dict[str, Any]) -> bytes:
    """One record line of a backup file: Jackson's output, line breaks removed."""
    return jackson(document).replace("\n", "").encode() + b"\n"


def object_id(number: int) -> str:
    """A MongoDB ObjectId-like hex id, ordered by *number*."""
    return f"6763d6b3b8a5a16a{number:08x}"


class Builder:
    """The files and blobs of one backup, written as a folder or a zip by the server's rules."""

    def __init__(self, stamp: str = STAMP) -> None:
        self.stamp = stamp
        self.files: dict[str, list[bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.raw: dict[
            str, bytes | Path
        ] = {}  # entries written as given (hostile ones, broken lines)
        self._ids = 0

    def next_id(self) -> str:
        self._ids += 1
        return object_id(self._ids)

    def add(self, entry: str, document: dict[str, Any]) -> dict[str, Any]:
        self.files.setdefault(entry, []).append(line(document))
        return document

    def common(self, collection: str, document: dict[str, Any]) -> dict[str, Any]:
        return self.add(f"{collection}.json", {"id": self.next_id(), **document})

    def repository(
        self, project: dict[str, Any], name: str, kind: str = "GENERIC"
    ) -> dict[str, Any]:
        """A repository folder: the project's record repeated in it, and the repository's."""
        pid = project["name"]
        self.add(f"{pid}/{name}/project.json", project)
        return self.add(
            f"{pid}/{name}/repository.json",
            {
                "id": self.next_id(),
                "createdBy": "admin",
                "createdDate": TIME,
                "lastModifiedBy": "admin",
                "lastModifiedDate": TIME,
                "name": name,
                "type": kind,
                "category": "LOCAL",
                "public": False,
                "description": None,
                "configuration": {"type": "local", "settings": {}},
                "credentialsKey": None,
                "display": True,
                "projectId": pid,
                "quota": None,
                "used": 0,
                "clusterNames": ["center"],
                "deleted": None,
            },
        )

    def node(
        self,
        pid: str,
        repo: str,
        full_path: str,
        data: bytes | None,
        *,
        deleted: str | None = None,
        metadata: list[dict[str, Any]] | None = None,
        store: bool = True,
    ) -> dict[str, Any]:
        """A node: a file when *data* is bytes (its blob put in bk+store unless not *store*),
        a folder when None."""
        parent, _, name = full_path.rpartition("/")
        sha = hashlib.sha256(data).hexdigest() if data is not None else None
        if data is not None and store:
            self.blobs[sha or ""] = data
        return self.add(
            f"{pid}/{repo}/node.json",
            {
                "id": self.next_id(),
                "createdBy": "admin",
                "createdDate": TIME,
                "lastModifiedBy": "admin",
                "lastModifiedDate": TIME,
                "lastAccessDate": TIME,
                "folder": data is None,
                "path": (parent or "") + "/",
                "name": name,
                "fullPath": full_path,
                "size": 0 if data is None else len(data),
                "expireDate": None,
                "sha256": sha,
                "md5": hashlib.md5(data, usedforsecurity=False).hexdigest() if data else None,
                "crc64ecma": None,
                "deleted": deleted,
                "metadata": metadata or [],
                "clusterNames": ["center"],
                "nodeNum": None,
                "archived": None,
                "compressed": None,
                "projectId": pid,
                "repoName": repo,
            },
        )

    def entries(self, separator: str = "/") -> Iterator[tuple[str, bytes | Path]]:
        """Every entry name (under ``<stamp>/``) and its bytes, in the order the server writes."""
        for entry, lines in self.files.items():
            yield self._name(entry, separator), b"".join(lines)
        for sha, data in sorted(self.blobs.items()):
            yield self._name(f"bk+store/{sha[0:2]}/{sha[2:4]}/{sha}", separator), data
        for name, data in self.raw.items():
            yield name, data

    def _name(self, entry: str, separator: str) -> str:
        return f"{self.stamp}/{entry}".replace("/", separator)

    def write_folder(self, store: Path, name: str = "nightly") -> Path:
        """The backup as ``<store>/<name>/<stamp>/``; returns the stamp folder."""
        root = store / name
        for entry, data in self.entries():
            path = root / entry
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
        return root / self.stamp

    def write_zip(
        self,
        store: Path,
        name: str = "nightly",
        *,
        separator: str = "/",
        method: int = zipfile.ZIP_DEFLATED,
    ) -> Path:
        """The backup as ``<store>/<name>/<name>-<stamp>.zip``, as ``ZipOutputStream`` makes
        it: DEFLATE, data descriptors, no folder entries, *separator* in every name."""
        path = store / name / f"{name}-{self.stamp}.zip"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_zip(path, self.entries(separator), method=method)
        return path


class _Unseekable(io.RawIOBase):
    """A file that cannot seek: zipfile then writes data descriptors, as the JDK does."""

    def __init__(self, file: io.BufferedWriter) -> None:
        super().__init__()
        self._file = file

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._file.write(data)

    def seekable(self) -> bool:
        return False

    def seek(self, *args: Any) -> int:
        raise OSError("not seekable")

    def tell(self) -> int:
        raise OSError("not seekable")


def write_zip(
    path: Path,
    entries: Iterable[tuple[str, bytes | Path]],
    *,
    method: int = zipfile.ZIP_DEFLATED,
) -> None:
    """A zip of *entries* (names written as given, backslashes and all); an entry given as a
    Path is copied from that file in chunks."""
    with path.open("wb") as out, zipfile.ZipFile(_Unseekable(out), "w") as archive:  # type: ignore[arg-type]
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 12, 24, 17, 13, 54))
            info.compress_type = method
            if isinstance(data, Path):
                with data.open("rb") as source, archive.open(info, "w", force_zip64=True) as dest:
                    while chunk := source.read(1 << 20):
                        dest.write(chunk)
            else:
                archive.writestr(info, data)


def write_nodes(path: Path, pid: str, repo: str, count: int) -> int:
    """A node.json of *count* folder nodes written line by line; returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with path.open("wb") as out:
        for number in range(count):
            data = line(
                {
                    "id": object_id(number),
                    "createdBy": "admin",
                    "createdDate": TIME,
                    "lastModifiedBy": "admin",
                    "lastModifiedDate": TIME,
                    "folder": True,
                    "path": "/big/",
                    "name": f"f{number:07d}",
                    "fullPath": f"/big/f{number:07d}",
                    "size": 0,
                    "sha256": None,
                    "deleted": None,
                    "metadata": [],
                    "projectId": pid,
                    "repoName": repo,
                }
            )
            out.write(data)
            size += len(data)
    return size


DATA = {
    "readme": b"hello from the original server\n",
    "jar": b"PK\x03\x04 not really a jar" * 100,
    "old": b"an old version, soft-deleted since\n",
}


def standard(builder: Builder | None = None) -> Builder:
    """The backup the tests read: common data, project ``demo`` with a generic and a maven
    repository (project.json and maven metadata repeated in both), a folder node, a file in
    both repositories (one blob), a soft-deleted node, and project ``other``."""
    b = builder or Builder()
    b.common(
        "user",
        {
            "userId": "admin",
            "name": "Admin",
            "pwd": "x",
            "admin": True,
            "locked": False,
            "tokens": [],
            "roles": [],
            "asstUsers": [],
            "group": False,
            "email": None,
            "phone": None,
            "accounts": None,
            "source": None,
        },
    )
    b.common(
        "role",
        {
            "roleId": "manager",
            "type": "PROJECT",
            "name": "manager",
            "projectId": "demo",
            "repoName": None,
            "admin": True,
            "description": None,
            "source": None,
        },
    )
    b.common(
        "permission",
        {
            "resourceType": "PROJECT",
            "projectId": "demo",
            "permName": "read",
            "repos": [],
            "includePattern": [],
            "excludePattern": [],
            "users": ["admin"],
            "roles": [],
            "departments": [],
            "actions": ["READ"],
            "createBy": "admin",
            "createAt": TIME,
            "updatedBy": "admin",
            "updateAt": "2024-12-20T08:00:00",
        },
    )
    b.common(
        "account",
        {
            "appId": "ci",
            "locked": False,
            "credentials": [],
            "owner": "admin",
            "authorizationGrantTypes": ["PLATFORM"],
            "homepageUrl": None,
            "redirectUri": None,
            "avatarUrl": None,
            "scope": None,
            "scopeDesc": None,
            "description": "the CI",
        },
    )
    b.common(
        "temporary_token",
        {
            "projectId": "demo",
            "repoName": "generic",
            "fullPath": "/docs/readme.txt",
            "token": "t0k3n",
            "authorizedUserList": [],
            "authorizedIpList": [],
            "expireDate": "2025-01-01T00:00:00",
            "permits": 3,
            "type": "DOWNLOAD",
        },
    )
    demo = {
        "id": b.next_id(),
        "name": "demo",
        "displayName": "Démo",
        "description": "",
        "metadata": [],
        "credentialsKey": None,
        "createdBy": "admin",
        "createdDate": TIME,
        "lastModifiedBy": "admin",
        "lastModifiedDate": "2024-12-01T09:30:00",
    }
    b.repository(demo, "generic")
    b.repository(demo, "maven", "MAVEN")
    b.node("demo", "generic", "/docs", None)
    b.node(
        "demo",
        "generic",
        "/docs/readme.txt",
        DATA["readme"],
        metadata=[
            {
                "key": "owner",
                "value": "ops",
                "system": False,
                "description": None,
                "link": None,
                "color": None,
            }
        ],
    )
    b.node("demo", "generic", "/docs/old.txt", DATA["old"], deleted="2024-12-23T10:00:00.5")
    b.node("demo", "maven", "/com/x/lib/1.0/lib-1.0.jar", DATA["jar"])
    b.node("demo", "maven", "/copy/readme.txt", DATA["readme"])
    package = {
        "projectId": "demo",
        "repoName": "maven",
        "name": "lib",
        "key": "gav://com.x:lib",
        "type": "MAVEN",
        "latest": "1.0",
        "downloads": 3,
        "versions": 1,
        "versionTag": {},
        "extension": {},
        "historyVersion": ["1.0"],
        "lastModifiedDate": TIME,
    }
    b.add("demo/maven/package.json", {"id": b.next_id(), **package})
    b.add(
        "demo/maven/package-version.json",
        {
            "id": b.next_id(),
            "packageId": object_id(99),
            "name": "1.0",
            "size": 2500,
            "ordinal": 1,
            "downloads": 3,
            "manifestPath": None,
            "artifactPath": "/com/x/lib/1.0/lib-1.0.jar",
            "stageTag": [],
            "metadata": [],
            "tags": [],
            "extension": {},
            "clusterNames": None,
            "lastModifiedDate": TIME,
            "projectId": "demo",
            "repoName": "maven",
            "key": "gav://com.x:lib",
        },
    )
    for repo in ("generic", "maven"):  # queried by project: every folder holds them all
        b.add(
            f"demo/{repo}/maven-metadata.json",
            {
                "id": object_id(500),
                "projectId": "demo",
                "repoName": "maven",
                "groupId": "com.x",
                "artifactId": "lib",
                "version": "1.0",
                "timestamp": None,
                "buildNo": 0,
                "classifier": None,
                "extension": "jar",
            },
        )
    other = {
        "id": b.next_id(),
        "name": "other",
        "displayName": "other",
        "description": "",
        "metadata": [],
        "credentialsKey": None,
        "createdBy": "admin",
        "createdDate": TIME,
        "lastModifiedBy": "admin",
        "lastModifiedDate": TIME,
    }
    b.repository(other, "files")
    b.node("other", "files", "/a.bin", b"\x00\x01\x02" * 10)
    return b
