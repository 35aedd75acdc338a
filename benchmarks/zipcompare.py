"""Our zip writer and reader side by side with the standard library's zipfile.

Run ``python benchmarks/zipcompare.py [MB]``; docs/architecture.md has the figures and the verdict.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import fsspec
import zstandard

from repobackup._archive.layout import blob_member
from repobackup._archive.zipreader import ZipReader
from repobackup._archive.zipwriter import ZipWriter


def blobs(total: int) -> list[bytes]:
    """Half incompressible, half text-like, in sizes from 4 KiB to 4 MiB."""
    out, made, size, rng = [], 0, 4096, 0
    words = b"artifact node package version metadata checksum repository docker maven "
    while made < total:
        rng += 1
        random = (rng // 6) % 2  # each size comes both random and text-like
        data = os.urandom(size) if random else (words * (size // len(words) + 1))[:size]
        data = rng.to_bytes(4, "big") + data  # every blob distinct
        out.append(data)
        made += len(data)
        size = 4096 if size >= 4 << 20 else size * 4
    return out


class Unseekable(io.RawIOBase):
    """A write-only stream, as an upload is."""

    def __init__(self, file: io.BufferedWriter) -> None:
        self.file = file

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        return self.file.write(data)


def ours_write(fs: fsspec.AbstractFileSystem, path: str, data: list[bytes]) -> float:
    start = time.perf_counter()
    writer = ZipWriter(fs, path, path, workers=os.cpu_count() or 2)
    for blob in data:
        writer.write_blob(hashlib.sha256(blob).hexdigest(), [blob])
    writer.commit({"format": 1, "members": []})
    return time.perf_counter() - start


def stdlib_write(path: str, data: list[bytes]) -> float:
    """zipfile to an unseekable stream, with the same zstd-when-worth-it members."""
    start = time.perf_counter()
    compressor = zstandard.ZstdCompressor(level=3)
    with open(path, "wb") as raw, zipfile.ZipFile(Unseekable(raw), "w") as archive:
        for blob in data:
            sha = hashlib.sha256(blob).hexdigest()
            packed = compressor.compress(blob)
            if len(packed) < 0.9 * len(blob):
                name, body = blob_member(sha, compressed=True), packed
            else:
                name, body = blob_member(sha, compressed=False), blob
            with archive.open(zipfile.ZipInfo(name), "w", force_zip64=True) as member:
                member.write(body)
        archive.writestr("manifest.json", b'{"format": 1, "members": []}')
    return time.perf_counter() - start


def ours_read(fs: fsspec.AbstractFileSystem, path: str) -> float:
    start = time.perf_counter()
    reader = ZipReader(fs, path, path)
    for name in list(reader.members()):
        with reader.open(name) as member:
            while member.read(1 << 20):
                pass
    reader.close()
    return time.perf_counter() - start


def stdlib_read(fs: fsspec.AbstractFileSystem, path: str) -> float:
    start = time.perf_counter()
    with fs.open(path, "rb") as raw, zipfile.ZipFile(raw) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                while member.read(1 << 20):
                    pass
    return time.perf_counter() - start


def hostile() -> dict[str, str]:
    """What each reader does with a zip holding an escaping name, a duplicate and a link."""
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as archive:
        archive.writestr("../../etc/evil", b"escape")
        archive.writestr("blobs/aa", b"first")
        archive.writestr("blobs/aa", b"second")
        link = zipfile.ZipInfo("blobs/link")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, b"/etc/passwd")
        archive.writestr("manifest.json", b'{"format": 1, "members": []}')
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/hostile.zip", raw.getvalue())
    seen = {}
    with fs.open("/hostile.zip", "rb") as file, zipfile.ZipFile(file) as archive:
        names = archive.namelist()
        seen["stdlib ZipFile"] = (
            f"lists {names}; open('../../etc/evil') gives {archive.read('../../etc/evil')!r}; "
            f"open('blobs/link') gives {archive.read('blobs/link')!r}"
        )
    reader = ZipReader(fs, "/hostile.zip", "hostile.zip")
    seen["ZipReader"] = f"lists {sorted(reader.members())}; refuses {reader.problems}"
    reader.close()
    return seen


def s3_figures(data: list[bytes]) -> dict[str, float]:
    """One-pass uploads to a local moto S3 server: ours and zipfile on an s3fs file."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from s3server import S3Server

    server = S3Server.start()
    try:
        fs = server.filesystem()
        bucket = server.new_bucket("bench")
        figures = {"ours write to S3 (one pass)": ours_write(fs, f"{bucket}/ours.zip", data)}
        start = time.perf_counter()
        compressor = zstandard.ZstdCompressor(level=3)
        with fs.open(f"{bucket}/stdlib.zip", "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            for blob in data:
                sha = hashlib.sha256(blob).hexdigest()
                packed = compressor.compress(blob)
                body = packed if len(packed) < 0.9 * len(blob) else blob
                with archive.open(zipfile.ZipInfo(sha), "w", force_zip64=True) as member:
                    member.write(body)
        figures["stdlib write to S3 (s3fs file)"] = time.perf_counter() - start
        figures["ours read from S3 (ranged reads)"] = ours_read(fs, f"{bucket}/ours.zip")
        figures["stdlib read from S3 (ZipFile on s3fs file)"] = stdlib_read(
            fs, f"{bucket}/ours.zip"
        )
        return figures
    finally:
        server.stop()


def main() -> None:
    mb = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 200
    data = blobs(mb << 20)
    fs = fsspec.filesystem("file")
    with tempfile.TemporaryDirectory() as scratch:
        ours, theirs = f"{scratch}/ours.zip", f"{scratch}/stdlib.zip"
        figures = {
            "ours write": ours_write(fs, ours, data),
            "stdlib write (unseekable)": stdlib_write(theirs, data),
            "ours read (ZipReader)": ours_read(fs, ours),
            "stdlib read of ours (ZipFile on fsspec file)": stdlib_read(fs, ours),
            "stdlib read of stdlib's": stdlib_read(fs, theirs),
            "ours read of stdlib's": None,
        }
        try:
            figures["ours read of stdlib's"] = ours_read(fs, theirs)
        except Exception as exc:
            print(f"ours read of stdlib's zip: refused: {type(exc).__name__}: {exc}")
        if "--s3" in sys.argv:
            figures.update(s3_figures(data))
        total = sum(len(b) for b in data) / 1e6
        print(f"{len(data)} blobs, {total:.0f} MB; {os.cpu_count()} CPUs")
        for what, seconds in figures.items():
            if seconds is not None:
                print(f"{what:48} {seconds:6.2f} s  {total / seconds:7.0f} MB/s")
        for name in (ours, theirs):
            print(f"{Path(name).name}: {Path(name).stat().st_size / 1e6:.0f} MB")
    for reader, what in hostile().items():
        print(f"hostile zip, {reader}: {what}")


if __name__ == "__main__":
    main()
