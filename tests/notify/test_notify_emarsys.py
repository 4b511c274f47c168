"""``notify_abandoned_cart`` end to end with ``EMAIL_PROVIDER=emarsys``: the function registered on
``function_app.app``, called with a real ``func.QueueMessage``, against the sandbox's Retail Server
and the Emarsys stand-in over HTTPS, with the SQLite ledger and the secrets read from environment
variables as in a local run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox.data import Cart, Customer
from sandbox.emarsys import EVENT_ID, UNCONNECTED_EVENT_ID, EmarsysStandIn
from sandbox.server import Sandbox
from shared.abandoned_carts import notify
from shared.abandoned_carts.payload import dedup_key
from shared.email.base import ProviderConfigurationError
from shared.email.emarsys import SKIP_CONTACT_MISSING, EmarsysProvider
from shared.email.factory import provider_for
from shared.runtime import Runtime
from shared.state.ledger import Ledger, LedgerEntry, LedgerStatus, entry_key
from shared.state.store import StoreError
from tests.conftest import find_personal_data
from tests.notify.conftest import (
    NOW,
    Clock,
    Queued,
    consenting_customer,
    emarsys_overrides,
    emarsys_sandbox,
    ledger_status,
    own_cart,
    put_on_ledger,
    run_notify,
)

# Every invocation in these tests runs at the clock's time, which some tests move.
pytestmark = pytest.mark.usefixtures("clock")


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    # Same name as the shared fixture, so the log privacy guard checks these tests too.
    async with emarsys_sandbox() as running:
        yield running


@pytest.fixture
def emarsys_options() -> dict[str, Any]:
    """Settings on top of the stand-in's defaults; tests parametrize this name to change them."""
    return {}


@pytest.fixture
def notify_overrides(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, emarsys_options: dict[str, Any]
) -> dict[str, Any]:
    return {**emarsys_overrides(sandbox, monkeypatch), **emarsys_options}


def trigger_path(event_id: int = EVENT_ID, version: str = "v3") -> str:
    return f"POST /emarsys/api/{version}/event/{event_id}/trigger"


def two_products(sandbox: Sandbox) -> list[int]:
    return list(sandbox.data.products)[:2]


async def abandoned(sandbox: Sandbox, runtime: Runtime, index: int = 0) -> tuple[Customer, Cart, Queued]:
    """A consenting customer's cart of two products, on the ledger and queued, as detection leaves it."""
    customer = consenting_customer(sandbox, index)
    first, second = two_products(sandbox)
    cart = own_cart(sandbox, customer, lines=[(first, 2), (second, 1)])
    return customer, cart, await put_on_ledger(runtime, cart)


async def entry_of(runtime: Runtime, cart: Cart) -> tuple[LedgerEntry, str]:
    found = await Ledger(runtime.store).get(cart.id, cart.version, 1)
    assert found is not None
    return found


# ----- 1, 7: a consenting customer's cart is sent (OAuth v3 and WSSE v2)


@pytest.mark.parametrize(
    ("emarsys_options", "api_version"),
    [({"emarsys_auth": "oauth"}, "v3"), ({"emarsys_auth": "wsse"}, "v2")],
    ids=["oauth", "wsse"],
)
async def test_consenting_customer_is_triggered_once_with_the_cart(
    sandbox: Sandbox,
    runtime: Runtime,
    stand_in: EmarsysStandIn,
    registered_functions: dict[str, Any],
    api_version: str,
) -> None:
    customer, cart, queued = await abandoned(sandbox, runtime)
    assert customer.email is not None
    assert customer.email.casefold() not in queued.body.casefold()  # the queue carries ids only

    poison = await run_notify(registered_functions, queued.body)

    assert poison.get() is None
    assert len(stand_in.triggers) == 1
    trigger = stand_in.triggers[0]
    assert trigger.event_id == EVENT_ID
    assert trigger.api_version == api_version
    assert trigger.key_id == "3"
    assert trigger.external_id == customer.email
    key = dedup_key(cart.id, cart.version, 1)
    assert trigger.trigger_id == key
    data = trigger.data
    assert data["firstName"] == customer.first_name
    assert data["lastName"] == customer.last_name
    assert data["cartId"] == cart.id
    assert data["customerId"] == customer.account_number
    assert data["step"] == 1
    assert data["cartUrl"].startswith("https://shop.example.com/cart?cartId=")
    assert data["currency"]
    first, second = two_products(sandbox)
    products = data["products"]
    assert isinstance(products, list)
    assert [(p["productId"], p["quantity"]) for p in products] == [(first, "2"), (second, "1")]
    for product, wanted in zip(products, (first, second), strict=True):
        assert product["name"] == sandbox.data.products[wanted].name
        assert product["unitPrice"]
        assert product["url"]
    # One token (OAuth) or none (WSSE), one trigger call, nothing else.
    assert sandbox.stats.requests[trigger_path(version=api_version)] == 1
    assert stand_in.token_requests == (1 if api_version == "v3" else 0)

    entry, _ = await entry_of(runtime, cart)
    assert entry.status is LedgerStatus.SENT
    assert entry.reason is None
    assert entry.attempts == 1
    assert entry.provider_ids["trigger_id"] == key
    assert entry.provider_ids["event_id"] == str(EVENT_ID)
    assert entry.provider_ids["correlation_id"]
    assert entry.provider_ids["request_id"]  # the stand-in's request-id header


