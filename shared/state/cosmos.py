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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

from shared.state.store import (
    ConflictError,
    ContainerName,
    Document,
    NotFoundError,
    PreconditionFailedError,
)

_SYSTEM_FIELDS = frozenset({"id", "pk", "ttl", "_rid", "_self", "_etag", "_attachments", "_ts"})
# Characters Cosmos DB does not allow in an item id.
_ID_FORBIDDEN = str.maketrans({"/": "%2F", "\\": "%5C", "?": "%3F", "#": "%23"})


# The container type is ``azure.cosmos.aio.ContainerProxy`` in production and the in-process fake
# in tests; both offer read_item, create_item, replace_item, upsert_item, delete_item and
# query_items with the SDK's signatures. The SDK's heavily overloaded signatures do not fit a
# Protocol that a fake could also satisfy, hence ``Any``.
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
    ) -> None:
        self._containers = dict(containers)
        self._close = close
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
