"""An in-process stand-in for ``azure.cosmos.aio.ContainerProxy`` with Cosmos semantics.

It raises the real SDK exceptions with Cosmos' status codes (409 on create of an existing id,
412 on an etag mismatch, 404 on a missing item), gives every write a new ``_etag``, honours a
per-item ``ttl`` and answers the one query shape ``shared.state.cosmos.build_query`` produces.
Read-many (``read_items``) leaves missing items out; a transactional batch
(``execute_item_batch``) of at most 100 operations is all or nothing and, when one operation
fails, raises ``CosmosBatchOperationError`` naming it, the others answered 424 (failed dependency),
as the SDK does.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from azure.core import MatchConditions
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosBatchOperationError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)

_WHERE = re.compile(r"c\.(\w+) (=|<=) (@p\d+)")
_ORDER = re.compile(r"ORDER BY c\.(\w+) (ASC|DESC)")
_LIMIT = re.compile(r"OFFSET 0 LIMIT (\d+)$")


class FakeContainer:
    def __init__(self, partition_key_path: str = "/pk", *, clock: Callable[[], float] = time.time) -> None:
        self._pk = partition_key_path.strip("/")
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._clock = clock
        self.calls: list[str] = []

    def _live(self, key: tuple[str, str]) -> dict[str, Any] | None:
        item = self._items.get(key)
        if item is None:
            return None
        ttl = item.get("ttl")
        if ttl is not None and ttl != -1 and item["_ts"] + ttl <= self._clock():
            del self._items[key]
            return None
        return item

    def _stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        item = copy.deepcopy(body)
        item["_etag"] = f'"{uuid.uuid4()}"'
        item["_ts"] = self._clock()
        item["_rid"] = "fake"
        return item

    def _check(self, item: dict[str, Any], kwargs: dict[str, Any]) -> None:
        if (
            kwargs.get("match_condition") == MatchConditions.IfNotModified
            and kwargs.get("etag") != item["_etag"]
        ):
            raise CosmosAccessConditionFailedError(status_code=412, message="Precondition Failed")

    async def read_item(self, item: str, partition_key: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("read_item")
        found = self._live((partition_key, item))
        if found is None:
            raise CosmosResourceNotFoundError(
                status_code=404, message="Entity with the specified id does not exist"
            )
        return copy.deepcopy(found)

    async def create_item(self, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.calls.append("create_item")
        key = (body[self._pk], body["id"])
        if self._live(key) is not None:
            raise CosmosResourceExistsError(
                status_code=409, message="Entity with the specified id already exists"
            )
        self._items[key] = self._stamp(body)
        return copy.deepcopy(self._items[key])

    async def replace_item(self, item: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.calls.append("replace_item")
        key = (body[self._pk], item)
        current = self._live(key)
        if current is None:
            raise CosmosResourceNotFoundError(
                status_code=404, message="Entity with the specified id does not exist"
            )
        self._check(current, kwargs)
        self._items[key] = self._stamp(body)
        return copy.deepcopy(self._items[key])

    async def upsert_item(self, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.calls.append("upsert_item")
        key = (body[self._pk], body["id"])
        self._items[key] = self._stamp(body)
        return copy.deepcopy(self._items[key])

    async def delete_item(self, item: str, partition_key: str, **kwargs: Any) -> None:
        self.calls.append("delete_item")
        key = (partition_key, item)
        current = self._live(key)
        if current is None:
            raise CosmosResourceNotFoundError(
                status_code=404, message="Entity with the specified id does not exist"
            )
        self._check(current, kwargs)
        del self._items[key]

    async def read_items(self, items: list[tuple[str, str]], **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append("read_items")
        found = [self._live((partition_key, item)) for item, partition_key in items]
        return [copy.deepcopy(item) for item in found if item is not None]

    async def execute_item_batch(
        self, batch_operations: list[tuple[Any, ...]], partition_key: str, **kwargs: Any
    ) -> list[dict[str, Any]]:
        self.calls.append("execute_item_batch")
        if len(batch_operations) > 100:
            raise CosmosHttpResponseError(
                status_code=400, message="Batch request has more operations than allowed"
            )
        saved = dict(self._items)
        # Recorded as one call: the point calls the batch reuses are not requests of their own.
        mark = len(self.calls)
        try:
            return await self._batch(batch_operations, partition_key, saved)
        finally:
            del self.calls[mark:]

    async def _batch(
        self, batch_operations: list[tuple[Any, ...]], partition_key: str, saved: dict[tuple[str, str], Any]
    ) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = []
        for index, (kind, args, *rest) in enumerate(batch_operations):
            options = rest[0] if rest else {}
            body = args[-1]
            if body[self._pk] != partition_key:
                raise CosmosHttpResponseError(status_code=400, message="partition key mismatch in batch")
            try:
                if kind == "create":
                    item = await self.create_item(body)
                    status = 201
                elif kind == "replace":
                    item = await self.replace_item(
                        args[0],
                        body,
                        etag=options.get("if_match_etag"),
                        match_condition=MatchConditions.IfNotModified,
                    )
                    status = 200
                elif kind == "upsert":
                    item = await self.upsert_item(body)
                    status = 200
                else:
                    raise AssertionError(f"the fake does not batch {kind!r}")
            except CosmosHttpResponseError as exc:
                self._items = saved
                responses = [{"statusCode": 424} for _ in batch_operations]
                responses[index] = {"statusCode": exc.status_code}
                raise CosmosBatchOperationError(
                    error_index=index,
                    headers={},
                    status_code=exc.status_code,
                    message=f"There was an error in the transactional batch on index {index}.",
                    operation_responses=responses,
                ) from None
            answers.append({"statusCode": status, "eTag": item["_etag"], "resourceBody": item})
        return answers

    def query_items(self, query: str, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        self.calls.append("query_items")
        parameters = {p["name"]: p["value"] for p in kwargs.get("parameters", [])}
        partition = kwargs.get("partition_key")
        conditions = [(name, op, parameters[ph]) for name, op, ph in _WHERE.findall(query)]
        order = _ORDER.search(query)
        limit_match = _LIMIT.search(query)
        if not query.startswith("SELECT * FROM c") or limit_match is None:
            raise AssertionError(f"the fake does not understand this query: {query}")
        items = [
            item
            for key in list(self._items)
            if (item := self._live(key)) is not None and (partition is None or key[0] == partition)
        ]
        for name, op, value in conditions:
            if op == "=":
                items = [i for i in items if name in i and i[name] == value]
            else:
                items = [i for i in items if name in i and type(i[name]) is type(value) and i[name] <= value]
        if order is not None:
            field, direction = order.groups()
            items = [i for i in items if field in i]
            items.sort(key=lambda i: i[field], reverse=direction == "DESC")
        selected = [copy.deepcopy(i) for i in items[: int(limit_match.group(1))]]

        async def iterate() -> AsyncIterator[dict[str, Any]]:
            for item in selected:
                yield item

        return iterate()
