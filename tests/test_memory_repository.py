"""Tests for `MemoryRepository`: the conformance suite, its failure injection, and its
convenience methods."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from repobackup import ConflictStrategy, MemoryRepository, Outcome, Scope
from repobackup.testing import SourceConformance, TargetConformance, make_record

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
OVERWRITE = ConflictStrategy.OVERWRITE


@pytest.fixture(name="backend")
def _backend() -> MemoryRepository:
    return MemoryRepository()


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class TestMemorySource(SourceConformance):
    """MemoryRepository passes the Source conformance suite."""


class TestMemoryTarget(TargetConformance):
    """MemoryRepository passes the Target conformance suite."""


class TestFailBlobs:
    def test_open_blob_fails_for_listed_blob(self, backend: MemoryRepository) -> None:
        """A blob in fail_blobs raises OSError on open; others and later reads are unaffected."""
        backend.write_blob(sha(b"bad"), [b"bad"])
        backend.write_blob(sha(b"good"), [b"good"])
        backend.fail_blobs.add(sha(b"bad"))
        with pytest.raises(OSError, match=sha(b"bad")) as caught:
            backend.open_blob(sha(b"bad"))
        assert not isinstance(caught.value, FileNotFoundError)
        assert backend.open_blob(sha(b"good")).read() == b"good"
        backend.fail_blobs.clear()
        assert backend.open_blob(sha(b"bad")).read() == b"bad"

    def test_write_blob_fails_for_listed_blob(self, backend: MemoryRepository) -> None:
        """A blob in fail_blobs raises OSError on write, reads no chunk and stores nothing."""
        backend.fail_blobs.add(sha(b"x"))
        pulled: list[bytes] = []

        def chunks() -> Any:
            pulled.append(b"x")
            yield b"x"

        with pytest.raises(OSError, match="injected"):
            backend.write_blob(sha(b"x"), chunks())
        assert pulled == []
        assert not backend.has_blob(sha(b"x"))


class TestFailRecords:
    def test_apply_fails_whole_batch(self, backend: MemoryRepository) -> None:
        """A batch holding a key in fail_records raises OSError and writes none of the batch."""
        backend.fail_records.add("poison")
        batch = [make_record("a"), make_record("poison"), make_record("b")]
        with pytest.raises(OSError, match="poison"):
            backend.apply(batch, OVERWRITE)
        assert list(backend.records(Scope(), "things")) == []
        assert backend.apply([make_record("a")], OVERWRITE) == [Outcome.WRITTEN]

    def test_stream_fails_on_reaching_key(self, backend: MemoryRepository) -> None:
        """records() yields the keys before a failing one, then raises OSError."""
        backend.apply([make_record(k) for k in "abcd"], OVERWRITE)
        backend.fail_records.add("c")
        stream = backend.records(Scope(), "things")
        assert [next(stream).key, next(stream).key] == ["a", "b"]
        with pytest.raises(OSError, match="'c'"):
            next(stream)


class TestStorage:
    def test_reopener_is_none(self, backend: MemoryRepository) -> None:
        """A memory repository cannot be reopened elsewhere, and says so."""
        assert backend.reopener() is None

    def test_stored_document_is_a_copy(self, backend: MemoryRepository) -> None:
        """Changing a document after applying it, or after reading it, changes nothing stored."""
        document: dict[str, Any] = {"list": [1], "nested": {"a": 1}}
        backend.apply([make_record("k", document)], OVERWRITE)
        document["list"].append(2)
        (got,) = backend.records(Scope(), "things")
        got.document["nested"]["a"] = 99
        assert backend.get_document("things", "k") == {"list": [1], "nested": {"a": 1}}

    def test_non_json_document_rejected(self, backend: MemoryRepository) -> None:
        """A document a real store could not hold is refused, naming the record and field."""
        with pytest.raises(
            ValueError, match=r"records\[0\]\.document \(collection 'things', key 'k'\): cannot"
        ):
            backend.apply([make_record("k", {"when": datetime.now(UTC)})], OVERWRITE)

    def test_naive_since_rejected(self, backend: MemoryRepository) -> None:
        """A naive since is refused when the stream is asked for, naming the argument."""
        with pytest.raises(ValueError, match="since: must be timezone-aware"):
            backend.records(Scope(), "things", since=datetime(2024, 1, 1))

    def test_repr_counts(self, backend: MemoryRepository) -> None:
        """The repr says how many records and blobs are held."""
        backend.put_file("p", "r", "/f", b"x")
        assert repr(backend) == "<MemoryRepository records=1 blobs=1>"

    def test_since_listings(self, backend: MemoryRepository) -> None:
        """With since, projects and repositories holding records changed since then are
        listed, tombstone-only ones included."""
        backend.put_file("gone", "r", "/f", b"x", modified=T0 - timedelta(days=1))
        backend.delete_file("gone", "r", "/f", modified=T0)
        backend.put_project("old", modified=T0 - timedelta(days=1))
        assert list(backend.projects()) == ["old"]
        assert list(backend.projects(since=T0)) == ["gone"]
        assert list(backend.repositories("gone", since=T0)) == ["r"]


class TestConvenience:
    def test_file_life_cycle(self, backend: MemoryRepository) -> None:
        """put_file, read_file, delete_file behave as on SqliteRepository."""
        node = backend.put_file("p", "r", "a.txt", b"data", metadata={"m": 1}, modified=T0)
        assert node.key == "/a.txt"
        assert node.document["metadata"] == {"m": 1}
        assert backend.read_file("p", "r", "/a.txt") == b"data"
        assert list(backend.projects()) == ["p"]
        backend.delete_file("p", "r", "/a.txt", modified=T0 + timedelta(seconds=1))
        with pytest.raises(FileNotFoundError):
            backend.read_file("p", "r", "/a.txt")
        assert list(backend.projects()) == []
        assert backend.snapshot() == {"records": {}, "blobs": {}}

    def test_documents(self, backend: MemoryRepository) -> None:
        """put_document and get_document address documents by scope; absent is None."""
        backend.put_project("p")
        backend.put_repository("p", "r", {"name": "r", "type": "GENERIC"})
        backend.put_document("user", "u", {"name": "u"})
        assert backend.get_document("project", "p", project_id="p") == {"name": "p"}
        assert backend.get_document("repository", "r", project_id="p", repo_name="r") == {
            "name": "r",
            "type": "GENERIC",
        }
        assert backend.get_document("user", "u") == {"name": "u"}
        assert backend.get_document("user", "u", project_id="p") is None
