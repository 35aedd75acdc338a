"""Tests for `SqliteRepository`: the conformance suite, plus its storage rules, convenience
methods, streaming and thread safety."""

from __future__ import annotations

import hashlib
import itertools
import os
import pickle
import sqlite3
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repobackup import ConflictStrategy, MemoryRepository, Outcome, Record, Scope, SqliteRepository
from repobackup.testing import AWKWARD_DOCUMENTS, SourceConformance, TargetConformance, make_record

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
OVERWRITE = ConflictStrategy.OVERWRITE
SKIP = ConflictStrategy.SKIP


@pytest.fixture(name="backend")
def _backend(tmp_path: Path) -> Iterator[SqliteRepository]:
    repo = SqliteRepository(tmp_path / "repo.db")
    yield repo
    repo.close()


def count_rows(path: Path | str, where: str = "1") -> int:
    """Rows in the database file, counted on a connection of the test's own."""
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute(f"SELECT COUNT(*) FROM records WHERE {where}").fetchone()
    return int(count)


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def read_blob_in_child(reopen: Any, sha256: str) -> bytes:
    """Run in a worker process: reopen the repository and read one blob."""
    repo = reopen()
    try:
        with repo.open_blob(sha256) as stream:
            return bytes(stream.read())
    finally:
        repo.close()


class TestSqliteSource(SourceConformance):
    """SqliteRepository passes the Source conformance suite."""


class TestSqliteTarget(TargetConformance):
    """SqliteRepository passes the Target conformance suite."""


