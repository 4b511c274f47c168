"""A ``DocumentStore`` wrapper that makes every state-store call a client span of the current trace.

Each span is named by the operation and the container (``read ledger``, ``write_many state``) and
carries how many documents it touched, never a partition or a key: those hold cart ids and
customer account numbers. A conditional write that loses its race (``ConflictError``,
``PreconditionFailedError``, ``NotFoundError``) is an answer the callers expect, so it names the
call's status without marking the span failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from shared import telemetry
from shared.state.store import (
    ConflictError,
    ContainerName,
    Document,
    DocumentStore,
    NotFoundError,
    PreconditionFailedError,
    StoreError,
    WriteOp,
)

SERVICE = "state store"
_EXPECTED = (ConflictError, PreconditionFailedError, NotFoundError)


class TracedStore:
    def __init__(self, inner: DocumentStore, *, system: str) -> None:
        self.inner = inner
        self._system = system

    def _call(
        self, operation: str, container: ContainerName, items: int = 1
    ) -> AbstractContextManager[telemetry.UpstreamCall]:
        return telemetry.upstream_call(
            SERVICE,
            f"{operation} {container}",
            attributes={
                "db.system.name": self._system,
                "db.operation.name": operation,
                "db.collection.name": container,
                "connector.items": items,
            },
            expected=_EXPECTED,
        )

    async def read(self, container: ContainerName, partition: str, key: str) -> Document | None:
        with self._call("read", container):
            return await self.inner.read(container, partition, key)

    async def create(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document:
        with self._call("create", container):
            return await self.inner.create(container, partition, key, body, ttl_seconds=ttl_seconds)

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
        with self._call("replace", container):
            return await self.inner.replace(
                container, partition, key, body, etag=etag, ttl_seconds=ttl_seconds
            )

    async def upsert(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document:
        with self._call("upsert", container):
            return await self.inner.upsert(container, partition, key, body, ttl_seconds=ttl_seconds)

    async def delete(
        self, container: ContainerName, partition: str, key: str, *, etag: str | None = None
    ) -> None:
        with self._call("delete", container):
            await self.inner.delete(container, partition, key, etag=etag)

    async def read_many(
        self, container: ContainerName, refs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Document]:
        with self._call("read_many", container, len(refs)) as call:
            found = await self.inner.read_many(container, refs)
            call.span.set_attribute("connector.found", len(found))
            return found

    async def write_many(
        self, container: ContainerName, ops: Sequence[WriteOp]
    ) -> list[Document | StoreError]:
        with self._call("write_many", container, len(ops)) as call:
            results = await self.inner.write_many(container, ops)
            refused = sum(1 for result in results if isinstance(result, StoreError))
            call.span.set_attribute("connector.refused", refused)
            return results

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
        with self._call("query", container) as call:
            found = await self.inner.query(
                container,
                partition=partition,
                equals=equals,
                at_most=at_most,
                order_by=order_by,
                descending=descending,
                limit=limit,
            )
            call.span.set_attribute("connector.found", len(found))
            return found

    async def close(self) -> None:
        await self.inner.close()
