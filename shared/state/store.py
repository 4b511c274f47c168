"""The document-store protocol every backend implements.

Documents live in a *container* (``ledger`` or ``state``), grouped by a *partition* string and
identified by a *key* within it. Writes are conditional where it matters: ``create`` fails when the
key exists, ``replace`` fails when the etag no longer matches. These two are what make the ledger
and watermarks safe under concurrent runs and redelivered messages.

Bulk operations cut round trips where one caller touches many documents at once (detection does, a
page of carts at a time):

- ``read_many`` reads documents by ``(partition, key)`` in one round trip; the missing ones are
  left out of the answer.
- ``write_many`` applies creates, replaces and upserts with the same conditions as the single
  calls. The operations of one partition are atomic: all of them are applied or none is (SQLite: a
  savepoint inside one transaction; Cosmos DB: one transactional batch, hence at most
  ``MAX_BATCH_OPERATIONS`` per partition). Different partitions are independent of each other and
  are written together (SQLite: the same transaction; Cosmos DB: concurrent batches, bounded).
  Every operation gets its own result, in the order given: the ``Document`` written, or the
  ``StoreError`` that refused it: ``ConflictError``, ``PreconditionFailedError`` or
  ``NotFoundError`` for the operation whose condition failed, and ``NotAppliedError`` for the other
  operations of its partition, rolled back with it. A conflict thus never passes silently, and
  never undoes another partition's writes. Any other failure (a timeout, the store unavailable) is
  raised, as from a single write, and leaves it open which partitions were written.

Partitions (Cosmos partition key path ``/pk`` in both containers):

- ``ledger``: one partition per cart id (its entries per version and step); one per customer and
  channel (``customer|<oun>|<account>``) for the pointer to that customer's newest cart.
- ``state``: ``watermark|<oun>`` (one document), ``runs`` (run summaries), and the partitions of
  the other features, each named ``<kind>|<id>``: idempotency records (``idem|<hash>``), the
  suppression list (``suppress|<hash>``), frequency-cap windows (``freqcap|<account>``) and the
  recovery records (``recovery|<account>``, ``recovery-status``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

ContainerName = Literal["ledger", "state"]
CONTAINERS: tuple[ContainerName, ...] = ("ledger", "state")
# Operations of one partition in one ``write_many``: Cosmos DB's limit of a transactional batch.
MAX_BATCH_OPERATIONS = 100


class StoreError(Exception):
    """Base class of state-store failures the callers handle."""


class ConflictError(StoreError):
    """``create`` of a key that already exists."""


class PreconditionFailedError(StoreError):
    """``replace``/``delete`` with an etag that no longer matches: someone else wrote first."""


class NotFoundError(StoreError):
    """``replace``/``delete`` of a key that does not exist."""


class NotAppliedError(StoreError):
    """A ``write_many`` operation rolled back because another operation of its partition failed."""


WriteKind = Literal["create", "replace", "upsert"]


@dataclass(frozen=True)
class WriteOp:
    """One write of a ``write_many``, with the condition of the single call of the same name:
    ``create`` only where the key does not exist, ``replace`` only while ``etag`` matches."""

    kind: WriteKind
    partition: str
    key: str
    body: Mapping[str, Any]
    etag: str | None = None
    ttl_seconds: int | None = None

    def __post_init__(self) -> None:
        if (self.kind == "replace") != (self.etag is not None):
            raise ValueError("a replace needs the etag it is conditional on, and only a replace takes one")


def check_batch(ops: Sequence[WriteOp]) -> dict[str, list[int]]:
    """The operations' indexes grouped by partition, in order; refuses a partition over the limit."""
    groups: dict[str, list[int]] = {}
    for index, op in enumerate(ops):
        groups.setdefault(op.partition, []).append(index)
    for partition, indexes in groups.items():
        if len(indexes) > MAX_BATCH_OPERATIONS:
            raise ValueError(
                f"{len(indexes)} operations for partition {partition!r}: at most {MAX_BATCH_OPERATIONS}"
            )
    return groups


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

    async def read_many(
        self, container: ContainerName, refs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Document]:
        """The documents of ``refs`` (``(partition, key)`` pairs) that exist, in one round trip."""
        ...

    async def write_many(
        self, container: ContainerName, ops: Sequence[WriteOp]
    ) -> list[Document | StoreError]:
        """Apply ``ops``, atomic per partition; one result per operation (see the module's doc)."""
        ...

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
