"""The cache index: a small sqlite database of records (kind, key) → JSON value, and tags.

Kinds are chosen by the caller ("layer" for a build step's result keyed by its cache key,
"snapshot" for an unpacked layer, ...). WAL mode lets concurrent builds read while one
writes; every write is one short transaction, so a crash loses at most that record.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
# `threading.local` is this class: taken from `_thread`, it costs no `import threading`
# (~1 ms of a CLI command's start; a command that only reads the store runs no thread)
from _thread import _local as thread_local
from dataclasses import dataclass

TYPE_CHECKING = False  # typing's, without importing typing (~3 ms of CLI start-up)
if TYPE_CHECKING:
    from typing import Any, Iterator

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    created REAL NOT NULL, last_used REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY, digest TEXT NOT NULL, created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class CacheRecord:
    """One record of the index: a JSON value under (kind, key)."""
    kind: str
    key: str
    value: Any
    created: float
    last_used: float


@dataclass(frozen=True)
class Tag:
    """A name and the digest it points at."""
    name: str
    digest: str
    created: float


class CacheIndex:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._local = thread_local()
        with self._conn() as c:
            c.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        # one connection per thread: sqlite3 connections are not shared across threads
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # records -------------------------------------------------------------
    def get(self, kind: str, key: str, touch: bool = True) -> CacheRecord | None:
        c = self._conn()
        row = c.execute(
            "SELECT value, created, last_used FROM records WHERE kind=? AND key=?", (kind, key)
        ).fetchone()
        if row is None:
            return None
        now = time.time()
        if touch:
            c.execute("UPDATE records SET last_used=? WHERE kind=? AND key=?", (now, kind, key))
        return CacheRecord(kind, key, json.loads(row[0]), row[1], now if touch else row[2])

    def put(self, kind: str, key: str, value: Any) -> CacheRecord:
        now = time.time()
        self._conn().execute(
            "INSERT INTO records(kind, key, value, created, last_used) VALUES (?,?,?,?,?) "
            "ON CONFLICT(kind, key) DO UPDATE SET value=excluded.value, last_used=excluded.last_used",
            (kind, key, json.dumps(value, sort_keys=True), now, now),
        )
        return CacheRecord(kind, key, value, now, now)

    def delete(self, kind: str, key: str) -> None:
        self._conn().execute("DELETE FROM records WHERE kind=? AND key=?", (kind, key))

    def records(self, kind: str | None = None) -> Iterator[CacheRecord]:
        c = self._conn()
        q = "SELECT kind, key, value, created, last_used FROM records"
        rows = c.execute(q + " WHERE kind=?", (kind,)) if kind else c.execute(q)
        for k, key, value, created, used in rows.fetchall():
            yield CacheRecord(k, key, json.loads(value), created, used)

    # tags ----------------------------------------------------------------
    def set_tag(self, name: str, digest: str) -> None:
        self._conn().execute(
            "INSERT INTO tags(name, digest, created) VALUES (?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET digest=excluded.digest, created=excluded.created",
            (name, digest, time.time()),
        )

    def get_tag(self, name: str) -> str | None:
        row = self._conn().execute("SELECT digest FROM tags WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def delete_tag(self, name: str) -> bool:
        cur = self._conn().execute("DELETE FROM tags WHERE name=?", (name,))
        return cur.rowcount > 0

    def tags(self) -> list[Tag]:
        rows = self._conn().execute("SELECT name, digest, created FROM tags ORDER BY name").fetchall()
        return [Tag(*r) for r in rows]
