"""What the recovery analytics keep in the state store, and how they read it back.

Per customer, one partition ``recovery|<account>`` holds:

- a *tracked cart* (``cart|<cart id>|v<version>``) for every cart that was mailed or held out: its
  group, when its first reminder was decided (``enrolledAt``), the product ids of its lines (for
  ``strict`` matches), the channel's currency, and whether it is still ``open`` (inside its
  attribution window and not yet settled), ``converted`` or ``not_converted``;
- a *conversion* (``order|<cart id>|v<version>|<order id>``) for every order of the customer that
  counts for that cart: written with a create, so each cart and order pair is recorded once.

Neither holds a name, an address or an email, only ids, amounts and times; erasure deletes the
whole partition (:func:`erase_customer`). One document ``recovery-status``/``tracking`` records
when Retail Server refused the order look-up, so the report can say its figures are incomplete.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.state.store import ConflictError, DocumentStore, NotFoundError
from shared.timeutil import UtcDateTime, sortable

Group = Literal["mailed", "holdout"]
CartStatus = Literal["open", "converted", "not_converted"]
Match = Literal["strict", "any"]
OrderChannel = Literal["online", "store"]

CART_KIND: Literal["recovery-cart"] = "recovery-cart"
CONVERSION_KIND: Literal["recovery-conversion"] = "recovery-conversion"
STATUS_PARTITION = "recovery-status"
STATUS_KEY = "tracking"
# Off periods kept in the status document: the oldest go first beyond this.
MAX_OFF_PERIODS = 50
_ERASE_PAGE = 100
_ERASE_MAX_PAGES = 1000
# Characters a Cosmos DB id may not hold.
_UNSAFE_KEY = re.compile(r"[/\\?#]")


def partition_of(customer_id: str) -> str:
    return f"recovery|{customer_id}"


def _key_part(value: str) -> str:
    return _UNSAFE_KEY.sub("_", value)


def order_key(stamp: datetime, cart_id: str, cart_version: int) -> str:
    """The sort key of a tracked cart and its conversions: unique, in the order carts were enrolled."""
    return f"{sortable(stamp)}|{cart_id}|v{cart_version}"


class _Record(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class _CartRecord(_Record):
    """What a tracked cart and each of its conversions both carry: the cart, its group, its enrolment."""

    cart_id: str = Field(alias="cartId")
    cart_version: int = Field(alias="cartVersion")
    oun: str
    customer_id: str = Field(alias="customerId")
    group: Group
    enrolled_at: UtcDateTime = Field(alias="enrolledAt")
    enrolled_key: str = Field(alias="enrolledKey")


class TrackedCart(_CartRecord):
    kind: Literal["recovery-cart"] = CART_KIND
    product_ids: list[int] = Field(default_factory=list, alias="productIds")
    currency: str | None = None
    status: CartStatus = "open"
    next_check_at: UtcDateTime = Field(alias="nextCheckAt")
    checked_at: UtcDateTime | None = Field(default=None, alias="checkedAt")
    resolved_at: UtcDateTime | None = Field(default=None, alias="resolvedAt")
    # A conversion with a product of the cart was found: nothing stronger can come, so it settles.
    strict: bool = False
    conversions: int = 0

    @property
    def key(self) -> str:
        return f"cart|{_key_part(self.cart_id)}|v{self.cart_version}"


class Conversion(_CartRecord):
    kind: Literal["recovery-conversion"] = CONVERSION_KIND
    order_id: str = Field(alias="orderId")
    channel: OrderChannel
    channel_id: int | None = Field(default=None, alias="channelId")
    store_id: str | None = Field(default=None, alias="storeId")
    total: Decimal
    currency: str | None = None
    ordered_at: UtcDateTime = Field(alias="orderedAt")
    hours_to_order: float = Field(alias="hoursToOrder")
    # The last reminder step sent before the order; 0 for a held-out cart.
    last_step_sent: int = Field(alias="lastStepSent")
    match: Match

    @property
    def key(self) -> str:
        return f"order|{_key_part(self.cart_id)}|v{self.cart_version}|{_key_part(self.order_id)}"


class OffPeriod(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: UtcDateTime = Field(alias="from")
    end: UtcDateTime | None = Field(default=None, alias="to")
    reason: str


class TrackingStatus(_Record):
    kind: Literal["recovery-status"] = "recovery-status"
    enabled: bool = True
    reason: str | None = None
    last_refused_at: UtcDateTime | None = Field(default=None, alias="lastRefusedAt")
    off_periods: list[OffPeriod] = Field(default_factory=list, alias="offPeriods")


class RecoveryStore:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def enrol(self, cart: TrackedCart) -> TrackedCart:
        """Record the cart's group once; a cart enrolled before keeps its first record (a retried
        message must not move a cart to the other group)."""
        partition = partition_of(cart.customer_id)
        try:
            await self._store.create("state", partition, cart.key, cart.body())
        except ConflictError:
            existing = await self._store.read("state", partition, cart.key)
            if existing is not None:
                return TrackedCart.model_validate(existing.body)
            await self._store.create("state", partition, cart.key, cart.body())
        return cart

    async def due(self, now: datetime, limit: int) -> list[TrackedCart]:
        """Open carts whose next check has come, the longest waiting first (cross-partition, bounded)."""
        documents = await self._store.query(
            "state",
            equals={"kind": CART_KIND, "status": "open"},
            at_most={"nextCheckAt": sortable(now)},
            order_by="nextCheckAt",
            limit=limit,
        )
        return [TrackedCart.model_validate(d.body) for d in documents]

    async def save(self, cart: TrackedCart) -> None:
        await self._store.upsert("state", partition_of(cart.customer_id), cart.key, cart.body())

    async def record_conversion(self, conversion: Conversion) -> bool:
        """Write the conversion once; False when this cart and order were recorded before."""
        try:
            await self._store.create(
                "state", partition_of(conversion.customer_id), conversion.key, conversion.body()
            )
        except ConflictError:
            return False
        return True

    async def scan(
        self, kind: str, *, start: datetime, end: datetime, oun: str | None, page_size: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        """Every record of ``kind`` whose cart was enrolled in [start, end), newest first, a page
        at a time (keyset paging on the unique ``enrolledKey``)."""
        equals: dict[str, str | int | float | bool] = {"kind": kind}
        if oun is not None:
            equals["oun"] = oun
        low = sortable(start)
        cursor = sortable(end)  # every key of an instant sorts after the bare instant: end is excluded
        seen_at_cursor: str | None = None
        while True:
            documents = await self._store.query(
                "state",
                equals=equals,
                at_most={"enrolledKey": cursor},
                order_by="enrolledKey",
                descending=True,
                limit=page_size,
            )
            fresh = [d for d in documents if d.body.get("enrolledKey") != seen_at_cursor]
            for document in fresh:
                if str(document.body["enrolledKey"]) < low:
                    return
                yield document.body
            if len(documents) < page_size or not fresh:
                return
            cursor = seen_at_cursor = str(fresh[-1].body["enrolledKey"])

    async def status(self) -> TrackingStatus:
        document = await self._store.read("state", STATUS_PARTITION, STATUS_KEY)
        return TrackingStatus() if document is None else TrackingStatus.model_validate(document.body)

    async def turn_off(self, reason: str, now: datetime) -> TrackingStatus:
        status = await self.status()
        if status.enabled:
            status.off_periods = [*status.off_periods, OffPeriod(start=now, reason=reason)][-MAX_OFF_PERIODS:]
        status.enabled, status.reason, status.last_refused_at = False, reason, now
        await self._store.upsert("state", STATUS_PARTITION, STATUS_KEY, status.body())
        return status

    async def turn_on(self, now: datetime) -> None:
        status = await self.status()
        if status.enabled:
            return
        if status.off_periods and status.off_periods[-1].end is None:
            status.off_periods[-1].end = now
        status.enabled, status.reason = True, None
        await self._store.upsert("state", STATUS_PARTITION, STATUS_KEY, status.body())


async def erase_customer(store: DocumentStore, customer_id: str) -> int:
    """Delete the customer's tracked carts and conversions; returns how many documents went."""
    deleted = 0
    for _ in range(_ERASE_MAX_PAGES):
        page = await store.query("state", partition=partition_of(customer_id), limit=_ERASE_PAGE)
        if not page:
            return deleted
        for document in page:
            try:
                await store.delete("state", document.partition, document.key)
            except NotFoundError:
                continue
            deleted += 1
    raise RuntimeError("more recovery records than one customer can have; erase again")


def product_ids_of(lines: Sequence[Any]) -> list[int]:
    """The distinct product ids of a cart's active lines, in order."""
    return list(dict.fromkeys(line.product_id for line in lines if line.product_id is not None))