class TestOpening:
    def test_blobs_default_beside_database(self, tmp_path: Path) -> None:
        """Without blobs, they live in the folder <database file name>.blobs beside it, sharded
        by the first two and next two hex digits."""
        with SqliteRepository(tmp_path / "data" / "repo.db") as repo:
            content = b"content"
            repo.write_blob(sha(content), [content])
            assert repo.blobs == str(tmp_path / "data" / "repo.db.blobs")
        digest = sha(content)
        stored = tmp_path / "data" / "repo.db.blobs" / digest[:2] / digest[2:4] / digest
        assert stored.read_bytes() == content

    def test_blobs_on_another_fsspec_url(self, tmp_path: Path) -> None:
        """Blobs can live on any fsspec URL; a failed write there stores nothing either."""
        url = f"memory://blobs-{uuid.uuid4().hex}"
        with SqliteRepository(tmp_path / "repo.db", url) as repo:
            content = b"remote"
            assert repo.write_blob(sha(content), [content]) == 6
            assert repo.has_blob(sha(content))
            with repo.open_blob(sha(content)) as stream:
                assert stream.read() == content

            def failing() -> Iterator[bytes]:
                yield b"half"
                raise RuntimeError("hash mismatch")

            with pytest.raises(RuntimeError, match="hash mismatch"):
                repo.write_blob(sha(b"other"), failing())
            assert not repo.has_blob(sha(b"other"))
            assert repo.blobs == url

    def test_data_survives_reopening(self, tmp_path: Path) -> None:
        """Records and blobs written before close are there when the database is opened again."""
        with SqliteRepository(tmp_path / "repo.db") as repo:
            repo.put_file("p", "r", "/a.txt", b"kept")
        with SqliteRepository(tmp_path / "repo.db") as again:
            assert again.read_file("p", "r", "/a.txt") == b"kept"
            assert list(again.projects()) == ["p"]

    @pytest.mark.parametrize("path", [":memory:", "", "file:x?mode=memory"])
    def test_memory_database_rejected(self, path: str) -> None:
        """A database that is not a file is refused with an error naming the path argument."""
        with pytest.raises(ValueError, match="path: expected the file name"):
            SqliteRepository(path)

    def test_closed_repository_refuses_use(self, tmp_path: Path) -> None:
        """After close (also by leaving a with block), using it raises ValueError; closing
        again does nothing."""
        with SqliteRepository(tmp_path / "repo.db") as repo:
            repo.put_project("p")
        with pytest.raises(ValueError, match="closed"):
            repo.put_project("q")
        with pytest.raises(ValueError, match="closed"):
            list(repo.projects())
        repo.close()

    def test_reopener_is_absolute_and_picklable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A repository opened by a relative path reopens the same data from another cwd."""
        monkeypatch.chdir(tmp_path)
        with SqliteRepository("repo.db") as repo:
            repo.put_file("p", "r", "/f", b"data")
            reopen = pickle.loads(pickle.dumps(repo.reopener()))
        monkeypatch.chdir(tmp_path.parent)
        with reopen() as again:
            assert again.read_file("p", "r", "/f") == b"data"
            assert again.path == str(tmp_path / "repo.db")

    def test_reopener_in_another_process(self, tmp_path: Path) -> None:
        """A worker process opens the repository through the reopener and reads a blob."""
        with SqliteRepository(tmp_path / "repo.db") as repo:
            node = repo.put_file("p", "r", "/f", b"from the parent")
            assert node.blob is not None
            with ProcessPoolExecutor(max_workers=1) as pool:
                got = pool.submit(read_blob_in_child, repo.reopener(), node.blob).result()
        assert got == b"from the parent"


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


class TestOpenExisting:
    def test_missing_database_creates_nothing(self, tmp_path: Path) -> None:
        """create=False on a path that does not exist raises FileNotFoundError naming it, and
        creates no file, no parent folder and no blob folder."""
        path = tmp_path / "not-mounted" / "server.db"
        with pytest.raises(FileNotFoundError, match="no repository database") as caught:
            SqliteRepository(path, create=False)
        assert caught.value.filename == str(path)
        assert _tree(tmp_path) == []

    def test_missing_database_in_an_existing_folder(self, tmp_path: Path) -> None:
        """create=False beside other files leaves the folder exactly as it was."""
        (tmp_path / "other.txt").write_text("x")
        with pytest.raises(FileNotFoundError):
            SqliteRepository(tmp_path / "repo.db", tmp_path / "blobs", create=False)
        assert _tree(tmp_path) == ["other.txt"]

    def test_existing_database_opens(self, tmp_path: Path) -> None:
        """create=False opens a database that exists, with its data, and can write to it."""
        with SqliteRepository(tmp_path / "repo.db") as repo:
            repo.put_file("p", "r", "/a.txt", b"kept")
        with SqliteRepository(tmp_path / "repo.db", create=False) as again:
            assert again.read_file("p", "r", "/a.txt") == b"kept"
            again.put_project("q")
            assert list(again.projects()) == ["p", "q"]

    def test_odd_characters_in_the_path(self, tmp_path: Path) -> None:
        """A path with spaces, '#', '?' and '%' names the same file whether created or not."""
        path = tmp_path / "a b #1?" / "repo %20.db"
        with SqliteRepository(path) as repo:
            repo.put_project("p")
        with SqliteRepository(path, create=False) as again:
            assert list(again.projects()) == ["p"]
        assert sorted(p.name for p in path.parent.iterdir()) == ["repo %20.db"]

    def test_other_sqlite_file_left_unchanged(self, tmp_path: Path) -> None:
        """create=False on an SQLite file of something else is refused and adds no table."""
        path = tmp_path / "other.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
        conn.close()
        with pytest.raises(ValueError, match="not a repository database"):
            SqliteRepository(path, create=False)
        with sqlite3.connect(path) as conn:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        conn.close()
        assert tables == [("notes",)]

    def test_database_removed_after_opening_is_not_recreated(self, tmp_path: Path) -> None:
        """A reopener never creates the database: if it went away, opening fails."""
        with SqliteRepository(tmp_path / "repo.db") as repo:
            repo.put_project("p")
            reopen = repo.reopener()
        for name in ("repo.db", "repo.db-wal", "repo.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        with pytest.raises(FileNotFoundError):
            reopen()
        assert not (tmp_path / "repo.db").exists()


NOT_JSON = [
    ({"name": "lone \ud800 surrogate"}, r"\$\['name'\] holds a lone surrogate '\\ud800'"),
    ({"bad \udfff name": 1}, r"the field name at \$ holds a lone surrogate '\\udfff'"),
    ({"score": float("nan")}, r"\$\['score'\] is nan, which JSON cannot hold"),
    ({"a": [1, {"b": float("inf")}]}, r"\$\['a'\]\[1\]\['b'\] is inf"),
    ({"low": -float("inf")}, r"\$\['low'\] is -inf"),
]


@pytest.fixture(name="any_repository", params=["sqlite", "memory"])
def _any_repository(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SqliteRepository | MemoryRepository]:
    if request.param == "memory":
        yield MemoryRepository()
        return
    with SqliteRepository(tmp_path / "repo.db") as repo:
        yield repo


class TestDocumentsJsonCannotCarry:
    @pytest.mark.parametrize(("document", "problem"), NOT_JSON)
    def test_put_document_refused(
        self, any_repository: SqliteRepository | MemoryRepository, document: Any, problem: str
    ) -> None:
        """put_document refuses a document JSON cannot carry, naming collection, key and what
        is wrong where; nothing is stored."""
        with pytest.raises(ValueError, match=r"collection 'user', key 'admin'\): cannot be stored"):
            any_repository.put_document("user", "admin", document)
        with pytest.raises(ValueError, match=problem):
            any_repository.put_document("user", "admin", document)
        assert any_repository.get_document("user", "admin") is None
        assert list(any_repository.collections(Scope())) == []

    def test_metadata_refused_before_the_blob(
        self, any_repository: SqliteRepository | MemoryRepository
    ) -> None:
        """put_file with metadata JSON cannot carry stores neither the node nor the blob."""
        with pytest.raises(ValueError, match=r"key '/a.bin'.*\['metadata'\]\['ratio'\] is nan"):
            any_repository.put_file("p", "r", "/a.bin", b"data", metadata={"ratio": float("nan")})
        assert not any_repository.has_blob(sha(b"data"))
        with pytest.raises(FileNotFoundError):
            any_repository.read_file("p", "r", "/a.bin")

    def test_refused_record_fails_its_whole_batch(
        self, any_repository: SqliteRepository | MemoryRepository
    ) -> None:
        """apply refuses the batch that holds such a record, naming its index; nothing of the
        batch is written."""
        batch = [make_record("fine"), make_record("odd", {"v": float("inf")})]
        with pytest.raises(ValueError, match=r"records\[1\]\.document \(collection 'things'"):
            any_repository.apply(batch, OVERWRITE)
        assert list(any_repository.records(Scope(), "things")) == []

    def test_control_characters_and_escapes_still_kept(
        self, any_repository: SqliteRepository | MemoryRepository
    ) -> None:
        """What UTF-8 and JSON can carry (NUL, control characters, astral characters, a valid
        surrogate pair as one character) is kept exactly."""
        document = {"nul": "a\u0000b", "ctrl": "\u001f\u007f", "astral": "\U0001f680", "big": 1e308}
        any_repository.put_document("c", "k", document)
        assert any_repository.get_document("c", "k") == document


class TestTemporaryBlobs:
    def test_leftovers_of_a_killed_write_are_removed(self, tmp_path: Path) -> None:
        """The <sha256>.<hex>.tmp files a killed blob write leaves are removed and named; the
        blobs beside them and files of other names stay."""
        with SqliteRepository(tmp_path / "repo.db") as repo:
            repo.write_blob(sha(b"kept"), [b"kept"])
            digest = sha(b"kept")
            folder = tmp_path / "repo.db.blobs" / digest[:2] / digest[2:4]
            left = folder / f"{digest}.{uuid.uuid4().hex}.tmp"
            left.write_bytes(b"half")
            other_digest = sha(b"other")
            other_folder = tmp_path / "repo.db.blobs" / other_digest[:2] / other_digest[2:4]
            other_folder.mkdir(parents=True, exist_ok=True)
            second = other_folder / f"{other_digest}.{uuid.uuid4().hex}.tmp"
            second.write_bytes(b"")
            unrelated = folder / "notes.tmp"
            unrelated.write_bytes(b"not ours")
            removed = repo.remove_temporary_blobs()
            assert sorted(removed) == sorted([str(left), str(second)])
            assert not left.exists()
            assert not second.exists()
            assert unrelated.exists()
            with repo.open_blob(digest) as stream:
                assert stream.read() == b"kept"
            assert repo.remove_temporary_blobs() == []

    def test_older_than_spares_a_write_under_way(self, tmp_path: Path) -> None:
        """With older_than, a temporary file modified since then is left for its writer."""
        with SqliteRepository(tmp_path / "repo.db") as repo:
            digest = sha(b"x")
            folder = tmp_path / "repo.db.blobs" / digest[:2] / digest[2:4]
            folder.mkdir(parents=True)
            old = folder / f"{digest}.{'a' * 32}.tmp"
            new = folder / f"{digest}.{'b' * 32}.tmp"
            old.write_bytes(b"old")
            new.write_bytes(b"new")
            hour_ago = datetime.now(UTC) - timedelta(hours=1)
            os.utime(old, (hour_ago.timestamp() - 60, hour_ago.timestamp() - 60))
            assert repo.remove_temporary_blobs(older_than=hour_ago) == [str(old)]
            assert new.exists()
            with pytest.raises(ValueError, match="older_than"):
                repo.remove_temporary_blobs(older_than=datetime(2024, 1, 1))

    def test_no_blob_store_yet(self, tmp_path: Path) -> None:
        """A repository that never stored a blob has nothing to remove and creates nothing."""
        with SqliteRepository(tmp_path / "repo.db") as repo:
            assert repo.remove_temporary_blobs() == []
        assert not (tmp_path / "repo.db.blobs").exists()

    def test_on_another_fsspec_url(self, tmp_path: Path) -> None:
        """Leftovers on a non-local blob store are removed too."""
        import fsspec

        url = f"memory://blobs-{uuid.uuid4().hex}"
        with SqliteRepository(tmp_path / "repo.db", url) as repo:
            repo.write_blob(sha(b"kept"), [b"kept"])
            digest = sha(b"kept")
            fs = fsspec.filesystem("memory")
            root = url.removeprefix("memory://")
            left = f"/{root}/{digest[:2]}/{digest[2:4]}/{digest}.{'c' * 32}.tmp"
            fs.pipe_file(left, b"half")
            assert repo.remove_temporary_blobs() == [left]
            assert not fs.exists(left)
            assert repo.has_blob(digest)


class TestIdentity:
    @pytest.mark.parametrize("scope", [Scope(), Scope("p")], ids=["common", "project"])
    def test_none_scopes_are_unique(self, backend: SqliteRepository, scope: Scope) -> None:
        """Writing the same identity twice where project_id or repo_name is None keeps one row
        (SQLite's UNIQUE would let NULLs repeat)."""
        for version in range(3):
            backend.apply([make_record("k", {"v": version}, scope=scope)], OVERWRITE)
        assert count_rows(backend.path) == 1
        assert backend.get_document(
            "things", "k", project_id=scope.project_id, repo_name=scope.repo_name
        ) == {"v": 2}
        assert backend.apply([make_record("k", scope=scope)], SKIP) == [Outcome.SKIPPED]

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"project_id": ""}, r"records\[0\]\.project_id: expected a non-empty string"),
            ({"repo_name": ""}, r"records\[0\]\.repo_name: expected a non-empty string"),
            ({"repo_name": "r"}, r"records\[0\]\.repo_name: a repository record needs"),
            ({"key": ""}, r"records\[0\]\.key: expected a non-empty string"),
            ({"collection": ""}, r"records\[0\]\.collection: expected a non-empty string"),
            ({"modified": datetime(2024, 1, 1)}, r"records\[0\]\.modified: must be timezone"),
            ({"blob": "../../etc/passwd"}, r"records\[0\]\.blob: expected 64 lowercase hex"),
            ({"size": -1}, r"records\[0\]\.size: expected a non-negative int"),
            (
                {"document": {"x": object()}},
                r"records\[0\]\.document \(collection 'c', key 'k'\): cannot be stored as JSON: "
                r"\$\['x'\] is of type object, which JSON has no form for",
            ),
            ({"document": ["a"]}, r"records\[0\]\.document: expected a JSON object"),
        ],
    )
    def test_bad_record_rejected_naming_field(
        self, backend: SqliteRepository, changes: dict[str, Any], message: str
    ) -> None:
        """A bad record fails the whole batch with an error naming the record and field, and
        nothing of the batch is written."""
        fields: dict[str, Any] = {"collection": "c", "key": "k", "document": {}, "modified": T0}
        bad = Record(**(fields | changes))
        with pytest.raises(ValueError, match=message):
            backend.apply([bad], OVERWRITE)
        with pytest.raises(ValueError, match=message.replace("0", "1")):
            backend.apply([make_record("fine"), bad], OVERWRITE)
        assert count_rows(backend.path) == 0

    def test_bad_scope_and_since_rejected(self, backend: SqliteRepository) -> None:
        """An empty id in a scope and a naive since are refused before anything is read."""
        with pytest.raises(ValueError, match=r"scope\.project_id"):
            backend.records(Scope(""), "c")
        with pytest.raises(ValueError, match="since: must be timezone-aware"):
            backend.records(Scope(), "c", since=datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="since: must be timezone-aware"):
            backend.projects(since=datetime(2024, 1, 1))

    @pytest.mark.parametrize("bad", ["../" * 3 + "x" * 55, "A" * 64, "abc", ""])
    def test_blob_names_must_be_sha256(self, backend: SqliteRepository, bad: str) -> None:
        """A blob name that is not 64 lowercase hex digits is refused, so it cannot escape
        the blob folder."""
        for call in (backend.has_blob, backend.open_blob):
            with pytest.raises(ValueError, match="sha256: expected 64 lowercase hex"):
                call(bad)
        with pytest.raises(ValueError, match="sha256"):
            backend.write_blob(bad, [b"x"])


