"""The encryption primitives: key files, segmented member streams, keyed blob ids.

The primitives are units below the public API: they are reached through tests/helpers.py's
block of private names; tests/test_encryption.py tests encrypted backups end to end.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import struct
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from docdecrypt import doc_blob_id, doc_decrypt_member, doc_open_key_file
from helpers import crypto, keys
from repobackup.exceptions import ArchiveError, DecryptionError, ValidationError

HEADER_SIZE, SEGMENT_SIZE, MasterKey = crypto.HEADER_SIZE, crypto.SEGMENT_SIZE, crypto.MasterKey
MemberReader, MemberWriter = crypto.MemberReader, crypto.MemberWriter
blob_id, stored_size = crypto.blob_id, crypto.stored_size
KeyFile, ScryptParams, wrap_master_key = keys.KeyFile, keys.ScryptParams, keys.wrap_master_key
add_passphrase, change_passphrase = keys.add_passphrase, keys.change_passphrase
create_keys, list_keys, open_keys, remove_key = (
    keys.create_keys,
    keys.list_keys,
    keys.open_keys,
    keys.remove_key,
)

# Cheap scrypt for tests that make many key files; one test runs the default cost.
FAST = ScryptParams(n=2**10, r=8, p=1)
BACKUP = "nightly-20261201.214500"
NAME = "projects/alpha/repos/docker/node.jsonl.zst"
S = SEGMENT_SIZE
SIZES = [0, 1, S - 1, S, S + 1, 7 * S + 123]


def encrypt(
    key: MasterKey,
    plain: bytes,
    *,
    name: str = NAME,
    backup_id: str = BACKUP,
    segment_size: int = S,
    pieces: int = 1,
) -> bytes:
    """*plain* encrypted as one member, written in *pieces* writes of about equal size."""
    out = io.BytesIO()
    with MemberWriter(
        out, key, backup_id=backup_id, name=name, segment_size=segment_size
    ) as writer:
        step = max(1, len(plain) // pieces)
        for start in range(0, len(plain), step):
            writer.write(plain[start : start + step])
    return out.getvalue()


def decrypt(key: MasterKey, stored: bytes, *, name: str = NAME, backup_id: str = BACKUP) -> bytes:
    return MemberReader(io.BytesIO(stored), key, backup_id=backup_id, name=name).read()


@pytest.fixture(name="key")
def _key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture(name="fs")
def _fs() -> Any:
    return fsspec.filesystem("memory")


@pytest.fixture(name="mem")
def _mem(fs: Any) -> Iterator[str]:
    """A folder of its own on the memory filesystem, whose store all instances share."""
    root = f"/{uuid.uuid4().hex}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture(name="keys_dir")
def _keys_dir(tmp_path: Path) -> str:
    return str(tmp_path / "task" / "keys")


@pytest.fixture(name="local")
def _local() -> Any:
    return fsspec.filesystem("file")


def plaintext(n: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest() * (n // 32) + b"z" * (n % 32)


class TestRoundTrip:
    @pytest.mark.parametrize("size", SIZES)
    @pytest.mark.parametrize("pieces", [1, 3, 1000])
    def test_round_trip(self, key: MasterKey, size: int, pieces: int) -> None:
        """Whatever the size and however it is written, a member decrypts to its bytes."""
        plain = plaintext(size)
        stored = encrypt(key, plain, pieces=pieces)
        assert decrypt(key, stored) == plain

    @pytest.mark.parametrize("size", SIZES)
    def test_stored_size(self, key: MasterKey, size: int) -> None:
        """A member is the header plus 16 bytes per segment; an exact multiple adds none."""
        segments = max(1, -(-size // S))
        assert len(encrypt(key, plaintext(size))) == HEADER_SIZE + size + 16 * segments
        assert stored_size(size) == HEADER_SIZE + size + 16 * segments

    @pytest.mark.parametrize("size", SIZES)
    def test_documented_format(self, key: MasterKey, size: int) -> None:
        """A decryptor written from docs/format.md alone reads what the writer wrote."""
        plain = plaintext(size)
        stored = encrypt(key, plain)
        assert doc_decrypt_member(key.secret, stored, BACKUP, NAME) == plain

    def test_unicode_names(self, key: MasterKey) -> None:
        """Names and backup ids are bound as UTF-8, as documented."""
        name, backup = "projects/%C3%9C/x.jsonl.zst", "nächtlich-20261201.214500"
        stored = encrypt(key, b"data", name=name, backup_id=backup)
        assert doc_decrypt_member(key.secret, stored, backup, name) == b"data"

    def test_same_plaintext_differs(self, key: MasterKey) -> None:
        """Each member has its own salt: the same bytes never encrypt the same way twice."""
        assert encrypt(key, b"same") != encrypt(key, b"same")

    def test_reader_in_small_reads(self, key: MasterKey) -> None:
        """A reader serves any read size across segment boundaries."""
        plain = plaintext(3 * 1000 + 5)
        reader = MemberReader(
            io.BytesIO(encrypt(key, plain, segment_size=1000)), key, backup_id=BACKUP, name=NAME
        )
        got = b"".join(iter(lambda: reader.read(7), b""))
        assert got == plain

    def test_bad_segment_size(self, key: MasterKey) -> None:
        """A writer refuses a segment size a reader would refuse."""
        with pytest.raises(ValidationError, match="segment size"):
            MemberWriter(io.BytesIO(), key, backup_id=BACKUP, name=NAME, segment_size=0)

    def test_write_after_close(self, key: MasterKey) -> None:
        """A closed writer refuses more data instead of dropping it."""
        writer = MemberWriter(io.BytesIO(), key, backup_id=BACKUP, name=NAME)
        writer.close()
        with pytest.raises(ValueError, match="closed"):
            writer.write(b"x")

    @given(
        plain=st.binary(max_size=3000),
        segment_size=st.integers(1, 700),
        cuts=st.lists(st.integers(0, 3000), max_size=8),
    )
    def test_property(self, plain: bytes, segment_size: int, cuts: list[int]) -> None:
        """Any bytes, any segment size, written in any pieces, read back by both decryptors."""
        key = MasterKey(b"k" * 32)
        out = io.BytesIO()
        with MemberWriter(
            out, key, backup_id=BACKUP, name=NAME, segment_size=segment_size
        ) as writer:
            bounds = sorted({0, len(plain), *(c for c in cuts if c < len(plain))})
            for start, end in itertools.pairwise(bounds):
                writer.write(plain[start:end])
        stored = out.getvalue()
        assert decrypt(key, stored) == plain
        assert doc_decrypt_member(key.secret, stored, BACKUP, NAME) == plain


@given(
    plain=st.binary(max_size=600),
    segment_size=st.integers(1, 200),
    position=st.integers(0, 10_000),
    bit=st.integers(0, 7),
)
def test_any_flipped_bit_is_refused(
    plain: bytes, segment_size: int, position: int, bit: int
) -> None:
    """Whatever the member, flipping any one bit of it is a DecryptionError."""
    key = MasterKey(b"k" * 32)
    stored = bytearray(encrypt(key, plain, segment_size=segment_size))
    stored[position % len(stored)] ^= 1 << bit
    with pytest.raises(DecryptionError):
        decrypt(key, bytes(stored))


def segments_of(stored: bytes, size: int) -> tuple[bytes, list[bytes]]:
    body = stored[HEADER_SIZE:]
    return stored[:HEADER_SIZE], [body[i : i + size + 16] for i in range(0, len(body), size + 16)]


class TestUnfinished:
    """A member whose writing did not finish never opens as a whole one."""

    def test_exception_in_with(self, key: MasterKey) -> None:
        """Leaving the writer's block on an error writes no last segment."""
        out = io.BytesIO()

        def fail_half_way() -> None:
            with MemberWriter(out, key, backup_id=BACKUP, name=NAME, segment_size=100) as w:
                w.write(plaintext(450))
                raise OSError("source failed")

        with pytest.raises(OSError, match="source"):
            fail_half_way()
        with pytest.raises(DecryptionError, match="failed authentication"):
            decrypt(key, out.getvalue())

    def test_dropped_writer(self, key: MasterKey) -> None:
        """An unclosed writer that is garbage-collected does not seal the member."""
        out = io.BytesIO()
        writer = MemberWriter(out, key, backup_id=BACKUP, name=NAME, segment_size=100)
        writer.write(plaintext(450))
        del writer
        with pytest.raises(DecryptionError, match="failed authentication"):
            decrypt(key, out.getvalue())

    def test_abort(self, key: MasterKey) -> None:
        """abort() stops a writer; what it wrote is a cut member."""
        out = io.BytesIO()
        writer = MemberWriter(out, key, backup_id=BACKUP, name=NAME)
        writer.write(b"partial")
        writer.abort()
        writer.close()
        with pytest.raises(DecryptionError, match="cut short"):
            decrypt(key, out.getvalue())


