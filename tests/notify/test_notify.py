"""``notify_abandoned_cart`` through the function registered on ``function_app.app``, against the
sandbox's Retail Server over HTTPS and the SQLite ledger, with a recording email provider."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from sandbox.data import Cart
from sandbox.server import Sandbox
from sandbox.telemetry import LocalTelemetry
from shared.abandoned_carts.payload import dedup_key
from shared.email.base import ProviderConfigurationError
from shared.privacy.suppression import SuppressionList
from shared.queues import max_dequeue_count
from shared.retail_server.client import RetailServerError
from shared.runtime import Runtime
from shared.settings import Settings
from shared.state.ledger import CLAIM_LEASE, Ledger, LedgerStatus
from shared.store_commerce import parse_deep_link
from tests.conftest import OutStub, event_records
from tests.notify.conftest import (
    IMAGES,
    NOW,
    SITE,
    RecordingProvider,
    consenting_customer,
    customer_where,
    ids_of,
    ledger_status,
    own_cart,
    put_on_ledger,
    run_detection,
    run_notify,
)

# Every invocation runs at NOW.
pytestmark = pytest.mark.usefixtures("clock")


def two_products(sandbox: Sandbox) -> list[int]:
    return list(sandbox.data.products)[:2]


# ----- registration


def test_queue_function_metadata(registered_functions: dict[str, Any]) -> None:
    spec = json.loads(registered_functions["notify_abandoned_cart"].get_function_json())
    bindings = {b["direction"] + ":" + b["type"]: b for b in spec["bindings"]}
    trigger = bindings["IN:queueTrigger"]
    assert trigger["queueName"] == "%DETECTION_QUEUE_NAME%"
    assert trigger["connection"] == "AzureWebJobsStorage"
    poison = bindings["OUT:queue"]
    assert poison["queueName"] == "%DETECTION_QUEUE_NAME%-poison"
    assert poison["connection"] == "AzureWebJobsStorage"


# ----- the payload


async def test_every_payload_field_of_a_known_cart(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    customer = consenting_customer(sandbox)
    first, second = two_products(sandbox)
    cart = own_cart(sandbox, customer, lines=[(first, 2), (second, 1)])
    queued = await put_on_ledger(runtime, cart)

    poison = await run_notify(registered_functions, queued.body)

    assert poison.get() is None
    assert len(recorder.sent) == 1
    message = recorder.sent[0]
    assert message.dedup_key == dedup_key(cart.id, cart.version, 1)
    assert message.recipient.email == customer.email
    assert message.recipient.customer_id == customer.account_number
    data = message.data
    channel = sandbox.data.channels["128"]
    assert data["cartId"] == cart.id and data["cartVersion"] == cart.version and data["step"] == 1
    assert data["firstName"] == customer.first_name and data["lastName"] == customer.last_name
    assert data["email"] == customer.email
    assert data["language"] == customer.language
    assert data["currency"] == channel.currency
    assert data["cartUrl"] == f"https://shop.example.com/cart?cartId={cart.id}&channel={channel.channel_id}"
    assert data["unsubscribeUrl"] == f"https://shop.example.com/unsubscribe?c={customer.account_number}"
    assert [p["productId"] for p in data["products"]] == [first, second]
    total = Decimal(0)
    for line, (record_id, quantity) in zip(data["products"], [(first, 2), (second, 1)], strict=True):
        product = sandbox.data.products[record_id]
        price = channel.price_of(product)
        assert line["name"] == product.name
        assert line["itemId"] == product.item_id
        assert Decimal(line["quantity"]) == quantity
        assert Decimal(line["unitPrice"]) == price
        assert Decimal(line["lineAmount"]) == price * quantity
        total += price * quantity
        slug = "-".join("".join(c if c.isalnum() else " " for c in product.name.lower()).split())
        assert line["url"] == f"{SITE}/{slug}/{record_id}.p"
        image = line["image"]
        assert image["altText"]
        assert isinstance(image["isDefault"], bool)
        sizes = [(v["width"], v["height"]) for v in image["viewports"]]
        assert sizes == [(80, 80), (183, 183), (315, 315)]
        assert [v["useForDefaultImageTag"] for v in image["viewports"]] == [False, False, True]
        for viewport in image["viewports"]:
            url = urlsplit(viewport["url"])
            assert viewport["url"].startswith(IMAGES)
            query = parse_qs(url.query)
            assert query["w"] == [str(viewport["width"])] and query["h"] == [str(viewport["height"])]
            assert query["q"] == ["80"] and query["m"] == ["6"] and query["f"] == ["jpg"]
    assert data["subtotal"] == f"{total:.2f}"
    assert [p["quantity"] for p in data["products"]] == ["2", "1"]
    assert all(len(p["unitPrice"].split(".")[1]) == 2 for p in data["products"])
    assert Decimal(data["total"]) >= total
    link = parse_deep_link(data["storeCommerceLink"])
    assert link.action_name == "D365.CreateTransaction"
    assert link.params["customerId"] == customer.account_number
    assert {item["productId"] for item in link.params["items"]} == {first, second}
    assert data["storeCommerceLinkOmittedProducts"] == []

    status, reason = await ledger_status(runtime, cart)
    assert (status, reason) == ("sent", None)
    found = await Ledger(runtime.store).get(cart.id, cart.version, 1)
    assert found is not None and found[0].provider_ids == {"recording": "r1"}


async def test_missing_product_line_is_left_out(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    customer = consenting_customer(sandbox)
    first, second = two_products(sandbox)
    cart = own_cart(sandbox, customer, lines=[(first, 1), (second, 1)])
    queued = await put_on_ledger(runtime, cart)
    del sandbox.data.products[second]  # discontinued since the cart was filled

    await run_notify(registered_functions, queued.body)

    assert [p["productId"] for p in recorder.sent[0].data["products"]] == [first]


async def test_cart_without_any_known_product_is_skipped(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    customer = consenting_customer(sandbox)
    first, _ = two_products(sandbox)
    cart = own_cart(sandbox, customer, lines=[(first, 1)])
    queued = await put_on_ledger(runtime, cart)
    del sandbox.data.products[first]

    await run_notify(registered_functions, queued.body)

    assert recorder.sent == []
    assert await ledger_status(runtime, cart) == ("skipped", "no_products_found")


# ----- no email after purchase (invariant 2)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("touch", "cart_changed"),
        ("checkout", "cart_gone"),
        ("void", "voided"),
        ("order", "ordered_since"),
    ],
)
async def test_skip_when_the_cart_moved_on(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    change: str,
    reason: str,
) -> None:
    customer = consenting_customer(sandbox)
    cart = own_cart(sandbox, customer)
    queued = await put_on_ledger(runtime, cart)
    if change == "touch":
        sandbox.data.touch_cart(cart.id, NOW - timedelta(minutes=1))
    elif change == "checkout":
        sandbox.data.checkout_cart(cart.id, NOW - timedelta(minutes=1))
    elif change == "void":
        sandbox.data.void_cart(cart.id, NOW - timedelta(minutes=1))
    else:
        # Bought in store from another cart: the abandoned one is still there, unchanged.
        other = sandbox.data.add_cart(customer_id=customer.account_number, modified=NOW - timedelta(hours=3))
        sandbox.data.checkout_cart(other.id, NOW - timedelta(minutes=5))

    await run_notify(registered_functions, queued.body)

    assert recorder.sent == []
    entry = await Ledger(runtime.store).get(queued.message.cart_id, queued.message.cart_version, 1)
    assert entry is not None and (entry[0].status, entry[0].reason) == (LedgerStatus.SKIPPED, reason)


async def test_order_check_can_be_turned_off(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customer = consenting_customer(sandbox)
    cart = own_cart(sandbox, customer)
    queued = await put_on_ledger(runtime, cart)
    other = sandbox.data.add_cart(customer_id=customer.account_number, modified=NOW - timedelta(hours=3))
    sandbox.data.checkout_cart(other.id, NOW - timedelta(minutes=5))
    # ORDER_CHECK=false for a Retail Server whose role filter refuses SearchOrders to app tokens.
    runtime.settings = runtime.settings.model_copy(update={"order_check": False})
    sandbox.stats.reset()

    await run_notify(registered_functions, queued.body)

    assert len(recorder.sent) == 1
    assert not any("SearchOrders" in route for route in sandbox.stats.requests)


async def test_superseded_by_a_newer_cart_of_the_customer(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    customer = consenting_customer(sandbox)
    older = own_cart(sandbox, customer, age=timedelta(hours=5))
    queued = await put_on_ledger(runtime, older)
    newer = sandbox.data.add_cart(customer_id=customer.account_number, modified=NOW - timedelta(hours=2))
    await Ledger(runtime.store).register_latest_cart(
        "128", customer.account_number, newer.id, newer.version, newer.modified_date_time, now=NOW
    )

    await run_notify(registered_functions, queued.body)

    assert recorder.sent == []
    # The newer cart's detection marked the older pending entry superseded before it was claimed.
    assert (await ledger_status(runtime, older))[0] == "superseded"


# ----- consent (invariant 3)


@pytest.mark.parametrize(
    ("policy", "flags", "reason"),
    [
        ("opted_in", {"opted_in": False}, "no_marketing_opt_in"),
        ("not_opted_out", {"opt_out_personalization": True}, "opted_out_personalization"),
        ("not_opted_out", {"opt_out_personalization": False, "opt_out_tracking": True}, "opted_out_tracking"),
    ],
)
async def test_no_email_without_consent(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    policy: str,
    flags: dict[str, bool],
    reason: str,
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"consent_policy": policy})
    customer = customer_where(sandbox, **flags)
    cart = own_cart(sandbox, customer)
    queued = await put_on_ledger(runtime, cart)

    await run_notify(registered_functions, queued.body)

    assert recorder.sent == []
    assert await ledger_status(runtime, cart) == ("skipped", reason)


async def test_opted_in_customer_passes_the_strict_policy(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"consent_policy": "opted_in"})
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)

    await run_notify(registered_functions, queued.body)

    assert len(recorder.sent) == 1


async def test_suppression_list_wins_over_every_policy(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"consent_policy": "off"})
    customer = consenting_customer(sandbox)
    assert customer.email
    await SuppressionList(runtime.store).add(customer.email.upper(), reason="unsubscribed", now=NOW)
    cart = own_cart(sandbox, customer)
    queued = await put_on_ledger(runtime, cart)

    await run_notify(registered_functions, queued.body)

    assert recorder.sent == []
    assert await ledger_status(runtime, cart) == ("skipped", "suppressed")


async def test_frequency_cap_one_email_per_customer_across_channels(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    customer = consenting_customer(sandbox)
    online = own_cart(sandbox, customer, oun="128")
    other_channel = sandbox.data.add_cart(
        oun="067", customer_id=customer.account_number, modified=NOW - timedelta(minutes=90)
    )
    first = await put_on_ledger(runtime, online, oun="128")
    second = await put_on_ledger(runtime, other_channel, oun="067")

    await run_notify(registered_functions, first.body)
    sandbox.stats.reset()
    await run_notify(registered_functions, second.body)

    assert len(recorder.sent) == 1
    assert await ledger_status(runtime, other_channel) == ("skipped", "frequency_cap")
    # Decided before the order search and the product look-ups, which would be wasted.
    assert not [r for r in sandbox.stats.requests if "SearchOrders" in r or "Products" in r]


async def test_frequency_cap_zero_turns_it_off(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"frequency_cap_hours": 0})
    runtime.extras.pop("notify_service", None)
    customer = consenting_customer(sandbox)
    online = own_cart(sandbox, customer, oun="128")
    other_channel = sandbox.data.add_cart(
        oun="067", customer_id=customer.account_number, modified=NOW - timedelta(minutes=90)
    )
    for queued in (await put_on_ledger(runtime, online), await put_on_ledger(runtime, other_channel, "067")):
        await run_notify(registered_functions, queued.body)

    assert len(recorder.sent) == 2


# ----- nothing twice (invariant 1)


async def test_redelivered_message_sends_nothing_more(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)

    await run_notify(registered_functions, queued.body)
    await run_notify(registered_functions, queued.body, dequeue_count=2)
    await asyncio.gather(*(run_notify(registered_functions, queued.body) for _ in range(5)))

    assert len(recorder.sent) == 1
    assert await ledger_status(runtime, cart) == ("sent", None)


async def test_concurrent_deliveries_of_one_message_send_once(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)

    await asyncio.gather(*(run_notify(registered_functions, queued.body) for _ in range(8)))

    assert len(recorder.sent) == 1


async def test_message_without_ledger_entry_is_ignored(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    body = json.dumps({"v": 1, "cartId": cart.id, "cartVersion": cart.version, "oun": "128", "step": 1})

    poison = await run_notify(registered_functions, body)

    assert poison.get() is None
    assert recorder.sent == []


async def test_transient_upstream_failure_raises_then_the_retry_sends(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)
    sandbox.faults.add("POST /rs/Commerce/Carts/Search", status=503, times=None)

    with pytest.raises(Exception, match="503"):
        await run_notify(registered_functions, queued.body)
    assert await ledger_status(runtime, cart) == ("failed", "retail_server_503")

    sandbox.faults.clear()
    await run_notify(registered_functions, queued.body, dequeue_count=2)
    assert len(recorder.sent) == 1
    assert await ledger_status(runtime, cart) == ("sent", None)


# ----- malformed messages


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json at all", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 3, "cartId": "c", "cartVersion": 1, "oun": "128", "step": 1}', "version"),
        (b'{"v": 1, "cartVersion": 1, "oun": "128", "step": 1}', "cartId"),
        (b'{"v": 1, "cartId": "c", "cartVersion": 1, "oun": "128", "step": 0}', "step"),
        (
            b'{"v": 1, "cartId": "c", "cartVersion": 1, "oun": "128", "step": 1, "email": "x"}',
            "1 unknown field (1 string)",
        ),
        (b"[" * 1000, "nested deeper than 32 levels"),
        (b'{"v": 1, "x": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32 levels"),
    ],
)
async def test_malformed_message_goes_to_poison_at_once(
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    log_privacy_guard: Any,
    body: bytes,
    reason: str,
) -> None:
    poison: OutStub = await run_notify(registered_functions, body)

    assert poison.get() is not None
    assert poison.get() == body.decode("utf-8", errors="replace")
    assert recorder.sent == []
    logged = [line for line in log_privacy_guard.lines if "poison queue" in line]
    assert len(logged) == 1 and reason in logged[0]


async def test_the_names_of_unknown_fields_are_never_logged(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    log_privacy_guard: Any,
) -> None:
    """A key can be anything a writer put there, a customer's name say: count and type it only."""
    person = consenting_customer(sandbox)
    name = f"{person.first_name} {person.last_name}"
    message = {"v": 1, "cartId": "c", "cartVersion": 1, "oun": "128", "step": 1, name: 1, person.email: [2]}
    body = json.dumps(message).encode()

    poison: OutStub = await run_notify(registered_functions, body)

    assert poison.get() is not None and recorder.sent == []
    logged = [line for line in log_privacy_guard.lines if "poison queue" in line]
    assert len(logged) == 1 and "2 unknown fields (1 array, 1 number)" in logged[0]
    # The autouse guard fails the test as well if the name or the address reached any record.
    assert not any(person.last_name in line or person.email in line for line in log_privacy_guard.lines)


