"""Hostile folder backups restored and verified in a child process under a memory limit.

Links, FIFOs and devices are refused, no member is read past its declared size, oversized
manifests and lines are refused unread: each case ends within seconds under 200 MB of RSS.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from helpers import RECORD_T0 as T0
from helpers import record_line as line
from hostile import GIB, MIB, run_python

GOOD = b"good file content\n" * 20
NAME = "hostile-20260301.120000"
NODES = "projects/p1/repos/generic/node"
RSS_LIMIT = 200 * MIB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def node(path: str, digest: str, size: int) -> bytes:
    document = {"fullPath": path, "sha256": digest, "size": size}
    return line("node", path, document, projectId="p1", repoName="generic", blob=digest, size=size)


class Folder:
    """A small folder backup written by hand: one user, two files."""

    def __init__(self, root: Path, *, compressed: bool = False) -> None:
        self.root = root / NAME
        self.compressed = compressed
        self.suffix = ".jsonl.zst" if compressed else ".jsonl"
        self.records: dict[str, list[bytes]] = {
            "common/user": [line("user", "admin", {"name": "admin"})],
            NODES: [node("/a.txt", sha(GOOD), len(GOOD))],
        }
        self.blobs = {sha(GOOD): GOOD}

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / digest[:2] / digest[2:4] / digest

    def write(self) -> str:
        members = []
        for stem, lines in self.records.items():
            data = b"".join(lines)
            if self.compressed:
                data = zstandard.ZstdCompressor().compress(data)
            path = self.root / (stem + self.suffix)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            parts = stem.split("/")
            members.append(
                {
                    "path": stem + self.suffix,
                    "projectId": parts[1] if parts[0] == "projects" else None,
                    "repoName": parts[3] if len(parts) > 3 else None,
                    "collection": parts[-1],
                    "records": len(lines),
                    "tombstones": 0,
                    "size": len(data),
                    "sha256": sha(data),
                }
            )
        for digest, content in self.blobs.items():
            path = self.blob_path(digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        manifest = {
            "format": 1,
            "generator": "by hand",
            "name": NAME,
            "taskName": "hostile",
            "created": T0,
            "completed": T0,
            "kind": "full",
            "since": None,
            "follows": None,
            "compression": self.compressed,
            "commonData": True,
            "projects": {"p1": ["generic"]},
            "members": members,
            "blobs": {"count": len(self.blobs), "bytes": len(GOOD), "failed": []},
        }
        (self.root / "manifest.json").write_text(json.dumps(manifest))
        return str(self.root)


CHILD = textwrap.dedent(
    """
    import json, sys
    from repobackup import Engine, MemoryRepository, Scope
    location, what = sys.argv[1], sys.argv[2]
    target = MemoryRepository()
    engine = Engine(target)
    if what == "verify":
        report = engine.verify(location)
        out = {"ok": report.ok, "problems": [str(p) for p in report.problems]}
    else:
        task = engine.create_task({
            "name": "restore", "storeLocation": location, "type": "DATA_RESTORE",
            "content": {"commonData": True, "projects": [{"projectRegex": "*"}]},
            "backupSetting": {"errorStrategy": "CONTINUE"},
        })
        summary = engine.execute(task)
        out = {"state": summary.state.name, "errors": [e.message for e in summary.errors],
               "users": [r.key for r in target.records(Scope(None, None), "user")]}
    print(json.dumps(out))
    """
)


def run_child(location: str, what: str) -> tuple[dict[str, Any], float]:
    code = CHILD.replace("sys.argv[1], sys.argv[2]", f"{location!r}, {what!r}")
    result = run_python(code, memory=2 * GIB, timeout=30)
    assert not result.timed_out, result.stderr[-2000:]
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.peak_rss < RSS_LIMIT, f"{what}: {result.peak_rss_mib:.0f} MiB"
    assert result.elapsed < 20
    print(f"{what}: peak {result.peak_rss_mib:.1f} MiB, {result.elapsed:.2f} s")
    return json.loads(result.stdout.strip().splitlines()[-1]), result.peak_rss_mib


def _dev_zero_blob(folder: Folder, outside: Path) -> str:
    location = folder.write()
    path = folder.blob_path(sha(GOOD))
    path.unlink()
    path.symlink_to("/dev/zero")
    return location


def _fifo_records(folder: Folder, outside: Path) -> str:
    location = folder.write()
    path = folder.root / (NODES + folder.suffix)
    path.unlink()
    os.mkfifo(path)
    return location


def _fifo_blob(folder: Folder, outside: Path) -> str:
    location = folder.write()
    path = folder.blob_path(sha(GOOD))
    path.unlink()
    os.mkfifo(path)
    return location


def _outward_projects(folder: Folder, outside: Path) -> str:
    location = folder.write()
    # The same tree, but outside the backup, reached through a `projects` link.
    (folder.root / "projects").rename(outside / "projects")
    (folder.root / "projects").symlink_to(outside / "projects")
    return location


def _zstd_bomb(folder: Folder, outside: Path) -> str:
    folder.compressed = True
    folder.suffix = ".jsonl.zst"
    bomb = zstandard.ZstdCompressor(level=19).compressobj()
    chunk = bytes(1 << 20)
    packed = b"".join(bomb.compress(chunk) for _ in range(1024)) + bomb.flush()
    digest = sha(b"abc")
    folder.records[NODES] = [node("/bomb.txt", digest, 3)]
    folder.blobs = {}
    location = folder.write()
    path = folder.blob_path(digest).with_suffix(".zst")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(packed)
    return location


def _huge_line(folder: Folder, outside: Path) -> str:
    folder.compressed = True
    folder.suffix = ".jsonl.zst"
    location = folder.write()
    path = folder.root / (NODES + folder.suffix)
    # 256 MiB of one line, compressed to a few kilobytes.
    with path.open("wb") as out, zstandard.ZstdCompressor().stream_writer(out) as writer:
        writer.write(b'{"key": "')
        for _ in range(256):
            writer.write(b"a" * (1 << 20))
        writer.write(b'"}\n')
    data = path.read_bytes()
    manifest = json.loads((folder.root / "manifest.json").read_text())
    for entry in manifest["members"]:
        if entry["path"] == NODES + folder.suffix:
            entry.update(size=len(data), sha256=sha(data), records=1)
    (folder.root / "manifest.json").write_text(json.dumps(manifest))
    return location


def _huge_manifest(folder: Folder, outside: Path) -> str:
    location = folder.write()
    path = folder.root / "manifest.json"
    with path.open("wb") as out:
        out.write(b'{"format": 1, "members": [')
        out.truncate(300 * 1000 * 1000)
    return location


def _deep_nesting(folder: Folder, outside: Path) -> str:
    deep = b"[" * 100_000 + b"]" * 100_000
    folder.records["common/user"].append(
        b'{"collection": "user", "key": "deep", "document": ' + deep + b"}\n"
    )
    return folder.write()


def _missing_records(folder: Folder, outside: Path) -> str:
    location = folder.write()
    (folder.root / (NODES + folder.suffix)).unlink()
    return location


CASES: dict[str, Callable[[Folder, Path], str]] = {
    "dev-zero-blob-symlink": _dev_zero_blob,
    "fifo-records-member": _fifo_records,
    "fifo-blob": _fifo_blob,
    "outward-projects-symlink": _outward_projects,
    "zstd-bomb": _zstd_bomb,
    "256MiB-json-line": _huge_line,
    "300MB-manifest": _huge_manifest,
    "deep-nesting": _deep_nesting,
    "missing-records-member": _missing_records,
}


@pytest.mark.parametrize("what", ["restore", "verify"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_folder_costs_bounded_resources(tmp_path: Path, case: str, what: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    location = CASES[case](Folder(tmp_path / "store"), outside)
    out, _ = run_child(location, what)
    if what == "verify":
        assert out["ok"] is False
        assert out["problems"]
        return
    if case == "300MB-manifest":
        assert out["state"] == "FAILED"
        assert any("larger than" in e for e in out["errors"])
        return
    # Everything else is one record's or member's error: the rest is restored.
    assert out["state"] == "FINISHED", out
    assert out["errors"], out
    assert "admin" in out["users"]
