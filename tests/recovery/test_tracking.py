"""Conversion tracking through the registered timer: orders online and in store, each once, inside
the attribution window only; a Retail Server that refuses the look-up turns tracking off."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from sandbox import orders
from sandbox.server import Sandbox
from shared.runtime import Runtime
from tests.conftest import event_records
from tests.notify.conftest import NOW, RecordingProvider
from tests.recovery.conftest import Clock, bulk_carts, conversions, notify_all, report, track, tracked, window


@pytest.fixture
def notify_overrides() -> dict[str, Any]:
    return {"holdout_percent": 0}


async def test_conversions_are_found_in_store_and_online_once_and_within_the_window_only(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    recorder: RecordingProvider,
    sandbox: Sandbox,
    clock: Clock,
) -> None:
    late, early, buyer, quiet = bulk_carts(sandbox, 4)
    await notify_all(registered_functions, runtime, [late, early, buyer, quiet])
    assert len(recorder.sent) == 4
    data = sandbox.data
    product = buyer.lines[0].product_id
    other = next(p for p in sorted(data.products) if p not in {line.product_id for line in buyer.lines})
    # buyer: an online order of another product on day 1, then in store with the cart's product on day 3.
    data.add_order(customer_id=buyer.customer_id, at=NOW + timedelta(days=1), lines=[(other, 1)])
    # early: bought before the reminder; late: bought after the seven days.
    data.add_order(customer_id=early.customer_id, at=NOW - timedelta(minutes=5), lines=[(product, 1)])
    data.add_order(customer_id=late.customer_id, at=NOW + timedelta(days=7, hours=1), lines=[(product, 1)])

    await track(registered_functions, clock, NOW + timedelta(days=2))
    found = await conversions(runtime)
    assert [(c["cartId"], c["channel"], c["match"]) for c in found] == [(buyer.id, "online", "any")]
    assert found[0]["lastStepSent"] == 1 and found[0]["storeId"] == "128"
    assert 23.9 < found[0]["hoursToOrder"] < 24.1
    status = {t.cart_id: t.status for t in await tracked(runtime)}
    assert status[buyer.id] == "open"  # an "any" order does not settle it: a strict one may follow

    in_store = data.add_order(
        customer_id=buyer.customer_id, at=NOW + timedelta(days=3), lines=[(product, 2)], in_store="HOU-02"
    )
    await track(registered_functions, clock, NOW + timedelta(days=4))
    await track(registered_functions, clock, NOW + timedelta(days=8))
    await track(registered_functions, clock, NOW + timedelta(days=9))
    found = await conversions(runtime)
    assert sorted((c["cartId"], c["orderId"], c["channel"], c["match"]) for c in found) == sorted(
        [
            (buyer.id, found[0]["orderId"], "online", "any"),
            (buyer.id, in_store.sales_id, "store", "strict"),
        ]
    )
    store = next(c for c in found if c["channel"] == "store")
    assert store["storeId"] == "HOU-02" and store["channelId"] == 5637145002
    assert store["total"] == str(in_store.total_amount) and store["currency"] == "USD"
    status = {t.cart_id: t.status for t in await tracked(runtime)}
    assert status == {
        buyer.id: "converted",
        early.id: "not_converted",
        late.id: "not_converted",
        quiet.id: "not_converted",
    }

    code, body = await report(registered_functions, **window(2))
    assert code == 200 and body["complete"] is True
    mailed = body["groups"]["mailed"]
    assert mailed["carts"] == 4 and mailed["converted"] == {"any": 1, "strict": 1}
    assert body["lift"] == {"any": None, "strict": None}  # no holdout, nothing to compare with
    assert {(c["channel"], c["storeId"]) for c in body["byChannel"]} == {
        ("online", "128"),
        ("store", "HOU-02"),
    }
    assert body["byStep"][0]["step"] == 1 and body["byStep"][0]["conversions"] == 2


async def test_a_retail_server_that_refuses_the_order_look_up_turns_tracking_off(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    recorder: RecordingProvider,
    sandbox: Sandbox,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    carts = bulk_carts(sandbox, 3)
    await notify_all(registered_functions, runtime, carts)
    orders.refuse(sandbox, 401)
    sandbox.stats.reset()
    route = "POST /rs/Commerce/SalesOrders/SearchOrders"
    with caplog.at_level(logging.INFO, logger="shared.recovery"):
        await track(registered_functions, clock, NOW + timedelta(days=1))
        # The three customers were asked at once (each once more with a fresh token after the 401).
        assert sandbox.stats.requests[route] == 6
        await track(registered_functions, clock, NOW + timedelta(days=1, hours=1))
    assert sandbox.stats.requests[route] == 6  # off: the next run does not ask
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "conversion tracking is off" in errors[0]
    runs = event_records(caplog.records, "conversion_tracking")
    assert [(r["status"], r["off_reason"], r["carts_checked"]) for r in runs] == [
        ("off", "retail_server_401", 0),
        ("off", "retail_server_401", 0),
    ]
    assert all(t.status == "open" for t in await tracked(runtime))
    code, body = await report(registered_functions, **window(2))
    assert code == 200 and body["complete"] is False
    assert "retail_server_401" in body["incompleteReasons"][0]

    # A day later it tries again; Retail Server now answers, tracking is on, the report says when it was off.
    sandbox.faults.clear()
    await track(registered_functions, clock, NOW + timedelta(days=2, hours=2))
    assert all(t.checked_at is not None for t in await tracked(runtime))
    code, body = await report(registered_functions, **window(2))
    assert body["complete"] is False and "was off from" in body["incompleteReasons"][0]
