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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.state.store import (
    ConflictError,
    ContainerName,
    Document,
    NotAppliedError,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
    WriteOp,
    check_batch,
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
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives the
        # process dying, only an OS crash or power loss can undo the last ones. That is the
        # trade-off of a store for local runs, the demo and the tests (Cosmos DB holds production
        # state), and it spares each write an fsync (about 0.2 ms here, far more on slow disks).
        self._conn.execute("PRAGMA synchronous=NORMAL")
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
                _insert(conn, container, partition, key, text, etag, expires, now)
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
            _update(conn, container, partition, key, text, etag, new_etag, expires, now)

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
            _upsert(conn, container, partition, key, text, etag, expires)

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

    async def read_many(
        self, container: ContainerName, refs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Document]:
        now = self._clock()
        wanted = list(dict.fromkeys(refs))

        def work(conn: sqlite3.Connection) -> dict[tuple[str, str], Document]:
            found: dict[tuple[str, str], Document] = {}
            for partition, key in wanted:
                row = conn.execute(
                    "SELECT body, etag FROM documents WHERE container=? AND partition=? AND key=?"
                    " AND (expires_at IS NULL OR expires_at > ?)",
                    (container, partition, key, now),
                ).fetchone()
                if row is not None:
                    found[(partition, key)] = Document(container, partition, key, json.loads(row[0]), row[1])
            return found

        result: dict[tuple[str, str], Document] = await self._run(work)
        return result

    async def write_many(
        self, container: ContainerName, ops: Sequence[WriteOp]
    ) -> list[Document | StoreError]:
        groups = check_batch(ops)
        now = self._clock()
        prepared = [
            (op, json.dumps(dict(op.body)), uuid.uuid4().hex, self._expiry(op.ttl_seconds)) for op in ops
        ]

        def apply(conn: sqlite3.Connection, index: int) -> None:
            op, text, etag, expires = prepared[index]
            if op.kind == "create":
                _insert(conn, container, op.partition, op.key, text, etag, expires, now)
            elif op.kind == "replace":
                assert op.etag is not None
                _update(conn, container, op.partition, op.key, text, op.etag, etag, expires, now)
            else:
                _upsert(conn, container, op.partition, op.key, text, etag, expires)

        def work(conn: sqlite3.Connection) -> list[StoreError | None]:
            errors: list[StoreError | None] = [None] * len(ops)
            # One transaction for the whole call; a savepoint per partition makes each partition's
            # operations all-or-nothing without touching the others.
            conn.execute("BEGIN IMMEDIATE")
            try:
                for indexes in groups.values():
                    conn.execute("SAVEPOINT part")
                    for index in indexes:
                        try:
                            apply(conn, index)
                        except (ConflictError, PreconditionFailedError, NotFoundError) as exc:
                            conn.execute("ROLLBACK TO part")
                            for other in indexes:
                                errors[other] = exc if other == index else _not_applied(ops[index])
                            break
                    conn.execute("RELEASE part")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return errors

        errors: list[StoreError | None] = await self._run(work)
        # The bodies as given (they were just serialised, so they are plain JSON values): parsing
        # the stored text back would cost a bulk write as much as it spent writing.
        return [
            error if error is not None else Document(container, op.partition, op.key, dict(op.body), etag)
            for error, (op, _, etag, _) in zip(errors, prepared, strict=True)
        ]

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


def _not_applied(failed: WriteOp) -> NotAppliedError:
    return NotAppliedError(f"rolled back: the {failed.kind} of {failed.partition}/{failed.key} failed")


def _insert(
    conn: sqlite3.Connection,
    container: str,
    partition: str,
    key: str,
    text: str,
    etag: str,
    expires: float | None,
    now: float,
) -> None:
    """Insert inside the caller's transaction; ``ConflictError`` when the key exists."""
    insert = (
        "INSERT INTO documents (container, partition, key, body, etag, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
    )
    values = (container, partition, key, text, etag, expires)
    try:
        conn.execute(insert, values)
        return
    except sqlite3.IntegrityError:
        pass
    # An expired document no longer exists as far as callers can tell.
    expired = conn.execute(
        "DELETE FROM documents WHERE container=? AND partition=? AND key=? AND expires_at <= ?",
        (container, partition, key, now),
    )
    if expired.rowcount != 1:
        raise ConflictError(f"{container}/{partition}/{key} exists")
    conn.execute(insert, values)


def _update(
    conn: sqlite3.Connection,
    container: str,
    partition: str,
    key: str,
    text: str,
    etag: str,
    new_etag: str,
    expires: float | None,
    now: float,
) -> None:
    """Replace while ``etag`` matches; ``PreconditionFailedError`` or ``NotFoundError`` otherwise."""
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


def _upsert(
    conn: sqlite3.Connection,
    container: str,
    partition: str,
    key: str,
    text: str,
    etag: str,
    expires: float | None,
) -> None:
    conn.execute(
        "INSERT INTO documents (container, partition, key, body, etag, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (container, partition, key)"
        " DO UPDATE SET body=excluded.body, etag=excluded.etag,"
        " expires_at=excluded.expires_at",
        (container, partition, key, text, etag, expires),
    )