class TestApply:
    def test_batch_with_a_bad_key_late_writes_nothing(self, backend: SqliteRepository) -> None:
        """A batch whose last record has a key UTF-8 cannot encode is refused whole, naming
        that record, and leaves no trace."""
        batch = [make_record(f"k{i}") for i in range(100)] + [make_record("bad\ud800")]
        with pytest.raises(ValueError, match=r"records\[100\]\.key: .* lone surrogate"):
            backend.apply(batch, OVERWRITE)
        assert count_rows(backend.path) == 0

    def test_large_batch(self, backend: SqliteRepository) -> None:
        """A batch of 20k records is written and every outcome reported."""
        batch = [make_record(f"k{i:05d}", {"i": i}) for i in range(20_000)]
        assert backend.apply(batch, OVERWRITE) == [Outcome.WRITTEN] * 20_000
        outcomes = backend.apply(batch[::2], SKIP)
        assert outcomes == [Outcome.SKIPPED] * 10_000
        assert count_rows(backend.path) == 20_000

    def test_created_kept_when_replaced(self, backend: SqliteRepository) -> None:
        """Replacing a record keeps when the repository first stored it."""
        backend.apply([make_record("k", {"v": 1})], OVERWRITE)
        with sqlite3.connect(backend.path) as conn:
            (first,) = conn.execute("SELECT created FROM records").fetchone()
        backend.apply([make_record("k", {"v": 2})], OVERWRITE)
        with sqlite3.connect(backend.path) as conn:
            (second,) = conn.execute("SELECT created FROM records").fetchone()
        assert first == second

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        document=st.dictionaries(
            st.text(st.characters(exclude_categories=["Cs"])),
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers(min_value=-(10**30), max_value=10**30)
                | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(st.characters(exclude_categories=["Cs"])),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(
                        st.text(st.characters(exclude_categories=["Cs"])), inner, max_size=4
                    )
                ),
                max_leaves=20,
            ),
            max_size=6,
        )
    )
    def test_any_json_document_round_trips(
        self, backend: SqliteRepository, document: dict[str, Any]
    ) -> None:
        """Any JSON object (any text UTF-8 can encode, any finite number) comes back equal."""
        key = uuid.uuid4().hex
        backend.apply([make_record(key, document)], OVERWRITE)
        assert backend.get_document("things", key) == document

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(keys=st.sets(st.text(st.characters(exclude_categories=["Cs"]), min_size=1), max_size=30))
    def test_key_order_is_code_point_order(self, backend: SqliteRepository, keys: set[str]) -> None:
        """Keys come back in Python's string order, the order MemoryRepository uses too."""
        collection = uuid.uuid4().hex
        backend.apply([make_record(k, collection=collection) for k in keys], OVERWRITE)
        memory = MemoryRepository()
        memory.apply([make_record(k, collection=collection) for k in keys], OVERWRITE)
        got = [r.key for r in backend.records(Scope(), collection)]
        assert got == sorted(keys)
        assert got == [r.key for r in memory.records(Scope(), collection)]


