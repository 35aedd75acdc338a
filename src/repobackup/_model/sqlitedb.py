"""What the SQLite-backed stores share: one explicit transaction on an autocommit connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["transaction"]


@contextmanager
def transaction(
    conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE"
) -> Iterator[sqlite3.Connection]:
    """Run the block in one transaction on *conn*: committed at the end, rolled back if the
    block raises. IMMEDIATE takes the write lock before the first read, so a read-check-write
    cannot interleave with another process's."""
    conn.execute(begin)
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
