"""A ``DocumentStore`` that hands every call of the store it wraps to one hook.

Wrappers that observe calls (counting them, tracing them) override :meth:`ForwardingStore._forward`
instead of restating the whole protocol. The hook receives the inner call unstarted, so it can act
before the request goes out and after the answer comes back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.state.store import ContainerName, Document, DocumentStore, StoreError, WriteOp

_T = TypeVar("_T")


@dataclass(frozen=True)
class StoreCall:
    """One call: the protocol method, its container, and how many documents it names."""

    operation: str
    container: ContainerName
    items: int = 1


class ForwardingStore:
    def __init__(self, inner: DocumentStore) -> None:
        self.inner = inner

    async def _forward(self, call: StoreCall, request: Callable[[], Awaitable[_T]]) -> _T:
        """Run the inner store's call; subclasses wrap what they observe around it."""
        return await request()

    async def read(self, container: ContainerName, partition: str, key: str) -> Document | None:
        return await self._forward(
            StoreCall("read", container), lambda: self.inner.read(container, partition, key)
        )

    async def create(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document:
        return await self._forward(
            StoreCall("create", container),
            lambda: self.inner.create(container, partition, key, body, ttl_seconds=ttl_seconds),
        )

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
        return await self._forward(
            StoreCall("replace", container),
            lambda: self.inner.replace(container, partition, key, body, etag=etag, ttl_seconds=ttl_seconds),
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
        return await self._forward(
            StoreCall("upsert", container),
            lambda: self.inner.upsert(container, partition, key, body, ttl_seconds=ttl_seconds),
        )

    async def delete(
        self, container: ContainerName, partition: str, key: str, *, etag: str | None = None
    ) -> None:
        await self._forward(
            StoreCall("delete", container),
            lambda: self.inner.delete(container, partition, key, etag=etag),
        )

    async def read_many(
        self, container: ContainerName, refs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Document]:
        return await self._forward(
            StoreCall("read_many", container, len(refs)), lambda: self.inner.read_many(container, refs)
        )

    async def write_many(
        self, container: ContainerName, ops: Sequence[WriteOp]
    ) -> list[Document | StoreError]:
        return await self._forward(
            StoreCall("write_many", container, len(ops)), lambda: self.inner.write_many(container, ops)
        )

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
        return await self._forward(
            StoreCall("query", container),
            lambda: self.inner.query(
                container,
                partition=partition,
                equals=equals,
                at_most=at_most,
                order_by=order_by,
                descending=descending,
                limit=limit,
            ),
        )

    async def close(self) -> None:
        await self.inner.close()