# ----- 2: redelivery


async def test_redelivered_message_sends_nothing_more(
    sandbox: Sandbox, runtime: Runtime, stand_in: EmarsysStandIn, registered_functions: dict[str, Any]
) -> None:
    _, cart, queued = await abandoned(sandbox, runtime)
    await run_notify(registered_functions, queued.body)
    before = await runtime.store.read("ledger", cart.id, entry_key(cart.version, 1))
    assert before is not None and before.body["status"] == "sent"
    requests = sandbox.stats.requests[trigger_path()]

    for dequeue_count in (2, 3):
        poison = await run_notify(registered_functions, queued.body, dequeue_count=dequeue_count)
        assert poison.get() is None

    assert len(stand_in.triggers) == 1
    assert sandbox.stats.requests[trigger_path()] == requests  # Emarsys was not even asked again
    after = await runtime.store.read("ledger", cart.id, entry_key(cart.version, 1))
    assert after is not None
    assert (after.body, after.etag) == (before.body, before.etag)


# ----- 3: a crash between "Emarsys accepted" and "ledger recorded"


class WorkerDied(BaseException):
    """The worker process ends abruptly (host timeout, scale-in, OOM): no ``except Exception``
    handler runs, so not even the failure can be recorded."""


def break_ledger(
    monkeypatch: pytest.MonkeyPatch, error: Callable[[], BaseException], *, times: int = 1
) -> list[LedgerStatus]:
    """Make the first ``times`` transitions to SENT raise ``error()``; returns the targets tried."""
    original = Ledger.transition
    tried: list[LedgerStatus] = []
    left = [times]

    async def transition(self: Ledger, *args: Any, **kwargs: Any) -> LedgerEntry:
        tried.append(kwargs["to"])
        if kwargs["to"] is LedgerStatus.SENT and left[0] > 0:
            left[0] -= 1
            raise error()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "transition", transition)
    return tried