batches = st.lists(
    st.tuples(
        st.sampled_from([SKIP, OVERWRITE]),
        st.lists(
            st.builds(
                make_record,
                st.sampled_from(["a", "b", "c"]),
                st.fixed_dictionaries({"v": st.integers(0, 9)}),
                scope=st.sampled_from([Scope(), Scope("p"), Scope("p", "r")]),
                modified=st.integers(0, 5).map(lambda h: T0 + timedelta(hours=h)),
                deleted=st.booleans(),
            ),
            max_size=6,
        ),
    ),
    max_size=6,
)


@settings(max_examples=40)
@given(batches=batches)
def test_same_outcomes_as_memory_repository(tmp_path_factory: Any, batches: Any) -> None:
    """Any sequence of batches gives the same outcomes and the same stored state (tombstones
    included) in SqliteRepository as in MemoryRepository."""
    memory = MemoryRepository()
    with SqliteRepository(tmp_path_factory.mktemp("model") / "repo.db") as repo:
        for conflict, batch in batches:
            assert repo.apply(batch, conflict) == memory.apply(batch, conflict)
        assert repo.snapshot(tombstones=True) == memory.snapshot(tombstones=True)
        for since in (None, T0 + timedelta(hours=3)):
            for scope in (Scope(), Scope("p"), Scope("p", "r")):
                assert list(repo.records(scope, "things", since=since)) == list(
                    memory.records(scope, "things", since=since)
                )
        for since in (None, T0 + timedelta(hours=3)):
            assert list(repo.projects(since=since)) == list(memory.projects(since=since))
            assert list(repo.repositories("p", since=since)) == list(
                memory.repositories("p", since=since)
            )