class TestTampering:
    """Every change to a stored member is a DecryptionError, never wrong bytes."""

    SEG = 1000
    PLAIN = plaintext(4 * 1000 + 321)

    def stored(self, key: MasterKey) -> bytes:
        return encrypt(key, self.PLAIN, segment_size=self.SEG)

    def assert_refused(self, key: MasterKey, stored: bytes, **where: str) -> None:
        with pytest.raises(DecryptionError) as info:
            decrypt(key, stored, **where)
        assert NAME in str(info.value) or where.get("name", "") in str(info.value)

    @pytest.mark.parametrize("offset", [0, 6, 7, 10, 11, 26])
    def test_header_byte(self, key: MasterKey, offset: int) -> None:
        """A flipped byte of the magic, version, segment size or salt is detected."""
        stored = bytearray(self.stored(key))
        stored[offset] ^= 0x01
        self.assert_refused(key, bytes(stored))

    @pytest.mark.parametrize("where", ["first", "middle", "last"])
    @pytest.mark.parametrize("part", ["body", "tag"])
    def test_segment_byte(self, key: MasterKey, where: str, part: str) -> None:
        """A flipped byte in any segment, in its ciphertext or its tag, is detected."""
        stored = bytearray(self.stored(key))
        start = HEADER_SIZE + {"first": 0, "middle": 2, "last": 4}[where] * (self.SEG + 16)
        end = len(stored) if where == "last" else start + self.SEG + 16
        stored[start + 3 if part == "body" else end - 2] ^= 0x80
        self.assert_refused(key, bytes(stored))

    @pytest.mark.parametrize("keep", [0, 1, 3, 4])
    def test_truncated_at_segment_boundary(self, key: MasterKey, keep: int) -> None:
        """Dropping whole trailing segments is detected: the new last one lacks the flag."""
        header, segments = segments_of(self.stored(key), self.SEG)
        self.assert_refused(key, header + b"".join(segments[:keep]))

    @pytest.mark.parametrize("cut", [1, 15, 16, 17, 500])
    def test_truncated_mid_segment(self, key: MasterKey, cut: int) -> None:
        """A member cut inside a segment is detected."""
        stored = self.stored(key)
        self.assert_refused(key, stored[: HEADER_SIZE + 2 * (self.SEG + 16) + cut])

    @pytest.mark.parametrize("length", [0, 5, HEADER_SIZE - 1])
    def test_truncated_header(self, key: MasterKey, length: int) -> None:
        """A member cut inside its header is detected."""
        self.assert_refused(key, self.stored(key)[:length])

    def test_segments_swapped(self, key: MasterKey) -> None:
        """Two segments in each other's place are detected."""
        header, segments = segments_of(self.stored(key), self.SEG)
        segments[1], segments[2] = segments[2], segments[1]
        self.assert_refused(key, header + b"".join(segments))

    def test_segment_appended(self, key: MasterKey) -> None:
        """A segment added after the last one is detected."""
        header, segments = segments_of(self.stored(key), self.SEG)
        self.assert_refused(key, header + b"".join([*segments, segments[0]]))

    def test_other_name(self, key: MasterKey) -> None:
        """A member moved to another path (two blobs swapped) does not decrypt there."""
        self.assert_refused(key, self.stored(key), name="projects/alpha/user.jsonl.zst")

    def test_other_backup(self, key: MasterKey) -> None:
        """A member replayed from another backup of the same key set does not decrypt."""
        self.assert_refused(key, self.stored(key), backup_id="nightly-20261202.214500")

    def test_other_key(self, key: MasterKey) -> None:
        """A member does not decrypt under another key set's key."""
        with pytest.raises(DecryptionError, match="failed authentication"):
            decrypt(MasterKey.generate(), self.stored(key))

    def test_segment_from_other_member(self, key: MasterKey) -> None:
        """A segment spliced in from another member is detected."""
        header, segments = segments_of(self.stored(key), self.SEG)
        _, foreign = segments_of(self.stored(key), self.SEG)
        segments[1] = foreign[1]
        self.assert_refused(key, header + b"".join(segments))

    def test_good_segments_come_first(self, key: MasterKey) -> None:
        """The error comes at the first bad segment; the bytes before it were authentic."""
        stored = bytearray(self.stored(key))
        stored[HEADER_SIZE + 3 * (self.SEG + 16) + 5] ^= 1
        reader = MemberReader(io.BytesIO(bytes(stored)), key, backup_id=BACKUP, name=NAME)
        good = b"".join(reader.read(self.SEG) for _ in range(3))
        assert good == self.PLAIN[: 3 * self.SEG]
        with pytest.raises(DecryptionError, match="segment 3 failed authentication"):
            reader.read()
        with pytest.raises(DecryptionError, match="segment 3 failed authentication"):
            reader.read(1)

    def test_hostile_segment_size(self, key: MasterKey) -> None:
        """A header claiming a huge segment is refused before anything is allocated."""
        stored = bytearray(self.stored(key))
        stored[7:11] = struct.pack(">I", 2**31)
        with pytest.raises(DecryptionError, match="segment size"):
            decrypt(key, bytes(stored))


