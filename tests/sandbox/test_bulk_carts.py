"""Bulk carts (``python -m sandbox --carts OUN=COUNT``, the benchmarks' volumes): made on demand,
merged with the channel's other carts in Retail Server's (ModifiedDateTime, Id) order."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from sandbox.data import BULK_SECOND_CART, Cart, SandboxData, merged_page

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def page(
    data: SandboxData, regular: list[Cart], lo: int | None, hi: int | None, skip: int, top: int
) -> list[str]:
    bulk = data.bulk["128"]
    items = merged_page(
        regular, bulk.in_range(lo, hi), lambda i: (bulk.ticks_of(i), bulk.cart_id(i)), skip, top
    )
    return [item.id if isinstance(item, Cart) else bulk.cart_id(item) for item in items]


def test_pages_of_the_merged_order_match_sorting_everything() -> None:
    data = SandboxData(seed=7, now=NOW)
    bulk = data.add_bulk_carts("128", 2_000)
    channel_id = data.channels["128"].channel_id
    regular = sorted(
        (c for c in data.carts.values() if c.channel_id == channel_id), key=lambda c: (c.modified_ticks, c.id)
    )
    everything = sorted(
        [*regular, *(data.bulk_cart("128", i) for i in range(bulk.count))],
        key=lambda c: (c.modified_ticks, c.id),
    )
    rng = random.Random(1)
    lo, hi = everything[300].modified_ticks, everything[1_700].modified_ticks
    window = [c for c in everything if lo <= c.modified_ticks <= hi]
    inside = [c for c in regular if lo <= c.modified_ticks <= hi]
    for _ in range(100):
        skip, top = rng.randrange(0, len(everything) + 5), rng.randrange(1, 250)
        assert page(data, regular, None, None, skip, top) == [c.id for c in everything[skip : skip + top]]
        skip = rng.randrange(0, len(window) + 5)
        assert page(data, inside, lo, hi, skip, top) == [c.id for c in window[skip : skip + top]]


def test_a_bulk_cart_is_the_same_whenever_it_is_made_and_its_customer_exists() -> None:
    data = SandboxData(seed=7, now=NOW)
    data.add_bulk_carts("128", 100)
    first, again = data.bulk_cart("128", 41), data.bulk_cart("128", 41)
    assert first.wire() == again.wire()
    assert first.customer_id in data.customers
    assert data.customers[first.customer_id].email
    second = data.bulk_cart("128", BULK_SECOND_CART - 1)
    assert second.customer_id == data.bulk_cart("128", BULK_SECOND_CART - 2).customer_id
    assert data.bulk_find(first.id) == first
    assert data.customers.get("B1289999999") is None


def test_bulk_carts_need_a_known_channel_and_a_count() -> None:
    data = SandboxData(seed=7, now=NOW)
    with pytest.raises(ValueError, match="no channel"):
        data.add_bulk_carts("999", 10)
    with pytest.raises(ValueError, match="at least 1"):
        data.add_bulk_carts("128", 0)
