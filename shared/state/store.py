"""The document-store protocol every backend implements.

Documents live in a *container* (``ledger`` or ``state``), grouped by a *partition* string and
identified by a *key* within it. Writes are conditional where it matters: ``create`` fails when the
key exists, ``replace`` fails when the etag no longer matches. These two are what make the ledger
and watermarks safe under concurrent runs and redelivered messages.

Partitions (Cosmos partition key path ``/pk`` in both containers):

- ``ledger``: one partition per cart id (its entries per version and step); one per customer and
  channel (``customer|<oun>|<account>``) for the pointer to that customer's newest cart.
- ``state``: ``watermark|<oun>`` (one document), ``runs|<oun>`` (run summaries), and the partitions
  later features add (idempotency records, suppression list), each named ``<kind>|<id>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

ContainerName = Literal["ledger", "state"]
CONTAINERS: tuple[ContainerName, ...] = ("ledger", "state")


class StoreError(Exception):
    """Base class of state-store failures the callers handle."""


class ConflictError(StoreError):
    """``create`` of a key that already exists."""


class PreconditionFailedError(StoreError):
    """``replace``/``delete`` with an etag that no longer matches: someone else wrote first."""


class NotFoundError(StoreError):
    """``replace``/``delete`` of a key that does not exist."""


@dataclass(frozen=True)
class Document:
    container: ContainerName
    partition: str
    key: str
    body: dict[str, Any]
    etag: str


class DocumentStore(Protocol):
    async def read(self, container: ContainerName, partition: str, key: str) -> Document | None: ...

    async def create(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document: ...

    async def replace(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        etag: str,
        ttl_seconds: int | None = None,
    ) -> Document: ...

    async def upsert(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document: ...

    async def delete(
        self, container: ContainerName, partition: str, key: str, *, etag: str | None = None
    ) -> None: ...

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
        """Documents whose top-level fields equal ``equals`` and are <= ``at_most``, in order.

        Without ``partition`` the query spans partitions; keep such queries rare and bounded.
        """
        ...

    async def close(self) -> None: ...