class TestBlobIds:
    def test_keyed(self, key: MasterKey) -> None:
        """A blob id is the documented HMAC of the raw digest: never the sha256 itself."""
        sha = hashlib.sha256(b"content").hexdigest()
        name = blob_id(key, sha)
        assert name == doc_blob_id(key.secret, sha)
        assert len(name) == 64
        assert name != sha
        assert name == blob_id(MasterKey(key.secret), sha)
        assert name != blob_id(MasterKey.generate(), sha)

    @pytest.mark.parametrize("bad", ["", "ab", "G" * 64, "A" * 64, "a" * 63])
    def test_bad_sha256(self, key: MasterKey, bad: str) -> None:
        """Only a lowercase 64-digit sha256 has a blob id."""
        with pytest.raises(ValidationError, match="sha256"):
            blob_id(key, bad)


class TestKeyFiles:
    def test_default_cost_and_documented_format(self, key: MasterKey) -> None:
        """A key file at the default scrypt cost opens with the documented procedure."""
        key_file = wrap_master_key(key, "correct horse")
        doc = json.loads(key_file.to_json())
        assert doc["kdf"] == {**doc["kdf"], "name": "scrypt", "n": 2**15, "r": 8, "p": 1}
        assert doc_open_key_file(key_file.to_json(), "correct horse") == key.secret
        assert key_file.unwrap(b"correct horse") == key

    @pytest.mark.parametrize(
        "passphrase",
        ["pässword", b"p\xc3\xa4ssword", lambda: "pässword", lambda: b"p\xc3\xa4ssword"],
    )
    def test_passphrase_forms(
        self, key: MasterKey, passphrase: str | bytes | Callable[[], str | bytes]
    ) -> None:
        """A str (as UTF-8), bytes, or a callable returning either are the same passphrase."""
        key_file = wrap_master_key(key, passphrase, kdf=FAST)
        assert doc_open_key_file(key_file.to_json(), "pässword") == key.secret

    @pytest.mark.parametrize("bad", ["", b"", lambda: 42, lambda: ""])
    def test_bad_passphrase(self, key: MasterKey, bad: Any) -> None:
        """An empty passphrase or one of another type is refused with a clear message."""
        with pytest.raises(ValidationError, match="passphrase"):
            wrap_master_key(key, bad, kdf=FAST)

    def test_wrong_passphrase(self, key: MasterKey) -> None:
        """A wrong passphrase is a DecryptionError saying so, not a cryptography error."""
        key_file = wrap_master_key(key, "right", kdf=FAST)
        with pytest.raises(DecryptionError, match="wrong passphrase") as info:
            key_file.unwrap(b"wrong")
        assert info.value.code == 250905
        assert isinstance(info.value, ArchiveError)
        assert info.value.__cause__ is None

    def test_json_round_trip(self, key: MasterKey) -> None:
        """A key file reads back as itself."""
        key_file = wrap_master_key(key, "pw", kdf=FAST)
        assert KeyFile.from_json(key_file.to_json(), "k.json") == key_file

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"version": 2}, "version"),
            ({"cipher": "DES"}, "cipher"),
            ({"nonce": "!!"}, "nonce"),
            ({"nonce": "AAAA"}, "nonce"),
            ({"masterKey": 5}, "masterKey"),
            ({"id": "XYZ"}, "id"),
            ({"created": "yesterday"}, "created"),
            ({"created": "2026-12-01T21:50:00"}, "UTC offset"),
            ({"kdf": {"name": "pbkdf2"}}, "pbkdf2"),
            ({"kdf": {"name": "scrypt", "n": 2**30, "r": 8, "p": 1, "salt": ""}}, "scrypt"),
            ({"kdf": {"name": "scrypt", "n": 1000, "r": 8, "p": 1, "salt": ""}}, "power of two"),
            ({"kdf": {"name": "scrypt", "n": True, "r": 8, "p": 1, "salt": ""}}, "'n'"),
        ],
    )
    def test_malformed(self, key: MasterKey, change: dict[str, Any], field: str) -> None:
        """A malformed or hostile key file is an ArchiveError naming the file and field."""
        doc = {**json.loads(wrap_master_key(key, "pw", kdf=FAST).to_json()), **change}
        with pytest.raises(ArchiveError, match=field) as info:
            KeyFile.from_json(json.dumps(doc).encode(), "keys/x.json")
        assert "keys/x.json" in str(info.value)

    def test_not_json(self) -> None:
        """Bytes that are not JSON are an ArchiveError, not a traceback."""
        with pytest.raises(ArchiveError, match="not JSON"):
            KeyFile.from_json(b"\xff{", "keys/x.json")

    def test_key_set_swapped(self, key: MasterKey) -> None:
        """A key file whose keySet was edited does not open: the id and set are bound."""
        doc = json.loads(wrap_master_key(key, "pw", kdf=FAST).to_json())
        doc["keySet"] = MasterKey.generate().key_set_id
        with pytest.raises(DecryptionError):
            KeyFile.from_json(json.dumps(doc).encode(), "k.json").unwrap(b"pw")


