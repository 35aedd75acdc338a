"""Conformance tests for repository backends: subclass `SourceConformance` and
`TargetConformance` in a pytest module and provide a ``backend`` fixture to run them all.

Usage (requires pytest)::

    import pytest
    from repobackup.testing import SourceConformance, TargetConformance

    @pytest.fixture(name="backend")
    def _backend(tmp_path):
        return MyRepository(tmp_path / "repo")   # fresh and empty, implements Source and Target

    class TestMySource(SourceConformance): ...
    class TestMyTarget(TargetConformance): ...

The suite only uses the protocols: it fills the backend through `Target.apply` and
`Target.write_blob` and reads it back through the `Source` methods. What it checks:

- documents come back verbatim (nested unicode, odd field names, large and exact numbers);
- `records` yields in key order (Python's string order, i.e. by code point), lazily, and only
  from the scope and collection asked; without ``since`` live records only, with ``since``
  every record modified at or after it, tombstones included;
- `projects` and `repositories` list the ids that hold live records;
  `collections` lists those with any record (tombstones included) in exactly that scope;
- `apply` answers one `Outcome` per record: SKIP never changes a live record, a deleted
  identity counts as absent, OVERWRITE replaces, a tombstone deletes;
- blobs: `write_blob` is atomic (an iterator that raises half way stores nothing), safe from
  several threads, and `open_blob` of a missing blob raises FileNotFoundError;
- documents JSON cannot carry exactly (`NOT_JSON_DOCUMENTS`: lone surrogates, NaN, infinities)
  are either refused by `apply` with a ValueError, their whole batch unwritten, or come back
  exactly as given. The built-in repositories refuse them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from .._backends.protocols import Outcome, Record, Scope, Source, Target
from .._model.task import ConflictStrategy

__all__ = [
    "AWKWARD_DOCUMENTS",
    "NOT_JSON_DOCUMENTS",
    "SourceConformance",
    "TargetConformance",
    "make_record",
]

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

AWKWARD_DOCUMENTS: tuple[dict[str, Any], ...] = (
    {},
    {"name": "plain", "size": 3, "folder": False, "metadata": None},
    {"名前": "ファイル", "emoji": "📦🚀", "accents": "Ærøskøbing", "rtl": "שלום"},
    {"": "empty key", " ": "space", "a.b": 1, "$set": 2, "_id": {"$oid": "65f1"}, "x/y": 3},
    {'quote"back\\slash': "tab\tnew\nline", "nul": "a\u0000b", "ctrl": "\u001f\u007f"},
    {"big": 2**63 + 1, "bigger": 10**40, "negative": -(2**70), "zero": 0},
    {"float": 0.1, "tiny": 5e-324, "huge": 1.7976931348623157e308, "neg_zero": -0.0},
    {"nested": {"a": [1, [2, [3, {"b": [None, True, False, "c"]}]]], "d": {"e": {"f": {}}}}},
    {"list": [], "mixed": [1, "two", 3.0, None, {"k": "v"}], "order": {"z": 1, "a": 2}},
)
"""Documents a backend must store and give back equal; useful for backend-specific tests."""

NOT_JSON_DOCUMENTS: tuple[dict[str, Any], ...] = (
    {"name": "lone \ud800 high surrogate"},
    {"name": "lone \udc00 low surrogate", "ok": "fine"},
    {"swapped \udfff\ud800 in a field name": 1},
    {"score": float("nan")},
    {"size": float("inf"), "low": float("-inf")},
    {"nested": [1, {"deep": [float("nan")]}]},
)
"""Documents that strict JSON (``json.dumps(allow_nan=False)``, UTF-8 text) cannot carry: a
backend refuses them at write time or keeps them exactly."""


def make_record(
    key: str,
    document: dict[str, Any] | None = None,
    *,
    collection: str = "things",
    scope: Scope | None = None,
    modified: datetime = T0,
    blob: str | None = None,
    size: int = 0,
    deleted: bool = False,
) -> Record:
    """A record for the suite; the document defaults to ``{"key": key}``, the scope to common."""
    scope = Scope() if scope is None else scope
    return Record(
        collection=collection,
        key=key,
        document={"key": key} if document is None else document,
        modified=modified,
        project_id=scope.project_id,
        repo_name=scope.repo_name,
        blob=blob,
        size=size,
        deleted=deleted,
    )


def _apply(backend: Any, records: Sequence[Record], conflict: str = "OVERWRITE") -> list[Outcome]:
    return list(backend.apply(list(records), ConflictStrategy(conflict)))


def _keys(records: Iterator[Record]) -> list[str]:
    return [r.key for r in records]


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class SourceConformance:
    """What every `Source` must do; the ``backend`` fixture gives a fresh, empty backend."""

    def test_implements_both_protocols(self, backend: Any) -> None:
        """The backend is a Source and a Target at runtime."""
        assert isinstance(backend, Source)
        assert isinstance(backend, Target)

    def test_empty_backend_lists_nothing(self, backend: Any) -> None:
        """A fresh backend has no projects, no collections and no records."""
        assert list(backend.projects()) == []
        assert list(backend.collections(Scope())) == []
        assert list(backend.records(Scope(), "things")) == []

    def test_documents_come_back_verbatim(self, backend: Any) -> None:
        """Documents with unicode, odd field names, control characters, large integers and
        exact floats come back equal, with nothing added or dropped."""
        scope = Scope("p", "r")
        _apply(
            backend,
            [make_record(f"k{i}", doc, scope=scope) for i, doc in enumerate(AWKWARD_DOCUMENTS)],
        )
        got = {r.key: r.document for r in backend.records(scope, "things")}
        assert got == {f"k{i}": doc for i, doc in enumerate(AWKWARD_DOCUMENTS)}
        assert str(got["k6"]["neg_zero"]) == "-0.0"
        assert type(got["k5"]["big"]) is int

    def test_record_fields_come_back(self, backend: Any) -> None:
        """Collection, key, scope, modified (as the same aware instant), blob and size come back."""
        sha = _sha(b"x")
        moment = datetime(2023, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=8)))
        written = make_record(
            "/a/b.bin", collection="node", scope=Scope("p", "r"), modified=moment, blob=sha, size=1
        )
        _apply(backend, [written])
        (got,) = backend.records(Scope("p", "r"), "node")
        assert got == written
        assert got.modified.tzinfo is not None
        assert got.modified == moment

    def test_records_in_key_order(self, backend: Any) -> None:
        """Records come in key order (code point order), whatever order they were written in."""
        keys = ["b", "a", "B", "/z/1", "/a/2", "ä", "a0", "Z", "10", "9", "中", "🚀", "ab"]
        _apply(backend, [make_record(k) for k in keys])
        assert _keys(backend.records(Scope(), "things")) == sorted(set(keys))

    def test_records_is_a_lazy_iterator(self, backend: Any) -> None:
        """records() returns an iterator that can be consumed step by step."""
        _apply(backend, [make_record(f"k{i:03d}") for i in range(50)])
        stream = backend.records(Scope(), "things")
        assert iter(stream) is stream
        assert next(stream).key == "k000"
        assert next(stream).key == "k001"
        assert len(list(stream)) == 48

    def test_writing_while_a_stream_is_open(self, backend: Any) -> None:
        """A stream keeps working while the backend is written to; it yields every record that
        was there when it started, in order."""
        _apply(backend, [make_record(f"k{i:03d}") for i in range(50)])
        stream = backend.records(Scope(), "things")
        first = next(stream)
        _apply(backend, [make_record(f"k{i:03d}x") for i in range(50)])
        rest = _keys(stream)
        seen = [first.key, *rest]
        assert seen == sorted(seen)
        assert {f"k{i:03d}" for i in range(50)} <= set(seen)

    def test_scopes_are_isolated(self, backend: Any) -> None:
        """The same collection and key in different scopes are different records."""
        scopes = [
            Scope(),
            Scope("p"),
            Scope("q"),
            Scope("p", "r"),
            Scope("p", "s"),
            Scope("q", "r"),
        ]
        _apply(backend, [make_record("k", {"where": str(s)}, scope=s) for s in scopes])
        for scope in scopes:
            (got,) = backend.records(scope, "things")
            assert got.document == {"where": str(scope)}
            assert (got.project_id, got.repo_name) == (scope.project_id, scope.repo_name)

    def test_collections_of_exactly_one_scope(self, backend: Any) -> None:
        """collections() lists those with records in exactly that scope, tombstones included."""
        _apply(
            backend,
            [
                make_record("u", collection="user"),
                make_record("r", collection="role", deleted=True),
                make_record("p", collection="project", scope=Scope("p")),
                make_record("r", collection="repository", scope=Scope("p", "r")),
                make_record("/f", collection="node", scope=Scope("p", "r")),
            ],
        )
        assert sorted(backend.collections(Scope())) == ["role", "user"]
        assert sorted(backend.collections(Scope("p"))) == ["project"]
        assert sorted(backend.collections(Scope("p", "r"))) == ["node", "repository"]
        assert list(backend.collections(Scope("p", "other"))) == []

    def test_records_of_unknown_collection_is_empty(self, backend: Any) -> None:
        """Asking for a collection nobody wrote yields nothing."""
        _apply(backend, [make_record("k")])
        assert list(backend.records(Scope(), "nothing-here")) == []

    def test_without_since_live_records_only(self, backend: Any) -> None:
        """Without since, tombstones are left out."""
        _apply(backend, [make_record("a"), make_record("b", deleted=True), make_record("c")])
        assert _keys(backend.records(Scope(), "things")) == ["a", "c"]

    def test_since_includes_tombstones_at_or_after(self, backend: Any) -> None:
        """With since, records (tombstones included) modified at or after it are yielded;
        older ones are not."""
        _apply(
            backend,
            [
                make_record("old", modified=T0 - timedelta(microseconds=1)),
                make_record("old-gone", modified=T0 - timedelta(days=1), deleted=True),
                make_record("exact", modified=T0),
                make_record("new", modified=T0 + timedelta(hours=1)),
                make_record("new-gone", modified=T0 + timedelta(hours=2), deleted=True),
            ],
        )
        got = list(backend.records(Scope(), "things", since=T0))
        assert [(r.key, r.deleted) for r in got] == [
            ("exact", False),
            ("new", False),
            ("new-gone", True),
        ]

    def test_since_compares_instants_across_offsets(self, backend: Any) -> None:
        """since given in another offset selects by the same instant."""
        _apply(
            backend,
            [make_record("a", modified=T0), make_record("b", modified=T0 + timedelta(hours=1))],
        )
        since = (T0 + timedelta(minutes=30)).astimezone(timezone(timedelta(hours=-5)))
        assert _keys(backend.records(Scope(), "things", since=since)) == ["b"]

    def test_projects_and_repositories_listed(self, backend: Any) -> None:
        """projects() lists ids with live records in the project or its repositories, even a
        project that has only a repository record; repositories() lists a project's repos."""
        _apply(
            backend,
            [
                make_record("p", collection="project", scope=Scope("p")),
                make_record("r1", collection="repository", scope=Scope("p", "r1")),
                make_record("r2", collection="repository", scope=Scope("p", "r2")),
                make_record("only-repo", collection="repository", scope=Scope("q", "only-repo")),
                make_record("u", collection="user"),
            ],
        )
        assert sorted(backend.projects()) == ["p", "q"]
        assert sorted(backend.repositories("p")) == ["r1", "r2"]
        assert sorted(backend.repositories("q")) == ["only-repo"]
        assert list(backend.repositories("unknown")) == []

    def test_listings_leave_out_what_only_has_tombstones(self, backend: Any) -> None:
        """A project or repository whose records are all tombstones is not listed."""
        _apply(
            backend,
            [
                make_record("gone", collection="project", scope=Scope("gone"), deleted=True),
                make_record("p", collection="project", scope=Scope("p")),
                make_record("r", collection="repository", scope=Scope("p", "r"), deleted=True),
            ],
        )
        assert list(backend.projects()) == ["p"]
        assert list(backend.repositories("p")) == []

    def test_open_blob_reads_content(self, backend: Any) -> None:
        """open_blob returns a binary file object with the stored bytes."""
        content = bytes(range(256)) * 100
        backend.write_blob(_sha(content), [content[:1000], content[1000:]])
        with backend.open_blob(_sha(content)) as stream:
            assert stream.read() == content

    def test_open_missing_blob_raises_file_not_found(self, backend: Any) -> None:
        """open_blob of a blob never written raises FileNotFoundError."""
        with pytest.raises(FileNotFoundError):
            backend.open_blob(_sha(b"never written"))

    def test_reopener_is_none_or_picklable(self, backend: Any) -> None:
        """reopener() is None, or a picklable callable opening a backend with the same data."""
        _apply(backend, [make_record("p", collection="project", scope=Scope("p"))])
        reopen = backend.reopener()
        if reopen is None:
            return
        other = pickle.loads(pickle.dumps(reopen))()
        try:
            assert list(other.projects()) == ["p"]
        finally:
            close = getattr(other, "close", None)
            if close is not None:
                close()