async def test_store_failure_after_acceptance_is_retried_and_emarsys_drops_the_repeat(
    sandbox: Sandbox,
    runtime: Runtime,
    stand_in: EmarsysStandIn,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SENT write fails once (a store hiccup); the failure is recorded and the host retries."""
    _, cart, queued = await abandoned(sandbox, runtime)
    tried = break_ledger(monkeypatch, lambda: StoreError("simulated: state store unavailable"))

    with pytest.raises(StoreError):
        await run_notify(registered_functions, queued.body)

    assert tried == [LedgerStatus.SENT, LedgerStatus.FAILED]
    assert len(stand_in.triggers) == 1  # Emarsys accepted it
    assert await ledger_status(runtime, cart) == ("failed", "StoreError")

    # The host redelivers the message; a failed entry is claimable again at once.
    poison = await run_notify(registered_functions, queued.body, dequeue_count=2)

    assert poison.get() is None
    assert sandbox.stats.requests[trigger_path()] == 2  # sent again, with the same trigger_id
    assert stand_in.duplicates_dropped == 1
    assert len(stand_in.triggers) == 1
    assert stand_in.triggers[0].trigger_id == dedup_key(cart.id, cart.version, 1)
    entry, _ = await entry_of(runtime, cart)
    assert (entry.status, entry.reason, entry.attempts) == (LedgerStatus.SENT, None, 2)
    assert entry.provider_ids["trigger_id"] == dedup_key(cart.id, cart.version, 1)


async def test_worker_death_after_acceptance_is_taken_over_after_the_lease_and_emarsys_dedups(
    sandbox: Sandbox,
    runtime: Runtime,
    stand_in: EmarsysStandIn,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    """The worker dies right after Emarsys accepted: the entry stays claimed; a redelivery inside
    the lease leaves it alone, one after the lease takes it over and resends with the same key."""
    _, cart, queued = await abandoned(sandbox, runtime)
    tried = break_ledger(monkeypatch, WorkerDied)

    with pytest.raises(WorkerDied):
        await run_notify(registered_functions, queued.body)

    assert tried == [LedgerStatus.SENT]
    assert len(stand_in.triggers) == 1
    assert await ledger_status(runtime, cart) == ("claimed", None)

    # The message becomes visible again (visibilityTimeout) while the claim is still live.
    clock.now = NOW + notify.CLAIM_LEASE - timedelta(seconds=1)
    await run_notify(registered_functions, queued.body, dequeue_count=2)
    assert sandbox.stats.requests[trigger_path()] == 1
    assert await ledger_status(runtime, cart) == ("claimed", None)

    # After the lease the claim belongs to a dead invocation and is taken over.
    clock.now = NOW + notify.CLAIM_LEASE + timedelta(seconds=1)
    poison = await run_notify(registered_functions, queued.body, dequeue_count=3)

    assert poison.get() is None
    assert sandbox.stats.requests[trigger_path()] == 2
    assert stand_in.duplicates_dropped == 1
    assert len(stand_in.triggers) == 1
    entry, _ = await entry_of(runtime, cart)
    assert (entry.status, entry.reason, entry.attempts) == (LedgerStatus.SENT, None, 2)
    assert entry.updated_at == clock.now


# ----- 4: 2008, no such contact


@pytest.mark.parametrize("emarsys_options", [{"emarsys_create_missing_contacts": False}])
async def test_unknown_contact_is_skipped_with_the_providers_reason(
    sandbox: Sandbox, runtime: Runtime, stand_in: EmarsysStandIn, registered_functions: dict[str, Any]
) -> None:
    customer, cart, queued = await abandoned(sandbox, runtime)
    assert customer.email is not None
    stand_in.remove_contact(customer.email)

    poison = await run_notify(registered_functions, queued.body)

    assert poison.get() is None
    assert sandbox.stats.requests[trigger_path()] == 1  # answered 2008
    assert stand_in.triggers == []
    assert stand_in.upserts == []
    assert stand_in.find_contact("3", customer.email) is None
    assert await ledger_status(runtime, cart) == ("skipped", SKIP_CONTACT_MISSING)


@pytest.mark.parametrize("emarsys_options", [{"emarsys_create_missing_contacts": True}])
async def test_unknown_contact_is_created_first_when_configured(
    sandbox: Sandbox, runtime: Runtime, stand_in: EmarsysStandIn, registered_functions: dict[str, Any]
) -> None:
    customer, cart, queued = await abandoned(sandbox, runtime)
    assert customer.email is not None
    stand_in.remove_contact(customer.email)

    poison = await run_notify(registered_functions, queued.body)

    assert poison.get() is None
    assert len(stand_in.upserts) == 1
    upsert = stand_in.upserts[0]
    assert upsert.create_if_not_exists
    assert (upsert.api_version, upsert.key_id) == ("v3", "3")
    assert upsert.contacts == [{"3": customer.email, "1": customer.first_name, "2": customer.last_name}]
    assert sandbox.stats.requests["PUT /emarsys/api/v3/contact"] == 1
    created = stand_in.find_contact("3", customer.email)
    assert created is not None and created["1"] == customer.first_name
    # The first trigger met 2008, the one after the upsert went through.
    assert sandbox.stats.requests[trigger_path()] == 2
    assert len(stand_in.triggers) == 1
    assert stand_in.triggers[0].external_id == customer.email
    assert stand_in.triggers[0].trigger_id == dedup_key(cart.id, cart.version, 1)
    assert await ledger_status(runtime, cart) == ("sent", None)


# ----- 5: 5005, the event starts nothing


@pytest.mark.parametrize("emarsys_options", [{"emarsys_event_id": UNCONNECTED_EVENT_ID}])
async def test_event_not_connected_raises_for_the_operator_and_records_failed(
    sandbox: Sandbox, runtime: Runtime, stand_in: EmarsysStandIn, registered_functions: dict[str, Any]
) -> None:
    customer, cart, queued = await abandoned(sandbox, runtime)

    with pytest.raises(ProviderConfigurationError) as caught:
        await run_notify(registered_functions, queued.body)

    text = str(caught.value)
    # What to configure, and where.
    assert "5005" in text
    assert str(UNCONNECTED_EVENT_ID) in text
    assert "Automation Center" in text
    assert "External event" in text
    assert "launch" in text
    # Nothing personal: not the address, the name or the customer's account.
    assert customer.email is not None and customer.email.casefold() not in text.casefold()
    assert customer.first_name not in text
    assert customer.account_number not in text
    assert find_personal_data([text], sandbox) == []
    assert stand_in.triggers == []
    assert sandbox.stats.requests[trigger_path(UNCONNECTED_EVENT_ID)] == 1  # not retried in-call
    assert await ledger_status(runtime, cart) == ("failed", "provider_misconfigured")

    # Each host retry ends the same way (then the poison queue); it is never recorded as sent.
    with pytest.raises(ProviderConfigurationError):
        await run_notify(registered_functions, queued.body, dequeue_count=2)
    assert stand_in.triggers == []
    assert await ledger_status(runtime, cart) == ("failed", "provider_misconfigured")


# ----- 6: 7003 / HTTP 429 until X-RateLimit-Reset


class WallClock:
    """Wall-clock seconds shared by the stand-in and the app's ``Retry-After``/``X-RateLimit-Reset``
    arithmetic, moved forward by the provider's (fake) sleep instead of by waiting."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.waits: list[float] = []

    def time(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.offset += seconds


async def test_rate_limit_waits_until_the_reset_then_sends_once(
    sandbox: Sandbox,
    runtime: Runtime,
    stand_in: EmarsysStandIn,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wall = WallClock()
    stand_in.clock = wall.time
    stand_in.rate_limit = 1  # one request per minute: the first cart uses the budget up
    monkeypatch.setattr("shared.http.time", SimpleNamespace(time=wall.time))
    provider = provider_for(runtime)
    assert isinstance(provider, EmarsysProvider)
    monkeypatch.setattr(provider, "_sleep", wall.sleep)
    first_customer, first_cart, first = await abandoned(sandbox, runtime, 0)
    customer, cart, second = await abandoned(sandbox, runtime, 1)

    await run_notify(registered_functions, first.body)
    assert wall.waits == []
    poison = await run_notify(registered_functions, second.body)

    assert poison.get() is None
    # One wait, as long as X-RateLimit-Reset asked (the window is a minute), then it went through.
    assert len(wall.waits) == 1
    assert 55 < wall.waits[0] <= 61
    assert sandbox.stats.requests[trigger_path()] == 3  # first cart, 429, the retry
    assert customer.email is not None
    assert len(stand_in.triggers_for(customer.email)) == 1
    assert stand_in.triggers_for(customer.email)[0].trigger_id == dedup_key(cart.id, cart.version, 1)
    assert len(stand_in.triggers) == 2
    assert await ledger_status(runtime, first_cart) == ("sent", None)
    assert await ledger_status(runtime, cart) == ("sent", None)
    assert first_customer.account_number != customer.account_number


# ----- concurrent invocations: one batch trigger


async def test_concurrent_invocations_leave_as_one_batch_trigger_and_redelivery_adds_nothing(
    sandbox: Sandbox, runtime: Runtime, stand_in: EmarsysStandIn, registered_functions: dict[str, Any]
) -> None:
    carts = [await abandoned(sandbox, runtime, index) for index in range(3)]
    missing = carts[2][0]
    assert missing.email is not None
    stand_in.remove_contact(missing.email)

    await asyncio.gather(*(run_notify(registered_functions, queued.body) for _, _, queued in carts))

    assert stand_in.batch_sizes == [3]  # one call for the three invocations
    assert sandbox.stats.requests[trigger_path()] == 1
    by_contact = {t.external_id: t for t in stand_in.triggers}
    for customer, cart, _ in carts[:2]:
        assert customer.email is not None
        assert by_contact[customer.email].trigger_id == dedup_key(cart.id, cart.version, 1)
        assert by_contact[customer.email].data["firstName"] == customer.first_name
        assert await ledger_status(runtime, cart) == ("sent", None)
    assert len(stand_in.triggers) == 2
    assert await ledger_status(runtime, carts[2][1]) == ("skipped", SKIP_CONTACT_MISSING)

    await asyncio.gather(
        *(run_notify(registered_functions, queued.body, dequeue_count=2) for _, _, queued in carts)
    )
    assert sandbox.stats.requests[trigger_path()] == 1
    assert len(stand_in.triggers) == 2
