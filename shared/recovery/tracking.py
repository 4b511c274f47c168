"""Conversion tracking (``track_conversions``): which mailed and held-out carts were followed by an
order of the same customer, online or in a store, within ``ATTRIBUTION_DAYS`` of the first reminder.

Each run takes the open tracked carts whose check is due, at most ``MAX_TRACKED_CARTS_PER_RUN``,
the longest waiting first, and looks up each customer's orders once for all of that customer's
carts (``SalesOrders/SearchOrders`` from the earliest first reminder, every channel, with lines).
An order inside a cart's window is recorded as a conversion of that cart, once per cart and order:
``strict`` when it holds a product of the cart, ``any`` otherwise. A cart settles as ``converted``
at its first strict conversion, or when its window ends (``converted`` if any order counted,
``not_converted`` if none); until then it is looked at again every six hours.

A Retail Server that refuses the look-up itself (the action unknown to its version, or the API
role filter refusing an application token: 400, 401, 403, 404, 405, 501) turns tracking off with
one error in the log and a note in the state store, which the report reads to say its figures are
incomplete. A later run tries again after a day; the carts wait, still open, since their orders
stay in Commerce.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared import telemetry
from shared.recovery.experiment import RECHECK_INTERVAL
from shared.recovery.records import Conversion, RecoveryStore, TrackedCart
from shared.retail_server.client import RetailServerClient, RetailServerError
from shared.retail_server.models import SalesOrder
from shared.settings import Settings
from shared.state.ledger import Ledger, LedgerStatus
from shared.state.store import DocumentStore

logger = logging.getLogger(__name__)

# Answers that say this Retail Server will not do the look-up for this app at all.
REFUSED_STATUSES = frozenset({400, 401, 403, 404, 405, 501})
# After a refusal, the look-up is tried again this much later.
RETRY_REFUSED_AFTER = timedelta(hours=24)
# A customer whose look-up failed for a passing reason is tried again this much later.
RETRY_FAILED_AFTER = timedelta(hours=1)
ORDERS_PAGE = 100
MAX_ORDER_PAGES = 5
CUSTOMER_CONCURRENCY = 8
# Steps that reached the customer (or may have): the last one before an order is reported.
_DELIVERED = frozenset({LedgerStatus.SENT, LedgerStatus.UNCERTAIN})


@dataclass(frozen=True)
class TrackingConfig:
    attribution: timedelta
    max_carts_per_run: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TrackingConfig:
        return cls(
            attribution=timedelta(days=settings.attribution_days),
            max_carts_per_run=settings.max_tracked_carts_per_run,
        )


@dataclass
class TrackingRun:
    """What one run did; ``off`` says tracking is off (``reason`` why)."""

    carts_checked: int = 0
    customers: int = 0
    conversions_recorded: int = 0
    settled: dict[str, int] = field(default_factory=dict)
    failed_customers: int = 0
    off: bool = False
    reason: str | None = None


class _RefusedError(Exception):
    def __init__(self, error: RetailServerError) -> None:
        self.error = error
        super().__init__(str(error))


class ConversionTracker:
    def __init__(self, retail: RetailServerClient, store: DocumentStore, config: TrackingConfig) -> None:
        self._retail = retail
        self._records = RecoveryStore(store)
        self._ledger = Ledger(store)
        self._config = config

    async def run(self, now: datetime) -> TrackingRun:
        result = TrackingRun()
        status = await self._records.status()
        if not status.enabled:
            waited = status.last_refused_at is None or now - status.last_refused_at >= RETRY_REFUSED_AFTER
            if not waited:
                result.off, result.reason = True, status.reason
                return result
        due = await self._records.due(now, self._config.max_carts_per_run)
        by_customer: dict[str, list[TrackedCart]] = {}
        for cart in due:
            by_customer.setdefault(cart.customer_id, []).append(cart)
        customers = list(by_customer.items())
        succeeded = False
        for start in range(0, len(customers), CUSTOMER_CONCURRENCY):
            wave = customers[start : start + CUSTOMER_CONCURRENCY]
            outcomes = await asyncio.gather(
                *(self._check(customer, carts, now, result) for customer, carts in wave),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, _RefusedError):
                    return await self._refused(outcome.error, now, result, was_enabled=status.enabled)
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, Exception):
                        raise outcome
                    result.failed_customers += 1
                    logger.warning("track_conversions: an order look-up failed (%s)", type(outcome).__name__)
                else:
                    succeeded = True
        if succeeded and not status.enabled:
            await self._records.turn_on(now)
            logger.warning("track_conversions: Retail Server answers the order look-up again; tracking is on")
        return result

    async def _refused(
        self, error: RetailServerError, now: datetime, result: TrackingRun, *, was_enabled: bool
    ) -> TrackingRun:
        reason = f"retail_server_{error.status}"
        await self._records.turn_off(reason, now)
        message = (
            "track_conversions: Retail Server refuses SalesOrders/SearchOrders to this app (%s); "
            "conversion tracking is off and the recovery report says its figures are incomplete. "
            "Allow the look-up for the app's relying party in Commerce "
            "(docs/reference/order-lookup.md); tracking tries again in 24 hours."
        )
        if was_enabled:
            logger.error(message, error)
        else:
            logger.warning(message, error)
        result.off, result.reason = True, reason
        return result

    async def _check(
        self, customer_id: str, carts: Sequence[TrackedCart], now: datetime, result: TrackingRun
    ) -> None:
        attribution = self._config.attribution
        since = min(cart.enrolled_at for cart in carts)
        until = min(now, max(cart.enrolled_at + attribution for cart in carts))
        try:
            orders = await self._orders(carts[0].oun, customer_id, since, until)
        except RetailServerError as exc:
            if exc.status in REFUSED_STATUSES:
                raise _RefusedError(exc) from None
            await self._postpone(carts, now)
            raise
        except Exception:
            await self._postpone(carts, now)
            raise
        result.customers += 1
        for cart in carts:
            result.conversions_recorded += await self._settle(cart, orders, now, result)
            result.carts_checked += 1

    async def _postpone(self, carts: Sequence[TrackedCart], now: datetime) -> None:
        for cart in carts:
            await self._records.save(cart.model_copy(update={"next_check_at": now + RETRY_FAILED_AFTER}))

    async def _orders(self, oun: str, customer_id: str, since: datetime, until: datetime) -> list[SalesOrder]:
        found: list[SalesOrder] = []
        for page in range(MAX_ORDER_PAGES):
            batch = await self._retail.search_orders(
                oun, customer_id, since, until, top=ORDERS_PAGE, skip=page * ORDERS_PAGE
            )
            found.extend(batch)
            if len(batch) < ORDERS_PAGE:
                break
        return found

    async def _settle(
        self, cart: TrackedCart, orders: Sequence[SalesOrder], now: datetime, result: TrackingRun
    ) -> int:
        window_end = cart.enrolled_at + self._config.attribution
        counted = [
            order
            for order in orders
            if cart.enrolled_at <= order.created_date_time <= window_end and order.total_amount > 0
        ]
        recorded = 0
        products = set(cart.product_ids)
        sent_steps = await self._sent_steps(cart) if counted and cart.group == "mailed" else []
        strict = cart.strict
        for order in counted:
            match = "strict" if order.product_ids & products else "any"
            strict = strict or match == "strict"
            conversion = Conversion(
                cart_id=cart.cart_id,
                cart_version=cart.cart_version,
                oun=cart.oun,
                customer_id=cart.customer_id,
                group=cart.group,
                enrolled_at=cart.enrolled_at,
                enrolled_key=cart.enrolled_key,
                order_id=order.sales_id or order.id,
                channel="store" if order.in_store else "online",
                channel_id=order.channel_id,
                store_id=order.store_id or None,
                total=order.total_amount,
                currency=order.currency_code or cart.currency,
                ordered_at=order.created_date_time,
                hours_to_order=round((order.created_date_time - cart.enrolled_at).total_seconds() / 3600, 3),
                last_step_sent=max(
                    (step for step, at in sent_steps if at <= order.created_date_time), default=0
                ),
                match=match,
            )
            if await self._records.record_conversion(conversion):
                recorded += 1
                observed = {
                    "oun": cart.oun,
                    "group": cart.group,
                    "channel": conversion.channel,
                    "match": match,
                    "currency": conversion.currency or "unknown",
                }
                telemetry.RECOVERY_CONVERSIONS.add(1, observed)
                telemetry.RECOVERY_REVENUE.add(float(conversion.total), observed)
        update: dict[str, object] = {"checked_at": now, "strict": strict, "conversions": len(counted)}
        if strict or now >= window_end:
            status = "converted" if counted else "not_converted"
            update.update(status=status, resolved_at=now)
            result.settled[status] = result.settled.get(status, 0) + 1
            telemetry.RECOVERY_SETTLED.add(
                1,
                {
                    "oun": cart.oun,
                    "group": cart.group,
                    "status": status,
                    "match": "strict" if strict else ("any" if counted else "none"),
                },
            )
        else:
            update["next_check_at"] = min(now + RECHECK_INTERVAL, window_end)
        await self._records.save(cart.model_copy(update=update))
        return recorded

    async def _sent_steps(self, cart: TrackedCart) -> list[tuple[int, datetime]]:
        entries = await self._ledger.entries_of_cart(cart.cart_id)
        return [
            (entry.step, entry.updated_at)
            for entry in entries
            if entry.cart_version == cart.cart_version and entry.status in _DELIVERED
        ]