class TestStreaming:
    @pytest.fixture(name="big")
    def _big(self, backend: SqliteRepository) -> SqliteRepository:
        filler = "x" * 400
        backend.apply(
            [make_record(f"k{i:05d}", {"i": i, "f": filler}) for i in range(20_000)], OVERWRITE
        )
        return backend

    def test_stream_survives_writes_from_elsewhere(self, big: SqliteRepository) -> None:
        """While a stream over 20k records is open, this and another repository object on the
        same file can write; the stream yields its snapshot, in order, to the end."""
        stream = big.records(Scope(), "things")
        assert next(stream).key == "k00000"
        big.apply([make_record("k00001", {"changed": True}), make_record("zzz")], OVERWRITE)
        with SqliteRepository(big.path) as other:
            other.apply([make_record("k00002", {"changed": True})], OVERWRITE)
        rest = list(stream)
        assert len(rest) == 19_999
        assert [r.key for r in rest] == [f"k{i:05d}" for i in range(1, 20_000)]
        assert all("changed" not in r.document for r in rest)

    def test_stream_does_not_hold_everything(self, big: SqliteRepository) -> None:
        """Consuming a stream one record at a time needs a small fraction of the memory that
        holding all its records takes."""
        tracemalloc.start()
        try:
            for _ in big.records(Scope(), "things"):
                pass
            _, streaming_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            held = list(big.records(Scope(), "things"))
            _, holding_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(held) == 20_000
        assert streaming_peak * 10 < holding_peak

    def test_abandoned_streams_release_their_snapshot(self, big: SqliteRepository) -> None:
        """Streams dropped half way stop pinning their snapshot, so after later writes the
        write-ahead log can be checkpointed completely."""
        for _ in range(50):
            stream = big.records(Scope(), "things")
            next(stream)
            del stream
        big.apply([make_record("after")], OVERWRITE)
        with sqlite3.connect(big.path) as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        assert big.get_document("things", "after") == {"key": "after"}