class TestKeyFolder:
    """Passphrases added, changed and removed on a store; the data never changes."""

    def setup_data(self, local: Any, keys_dir: str, master: MasterKey) -> tuple[str, bytes]:
        path = str(Path(keys_dir).parent / BACKUP / "manifest.json")
        local.makedirs(str(Path(path).parent), exist_ok=True)
        with (
            local.open(path, "wb") as raw,
            MemberWriter(raw, master, backup_id=BACKUP, name="manifest.json") as writer,
        ):
            writer.write(b'{"format": 2}')
        return path, local.cat_file(path)

    def read_data(self, local: Any, path: str, master: MasterKey) -> bytes:
        with local.open(path, "rb") as raw:
            return MemberReader(raw, master, backup_id=BACKUP, name="manifest.json").read()

    def test_lifecycle(self, local: Any, keys_dir: str) -> None:
        """add, passwd and remove change key files only; the data opens as each allows."""
        master, first = create_keys(local, keys_dir, "one", kdf=FAST)
        path, stored = self.setup_data(local, keys_dir, master)
        second = add_passphrase(local, keys_dir, "one", "two", kdf=FAST)
        assert {k.id for k in list_keys(local, keys_dir)} == {first.id, second.id}
        assert open_keys(local, keys_dir, "two") == master
        third = change_passphrase(local, keys_dir, "two", "three")
        assert {k.id for k in list_keys(local, keys_dir)} == {first.id, third.id}
        assert third.kdf == FAST
        with pytest.raises(DecryptionError, match="wrong passphrase"):
            open_keys(local, keys_dir, "two")
        remove_key(local, keys_dir, first.id, "three")
        with pytest.raises(DecryptionError, match="wrong passphrase"):
            open_keys(local, keys_dir, "one")
        opened = open_keys(local, keys_dir, lambda: b"three")
        assert self.read_data(local, path, opened) == b'{"format": 2}'
        assert local.cat_file(path) == stored

    def test_remove_last(self, local: Any, keys_dir: str) -> None:
        """The last key of a key set is never removed."""
        _, only = create_keys(local, keys_dir, "one", kdf=FAST)
        with pytest.raises(ValidationError, match="last key"):
            remove_key(local, keys_dir, only.id, "one")
        assert [k.id for k in list_keys(local, keys_dir)] == [only.id]

    def test_remove_needs_another_passphrase(self, local: Any, keys_dir: str) -> None:
        """Removing a key needs a passphrase that opens one of the keys that remain."""
        _, first = create_keys(local, keys_dir, "one", kdf=FAST)
        add_passphrase(local, keys_dir, "one", "two", kdf=FAST)
        with pytest.raises(DecryptionError, match="other keys"):
            remove_key(local, keys_dir, first.id, "one")
        with pytest.raises(ValidationError, match="no such key"):
            remove_key(local, keys_dir, "0" * 16, "two")
        assert len(list_keys(local, keys_dir)) == 2

    def test_create_twice(self, fs: Any, mem: str) -> None:
        """A folder that holds keys is not given a second key set by mistake."""
        create_keys(fs, f"{mem}/keys", "one", kdf=FAST)
        with pytest.raises(ValidationError, match="already holds key files"):
            create_keys(fs, f"{mem}/keys", "two", kdf=FAST)

    def test_no_keys(self, fs: Any, mem: str) -> None:
        """Opening a folder without key files says there are none."""
        with pytest.raises(DecryptionError, match="no key files"):
            open_keys(fs, f"{mem}/keys", "pw")

    def test_copy_opens_elsewhere(self, fs: Any, mem: str, local: Any, keys_dir: str) -> None:
        """Key files copied to another store open there with the same passphrase."""
        master, key_file = create_keys(local, keys_dir, "pw", kdf=FAST)
        fs.pipe_file(
            f"{mem}/keys/{key_file.file_name}", local.cat_file(f"{keys_dir}/{key_file.file_name}")
        )
        assert open_keys(fs, f"{mem}/keys", "pw") == master

    def test_renamed_key_file(self, fs: Any, mem: str) -> None:
        """A key file under another id's name is refused."""
        _, key_file = create_keys(fs, f"{mem}/keys", "pw", kdf=FAST)
        fs.mv(f"{mem}/keys/{key_file.file_name}", f"{mem}/keys/0000000000000000.json")
        with pytest.raises(ArchiveError, match="does not match its id"):
            list_keys(fs, f"{mem}/keys")


