"""Optional data degrades, required data fails (DESIGN invariant 8), through the queue function
registered on ``function_app.app`` against the sandbox's Retail Server over HTTPS.

A failed ``Products(id)/GetMediaLocations`` (404 for an unpublished product, 500 after the client's
retries, a timeout, a reset, an unreadable answer) leaves the line without its image and the email
goes out, recorded as ``degraded: ["images"]``; the cart, the customer and the channel still fail
the message."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sandbox.data import Product
from sandbox.retail_server import MEDIA_ROUTE, add_media_fault
from sandbox.server import Sandbox
from shared.abandoned_carts.blueprint import notify_service
from shared.runtime import Runtime
from shared.state.ledger import Ledger
from shared.store_commerce import DeepLinkTooLongError
from tests.conftest import event_records
from tests.notify.conftest import (
    IMAGES,
    RecordingProvider,
    consenting_customer,
    ledger_status,
    own_cart,
    put_on_ledger,
    run_notify,
)

# Every invocation runs at NOW.
pytestmark = pytest.mark.usefixtures("clock")


@pytest.fixture
def notify_overrides() -> dict[str, Any]:
    # A held media call costs one client timeout per attempt: keep both small.
    return {"http_timeout_seconds": 1.0, "http_max_attempts": 2}


def unpublished(sandbox: Sandbox) -> Product:
    [product] = [p for p in sandbox.data.products.values() if not p.media_published]
    return product


def with_image(sandbox: Sandbox) -> Product:
    return next(p for p in sandbox.data.products.values() if p.media and p.media_published)


def media_calls(sandbox: Sandbox, product: Product) -> int:
    prefix = f"{MEDIA_ROUTE}{product.record_id})/"
    return sum(n for route, n in sandbox.stats.requests.items() if route.startswith(prefix))


def media_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.levelno == logging.WARNING and "GetMediaLocations failed" in r.message
    ]


def outcome_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The custom dimensions of the ``notify outcome`` records."""
    return event_records(caplog.records, "notify_outcome")


async def test_a_product_whose_media_answer_404_is_sent_without_its_image(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wallet, pictured = unpublished(sandbox), with_image(sandbox)
    cart = own_cart(
        sandbox, consenting_customer(sandbox), lines=[(pictured.record_id, 1), (wallet.record_id, 2)]
    )
    queued = await put_on_ledger(runtime, cart)

    with caplog.at_level(logging.INFO):
        poison = await run_notify(registered_functions, queued.body)

    assert poison.get() is None
    [message] = recorder.sent
    lines = {line["productId"]: line for line in message.data["products"]}
    assert lines[wallet.record_id]["image"] is None
    assert lines[wallet.record_id]["name"] == wallet.name and lines[wallet.record_id]["quantity"] == "2"
    assert lines[pictured.record_id]["image"]["viewports"][0]["url"].startswith(IMAGES)
    assert await ledger_status(runtime, cart) == ("sent", None)
    found = await Ledger(runtime.store).get(cart.id, cart.version, 1)
    assert found is not None and found[0].degraded == ["images"]
    [outcome] = outcome_records(caplog)
    assert (outcome["outcome"], outcome["degraded"]) == ("sent", "images")
    [warning] = media_warnings(caplog)
    assert str(wallet.record_id) in warning.message and "HTTP 404" in warning.message
    assert notify_service(runtime).outcomes["degraded:images"] == 1


@pytest.mark.parametrize("kind", ["500", "503", "timeout", "reset", "malformed"])
async def test_a_failing_media_route_costs_the_images_never_the_email(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    """Every media look-up fails (the sandbox's media fault switch); the lines fall back to the
    PrimaryImageUrl of Products/GetByIds, without the media's alt text."""
    pictured = with_image(sandbox)
    cart = own_cart(sandbox, consenting_customer(sandbox), lines=[(pictured.record_id, 1)])
    queued = await put_on_ledger(runtime, cart)
    add_media_fault(sandbox.faults, kind)

    with caplog.at_level(logging.INFO):
        poison = await run_notify(registered_functions, queued.body)

    assert poison.get() is None
    [message] = recorder.sent
    [line] = message.data["products"]
    assert line["image"]["altText"] == pictured.name
    assert pictured.primary_image_url is not None
    assert pictured.primary_image_url.split("/")[-1] in line["image"]["viewports"][0]["url"]
    assert await ledger_status(runtime, cart) == ("sent", None)
    [outcome] = outcome_records(caplog)
    assert outcome["degraded"] == "images"
    [warning] = media_warnings(caplog)
    assert str(pictured.record_id) in warning.message
    if kind == "malformed":
        assert "unreadable answer" in warning.message, warning.message
    assert media_calls(sandbox, pictured) >= 1


async def test_a_failing_product_is_warned_about_once_per_process_and_not_asked_again_at_once(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime.settings = runtime.settings.model_copy(update={"frequency_cap_hours": 0})
    wallet = unpublished(sandbox)
    bodies = []
    for index in range(3):
        cart = own_cart(sandbox, consenting_customer(sandbox, index), lines=[(wallet.record_id, 1)])
        bodies.append((await put_on_ledger(runtime, cart)).body)

    with caplog.at_level(logging.INFO):
        for body in bodies:
            await run_notify(registered_functions, body)

    assert len(recorder.sent) == 3
    assert all(m.data["products"][0]["image"] is None for m in recorder.sent)
    assert [o["degraded"] for o in outcome_records(caplog)] == ["images"] * 3
    assert len(media_warnings(caplog)) == 1
    # The failure is remembered for a short while: an unpublished product costs one call, not one per email.
    assert media_calls(sandbox, wallet) == 1


async def test_no_store_commerce_link_is_recorded_as_degraded(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def too_long(*args: Any, **kwargs: Any) -> Any:
        raise DeepLinkTooLongError(2300, 2048)  # even the link without lines

    monkeypatch.setattr("shared.abandoned_carts.render.build_create_transaction_link", too_long)
    cart = own_cart(sandbox, consenting_customer(sandbox), lines=[(with_image(sandbox).record_id, 1)])
    queued = await put_on_ledger(runtime, cart)

    await run_notify(registered_functions, queued.body)

    [message] = recorder.sent
    assert message.data["storeCommerceLink"] is None
    found = await Ledger(runtime.store).get(cart.id, cart.version, 1)
    assert found is not None
    assert (found[0].status.value, found[0].degraded) == ("sent", ["store_commerce_link"])


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("POST /rs/Commerce/Carts/Search", "retail_server_500"),
        ("POST /rs/Commerce/Customers/GetByAccountNumbers", "retail_server_500"),
        ("POST /rs/Commerce/OrgUnits/GetOrgUnitConfiguration", "retail_server_500"),
    ],
    ids=["cart", "customer", "channel"],
)
async def test_required_data_still_fails_the_message(
    sandbox: Sandbox,
    runtime: Runtime,
    recorder: RecordingProvider,
    registered_functions: dict[str, Any],
    route: str,
    reason: str,
) -> None:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    queued = await put_on_ledger(runtime, cart)
    sandbox.faults.add(route, status=500, times=None)

    with pytest.raises(Exception, match="500"):
        await run_notify(registered_functions, queued.body)

    assert recorder.sent == []
    assert await ledger_status(runtime, cart) == ("failed", reason)