class TargetConformance:
    """What every `Target` must do; the ``backend`` fixture gives a fresh, empty backend."""

    def test_empty_batch(self, backend: Any) -> None:
        """An empty batch has no outcomes and changes nothing."""
        assert _apply(backend, []) == []
        assert list(backend.projects()) == []

    def test_one_outcome_per_record_in_order(self, backend: Any) -> None:
        """apply answers one outcome per record, in the batch's order."""
        _apply(backend, [make_record("b")])
        outcomes = _apply(backend, [make_record("a"), make_record("b"), make_record("c")], "SKIP")
        assert outcomes == [Outcome.WRITTEN, Outcome.SKIPPED, Outcome.WRITTEN]

    def test_overwrite_replaces(self, backend: Any) -> None:
        """Under OVERWRITE an existing record is replaced, modified included."""
        _apply(backend, [make_record("k", {"v": 1})])
        later = T0 + timedelta(days=3)
        assert _apply(backend, [make_record("k", {"v": 2}, modified=later)]) == [Outcome.WRITTEN]
        (got,) = backend.records(Scope(), "things")
        assert (got.document, got.modified) == ({"v": 2}, later)

    def test_skip_leaves_live_record_alone(self, backend: Any) -> None:
        """Under SKIP an existing live record is SKIPPED and keeps its document."""
        _apply(backend, [make_record("k", {"v": 1})])
        assert _apply(backend, [make_record("k", {"v": 2})], "SKIP") == [Outcome.SKIPPED]
        (got,) = backend.records(Scope(), "things")
        assert got.document == {"v": 1}

    def test_skip_writes_over_a_tombstone(self, backend: Any) -> None:
        """Under SKIP a deleted identity counts as absent, so the record is WRITTEN."""
        _apply(backend, [make_record("k", {"v": 1}, deleted=True)])
        assert _apply(backend, [make_record("k", {"v": 2})], "SKIP") == [Outcome.WRITTEN]
        (got,) = backend.records(Scope(), "things")
        assert (got.document, got.deleted) == ({"v": 2}, False)

    def test_skip_keeps_live_record_against_a_tombstone(self, backend: Any) -> None:
        """Under SKIP a tombstone for a live record is SKIPPED: the record stays."""
        _apply(backend, [make_record("k")])
        tombstone = make_record("k", modified=T0 + timedelta(hours=1), deleted=True)
        assert _apply(backend, [tombstone], "SKIP") == [Outcome.SKIPPED]
        assert _keys(backend.records(Scope(), "things")) == ["k"]

    def test_overwrite_tombstone_deletes(self, backend: Any) -> None:
        """Under OVERWRITE a tombstone deletes: gone from live records, present with since."""
        _apply(backend, [make_record("k"), make_record("other")])
        later = T0 + timedelta(hours=1)
        assert _apply(backend, [make_record("k", modified=later, deleted=True)]) == [
            Outcome.WRITTEN
        ]
        assert _keys(backend.records(Scope(), "things")) == ["other"]
        changed = list(backend.records(Scope(), "things", since=later))
        assert [(r.key, r.deleted, r.modified) for r in changed] == [("k", True, later)]

    @pytest.mark.parametrize("conflict", ["SKIP", "OVERWRITE"])
    def test_tombstone_for_absent_record_is_written(self, backend: Any, conflict: str) -> None:
        """A tombstone for an identity never stored is WRITTEN and leaves no live record."""
        assert _apply(backend, [make_record("k", deleted=True)], conflict) == [Outcome.WRITTEN]
        assert list(backend.records(Scope(), "things")) == []

    def test_skip_within_one_batch_sees_earlier_records(self, backend: Any) -> None:
        """Under SKIP the second record of a batch with the same identity is SKIPPED."""
        outcomes = _apply(backend, [make_record("k", {"v": 1}), make_record("k", {"v": 2})], "SKIP")
        assert outcomes == [Outcome.WRITTEN, Outcome.SKIPPED]
        (got,) = backend.records(Scope(), "things")
        assert got.document == {"v": 1}

    def test_overwrite_within_one_batch_last_wins(self, backend: Any) -> None:
        """Under OVERWRITE the last record of a batch with the same identity wins."""
        _apply(backend, [make_record("k", {"v": 1}), make_record("k", {"v": 2})])
        (got,) = backend.records(Scope(), "things")
        assert got.document == {"v": 2}

    def test_records_keep_their_own_modified(self, backend: Any) -> None:
        """apply stores each record's modified as given, so a restore reproduces the source."""
        old = datetime(2001, 2, 3, 4, 5, 6, 7, tzinfo=UTC)
        _apply(backend, [make_record("k", modified=old)])
        (got,) = backend.records(Scope(), "things")
        assert got.modified == old

    def test_write_blob_returns_size_and_stores(self, backend: Any) -> None:
        """write_blob returns the byte count; has_blob is then true and open_blob reads it."""
        content = b"hello, blob"
        sha = _sha(content)
        assert not backend.has_blob(sha)
        assert backend.write_blob(sha, iter([b"hello, ", b"blob"])) == len(content)
        assert backend.has_blob(sha)
        with backend.open_blob(sha) as stream:
            assert stream.read() == content

    def test_write_empty_blob(self, backend: Any) -> None:
        """A zero-byte blob is stored like any other."""
        sha = _sha(b"")
        assert backend.write_blob(sha, []) == 0
        assert backend.has_blob(sha)
        with backend.open_blob(sha) as stream:
            assert stream.read() == b""

    def test_write_blob_again_keeps_it(self, backend: Any) -> None:
        """Writing a stored blob again leaves it intact."""
        content = b"same content"
        backend.write_blob(_sha(content), [content])
        backend.write_blob(_sha(content), [content])
        with backend.open_blob(_sha(content)) as stream:
            assert stream.read() == content

    def test_write_blob_is_atomic(self, backend: Any) -> None:
        """If iterating the chunks raises half way, the error comes out and nothing is stored;
        a later complete write succeeds."""
        content = b"a" * 10_000 + b"b" * 10_000
        sha = _sha(content)

        class HashMismatch(Exception):
            pass

        def failing() -> Iterator[bytes]:
            yield content[:10_000]
            raise HashMismatch(sha)

        with pytest.raises(HashMismatch):
            backend.write_blob(sha, failing())
        assert not backend.has_blob(sha)
        with pytest.raises(FileNotFoundError):
            backend.open_blob(sha)
        assert backend.write_blob(sha, [content]) == len(content)
        with backend.open_blob(sha) as stream:
            assert stream.read() == content

    def test_blob_invisible_while_being_written(self, backend: Any) -> None:
        """Until the last chunk is written, the blob is neither present nor readable."""
        content = b"first half, second half"
        sha = _sha(content)
        seen: list[bool] = []

        def watching() -> Iterator[bytes]:
            yield content[:11]
            seen.append(backend.has_blob(sha))
            yield content[11:]

        backend.write_blob(sha, watching())
        assert seen == [False]
        assert backend.has_blob(sha)

    def test_failed_rewrite_keeps_stored_blob(self, backend: Any) -> None:
        """A failing write of a blob that is already stored leaves the stored one intact."""
        content = b"complete content"
        sha = _sha(content)
        backend.write_blob(sha, [content])

        def failing() -> Iterator[bytes]:
            yield b"comp"
            raise OSError("source went away")

        with pytest.raises(OSError, match="source went away"):
            backend.write_blob(sha, failing())
        with backend.open_blob(sha) as stream:
            assert stream.read() == content

    def test_blob_operations_from_many_threads(self, backend: Any) -> None:
        """Threads writing, testing and reading blobs at once (the same blob included) each
        see complete content."""
        contents = [bytes([i]) * (1000 + i) for i in range(16)] * 2
        errors: list[BaseException] = []
        start = threading.Barrier(len(contents))

        def work(content: bytes) -> None:
            try:
                start.wait()
                sha = _sha(content)
                backend.write_blob(sha, [content[:500], content[500:]])
                assert backend.has_blob(sha)
                with backend.open_blob(sha) as stream:
                    assert stream.read() == content
            except BaseException as exc:  # collected and re-raised in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(c,)) for c in contents]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []

    def test_documents_json_cannot_carry(self, backend: Any) -> None:
        """Each document of NOT_JSON_DOCUMENTS is either refused by apply with a ValueError,
        nothing of its batch written, or comes back exactly (NaN as NaN, each surrogate as
        it was)."""
        for index, document in enumerate(NOT_JSON_DOCUMENTS):
            collection = f"odd{index}"
            batch = [
                make_record("a-fine", collection=collection),
                make_record("b-odd", document, collection=collection),
            ]
            try:
                outcomes = _apply(backend, batch)
            except ValueError:
                assert list(backend.records(Scope(), collection)) == [], document
                continue
            assert outcomes == [Outcome.WRITTEN, Outcome.WRITTEN]
            got = {r.key: r.document for r in backend.records(Scope(), collection)}
            assert _exact(got["b-odd"]) == _exact(document)


def _exact(document: Any) -> str:
    # NaN is not equal to itself, so compare the text that spells every value out exactly.
    return json.dumps(document, ensure_ascii=True, sort_keys=True, allow_nan=True)
