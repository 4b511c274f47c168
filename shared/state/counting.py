"""A ``DocumentStore`` wrapper that counts what a caller costs the store.

``calls`` counts requests by operation. ``round_trips`` counts the waits a caller sits through:
calls issued together (concurrently) overlap in time and count once, because with a store that
answers in milliseconds they cost one latency, not one each. The counter goes up whenever a call
starts while no other call is in flight.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from shared.state.store import ContainerName, Document, DocumentStore, StoreError, WriteOp

_T = TypeVar("_T")


class CountingStore:
    def __init__(self, inner: DocumentStore) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()
        self.round_trips = 0
        self._in_flight = 0

    def reset(self) -> None:
        """Start counting afresh (the calls in flight still finish as they began)."""
        self.calls.clear()
        self.round_trips = 0

    async def _count(self, operation: str, call: Awaitable[_T]) -> _T:
        self.calls[operation] += 1
        if self._in_flight == 0:
            self.round_trips += 1
        self._in_flight += 1
        try:
            # A request takes time on the wire: let the calls issued with this one start before
            # it answers, even where a backend (an in-process fake) could answer at once.
            try:
                await asyncio.sleep(0)
            except BaseException:
                if isinstance(call, Coroutine):
                    call.close()
                raise
            return await call
        finally:
            self._in_flight -= 1

    async def read(self, container: ContainerName, partition: str, key: str) -> Document | None:
        return await self._count("read", self._inner.read(container, partition, key))

    async def create(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document:
        return await self._count(
            "create", self._inner.create(container, partition, key, body, ttl_seconds=ttl_seconds)
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
        return await self._count(
            "replace",
            self._inner.replace(container, partition, key, body, etag=etag, ttl_seconds=ttl_seconds),
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
        return await self._count(
            "upsert", self._inner.upsert(container, partition, key, body, ttl_seconds=ttl_seconds)
        )

    async def delete(
        self, container: ContainerName, partition: str, key: str, *, etag: str | None = None
    ) -> None:
        await self._count("delete", self._inner.delete(container, partition, key, etag=etag))

    async def read_many(
        self, container: ContainerName, refs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Document]:
        return await self._count("read_many", self._inner.read_many(container, refs))

    async def write_many(
        self, container: ContainerName, ops: Sequence[WriteOp]
    ) -> list[Document | StoreError]:
        return await self._count("write_many", self._inner.write_many(container, ops))

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
        return await self._count(
            "query",
            self._inner.query(
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
        await self._inner.close()