class TestListings:
    def test_listings_are_sorted(self, backend: SqliteRepository) -> None:
        """projects, repositories and collections come in order."""
        for pid, repo in itertools.product(["pz", "pa", "pm"], ["rz", "ra"]):
            backend.put_repository(pid, repo)
        backend.put_document("zeta", "k", {}, project_id="pa", repo_name="ra")
        backend.put_document("alpha", "k", {}, project_id="pa", repo_name="ra")
        assert list(backend.projects()) == ["pa", "pm", "pz"]
        assert list(backend.repositories("pa")) == ["ra", "rz"]
        assert list(backend.collections(Scope("pa", "ra"))) == ["alpha", "repository", "zeta"]

    def test_restored_records_are_listed(self, backend: SqliteRepository) -> None:
        """A project known only from applied node records (as a restore writes them) is listed."""
        backend.apply([make_record("/f", collection="node", scope=Scope("p", "r"))], OVERWRITE)
        assert list(backend.projects()) == ["p"]
        assert list(backend.repositories("p")) == ["r"]

    def test_since_lists_what_changed_tombstones_included(self, backend: SqliteRepository) -> None:
        """With since, projects and repositories with any record modified at or after it are
        listed, even one whose only record is a tombstone; older ones are not."""
        backend.put_repository("old", "r", modified=T0 - timedelta(days=1))
        backend.put_file("gone", "r", "/f", b"x", modified=T0 - timedelta(days=1))
        backend.delete_file("gone", "r", "/f", modified=T0 + timedelta(hours=1))
        backend.put_repository("new", "r2", modified=T0)
        assert list(backend.projects()) == ["new", "old"]
        assert list(backend.projects(since=T0)) == ["gone", "new"]
        assert list(backend.repositories("gone", since=T0)) == ["r"]
        assert list(backend.repositories("old", since=T0)) == []