class _Zeros(io.RawIOBase):
    """A sink that counts what is written and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.count += len(b)
        return len(b)


GIB = 1 << 30


@pytest.mark.slow
def test_one_gib_in_flat_memory(tmp_path: Path, key: MasterKey) -> None:
    """A 1 GiB member is written and read back with a few segments' worth of memory."""
    chunk = os.urandom(1 << 20)
    path = tmp_path / "big"
    tracemalloc.start()
    try:
        with path.open("wb") as raw, MemberWriter(raw, key, backup_id=BACKUP, name=NAME) as w:
            for _ in range(GIB // len(chunk)):
                w.write(chunk)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        expected, got = hashlib.sha256(), hashlib.sha256()
        for _ in range(GIB // len(chunk)):
            expected.update(chunk)
        total = 0
        with path.open("rb") as raw:
            reader = MemberReader(raw, key, backup_id=BACKUP, name=NAME)
            while block := reader.read(len(chunk)):
                got.update(block)
                total += len(block)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\n1 GiB member: traced peak {write_peak} bytes writing, {read_peak} reading")
    assert total == GIB
    assert got.digest() == expected.digest()
    assert path.stat().st_size == HEADER_SIZE + GIB + 16 * (GIB // S)
    # The caller's own 1 MiB chunks dominate; the streams add a few 64 KiB segments.
    assert write_peak < 3 << 20, write_peak
    assert read_peak < 4 << 20, read_peak


@pytest.mark.slow
def test_writer_throughput(key: MasterKey) -> None:
    """The writer encrypts at hundreds of MB/s at least (AES-GCM with AES-NI)."""
    chunk = os.urandom(1 << 20)
    sink = _Zeros()
    total = 512 << 20
    started = time.perf_counter()
    with MemberWriter(sink, key, backup_id=BACKUP, name=NAME) as writer:  # type: ignore[arg-type]
        for _ in range(total // len(chunk)):
            writer.write(chunk)
    elapsed = time.perf_counter() - started
    rate = total / elapsed / 1e6
    print(f"\nmember writer: {rate:.0f} MB/s ({total >> 20} MiB in {elapsed:.2f} s)")
    assert sink.count > total
    assert rate > 100, rate