# ----- reminder steps


@pytest.fixture
def notify_overrides() -> dict[str, Any]:
    return {"reminder_steps": "60,1440"}


async def detect(registered_functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch, at: Any) -> list[str]:
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", lambda: at)
    return await run_detection(registered_functions)


def for_cart(messages: list[str], cart: Cart) -> list[dict[str, Any]]:
    return [m for m in map(json.loads, messages) if m["cartId"] == cart.id]


async def test_reminder_steps_come_due_and_are_sent_once_each(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customer = consenting_customer(sandbox)
    cart = own_cart(sandbox, customer, age=timedelta(minutes=61))

    first_run = for_cart(await detect(registered_functions, monkeypatch, NOW), cart)
    assert [m["step"] for m in first_run] == [1]
    await run_notify(registered_functions, json.dumps(first_run[0]))
    assert await ledger_status(runtime, cart, 1) == ("sent", None)
    step_two = await Ledger(runtime.store).get(cart.id, cart.version, 2)
    assert step_two is not None and step_two[0].status is LedgerStatus.PENDING
    # Never closer to step 1 than the schedule spaces them: step 1 went out a minute late.
    assert step_two[0].due_at == NOW + timedelta(minutes=1440 - 60)
    assert step_two[0].due_at == cart.modified_date_time + timedelta(minutes=1441)

    # Before step 2 is due nothing is queued for the cart; after, step 2 exactly once.
    assert for_cart(await detect(registered_functions, monkeypatch, NOW + timedelta(hours=2)), cart) == []
    later = NOW + timedelta(minutes=1440)
    due = for_cart(await detect(registered_functions, monkeypatch, later), cart)
    assert [m["step"] for m in due] == [2]
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", lambda: later)
    await run_notify(registered_functions, json.dumps(due[0]))
    assert [m.data["step"] for m in recorder.sent] == [1, 2]
    assert recorder.sent[1].dedup_key == dedup_key(cart.id, cart.version, 2)
    assert for_cart(await detect(registered_functions, monkeypatch, later + timedelta(hours=1)), cart) == []


async def test_step_is_not_sent_when_the_step_before_was_skipped(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    customer = consenting_customer(sandbox)
    cart = own_cart(sandbox, customer)
    await put_on_ledger(runtime, cart, step=1)
    # Step 1 never went out (still pending, e.g. skipped later); a stray step-2 message arrives.
    queued_two = await put_on_ledger(runtime, cart, step=2)

    await run_notify(registered_functions, queued_two.body)

    assert recorder.sent == []
    assert await ledger_status(runtime, cart, 2) == ("skipped", "previous_step_not_sent")


async def test_changed_cart_starts_again_at_step_one(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    customer = consenting_customer(sandbox)
    cart = own_cart(sandbox, customer, age=timedelta(hours=3))
    first = for_cart(await detect(registered_functions, monkeypatch, NOW), cart)
    await run_notify(registered_functions, json.dumps(first[0]))
    sandbox.data.touch_cart(cart.id, NOW + timedelta(minutes=1))

    later = NOW + timedelta(minutes=62)
    again = for_cart(await detect(registered_functions, monkeypatch, later), cart)

    assert [(m["cartVersion"], m["step"]) for m in again] == [(cart.version, 1)]
    old_step_two = await Ledger(runtime.store).get(cart.id, cart.version - 1, 2)
    assert old_step_two is not None and old_step_two[0].status is LedgerStatus.SUPERSEDED


# ----- batching and caching


async def test_concurrent_invocations_share_customer_and_product_lookups(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"frequency_cap_hours": 0})
    runtime.extras.pop("notify_service", None)
    first, second = two_products(sandbox)
    bodies = []
    for index in range(4):
        cart = own_cart(sandbox, consenting_customer(sandbox, index), lines=[(first, 1), (second, 1)])
        bodies.append((await put_on_ledger(runtime, cart)).body)
    sandbox.stats.reset()

    await asyncio.gather(*(run_notify(registered_functions, body) for body in bodies))

    assert len(recorder.sent) == 4
    # The four emails left in one batch call (Emarsys' batch trigger form).
    assert recorder.calls == [4]
    requests = sandbox.stats.requests
    assert requests["POST /rs/Commerce/Customers/GetByAccountNumbers"] == 1
    assert requests["POST /rs/Commerce/Products/GetByIds"] == 1
    assert requests["POST /rs/Commerce/OrgUnits/GetOrgUnitConfiguration"] == 1
    # One image look-up per product, however many carts hold it.
    assert sum(n for route, n in requests.items() if "GetMediaLocations" in route) == 2


async def test_a_configuration_failure_gives_the_frequency_cap_back(
    sandbox: Sandbox, runtime: Runtime, recorder: RecordingProvider, registered_functions: dict[str, Any]
) -> None:
    customer = consenting_customer(sandbox)
    online = own_cart(sandbox, customer, oun="128")
    other_channel = sandbox.data.add_cart(
        oun="067", customer_id=customer.account_number, modified=NOW - timedelta(minutes=90)
    )
    first = await put_on_ledger(runtime, online, oun="128")
    second = await put_on_ledger(runtime, other_channel, oun="067")

    async def misconfigured(message: Any) -> Any:
        raise ProviderConfigurationError("event 4711 is not connected to a program")

    sending = recorder.send
    recorder.send = misconfigured  # type: ignore[method-assign]
    with pytest.raises(ProviderConfigurationError):
        await run_notify(registered_functions, first.body)
    recorder.send = sending  # type: ignore[method-assign]
    # Nothing went out for the first cart, so the customer's window is still free.
    await run_notify(registered_functions, second.body)

    assert [m.data["cartId"] for m in recorder.sent] == [other_channel.id]


async def test_a_claim_left_by_a_dead_invocation_is_queued_again_and_sent_once(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)
    ledger = Ledger(runtime.store)
    found = await ledger.get(cart.id, cart.version, 1)
    assert found is not None
    # The worker died after claiming; the host deleted the message when a redelivery found the
    # claim still live, so only the ledger knows about this cart now.
    died_at = NOW - CLAIM_LEASE - timedelta(minutes=1)
    claimed = found[0].model_copy(update={"status": LedgerStatus.CLAIMED, "updated_at": died_at})
    await runtime.store.replace("ledger", cart.id, claimed.key, claimed.body(), etag=found[1])

    again = for_cart(await detect(registered_functions, monkeypatch, NOW), cart)

    assert [ids_of(m) for m in again] == [ids_of(json.loads(queued.body))]
    await run_notify(registered_functions, json.dumps(again[0]))
    assert len(recorder.sent) == 1
    assert await ledger_status(runtime, cart) == ("sent", None)
    assert for_cart(await detect(registered_functions, monkeypatch, NOW + timedelta(minutes=1)), cart) == []


async def test_a_dry_run_previews_what_would_go_out_without_using_up_the_customer(
    sandbox: Sandbox, runtime: Runtime, registered_functions: dict[str, Any]
) -> None:
    """The preview provider (DRY_RUN) records "previewed", capped like real sends (so the previews
    show what would go out) but in a namespace of its own: going live finds the customer free."""
    runtime.extras.pop("email_provider", None)
    runtime.extras.pop("notify_service", None)
    assert runtime.settings.effective_email_provider == "preview"
    customer = consenting_customer(sandbox)
    online = own_cart(sandbox, customer, oun="128")
    other_channel = sandbox.data.add_cart(
        oun="067", customer_id=customer.account_number, modified=NOW - timedelta(minutes=90)
    )
    for queued in (await put_on_ledger(runtime, online), await put_on_ledger(runtime, other_channel, "067")):
        await run_notify(registered_functions, queued.body)

    assert await ledger_status(runtime, online) == ("previewed", None)
    assert await ledger_status(runtime, other_channel) == ("skipped", "frequency_cap")
    assert await Ledger(runtime.store).get(online.id, online.version, 2) is None
    previews = [p.name for p in runtime.settings.preview_dir.glob("*.json")]
    assert len(previews) == 1 and previews[0].startswith(f"{dedup_key(online.id, online.version, 1)}.")
    assert await runtime.store.read("state", f"freqcap|{customer.account_number}", "cap") is None


async def test_a_late_step_is_not_followed_by_the_next_at_once(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Steps 60,1440: step 1 of a 23-hour-old cart goes out now (go-live, downtime); step 2 then
    waits the 23 hours the schedule puts between the steps, not the hour left until 1440."""
    cart = own_cart(sandbox, consenting_customer(sandbox), age=timedelta(hours=23))
    queued = await put_on_ledger(runtime, cart)

    await run_notify(registered_functions, queued.body)

    step_two = await Ledger(runtime.store).get(cart.id, cart.version, 2)
    assert step_two is not None
    assert step_two[0].due_at == NOW + timedelta(minutes=1440 - 60)
    assert for_cart(await detect(registered_functions, monkeypatch, NOW + timedelta(hours=2)), cart) == []


async def test_a_retail_server_without_the_order_look_up_turns_the_check_off(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    log_privacy_guard: Any,
) -> None:
    """Where the API role filter refuses SearchOrders to app tokens, carts still go out (the cart
    re-check catches checkouts) and the operator is told once, instead of every cart failing."""
    runtime.settings = runtime.settings.model_copy(update={"frequency_cap_hours": 0})
    sandbox.faults.add("POST /rs/Commerce/SalesOrders/SearchOrders", status=403, times=None)
    bodies = []
    for index in range(2):
        cart = own_cart(sandbox, consenting_customer(sandbox, index))
        bodies.append((await put_on_ledger(runtime, cart)).body)

    for body in bodies:
        await run_notify(registered_functions, body)

    assert len(recorder.sent) == 2
    assert sandbox.stats.requests["POST /rs/Commerce/SalesOrders/SearchOrders"] == 1
    told = [line for line in log_privacy_guard.lines if "ORDER_CHECK=false" in line]
    assert len(told) == 1


# ----- poisoned messages, counted


async def test_poisoned_messages_are_counted_and_recorded(
    sandbox: Sandbox,
    runtime: Runtime,
    settings: Settings,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    telemetry: LocalTelemetry,
    log_privacy_guard: Any,
) -> None:
    """A malformed message goes to the poison queue at once; a failing one after its last attempt
    (host.json's maxDequeueCount), when the host moves it. Both are a metric and a record."""
    await run_notify(registered_functions, b"not json at all")
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)
    sandbox.faults.add("POST /rs/Commerce/Carts/Search", status=503, times=None)
    with pytest.raises(RetailServerError):
        await run_notify(registered_functions, queued.body, dequeue_count=2)
    with pytest.raises(RetailServerError):
        await run_notify(registered_functions, queued.body, dequeue_count=max_dequeue_count())

    # The queue the message lands in, as the host names it in its own "moving message" line.
    queue = f"{settings.detection_queue_name}-poison"
    poisoned = [p for p in telemetry.points() if p.name == "connector.messages.poisoned"]
    assert sorted((p.attributes["reason"], p.attributes["queue"], p.value) for p in poisoned) == [
        ("malformed", queue, 1.0),
        ("retries_exhausted", queue, 1.0),
    ]
    records = event_records(log_privacy_guard.records, "message_poisoned")
    assert [(r["reason"], r["dequeue_count"]) for r in records] == [
        ("malformed", 1),
        ("retries_exhausted", max_dequeue_count()),
    ]
    failed = [
        p
        for p in telemetry.points()
        if p.name == "connector.notify.outcomes" and p.attributes["reason"] == "retail_server_503"
    ]
    assert sum(p.value for p in failed) == 2 and {p.attributes["outcome"] for p in failed} == {"failed"}
