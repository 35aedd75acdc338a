"""The zip form of a backup: ZipWriter's single streaming pass and ZipReader's checks."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tracemalloc
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
import zstandard
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import ZipReader, ZipWriter, blob_member, worth_compressing
from repobackup.exceptions import ArchiveError, StoreError

MANIFEST = {"format": 1, "members": []}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_blob(size: int, seed: int = 0) -> bytes:
    """Compressible bytes: repeated words."""
    words = [f"word{(seed * 7 + i) % 97}" for i in range(64)]
    data = (" ".join(words) + "\n").encode()
    return (data * (size // len(data) + 1))[:size]


def unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()


class WriteOnlyFileSystem(MemoryFileSystem):
    """An in-memory store whose files for writing are write-only streams that cannot seek
    or tell, as an object-store upload is; a file appears at close. ``fail_after`` makes
    writes raise ConnectionError once that many bytes went through."""

    protocol = "writeonly"
    store: ClassVar[dict[str, Any]] = {}
    pseudo_dirs: ClassVar[list[str]] = [""]
    fail_after: ClassVar[int | None] = None

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode == "wb":
            return _WriteOnlyFile(self, self._strip_protocol(path))
        return super()._open(path, mode, **kwargs)


class _WriteOnlyFile(io.RawIOBase):
    def __init__(self, fs: WriteOnlyFileSystem, path: str) -> None:
        super().__init__()
        self.fs = fs
        self.path = path
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, *args: Any) -> int:
        raise io.UnsupportedOperation("seek")

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")

    def write(self, data: Any) -> int:
        limit = WriteOnlyFileSystem.fail_after
        if limit is not None and len(self.data) + len(data) > limit:
            raise ConnectionError("connection reset while uploading")
        self.data += data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.fs.store[self.path] = MemoryFile(self.fs, self.path, bytes(self.data))
        super().close()


fsspec.register_implementation("writeonly", WriteOnlyFileSystem, clobber=True)


@pytest.fixture(name="writeonly")
def _writeonly() -> Iterator[WriteOnlyFileSystem]:
    WriteOnlyFileSystem.store.clear()
    WriteOnlyFileSystem.fail_after = None
    yield fsspec.filesystem("writeonly")
    WriteOnlyFileSystem.store.clear()
    WriteOnlyFileSystem.fail_after = None


@pytest.fixture(name="local")
def _local() -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("file")


def write_sample(fs: fsspec.AbstractFileSystem, path: str, **options: Any) -> dict[str, bytes]:
    """A zip with a records member, a compressible, a random and an empty blob."""
    writer = ZipWriter(fs, path, path, **options)
    lines = [json.dumps({"n": i}).encode() + b"\n" for i in range(500)]
    blobs = {"text": text_blob(200_000), "random": os.urandom(100_000), "empty": b""}
    writer.write_records("common/user.jsonl.zst", iter(lines))
    for data in blobs.values():
        writer.write_blob(sha(data), [data[:1000], data[1000:]])
    writer.commit(MANIFEST)
    return {"lines": b"".join(lines), **blobs}


class TestZipWriter:
    def test_members_are_stored_and_content_is_zstd(self, local: Any, tmp_path: Path) -> None:
        """Every member is STORED; records and compressible blobs are zstd, the rest as is."""
        path = str(tmp_path / "t" / "t-20240101.000000.zip")
        content = write_sample(local, path)
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
            infos = {info.filename: info for info in zf.infolist()}
            assert {i.compress_type for i in infos.values()} == {zipfile.ZIP_STORED}
            assert unzstd(zf.read("common/user.jsonl.zst")) == content["lines"]
            text = blob_member(sha(content["text"]), compressed=True)
            assert unzstd(zf.read(text)) == content["text"]
            assert infos[text].file_size < len(content["text"]) // 10
            random_member = blob_member(sha(content["random"]), compressed=False)
            assert zf.read(random_member) == content["random"]
            assert zf.read(blob_member(sha(b""), compressed=False)) == b""
            assert zf.namelist()[-1] == "manifest.json"
            assert json.loads(zf.read("manifest.json")) == MANIFEST

    @pytest.mark.skipif(shutil.which("unzip") is None, reason="needs the unzip tool")
    def test_unzip_and_zstd_tools_read_it(self, local: Any, tmp_path: Path) -> None:
        """The stock unzip and zstd tools extract and decompress a backup zip."""
        if shutil.which("zstd") is None:
            pytest.skip("needs the zstd tool")
        path = str(tmp_path / "b.zip")
        content = write_sample(local, path)
        out = tmp_path / "out"
        subprocess.run(["unzip", "-q", path, "-d", str(out)], check=True)
        member = out / blob_member(sha(content["text"]), compressed=True)
        subprocess.run(["zstd", "-q", "-d", "--rm", str(member)], check=True)
        assert member.with_suffix("").read_bytes() == content["text"]
        records = subprocess.run(
            ["zstd", "-dc", str(out / "common" / "user.jsonl.zst")],
            check=True,
            capture_output=True,
        ).stdout
        assert records == content["lines"]

    def test_zip_appears_only_at_commit(self, local: Any, tmp_path: Path) -> None:
        """On disk the zip is written beside its name as .partial and renamed at commit."""
        path = tmp_path / "t" / "b.zip"
        writer = ZipWriter(local, str(path), str(path))
        writer.write_blob(sha(b"x"), [b"x"])
        assert not path.exists()
        partial = [p.name for p in (tmp_path / "t").iterdir()]
        assert len(partial) == 1
        assert re.fullmatch(r"\.b\.zip\.[0-9a-f]{12}\.partial", partial[0])
        writer.commit(MANIFEST)
        assert path.exists()
        assert [p.name for p in (tmp_path / "t").iterdir()] == ["b.zip"]

    def test_two_writers_of_one_name_never_share_or_replace(
        self, local: Any, tmp_path: Path
    ) -> None:
        """Two writers of one zip name write apart; the later commit fails, the first zip
        stays whole and nothing half-written takes its name."""
        path = tmp_path / "t" / "b.zip"
        first = ZipWriter(local, str(path), str(path))
        second = ZipWriter(local, str(path), str(path))
        assert len(list((tmp_path / "t").iterdir())) == 2
        first.write_blob(sha(b"x"), [b"x"])
        second.write_blob(sha(b"y"), [b"y"])
        first.commit(MANIFEST)
        with pytest.raises(StoreError, match="already exists"):
            second.commit(MANIFEST)
        second.abort()
        assert [p.name for p in (tmp_path / "t").iterdir()] == ["b.zip"]
        with zipfile.ZipFile(path) as done:
            assert blob_member(sha(b"x"), compressed=False) in done.namelist()

    def test_abort_leaves_nothing(self, local: Any, tmp_path: Path) -> None:
        """abort() removes the partial zip; nothing is left in the task folder."""
        path = tmp_path / "t" / "b.zip"
        writer = ZipWriter(local, str(path), str(path))
        writer.write_blob(sha(b"x"), [b"x"])
        writer.abort()
        assert list((tmp_path / "t").iterdir()) == []
        with pytest.raises(StoreError, match="aborted"):
            writer.write_blob(sha(b"y"), [b"y"])

    def test_refuses_an_existing_zip(self, local: Any, tmp_path: Path) -> None:
        """A zip is never written over an existing backup of the same name."""
        path = tmp_path / "b.zip"
        path.write_bytes(b"old")
        with pytest.raises(StoreError, match="already exists"):
            ZipWriter(local, str(path), str(path))
        assert path.read_bytes() == b"old"

    def test_writes_to_a_stream_that_cannot_seek(self, writeonly: Any) -> None:
        """The zip goes out in one forward pass: a write-only, non-seekable upload suffices."""
        content = write_sample(writeonly, "/store/b.zip")
        data = writeonly.cat_file("/store/b.zip")
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.testzip() is None
            assert unzstd(zf.read("common/user.jsonl.zst")) == content["lines"]
        reader = ZipReader(writeonly, "/store/b.zip", "writeonly://store/b.zip")
        with reader.open(blob_member(sha(content["random"]), compressed=False)) as file:
            assert file.read() == content["random"]
        reader.close()

    def test_local_headers_carry_sizes_for_streaming_readers(self, writeonly: Any) -> None:
        """No member uses a data descriptor: each local header holds its size and CRC."""
        write_sample(writeonly, "/store/b.zip")
        data = writeonly.cat_file("/store/b.zip")
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                assert not info.flag_bits & 0x08
                header = data[info.header_offset : info.header_offset + 30]
                crc, size = int.from_bytes(header[14:18], "little"), header[22:26]
                assert crc == info.CRC
                assert int.from_bytes(size, "little") == info.file_size

    def test_a_failed_stream_fails_the_backup_naming_the_zip(self, writeonly: Any) -> None:
        """A write that fails midway is a StoreError naming the zip; nothing more is written."""
        WriteOnlyFileSystem.fail_after = 50_000
        writer = ZipWriter(writeonly, "/store/b.zip", "writeonly://store/b.zip")
        data = os.urandom(80_000)
        with pytest.raises(StoreError, match=r"writeonly://store/b\.zip.*ConnectionError"):
            writer.write_blob(sha(data), [data])
        with pytest.raises(StoreError, match="nothing more can be written"):
            writer.write_blob(sha(b"x"), [b"x"])
        writer.abort()
        assert not writeonly.exists("/store/b.zip")

    def test_blob_whose_chunks_fail_leaves_no_member(self, local: Any, tmp_path: Path) -> None:
        """When the chunks raise (a hash check failing), nothing of the blob is in the zip,
        and the blob can still be written afterwards."""
        path = str(tmp_path / "b.zip")
        writer = ZipWriter(local, path, path)
        data = text_blob(10_000)

        def failing() -> Iterator[bytes]:
            yield data
            raise ArithmeticError("hash mismatch")

        with pytest.raises(ArithmeticError):
            writer.write_blob(sha(data), failing())
        writer.write_blob(sha(data), [data])
        writer.commit(MANIFEST)
        with zipfile.ZipFile(path) as zf:
            assert zf.namelist() == [blob_member(sha(data), compressed=True), "manifest.json"]

    def test_a_member_is_written_once(self, local: Any, tmp_path: Path) -> None:
        """Writing the same blob or records member twice is refused, not a duplicate entry."""
        path = str(tmp_path / "b.zip")
        writer = ZipWriter(local, path, path)
        writer.write_blob(sha(b"x"), [b"x"])
        with pytest.raises(ValueError, match="already in"):
            writer.write_blob(sha(b"x"), [b"x"])
        writer.write_records("common/a.jsonl.zst", [b"{}\n"])
        with pytest.raises(ValueError, match="already in"):
            writer.write_records("common/a.jsonl.zst", [b"{}\n"])
        writer.abort()

    def test_records_member_names_are_checked(self, local: Any, tmp_path: Path) -> None:
        """A member path that would escape the tree is refused before anything is written."""
        path = str(tmp_path / "b.zip")
        writer = ZipWriter(local, path, path)
        with pytest.raises(ArchiveError, match="escapes"):
            writer.write_records("../evil.jsonl.zst", [b"{}\n"])
        with pytest.raises(ValueError, match="sha256"):
            writer.write_blob("../../etc/passwd", [b""])
        writer.abort()

    def test_blobs_from_workers_while_records_stream(self, local: Any, tmp_path: Path) -> None:
        """Records stream from one thread while it waits on blob jobs that append to the same
        zip from worker threads: no deadlock, no interleaving, every member intact."""
        path = str(tmp_path / "b.zip")
        writer = ZipWriter(local, path, path, workers=4)
        blobs = [text_blob(30_000 + i, seed=i) for i in range(40)] + [
            os.urandom(20_000 + i) for i in range(40)
        ]
        with ThreadPoolExecutor(4) as pool:

            def lines() -> Iterator[bytes]:
                for start in range(0, len(blobs), 8):
                    jobs = [
                        pool.submit(writer.write_blob, sha(data), [data[:7000], data[7000:]])
                        for data in blobs[start : start + 8]
                    ]
                    for job in jobs:
                        job.result(timeout=30)  # waits on workers appending to this zip
                    yield f'{{"upto":{start}}}\n'.encode()

            info = writer.write_records("common/x.jsonl.zst", lines())
        writer.commit(MANIFEST)
        assert info.records == 10
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
            assert len(zf.namelist()) == len(blobs) + 2
        reader = ZipReader(local, path, path)
        for data in blobs:
            member = blob_member(sha(data), compressed=True)
            if not reader.exists(member):
                member = blob_member(sha(data), compressed=False)
            with reader.open(member) as file:
                stored = file.read()
            assert (unzstd(stored) if member.endswith(".zst") else stored) == data
        reader.close()

    def test_memory_stays_bounded_for_large_blobs(self, local: Any, tmp_path: Path) -> None:
        """A blob much larger than the spool threshold spills to disk: memory stays flat."""
        path = str(tmp_path / "b.zip")
        writer = ZipWriter(local, path, path, workers=4)
        chunk = os.urandom(1 << 20)

        def big(count: int) -> Iterator[bytes]:
            for index in range(count):
                yield chunk[index:] + chunk[:index]

        digest = hashlib.sha256()
        for piece in big(48):
            digest.update(piece)
        tracemalloc.start()
        try:
            writer.write_blob(digest.hexdigest(), big(48))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        writer.commit(MANIFEST)
        assert os.path.getsize(path) > 48 << 20
        assert peak < 20 << 20, f"peak {peak} bytes for a 48 MiB blob"

    def test_zip64_records_are_read_by_every_reader(self, local: Any, tmp_path: Path) -> None:
        """With zip64 forced (as members over 4 GiB need), zipfile, unzip and ZipReader agree."""
        path = str(tmp_path / "b.zip")
        content = write_sample(local, path, force_zip64=True)
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
            assert unzstd(zf.read("common/user.jsonl.zst")) == content["lines"]
        if shutil.which("unzip"):
            subprocess.run(["unzip", "-tq", path], check=True, capture_output=True)
        reader = ZipReader(local, path, path)
        with reader.open(blob_member(sha(content["random"]), compressed=False)) as file:
            assert file.read() == content["random"]
        assert reader.manifest == MANIFEST
        reader.close()

    def test_more_than_65535_members(self, local: Any, tmp_path: Path) -> None:
        """A zip with more members than the classic end record can count uses zip64."""
        path = str(tmp_path / "b.zip")
        writer = ZipWriter(local, path, path)
        count = 0x10000 + 3
        for index in range(count):
            data = index.to_bytes(4, "big")
            writer.write_blob(sha(data), [data])
        writer.commit(MANIFEST)
        with zipfile.ZipFile(path) as zf:
            assert len(zf.infolist()) == count + 1
        reader = ZipReader(local, path, path)
        assert sum(1 for _ in reader.members()) == count + 1
        last = (count - 1).to_bytes(4, "big")
        with reader.open(blob_member(sha(last), compressed=False)) as file:
            assert file.read() == last
        reader.close()

    @settings(max_examples=25)
    @given(
        blobs=st.lists(st.binary(max_size=3000), max_size=6, unique=True),
        lines=st.lists(st.text(max_size=40), max_size=20),
    )
    def test_round_trip(self, blobs: list[bytes], lines: list[str]) -> None:
        """Whatever goes in comes back out, through zipfile and through ZipReader alike."""
        fs = fsspec.filesystem("memory")
        path = f"/roundtrip/{sha(repr((blobs, lines)).encode())}.zip"
        writer = ZipWriter(fs, path, path)
        encoded = [json.dumps(line).encode() + b"\n" for line in lines]
        info = writer.write_records("common/c.jsonl.zst", encoded)
        for data in blobs:
            writer.write_blob(sha(data), [data])
        writer.commit(MANIFEST)
        raw = fs.cat_file(path)
        reader = ZipReader(fs, path, path)
        try:
            with reader.open("common/c.jsonl.zst") as file:
                stored = file.read()
            assert hashlib.sha256(stored).hexdigest() == info.sha256
            assert len(stored) == info.size
            assert unzstd(stored) == b"".join(encoded)
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                assert zf.testzip() is None
                for data in blobs:
                    plain = blob_member(sha(data), compressed=False)
                    member = plain if reader.exists(plain) else plain + ".zst"
                    with reader.open(member) as file:
                        ours = file.read()
                    assert ours == zf.read(member)
                    assert (unzstd(ours) if member.endswith(".zst") else ours) == data
        finally:
            reader.close()
            fs.rm(path)


class TestWorthCompressing:
    @pytest.mark.parametrize(
        "magic",
        [
            b"PK\x03\x04",
            b"\x1f\x8b\x08",
            b"\x28\xb5\x2f\xfd",
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
        ],
    )
    def test_compressed_formats_are_recognised_by_magic(self, magic: bytes) -> None:
        """Archives, jars, wheels and images are stored as they are, however they look inside."""
        assert not worth_compressing(magic + b"a" * 10_000)

    @given(st.binary(min_size=1024, max_size=70_000))
    def test_random_bytes_are_not_worth_it(self, data: bytes) -> None:
        """Bytes without redundancy do not shrink enough to be compressed."""
        assert not worth_compressing(os.urandom(len(data)))

    @given(st.integers(1024, 70_000), st.integers(0, 50))
    def test_text_is_worth_it(self, size: int, seed: int) -> None:
        """Repetitive text is compressed."""
        assert worth_compressing(text_blob(size, seed))

    def test_tiny_content_is_stored(self) -> None:
        """A few bytes are never worth a zstd frame."""
        assert not worth_compressing(b"")
        assert not worth_compressing(b"aaaaaaaa")


def build_zip(path: Path, members: list[tuple[Any, bytes]], *, comment: bytes = b"") -> None:
    """A zip made by hand with zipfile: each member a name or a ZipInfo, stored."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.comment = comment
        for name, data in members:
            zf.writestr(name, data)


