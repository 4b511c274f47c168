"""Cosmos DB for NoSQL backend (``azure.cosmos.aio``), the production store.

The database and containers are provisioned by Bicep (``infra/``); this adapter never creates
them, because the app's identity holds a data-plane role only. Both containers use the partition
key path ``/pk``; each item is ``{"id": <key>, "pk": <partition>, ...body, "ttl"?: seconds}``.

Every operation is bounded (invariant 11): each request has a connect and a read timeout, the
attempts are few, and the whole operation, retries included, has a deadline
(``COSMOS_TIMEOUT_SECONDS`` x ``COSMOS_MAX_ATTEMPTS``), where the SDK's defaults wait 65 s per read
and retry a throttled request for up to 30 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

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

_SYSTEM_FIELDS = frozenset({"id", "pk", "ttl", "_rid", "_self", "_etag", "_attachments", "_ts"})
# Characters Cosmos DB does not allow in an item id.
_ID_FORBIDDEN = str.maketrans({"/": "%2F", "\\": "%5C", "?": "%3F", "#": "%23"})


# Partitions of one write_many written at once: each is a request of its own (a transactional
# batch, or a point write), and the account's throughput, not this process, is the real bound.
BATCH_CONCURRENCY = 16

# The container type is ``azure.cosmos.aio.ContainerProxy`` in production and the in-process fake
# in tests; both offer read_item, read_items, create_item, replace_item, upsert_item, delete_item,
# execute_item_batch and query_items with the SDK's signatures. The SDK's heavily overloaded
# signatures do not fit a Protocol that a fake could also satisfy, hence ``Any``.
ContainerApi = Any


@dataclass(frozen=True)
class CosmosLimits:
    """How long the Cosmos DB client waits and how often it tries."""

    timeout_seconds: float = 10.0  # read timeout of one request
    connect_timeout_seconds: float = 10.0
    max_attempts: int = 3

    @property
    def operation_seconds(self) -> float:
        """The deadline of one operation, its retries included."""
        return self.timeout_seconds * self.max_attempts

    def client_options(self) -> dict[str, Any]:
        """The CosmosClient keywords: timeouts, and retries of connection errors, timeouts and 429s."""
        retries = self.max_attempts - 1
        return {
            "connection_timeout": self.connect_timeout_seconds,
            "read_timeout": self.timeout_seconds,
            "retry_total": retries,
            "retry_connect": retries,
            "retry_read": retries,
            # Seconds a throttled operation may wait in all; the operation deadline caps it anyway.
            "retry_backoff_max": max(1, int(self.timeout_seconds)),
        }


def cosmos_client(endpoint: str, credential: Any, limits: CosmosLimits) -> Any:
    """The SDK client (``azure.cosmos.aio.CosmosClient``) with the limits applied."""
    from azure.cosmos.aio import CosmosClient

    return CosmosClient(endpoint, credential=credential, **limits.client_options())


def item_id(key: str) -> str:
    return key.translate(_ID_FORBIDDEN)


def _body(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in item.items() if name not in _SYSTEM_FIELDS}


def _item(partition: str, key: str, body: Mapping[str, Any], ttl_seconds: int | None) -> dict[str, Any]:
    item: dict[str, Any] = {**body, "id": item_id(key), "pk": partition}
    if ttl_seconds is not None:
        item["ttl"] = ttl_seconds
    return item


class CosmosStore:
    def __init__(
        self,
        containers: Mapping[ContainerName, ContainerApi],
        *,
        close: Any = None,
        operation_seconds: float | None = None,
        batch_concurrency: int = BATCH_CONCURRENCY,
    ) -> None:
        self._containers = dict(containers)
        self._close = close
        self._batch_concurrency = batch_concurrency
        # Passed to every SDK call as its absolute ``timeout``, retries included.
        self._deadline: dict[str, Any] = {} if operation_seconds is None else {"timeout": operation_seconds}

    @classmethod
    def connect(
        cls,
        endpoint: str,
        database: str,
        container_names: Mapping[ContainerName, str],
        *,
        limits: CosmosLimits | None = None,
        credential: Any = None,
    ) -> CosmosStore:
        """The store on a Cosmos DB account, signed in as ``credential`` (default: the app's
        identity through ``DefaultAzureCredential``, closed with the store)."""
        from azure.identity.aio import DefaultAzureCredential

        limits = limits or CosmosLimits()
        owned = DefaultAzureCredential() if credential is None else None
        client = cosmos_client(endpoint, owned or credential, limits)
        db = client.get_database_client(database)
        containers: dict[ContainerName, ContainerApi] = {
            name: db.get_container_client(actual) for name, actual in container_names.items()
        }

        async def close() -> None:
            await client.close()
            if owned is not None:
                await owned.close()

        return cls(containers, close=close, operation_seconds=limits.operation_seconds)

    def _document(
        self, container: ContainerName, partition: str, key: str, item: Mapping[str, Any]
    ) -> Document:
        return Document(container, partition, key, _body(item), str(item.get("_etag", "")))

    async def read(self, container: ContainerName, partition: str, key: str) -> Document | None:
        try:
            item = await self._containers[container].read_item(
                item_id(key), partition_key=partition, **self._deadline
            )
        except CosmosResourceNotFoundError:
            return None
        return self._document(container, partition, key, item)

    async def create(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document:
        try:
            item = await self._containers[container].create_item(
                _item(partition, key, body, ttl_seconds), **self._deadline
            )
        except CosmosResourceExistsError:
            raise ConflictError(f"{container}/{partition}/{key} exists") from None
        return self._document(container, partition, key, item)

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
        try:
            item = await self._containers[container].replace_item(
                item_id(key),
                _item(partition, key, body, ttl_seconds),
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                **self._deadline,
            )
        except CosmosAccessConditionFailedError:
            raise PreconditionFailedError(
                f"{container}/{partition}/{key} changed since it was read"
            ) from None
        except CosmosResourceNotFoundError:
            raise NotFoundError(f"{container}/{partition}/{key} does not exist") from None
        return self._document(container, partition, key, item)

    async def upsert(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document:
        item = await self._containers[container].upsert_item(
            _item(partition, key, body, ttl_seconds), **self._deadline
        )
        return self._document(container, partition, key, item)

    async def delete(
        self, container: ContainerName, partition: str, key: str, *, etag: str | None = None
    ) -> None:
        kwargs: dict[str, Any] = dict(self._deadline)
        if etag is not None:
            kwargs |= {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await self._containers[container].delete_item(item_id(key), partition_key=partition, **kwargs)
        except CosmosAccessConditionFailedError:
            raise PreconditionFailedError(
                f"{container}/{partition}/{key} changed since it was read"
            ) from None
        except CosmosResourceNotFoundError:
            raise NotFoundError(f"{container}/{partition}/{key} does not exist") from None

    async def read_many(
        self, container: ContainerName, refs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Document]:
        wanted = {(partition, item_id(key)): (partition, key) for partition, key in refs}
        if not wanted:
            return {}
        # The SDK's read-many: point reads grouped by partition key range, the missing left out.
        items = await self._containers[container].read_items(_swap(wanted), **self._deadline)
        found: dict[tuple[str, str], Document] = {}
        for item in items:
            ref = wanted.get((str(item["pk"]), str(item["id"])))
            if ref is not None:
                found[ref] = self._document(container, ref[0], ref[1], item)
        return found

    async def write_many(
        self, container: ContainerName, ops: Sequence[WriteOp]
    ) -> list[Document | StoreError]:
        groups = check_batch(ops)
        results: list[Document | StoreError | None] = [None] * len(ops)
        limit = asyncio.Semaphore(self._batch_concurrency)

        async def write(indexes: list[int]) -> None:
            async with limit:
                if len(indexes) == 1:
                    results[indexes[0]] = await self._write_one(container, ops[indexes[0]])
                else:
                    answers = await self._batch(container, [ops[i] for i in indexes])
                    for index, result in zip(indexes, answers, strict=True):
                        results[index] = result

        # Every partition is tried even when one fails otherwise (a timeout): the others' outcomes
        # stay whatever they are, and the first such error is raised as a single write's would be.
        outcomes = await asyncio.gather(
            *(write(indexes) for indexes in groups.values()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return [result for result in results if result is not None]

    async def _write_one(self, container: ContainerName, op: WriteOp) -> Document | StoreError:
        try:
            if op.kind == "create":
                return await self.create(container, op.partition, op.key, op.body, ttl_seconds=op.ttl_seconds)
            if op.kind == "replace":
                assert op.etag is not None
                return await self.replace(
                    container, op.partition, op.key, op.body, etag=op.etag, ttl_seconds=op.ttl_seconds
                )
            return await self.upsert(container, op.partition, op.key, op.body, ttl_seconds=op.ttl_seconds)
        except (ConflictError, PreconditionFailedError, NotFoundError) as exc:
            return exc

    async def _batch(self, container: ContainerName, ops: list[WriteOp]) -> list[Document | StoreError]:
        """One transactional batch: every operation of one partition, all or nothing."""
        operations: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        for op in ops:
            item = _item(op.partition, op.key, op.body, op.ttl_seconds)
            if op.kind == "replace":
                operations.append(("replace", (item["id"], item), {"if_match_etag": op.etag}))
            else:
                operations.append((op.kind, (item,), {}))
        try:
            answers = await self._containers[container].execute_item_batch(
                operations, partition_key=ops[0].partition, **self._deadline
            )
        except CosmosBatchOperationError as exc:
            failed = ops[exc.error_index]
            error = _batch_error(container, failed, exc.status_code)
            if error is None:
                raise
            return [
                error
                if index == exc.error_index
                else NotAppliedError(
                    f"rolled back: the {failed.kind} of {failed.partition}/{failed.key} failed"
                )
                for index in range(len(ops))
            ]
        return [
            Document(container, op.partition, op.key, dict(op.body), _answer_etag(answer))
            for op, answer in zip(ops, answers, strict=True)
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
        query, parameters = build_query(
            equals=equals or {}, at_most=at_most or {}, order_by=order_by, descending=descending, limit=limit
        )
        kwargs: dict[str, Any] = {"parameters": parameters, **self._deadline}
        if partition is not None:
            kwargs["partition_key"] = partition
        documents: list[Document] = []
        async for item in self._containers[container].query_items(query, **kwargs):
            documents.append(self._document(container, str(item["pk"]), str(item["id"]), item))
        return documents

    async def close(self) -> None:
        if self._close is not None:
            await self._close()


def _swap(wanted: Mapping[tuple[str, str], tuple[str, str]]) -> list[tuple[str, str]]:
    """``(partition, id)`` pairs as the SDK's read-many takes them: ``(id, partition key)``."""
    return [(identifier, partition) for partition, identifier in wanted]


