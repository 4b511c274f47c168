"""What one sent message costs: state-store round trips and upstream requests.

Counted, not timed: a counting store around the real one, and the sandbox's request counts, through
the queue function registered on ``function_app.app``. Operations in flight together count as one
round trip (their latencies overlap); one started when none is in flight starts a new one.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sandbox.server import Sandbox
from shared.abandoned_carts.blueprint import notify_service
from shared.runtime import Runtime
from shared.state.counting import CountingStore
from shared.state.ledger import Ledger, LedgerStatus
from tests.notify.conftest import (
    NOW,
    RecordingProvider,
    consenting_customer,
    own_cart,
    put_on_ledger,
    run_notify,
)

HOST = json.loads((Path(__file__).parents[2] / "host.json").read_text())["extensions"]["queues"]


@pytest.fixture
def notify_overrides() -> dict[str, Any]:
    return {"reminder_steps": "60,1440"}


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", lambda: NOW)


@pytest.fixture
def counting(runtime: Runtime, recorder: RecordingProvider) -> CountingStore:
    store = CountingStore(runtime.store)
    runtime.store = store
    return store


async def test_a_sent_first_step_costs_five_store_round_trips(
    sandbox: Sandbox,
    runtime: Runtime,
    counting: CountingStore,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
) -> None:
    """Read the entry; claim it with the latest-cart pointer and cap document read beside; read the
    suppression entry; take the cap window and mark ``sending`` together; record ``sent``, arm
    step 2 and enrol the cart in the recovery report's mailed group together. (The recording provider does not de-duplicate, so the ``sending`` mark is in.)"""
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)
    counting.reset()

    await run_notify(registered_functions, queued.body)

    assert notify_service(runtime).outcomes["sent"] == 1
    assert len(recorder.sent) == 1
    assert counting.round_trips == 5
    # Reads: entry, latest-cart pointer, cap, suppression; writes: claim, sending, sent; creates:
    # the cap window, step 2, and the cart's enrolment for the recovery report (beside ``sent``).
    assert counting.calls == Counter({"read": 4, "replace": 3, "create": 3})
    following = await Ledger(runtime.store).get(cart.id, cart.version, 2)
    assert following is not None and following[0].status is LedgerStatus.PENDING


async def test_a_sent_reminder_step_costs_five_store_round_trips_too(
    sandbox: Sandbox,
    runtime: Runtime,
    counting: CountingStore,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
) -> None:
    """Step 2 reads its previous step beside its own entry, and finds the cap window its own."""
    cart = own_cart(sandbox, consenting_customer(sandbox))
    first = await put_on_ledger(runtime, cart)
    await run_notify(registered_functions, first.body)
    # Step 2 was armed by step 1.
    message = first.message.model_copy(update={"step": 2})
    counting.reset()

    await run_notify(registered_functions, message.encode())

    assert notify_service(runtime).outcomes["sent"] == 2
    assert counting.round_trips == 5
    # No cap write (the window is this cart's), nothing to arm after the last step.
    assert counting.calls == Counter({"read": 5, "replace": 3})


async def test_a_consent_refusal_makes_no_product_or_order_look_up(
    sandbox: Sandbox,
    runtime: Runtime,
    counting: CountingStore,
    registered_functions: dict[str, Any],
) -> None:
    from tests.notify.conftest import customer_where

    cart = own_cart(sandbox, customer_where(sandbox, opted_in=True, opt_out_personalization=True))
    queued = await put_on_ledger(runtime, cart)
    sandbox.stats.reset()

    await run_notify(registered_functions, queued.body)

    assert notify_service(runtime).outcomes["skipped:opted_out_personalization"] == 1
    routes = {route.partition("(")[0] for route in sandbox.stats.requests}
    assert not any("Products" in route or "SearchOrders" in route for route in routes), routes


async def test_a_batch_costs_at_most_two_and_a_half_upstream_requests_per_cart(
    sandbox: Sandbox,
    runtime: Runtime,
    counting: CountingStore,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
) -> None:
    """Sixteen carts of sixteen customers, run as the host schedules them from host.json (a batch
    of ``batchSize``, the next when ``newBatchThreshold`` are left): the cart re-read and the order
    search are one request each; customers, products, media and the channel are shared."""
    carts = [own_cart(sandbox, consenting_customer(sandbox, index)) for index in range(16)]
    bodies = [(await put_on_ledger(runtime, cart)).body for cart in carts]
    # The app token is fetched once per process, not per cart: take it before counting.
    await runtime.retail.get_channel_configuration("128")
    sandbox.stats.reset()
    counting.reset()

    pending = list(bodies)
    running: set[asyncio.Task[Any]] = set()
    while pending or running:
        if pending and len(running) <= HOST["newBatchThreshold"]:
            batch, pending = pending[: HOST["batchSize"]], pending[HOST["batchSize"] :]
            running |= {asyncio.create_task(run_notify(registered_functions, body)) for body in batch}
        done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    assert notify_service(runtime).outcomes["sent"] == len(carts)
    requests = sum(sandbox.stats.requests.values())
    assert requests / len(carts) <= 2.5, dict(sandbox.stats.requests)
    assert counting.round_trips <= 5 * len(carts)
