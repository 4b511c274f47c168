"""``SalesOrders/SearchOrders`` through the client, against the sandbox's order route."""

from __future__ import annotations

from datetime import timedelta

from sandbox.server import Sandbox
from shared.runtime import Runtime
from tests.notify.conftest import NOW


async def test_orders_of_a_customer_inside_the_window(sandbox: Sandbox, runtime: Runtime) -> None:
    customer = next(iter(sandbox.data.customers))
    cart = sandbox.data.add_cart(customer_id=customer, modified=NOW - timedelta(hours=3))
    sandbox.data.checkout_cart(cart.id, NOW - timedelta(hours=1))
    retail = runtime.retail
    assert await retail.has_orders("128", customer, NOW - timedelta(hours=2), NOW)
    assert not await retail.has_orders("128", customer, NOW - timedelta(minutes=30), NOW)
    other = next(
        c
        for c in sandbox.data.customers
        if c != customer and not any(o.customer_id == c for o in sandbox.data.orders)
    )
    assert not await retail.has_orders("128", other, NOW - timedelta(days=30), NOW)