def good_members() -> list[tuple[Any, bytes]]:
    return [("common/a.jsonl", b'{"x":1}\n'), ("manifest.json", json.dumps(MANIFEST).encode())]


class TestZipReader:
    def test_reads_a_zip_made_by_zipfile(self, local: Any, tmp_path: Path) -> None:
        """Any stored zip of the backup tree reads, with a comment and folder entries too."""
        path = tmp_path / "b.zip"
        members = [(zipfile.ZipInfo("common/"), b""), *good_members()]
        build_zip(path, members, comment=b"made by hand")
        reader = ZipReader(local, str(path), str(path))
        assert list(reader.members()) == ["common/a.jsonl", "manifest.json"]
        assert reader.problems == []
        with reader.open("common/a.jsonl") as file:
            assert file.read() == b'{"x":1}\n'
        reader.close()

    def test_reads_members_with_data_descriptors(self, tmp_path: Path) -> None:
        """A zip streamed by another tool (sizes after the data) reads the same."""
        buffer = io.BytesIO()

        class Unseekable(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def seekable(self) -> bool:
                return False

            def write(self, data: Any) -> int:
                return buffer.write(data)

        with zipfile.ZipFile(Unseekable(), "w") as zf:
            for name, data in good_members():
                with zf.open(zipfile.ZipInfo(name), "w") as file:
                    file.write(data)
        fs = fsspec.filesystem("memory")
        fs.pipe("/descriptors/b.zip", buffer.getvalue())
        reader = ZipReader(fs, "/descriptors/b.zip", "memory://descriptors/b.zip")
        with reader.open("common/a.jsonl") as file:
            assert file.read() == b'{"x":1}\n'
        reader.close()

    @pytest.mark.parametrize("cut", [1, 10, 30, 200])
    def test_truncated_zip_is_an_archive_error_naming_it(
        self, local: Any, tmp_path: Path, cut: int
    ) -> None:
        """A zip cut short anywhere fails with an ArchiveError that names the file."""
        path = tmp_path / "b.zip"
        write_sample(local, str(path))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - cut])
        with pytest.raises(ArchiveError, match=r"b\.zip.*(truncated|damaged)"):
            ZipReader(local, str(path), str(path))

    @pytest.mark.parametrize("data", [b"", b"not a zip at all", b"PK\x05\x06" + b"\x00" * 10])
    def test_not_a_zip(self, local: Any, tmp_path: Path, data: bytes) -> None:
        """Empty or foreign files are an ArchiveError naming the file, not a crash."""
        path = tmp_path / "b.zip"
        path.write_bytes(data)
        with pytest.raises(ArchiveError, match=r"b\.zip"):
            ZipReader(local, str(path), str(path))

    def test_corrupted_bytes_fail_the_crc_naming_the_member(
        self, local: Any, tmp_path: Path
    ) -> None:
        """A flipped byte in a member's data is an ArchiveError naming that member."""
        path = tmp_path / "b.zip"
        content = write_sample(local, str(path))
        member = blob_member(sha(content["random"]), compressed=False)
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(member)
        data = bytearray(path.read_bytes())
        data[info.header_offset + 30 + len(member) + 5000] ^= 0xFF
        path.write_bytes(bytes(data))
        reader = ZipReader(local, str(path), str(path))
        with pytest.raises(ArchiveError, match=f"{member} is corrupt"), reader.open(member) as f:
            f.read()
        reader.close()

    @pytest.mark.parametrize(
        "name",
        ["../x", "/abs", "a/../../x", "a\\b", "C:/x", "a//b", "./a", "nul\x00byte"],
    )
    def test_hostile_names_are_left_out_and_listed(
        self, local: Any, tmp_path: Path, name: str
    ) -> None:
        """A member whose path is absolute, climbs out, or is malformed is never indexed,
        and `problems` names it."""
        path = tmp_path / "b.zip"
        info = zipfile.ZipInfo("placeholder")
        build_zip(path, [*good_members(), (info, b"evil")])
        # zipfile cleans some names on the way in: patch the raw bytes of both headers.
        hostile = name.ljust(len("placeholder"), "x")
        path.write_bytes(path.read_bytes().replace(b"placeholder", hostile.encode()))
        reader = ZipReader(local, str(path), str(path))
        assert hostile not in set(reader.members())
        assert not reader.exists("placeholder")
        assert [member for member, _ in reader.problems] == [hostile]
        assert "escapes the backup or is malformed" in reader.problems[0][1]
        reader.close()

    def test_symlink_members_are_refused(self, local: Any, tmp_path: Path) -> None:
        """A member flagged as a symbolic link is never indexed."""
        path = tmp_path / "b.zip"
        link = zipfile.ZipInfo("blobs/aa/bb/link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        build_zip(path, [*good_members(), (link, b"/etc/passwd")])
        reader = ZipReader(local, str(path), str(path))
        assert not reader.exists("blobs/aa/bb/link")
        assert reader.problems == [
            ("blobs/aa/bb/link", "member blobs/aa/bb/link is a symbolic link; backups hold none")
        ]
        reader.close()

    def test_duplicate_names_make_every_copy_unusable(self, local: Any, tmp_path: Path) -> None:
        """Two members with one name are ambiguous: neither is read."""
        path = tmp_path / "b.zip"
        with pytest.warns(UserWarning, match="Duplicate name"):
            build_zip(path, [*good_members(), ("common/a.jsonl", b'{"x":2}\n')])
        reader = ZipReader(local, str(path), str(path))
        assert not reader.exists("common/a.jsonl")
        assert reader.problems[0][0] == "common/a.jsonl"
        assert "more than once" in reader.problems[0][1]
        reader.close()

    def test_a_duplicated_manifest_rejects_the_zip(self, local: Any, tmp_path: Path) -> None:
        """Two manifests cannot be told apart: the zip is not a usable backup."""
        path = tmp_path / "b.zip"
        with pytest.warns(UserWarning, match="Duplicate name"):
            build_zip(path, [*good_members(), ("manifest.json", b"{}")])
        with pytest.raises(ArchiveError, match=r"manifest\.json appears more than once"):
            ZipReader(local, str(path), str(path))

    def test_deflated_members_are_refused(self, local: Any, tmp_path: Path) -> None:
        """Only stored members are read; a deflated one is a problem that says why."""
        path = tmp_path / "b.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in good_members():
                zf.writestr(name, data)
            zf.writestr("common/b.jsonl", b"{}\n" * 100, compress_type=zipfile.ZIP_DEFLATED)
        reader = ZipReader(local, str(path), str(path))
        assert not reader.exists("common/b.jsonl")
        assert "method 8" in reader.problems[0][1]
        assert "STORED (method 0)" in reader.problems[0][1]
        reader.close()

    def test_missing_manifest(self, local: Any, tmp_path: Path) -> None:
        """A zip without manifest.json is not a complete backup."""
        path = tmp_path / "b.zip"
        build_zip(path, good_members()[:1])
        with pytest.raises(ArchiveError, match=r"no manifest\.json"):
            ZipReader(local, str(path), str(path))

    def test_threads_read_members_at_once(self, local: Any, tmp_path: Path) -> None:
        """Many threads can read members of one reader at the same time."""
        path = str(tmp_path / "b.zip")
        writer = ZipWriter(local, path, path)
        blobs = [os.urandom(50_000 + i) for i in range(16)]
        for data in blobs:
            writer.write_blob(sha(data), [data])
        writer.commit(MANIFEST)
        reader = ZipReader(local, path, path)

        def read(data: bytes) -> bool:
            with reader.open(blob_member(sha(data), compressed=False)) as file:
                return bool(file.read() == data)

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(read, blobs * 4))
        reader.close()
