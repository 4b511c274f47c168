"""SQLite backend: the embedded default for local runs, the demo and the tests.

``sqlite3`` is synchronous, so every statement runs on a worker thread; one connection is shared
and serialised by a lock, which is plenty for a single Functions worker.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shared.state.store import (
    ConflictError,
    ContainerName,
    Document,
    NotFoundError,
    PreconditionFailedError,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    container TEXT NOT NULL,
    partition TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    etag TEXT NOT NULL,
    expires_at REAL,
    PRIMARY KEY (container, partition, key)
)
"""
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _field(name: str) -> str:
    if not _FIELD.match(name):
        raise ValueError(f"not a queryable field name: {name!r}")
    return f"json_extract(body, '$.{name}')"


class SqliteStore:
    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self._path = str(path)
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)

    async def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        def locked() -> Any:
            with self._lock:
                return work(self._conn)

        return await asyncio.to_thread(locked)

    def _expiry(self, ttl_seconds: int | None) -> float | None:
        return None if ttl_seconds is None else self._clock() + ttl_seconds

    async def read(self, container: ContainerName, partition: str, key: str) -> Document | None:
        now = self._clock()

        def work(conn: sqlite3.Connection) -> Document | None:
            row = conn.execute(
                "SELECT body, etag FROM documents WHERE container=? AND partition=? AND key=?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (container, partition, key, now),
            ).fetchone()
            return None if row is None else Document(container, partition, key, json.loads(row[0]), row[1])

        result: Document | None = await self._run(work)
        return result

    async def create(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document:
        etag = uuid.uuid4().hex
        text = json.dumps(dict(body))
        now = self._clock()
        expires = self._expiry(ttl_seconds)

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # An expired document no longer exists as far as callers can tell.
                conn.execute(
                    "DELETE FROM documents WHERE container=? AND partition=? AND key=? AND expires_at <= ?",
                    (container, partition, key, now),
                )
                conn.execute(
                    "INSERT INTO documents (container, partition, key, body, etag, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (container, partition, key, text, etag, expires),
                )
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                raise ConflictError(f"{container}/{partition}/{key} exists") from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(work)
        return Document(container, partition, key, json.loads(text), etag)

    async def replace(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        etag: str,
        ttl_seconds: int | None = None,
    ) -> Document:
        new_etag = uuid.uuid4().hex
        text = json.dumps(dict(body))
        now = self._clock()
        expires = self._expiry(ttl_seconds)

        def work(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE documents SET body=?, etag=?, expires_at=?"
                " WHERE container=? AND partition=? AND key=?"
                " AND etag=? AND (expires_at IS NULL OR expires_at > ?)",
                (text, new_etag, expires, container, partition, key, etag, now),
            )
            if cursor.rowcount == 1:
                return
            exists = conn.execute(
                "SELECT 1 FROM documents WHERE container=? AND partition=? AND key=?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (container, partition, key, now),
            ).fetchone()
            if exists:
                raise PreconditionFailedError(f"{container}/{partition}/{key} changed since it was read")
            raise NotFoundError(f"{container}/{partition}/{key} does not exist")

        await self._run(work)
        return Document(container, partition, key, json.loads(text), new_etag)

    async def upsert(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document:
        etag = uuid.uuid4().hex
        text = json.dumps(dict(body))
        expires = self._expiry(ttl_seconds)

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO documents (container, partition, key, body, etag, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (container, partition, key)"
                " DO UPDATE SET body=excluded.body, etag=excluded.etag,"
                " expires_at=excluded.expires_at",
                (container, partition, key, text, etag, expires),
            )

        await self._run(work)
        return Document(container, partition, key, json.loads(text), etag)

    async def delete(
        self, container: ContainerName, partition: str, key: str, *, etag: str | None = None
    ) -> None:
        now = self._clock()

        def work(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT etag FROM documents WHERE container=? AND partition=? AND key=?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (container, partition, key, now),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{container}/{partition}/{key} does not exist")
            if etag is not None and row[0] != etag:
                raise PreconditionFailedError(f"{container}/{partition}/{key} changed since it was read")
            conn.execute(
                "DELETE FROM documents WHERE container=? AND partition=? AND key=?",
                (container, partition, key),
            )

        await self._run(work)

    async def query(
        self,
        container: ContainerName,
        *,
        partition: str | None = None,
        equals: Mapping[str, str | int | float | bool] | None = None,
        at_most: Mapping[str, str | int | float] | None = None,
        order_by: str | None = None,
        descending: bool = False,
        limit: int = 100,
    ) -> list[Document]:
        clauses = ["container = ?", "(expires_at IS NULL OR expires_at > ?)"]
        params: list[Any] = [container, self._clock()]
        if partition is not None:
            clauses.append("partition = ?")
            params.append(partition)
        for name, value in (equals or {}).items():
            clauses.append(f"{_field(name)} = ?")
            params.append(value)
        for name, value in (at_most or {}).items():
            clauses.append(f"{_field(name)} <= ?")
            params.append(value)
        sql = "SELECT partition, key, body, etag FROM documents WHERE " + " AND ".join(clauses)  # noqa: S608
        if order_by is not None:
            sql += f" ORDER BY {_field(order_by)} {'DESC' if descending else 'ASC'}, key"
        sql += " LIMIT ?"
        params.append(limit)

        def work(conn: sqlite3.Connection) -> list[Document]:
            return [
                Document(container, row[0], row[1], json.loads(row[2]), row[3])
                for row in conn.execute(sql, params).fetchall()
            ]

        result: list[Document] = await self._run(work)
        return result

    async def close(self) -> None:
        await self._run(lambda conn: conn.close())