class TestConvenience:
    def test_put_file_stores_node_and_blob(self, backend: SqliteRepository) -> None:
        """put_file writes the blob and a node record shaped like an artifact server's node."""
        data = b"\x00binary\xff" * 100
        node = backend.put_file("p", "r", "dir/file.bin", data, metadata={"k": "v"}, modified=T0)
        assert node.key == "/dir/file.bin"
        assert (node.collection, node.project_id, node.repo_name) == ("node", "p", "r")
        assert (node.blob, node.size) == (sha(data), len(data))
        assert node.document == {
            "projectId": "p",
            "repoName": "r",
            "fullPath": "/dir/file.bin",
            "name": "file.bin",
            "folder": False,
            "size": len(data),
            "sha256": sha(data),
            "md5": hashlib.md5(data).hexdigest(),
            "metadata": {"k": "v"},
            "createdDate": T0.isoformat(),
            "lastModifiedDate": T0.isoformat(),
        }
        assert list(backend.records(Scope("p", "r"), "node")) == [node]
        assert backend.read_file("p", "r", "/dir/file.bin") == data
        assert backend.read_file("p", "r", "dir/file.bin") == data

    def test_put_file_again_replaces_keeping_created(self, backend: SqliteRepository) -> None:
        """Replacing a file changes content and lastModifiedDate and keeps createdDate."""
        backend.put_file("p", "r", "/f", b"one", modified=T0)
        later = T0 + timedelta(days=1)
        node = backend.put_file("p", "r", "/f", b"two", modified=later)
        assert node.document["createdDate"] == T0.isoformat()
        assert node.document["lastModifiedDate"] == later.isoformat()
        assert backend.read_file("p", "r", "/f") == b"two"

    @pytest.mark.parametrize(
        ("path", "data", "error", "message"),
        [
            ("/", b"x", ValueError, "full_path: expected a file path"),
            ("/dir/", b"x", ValueError, "names a folder"),
            ("/f", "text", TypeError, "data: expected bytes"),
        ],
    )
    def test_put_file_rejects_bad_input(
        self,
        backend: SqliteRepository,
        path: str,
        data: Any,
        error: type[Exception],
        message: str,
    ) -> None:
        """A folder path or non-bytes data is refused with an error naming the argument."""
        with pytest.raises(error, match=message):
            backend.put_file("p", "r", path, data)
        assert count_rows(backend.path) == 0

    def test_delete_file_leaves_tombstone(self, backend: SqliteRepository) -> None:
        """delete_file turns the node into a tombstone at the given time that keeps the last
        document and drops the blob reference; the file is then gone."""
        node = backend.put_file("p", "r", "/f", b"bye", modified=T0)
        gone = T0 + timedelta(hours=2)
        backend.delete_file("p", "r", "/f", modified=gone)
        with pytest.raises(FileNotFoundError, match="/f"):
            backend.read_file("p", "r", "/f")
        assert backend.get_document("node", "/f", project_id="p", repo_name="r") is None
        assert list(backend.records(Scope("p", "r"), "node")) == []
        (tombstone,) = backend.records(Scope("p", "r"), "node", since=gone)
        assert (tombstone.deleted, tombstone.modified) == (True, gone)
        assert (tombstone.document, tombstone.blob, tombstone.size) == (node.document, None, 0)

    def test_delete_missing_file_raises(self, backend: SqliteRepository) -> None:
        """Deleting a file that is absent or already deleted raises FileNotFoundError."""
        with pytest.raises(FileNotFoundError):
            backend.delete_file("p", "r", "/never")
        backend.put_file("p", "r", "/once", b"x")
        backend.delete_file("p", "r", "/once")
        with pytest.raises(FileNotFoundError):
            backend.delete_file("p", "r", "/once")

    def test_documents_by_scope(self, backend: SqliteRepository) -> None:
        """put_document and get_document address a document by collection, key and scope."""
        backend.put_document("user", "admin", {"name": "admin", "admin": True})
        backend.put_document("permission", "admin", {"p": 1}, project_id="p")
        backend.put_document("permission", "admin", {"r": 1}, project_id="p", repo_name="r")
        assert backend.get_document("user", "admin") == {"name": "admin", "admin": True}
        assert backend.get_document("permission", "admin", project_id="p") == {"p": 1}
        assert backend.get_document("permission", "admin", project_id="p", repo_name="r") == {
            "r": 1
        }
        assert backend.get_document("permission", "admin") is None
        assert backend.get_document("user", "nobody") is None

    def test_projects_and_repositories_defaults(self, backend: SqliteRepository) -> None:
        """put_project and put_repository store minimal documents unless given one."""
        backend.put_project("p")
        backend.put_project("q", {"name": "q", "displayName": "Q", "metadata": []})
        backend.put_repository("p", "r")
        assert backend.get_document("project", "p", project_id="p") == {"name": "p"}
        assert backend.get_document("project", "q", project_id="q") == {
            "name": "q",
            "displayName": "Q",
            "metadata": [],
        }
        assert backend.get_document("repository", "r", project_id="p", repo_name="r") == {
            "projectId": "p",
            "name": "r",
        }

    def test_modified_defaults_to_now_utc(self, backend: SqliteRepository) -> None:
        """Without modified, a record is stamped with the current time, aware."""
        before = datetime.now(UTC)
        node = backend.put_file("p", "r", "/f", b"x")
        after = datetime.now(UTC)
        assert before <= node.modified <= after
        (stored,) = backend.records(Scope("p", "r"), "node")
        assert stored.modified == node.modified

    def test_naive_modified_rejected(self, backend: SqliteRepository) -> None:
        """A naive modified is refused, naming the argument."""
        with pytest.raises(ValueError, match="modified: must be timezone-aware"):
            backend.put_file("p", "r", "/f", b"x", modified=datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="modified: must be timezone-aware"):
            backend.put_project("p", modified=datetime(2024, 1, 1))

    def test_snapshot_matches_memory_repository(self, backend: SqliteRepository) -> None:
        """The same writes give equal snapshots in SqliteRepository and MemoryRepository."""
        memory = MemoryRepository()
        for repo in (backend, memory):
            repo.put_project("p", modified=T0)
            repo.put_repository("p", "r", modified=T0)
            repo.put_file("p", "r", "/a", b"aaa", modified=T0)
            repo.put_file("p", "r", "/b", b"bbb", modified=T0)
            repo.delete_file("p", "r", "/b", modified=T0)
            for i, document in enumerate(AWKWARD_DOCUMENTS):
                repo.put_document("odd", str(i), document, modified=T0)
        assert backend.snapshot() == memory.snapshot()
        assert backend.snapshot(tombstones=True) == memory.snapshot(tombstones=True)
        assert backend.snapshot()["blobs"] == {sha(b"aaa"): b"aaa"}

    def test_snapshot_reports_missing_blob(self, backend: SqliteRepository) -> None:
        """A record whose blob is missing shows None in the snapshot's blobs."""
        node = backend.put_file("p", "r", "/f", b"x")
        assert node.blob is not None
        os.remove(Path(backend.blobs, node.blob[:2], node.blob[2:4], node.blob))
        assert backend.snapshot()["blobs"] == {node.blob: None}


