"""The recovery report: mailed versus held-out carts, what they bought afterwards, and what the
difference says the reminders earned.

:func:`recovery_figures` is the one place the figures come from: the HTTP report serialises its
answer, and anything else that wants them (metrics, a workbook, the demo's table) calls it too.

Conversion rates are per cart, over every cart of the group enrolled in the range, still-open ones
included (their rate can still rise, equally in both groups; ``openCarts`` says how many). The lift
is the mailed rate minus the held-out rate, with a 95 % Wald interval for a difference of two
independent proportions; the relative lift's interval comes from the log of the rate ratio. Revenue
is summed per currency, each order once per group. The incremental revenue is the absolute lift
times the mailed carts of that currency times the revenue per converted mailed cart.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.recovery.records import (
    CART_KIND,
    CONVERSION_KIND,
    Conversion,
    RecoveryStore,
    TrackedCart,
    TrackingStatus,
)
from shared.state.store import DocumentStore

# The two-sided 95 % quantile of the standard normal distribution.
Z_95 = 1.959963984540054
# Records one report reads at most; a larger range is refused (narrow from/to).
MAX_REPORT_RECORDS = 200_000
_CENT = Decimal("0.01")
Basis = Literal["any", "strict"]


class ReportTooLargeError(Exception):
    """The range holds more tracked carts than one report reads."""


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=_camel, populate_by_name=True, frozen=True)


class Interval(_Out):
    low: float
    high: float


class Lift(_Out):
    absolute: float
    absolute_ci95: Interval
    relative: float | None
    relative_ci95: Interval | None


class GroupFigures(_Out):
    carts: int
    open_carts: int
    converted: dict[str, int]
    conversion_rate: dict[str, float | None]
    median_hours_to_convert: float | None


class CurrencyRevenue(_Out):
    currency: str
    mailed_carts: int
    holdout_carts: int
    mailed_revenue: str
    mailed_revenue_strict: str
    holdout_revenue: str
    incremental_revenue: str | None
    incremental_revenue_ci95: tuple[str, str] | None


class Amount(_Out):
    currency: str
    amount: str


class StepFigures(_Out):
    step: int
    conversions: int
    revenue: list[Amount]


class ChannelFigures(_Out):
    channel: str
    channel_id: int | None
    store_id: str | None
    mailed_conversions: int
    holdout_conversions: int
    revenue: list[Amount]


class RecoveryReport(_Out):
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    oun: str | None
    attribution_days: int
    holdout_percent: int
    complete: bool
    incomplete_reasons: list[str]
    groups: dict[str, GroupFigures]
    lift: dict[str, Lift | None]
    revenue: list[CurrencyRevenue]
    by_step: list[StepFigures]
    by_channel: list[ChannelFigures]

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def _money(value: Decimal) -> str:
    return str(value.quantize(_CENT, rounding=ROUND_HALF_UP))


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def two_proportion_lift(x1: int, n1: int, x0: int, n0: int) -> Lift | None:
    """Mailed (x1 of n1) against held out (x0 of n0): absolute and relative lift, 95 % intervals."""
    if n1 == 0 or n0 == 0:
        return None
    p1, p0 = x1 / n1, x0 / n0
    diff = p1 - p0
    se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    absolute = Interval(low=round(diff - Z_95 * se, 6), high=round(diff + Z_95 * se, 6))
    relative: float | None = None
    relative_ci: Interval | None = None
    if p0 > 0:
        relative = round(p1 / p0 - 1, 6)
        if p1 > 0:
            log_se = math.sqrt((1 - p1) / (n1 * p1) + (1 - p0) / (n0 * p0))
            ratio = math.log(p1 / p0)
            relative_ci = Interval(
                low=round(math.exp(ratio - Z_95 * log_se) - 1, 6),
                high=round(math.exp(ratio + Z_95 * log_se) - 1, 6),
            )
    return Lift(absolute=round(diff, 6), absolute_ci95=absolute, relative=relative, relative_ci95=relative_ci)


@dataclass
class _Group:
    carts: int = 0
    open_carts: int = 0
    carts_by_currency: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    converted: dict[str, set[str]] = field(default_factory=lambda: {"any": set(), "strict": set()})
    converted_by_currency: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    first_hours: dict[str, float] = field(default_factory=dict)
    orders: dict[Basis, dict[str, Decimal]] = field(default_factory=lambda: {"any": {}, "strict": {}})
    order_currency: dict[str, str] = field(default_factory=dict)

    def revenue(self, basis: Basis) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for order_id, total in self.orders[basis].items():
            totals[self.order_currency[order_id]] += total
        return totals


class _Aggregate:
    def __init__(self) -> None:
        self.groups = {"mailed": _Group(), "holdout": _Group()}
        self.steps: dict[int, tuple[set[str], dict[str, Decimal]]] = {}
        self.channels: dict[tuple[str, int | None, str | None], dict[str, Any]] = {}

    def add_cart(self, cart: TrackedCart) -> None:
        group = self.groups[cart.group]
        group.carts += 1
        group.open_carts += cart.status == "open"
        group.carts_by_currency[cart.currency or "unknown"] += 1

    def add_conversion(self, conversion: Conversion) -> None:
        group = self.groups[conversion.group]
        ref = f"{conversion.cart_id}|v{conversion.cart_version}"
        currency = conversion.currency or "unknown"
        group.converted["any"].add(ref)
        if conversion.match == "strict":
            group.converted["strict"].add(ref)
        group.converted_by_currency[currency].add(ref)
        hours = group.first_hours.get(ref)
        if hours is None or conversion.hours_to_order < hours:
            group.first_hours[ref] = conversion.hours_to_order
        group.order_currency[conversion.order_id] = currency
        group.orders["any"][conversion.order_id] = conversion.total
        if conversion.match == "strict":
            group.orders["strict"][conversion.order_id] = conversion.total
        if conversion.group == "mailed":
            orders, revenue = self.steps.setdefault(conversion.last_step_sent, (set(), defaultdict(Decimal)))
            if conversion.order_id not in orders:
                orders.add(conversion.order_id)
                revenue[currency] += conversion.total
        key = (conversion.channel, conversion.channel_id, conversion.store_id)
        channel = self.channels.setdefault(
            key, {"mailed": set(), "holdout": set(), "orders": set(), "revenue": defaultdict(Decimal)}
        )
        channel[conversion.group].add(ref)
        if conversion.order_id not in channel["orders"]:
            channel["orders"].add(conversion.order_id)
            channel["revenue"][currency] += conversion.total


def _amounts(totals: dict[str, Decimal]) -> list[Amount]:
    return [Amount(currency=c, amount=_money(v)) for c, v in sorted(totals.items())]


def _group_figures(group: _Group) -> GroupFigures:
    hours = list(group.first_hours.values())
    return GroupFigures(
        carts=group.carts,
        open_carts=group.open_carts,
        converted={basis: len(refs) for basis, refs in group.converted.items()},
        conversion_rate={basis: _rate(len(refs), group.carts) for basis, refs in group.converted.items()},
        median_hours_to_convert=round(statistics.median(hours), 2) if hours else None,
    )


def _incomplete(status: TrackingStatus, start: datetime, end: datetime, attribution: timedelta) -> list[str]:
    reasons: list[str] = []
    if not status.enabled:
        reasons.append(
            f"conversion tracking is off: Retail Server refused the order look-up ({status.reason}); "
            "orders since then are not counted"
        )
    reach = end + attribution
    for period in status.off_periods:
        if period.end is None and not status.enabled:
            continue
        if period.start < reach and (period.end is None or period.end > start):
            until = period.end.isoformat() if period.end else "now"
            reasons.append(
                f"conversion tracking was off from {period.start.isoformat()} to {until} "
                f"({period.reason}); carts of that time were checked late or not at all"
            )
    return reasons


def _revenue(aggregate: _Aggregate, lift: Lift | None) -> list[CurrencyRevenue]:
    mailed, holdout = aggregate.groups["mailed"], aggregate.groups["holdout"]
    mailed_any, mailed_strict, holdout_any = (
        mailed.revenue("any"),
        mailed.revenue("strict"),
        holdout.revenue("any"),
    )
    currencies = sorted(
        set(mailed.carts_by_currency) | set(holdout.carts_by_currency) | set(mailed_any) | set(holdout_any)
    )
    rows: list[CurrencyRevenue] = []
    for currency in currencies:
        incremental: str | None = None
        interval: tuple[str, str] | None = None
        converted = len(mailed.converted_by_currency.get(currency, ()))
        if lift is not None and converted:
            per_cart = mailed_any.get(currency, Decimal(0)) / converted
            carts = Decimal(mailed.carts_by_currency.get(currency, 0))

            def scale(value: float, per_cart: Decimal = per_cart, carts: Decimal = carts) -> str:
                return _money(Decimal(str(value)) * carts * per_cart)

            incremental = scale(lift.absolute)
            interval = (scale(lift.absolute_ci95.low), scale(lift.absolute_ci95.high))
        rows.append(
            CurrencyRevenue(
                currency=currency,
                mailed_carts=mailed.carts_by_currency.get(currency, 0),
                holdout_carts=holdout.carts_by_currency.get(currency, 0),
                mailed_revenue=_money(mailed_any.get(currency, Decimal(0))),
                mailed_revenue_strict=_money(mailed_strict.get(currency, Decimal(0))),
                holdout_revenue=_money(holdout_any.get(currency, Decimal(0))),
                incremental_revenue=incremental,
                incremental_revenue_ci95=interval,
            )
        )
    return rows


async def recovery_figures(
    store: DocumentStore,
    *,
    start: datetime,
    end: datetime,
    oun: str | None,
    attribution: timedelta,
    holdout_percent: int,
) -> RecoveryReport:
    """Every figure of the report for carts enrolled in [start, end), one channel or all."""
    records = RecoveryStore(store)
    aggregate = _Aggregate()
    read = 0
    async for body in records.scan(CART_KIND, start=start, end=end, oun=oun):
        read += 1
        if read > MAX_REPORT_RECORDS:
            raise ReportTooLargeError(f"more than {MAX_REPORT_RECORDS} tracked carts in the range")
        aggregate.add_cart(TrackedCart.model_validate(body))
    async for body in records.scan(CONVERSION_KIND, start=start, end=end, oun=oun):
        read += 1
        if read > MAX_REPORT_RECORDS:
            raise ReportTooLargeError(f"more than {MAX_REPORT_RECORDS} tracked carts in the range")
        aggregate.add_conversion(Conversion.model_validate(body))
    status = await records.status()
    mailed, holdout = aggregate.groups["mailed"], aggregate.groups["holdout"]
    lift = {
        basis: two_proportion_lift(
            len(mailed.converted[basis]), mailed.carts, len(holdout.converted[basis]), holdout.carts
        )
        for basis in ("any", "strict")
    }
    reasons = _incomplete(status, start, end, attribution)
    return RecoveryReport(
        start=start,
        end=end,
        oun=oun,
        attribution_days=attribution.days,
        holdout_percent=holdout_percent,
        complete=not reasons,
        incomplete_reasons=reasons,
        groups={name: _group_figures(group) for name, group in aggregate.groups.items()},
        lift=lift,
        revenue=_revenue(aggregate, lift["any"]),
        by_step=[
            StepFigures(step=step, conversions=len(orders), revenue=_amounts(revenue))
            for step, (orders, revenue) in sorted(aggregate.steps.items())
        ],
        by_channel=[
            ChannelFigures(
                channel=kind,
                channel_id=channel_id,
                store_id=store_id,
                mailed_conversions=len(values["mailed"]),
                holdout_conversions=len(values["holdout"]),
                revenue=_amounts(values["revenue"]),
            )
            for (kind, channel_id, store_id), values in sorted(
                aggregate.channels.items(), key=lambda item: (item[0][0], item[0][1] or 0, item[0][2] or "")
            )
        ],
    )