def _batch_error(container: ContainerName, op: WriteOp, status: int | None) -> StoreError | None:
    """The store's error for a batch operation refused with ``status``; None for other failures."""
    where = f"{container}/{op.partition}/{op.key}"
    if status == 409:
        return ConflictError(f"{where} exists")
    if status == 412:
        return PreconditionFailedError(f"{where} changed since it was read")
    if status == 404:
        return NotFoundError(f"{where} does not exist")
    return None


def _answer_etag(answer: Mapping[str, Any]) -> str:
    etag = answer.get("eTag")
    if etag is None:
        etag = (answer.get("resourceBody") or {}).get("_etag", "")
    return str(etag)


def build_query(
    *,
    equals: Mapping[str, str | int | float | bool],
    at_most: Mapping[str, str | int | float],
    order_by: str | None,
    descending: bool,
    limit: int,
) -> tuple[str, list[dict[str, Any]]]:
    """The one query shape the store needs, with every value passed as a parameter."""
    clauses: list[str] = []
    parameters: list[dict[str, Any]] = []
    for operator, conditions in (("=", equals), ("<=", at_most)):
        for name, value in conditions.items():
            _check_name(name)
            placeholder = f"@p{len(parameters)}"
            clauses.append(f"c.{name} {operator} {placeholder}")
            parameters.append({"name": placeholder, "value": value})
    query = "SELECT * FROM c"
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    if order_by is not None:
        _check_name(order_by)
        query += f" ORDER BY c.{order_by} {'DESC' if descending else 'ASC'}"
    query += f" OFFSET 0 LIMIT {int(limit)}"
    return query, parameters


def _check_name(name: str) -> None:
    if not name.isidentifier():
        raise ValueError(f"not a queryable field name: {name!r}")