class TestThreads:
    def test_failed_write_leaves_no_temporary_file(self, backend: SqliteRepository) -> None:
        """A write whose chunks raise removes its temporary file."""

        def failing() -> Iterator[bytes]:
            yield b"part"
            raise OSError("source went away")

        with pytest.raises(OSError, match="source went away"):
            backend.write_blob(sha(b"whole"), failing())
        leftovers = [p for p in Path(backend.blobs).rglob("*") if p.is_file()]
        assert leftovers == []

    def test_records_and_blobs_from_many_threads(self, backend: SqliteRepository) -> None:
        """Threads applying batches, streaming records and moving blobs at once all succeed."""
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def work(n: int) -> None:
            try:
                start.wait()
                scope = Scope(f"p{n}", "r")
                for b in range(10):
                    batch = [make_record(f"k{b}-{i}", {"n": n}, scope=scope) for i in range(50)]
                    assert backend.apply(batch, SKIP) == [Outcome.WRITTEN] * 50
                    content = f"{n}-{b}".encode()
                    backend.write_blob(sha(content), [content])
                    assert sum(1 for _ in backend.records(scope, "things")) == (b + 1) * 50
                    assert backend.has_blob(sha(content))
            except BaseException as exc:  # collected and re-raised in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert count_rows(backend.path) == 8 * 10 * 50
        assert list(backend.projects()) == [f"p{n}" for n in range(8)]


def test_offsets_other_than_utc_come_back_as_same_instant(backend: SqliteRepository) -> None:
    """A modified in +05:30 is stored exactly and comes back as the same instant in UTC."""
    moment = datetime(2024, 1, 1, 9, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    backend.apply([make_record("k", modified=moment)], OVERWRITE)
    (got,) = backend.records(Scope(), "things")
    assert got.modified == moment
    assert got.modified.utcoffset() == timedelta(0)


class TestRecordBytes:
    """`record_bytes` sums what `records` yields, with or without *since*, in one query."""

    @staticmethod
    def summed(backend: SqliteRepository, scope: Scope, since: datetime | None) -> int:
        return sum(len(r.key) + r.size + 7 for r in backend.records(scope, "node", since=since))

    def test_agrees_with_the_records(self, backend: SqliteRepository) -> None:
        scope = Scope("p", "r")
        backend.apply(
            [
                make_record(
                    f"/é{i}",
                    collection="node",
                    scope=scope,
                    size=i * 10,
                    modified=T0 + timedelta(days=i),
                    deleted=i % 3 == 0,
                )
                for i in range(12)
            ]
            + [make_record("other", collection="node", scope=Scope("p"), size=99)],
            OVERWRITE,
        )
        for since in (None, T0 + timedelta(days=4)):
            expected = self.summed(backend, scope, since)
            assert expected > 0
            assert backend.record_bytes(scope, "node", since=since, overhead=7) == expected

    def test_nothing_there(self, backend: SqliteRepository) -> None:
        assert backend.record_bytes(Scope(), "node") == 0
