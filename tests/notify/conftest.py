"""Fixtures for the notify tests: the sandbox with the order-search extension, settings with every
link template set, a recording email provider, and helpers to put carts on the ledger and run the
registered queue function with a real ``func.QueueMessage``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage  # the host's class: it carries dequeue_count
from azure.functions.timer import TimerRequest

from sandbox import emarsys as emarsys_stand_in
from sandbox import orders
from sandbox.data import CONTACT_EMAIL, Cart, Customer
from sandbox.emarsys import EmarsysStandIn
from sandbox.server import Sandbox
from shared.abandoned_carts.messages import CartMessage
from shared.email.base import EmailMessage, SendResult
from shared.email.factory import EXTRAS_KEY
from shared.runtime import Runtime
from shared.settings import Settings
from shared.state.ledger import Ledger, LedgerEntry
from tests.conftest import OutStub, sandbox_settings

NOW = datetime.now(UTC).replace(microsecond=0)
SITE = "https://shop.example.com/b2c"
IMAGES = "https://images.example.com/cms/api/t1/imageFileData/search?fileName=/"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, now=NOW, extensions=[orders.add_routes]) as running:
        yield running


NOTIFY_SETTINGS: dict[str, Any] = {
    "site_url": SITE,
    "image_base_url": IMAGES,
    "return_to_cart_url_template": "https://shop.example.com/cart?cartId={cartId}&channel={channelId}",
    "unsubscribe_url_template": "https://shop.example.com/unsubscribe?c={customerId}",
    "reminder_steps": "60",
    "coalesce_window_ms": 25,
}


@pytest.fixture
def notify_overrides() -> dict[str, Any]:
    """Per-module settings on top of NOTIFY_SETTINGS (override this fixture in a test module)."""
    return {}


@pytest.fixture
def settings(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, notify_overrides: dict[str, Any]
) -> Settings:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    return sandbox_settings(
        sandbox, tmp_path, preview_dir=tmp_path / "previews", **{**NOTIFY_SETTINGS, **notify_overrides}
    )


class RecordingProvider:
    """Implements the EmailProvider protocol; accepts everything, records what it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        # Messages per provider call: 1 for send, len(messages) for send_many.
        self.calls: list[int] = []

    async def send(self, message: EmailMessage) -> SendResult:
        self.calls.append(1)
        return self._accept(message)

    async def send_many(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        self.calls.append(len(messages))
        return [self._accept(m) for m in messages]

    def _accept(self, message: EmailMessage) -> SendResult:
        self.sent.append(message)
        return SendResult(status="sent", provider_ids={"recording": f"r{len(self.sent)}"})

    async def close(self) -> None:
        return None


@pytest.fixture
def recorder(runtime: Runtime) -> RecordingProvider:
    provider = RecordingProvider()
    runtime.extras[EXTRAS_KEY] = provider
    return provider


def customer_where(sandbox: Sandbox, **wanted: bool) -> Customer:
    """A person customer with an email address and the wanted flags (opted_in, opted_out, ...)."""
    for customer in sandbox.data.customers.values():
        if not customer.email or not customer.first_name or customer.blocked:
            continue
        flags = {
            "opted_in": customer.opted_in_marketing,
            "opt_out_personalization": customer.opt_out_personalization,
            "opt_out_tracking": customer.opt_out_web_activity_tracking,
        }
        if all(flags[name] == value for name, value in wanted.items()):
            return customer
    raise LookupError(f"no sandbox customer with {wanted}")


def consenting_customer(sandbox: Sandbox, index: int = 0) -> Customer:
    found = [
        c
        for c in sandbox.data.customers.values()
        if c.email
        and c.first_name
        and not c.blocked
        and c.opted_in_marketing
        and not c.opt_out_personalization
        and not c.opt_out_web_activity_tracking
        and any(x.address_type_value == CONTACT_EMAIL for x in c.contacts)
    ]
    return found[index]


def own_cart(
    sandbox: Sandbox,
    customer: Customer,
    *,
    oun: str = "128",
    lines: Sequence[tuple[int, int]] | None = None,
    age: timedelta = timedelta(minutes=61),
) -> Cart:
    """A cart of ``customer``, who has no other cart in the sandbox."""
    for cart_id in [c.id for c in sandbox.data.carts.values() if c.customer_id == customer.account_number]:
        del sandbox.data.carts[cart_id]
    return sandbox.data.add_cart(
        oun=oun, customer_id=customer.account_number, modified=NOW - age, lines=lines
    )


@dataclass
class Queued:
    message: CartMessage
    body: str


async def put_on_ledger(runtime: Runtime, cart: Cart, oun: str = "128", step: int = 1) -> Queued:
    """What detection does for one cart: a pending entry, the customer's latest-cart pointer, a message."""
    ledger = Ledger(runtime.store)
    entry = LedgerEntry(
        cart_id=cart.id,
        cart_version=cart.version,
        step=step,
        oun=oun,
        customer_id=cart.customer_id,
        modified_at=cart.modified_date_time,
        due_at=NOW,
        queued_at=NOW,
        updated_at=NOW,
    )
    assert await ledger.record(entry)
    await ledger.register_latest_cart(
        oun, cart.customer_id, cart.id, cart.version, cart.modified_date_time, now=NOW
    )
    message = CartMessage(cart_id=cart.id, cart_version=cart.version, oun=oun, step=step)
    return Queued(message, message.encode())


def ids_of(message: dict[str, Any]) -> dict[str, Any]:
    """A queue message without its trace context, which differs from one detection run to another."""
    return {key: value for key, value in message.items() if key != "traceparent"}


async def run_notify(functions: dict[str, Any], body: str | bytes, *, dequeue_count: int = 1) -> OutStub:
    """Call the registered queue function as the host would; returns the poison output binding."""
    poison = OutStub()
    message = QueueMessage(
        id=f"msg-{abs(hash(body)) % 10**8}",
        body=body.encode("utf-8") if isinstance(body, str) else body,
        dequeue_count=dequeue_count,
    )
    await functions["notify_abandoned_cart"].get_user_function()(message, poison)
    return poison


async def run_detection(functions: dict[str, Any], cart: Cart | None = None) -> list[str]:
    """Call the registered timer function as the host would; the queue messages it wrote (only
    ``cart``'s, when given), as written."""
    out = OutStub()
    await functions["detect_abandoned_carts"].get_user_function()(TimerRequest(past_due=False), out)
    messages: list[str] = out.get() or []
    return messages if cart is None else [m for m in messages if json.loads(m)["cartId"] == cart.id]


async def ledger_status(runtime: Runtime, cart: Cart, step: int = 1) -> tuple[str, str | None]:
    found = await Ledger(runtime.store).get(cart.id, cart.version, step)
    assert found is not None
    return found[0].status.value, found[0].reason


class Clock:
    """The invocation time the blueprint hands the notify and detection functions (``utcnow``),
    moved by the tests."""

    def __init__(self) -> None:
        self.now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Every invocation runs at ``clock.now`` (NOW until a test moves it)."""
    fixed = Clock()
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", fixed)
    return fixed


# ----- the Emarsys stand-in as the provider (modules that override ``sandbox`` and ``notify_overrides``)

EMARSYS_SECRET_ENV = (
    "EMARSYS_CLIENT_ID",
    "EMARSYS_CLIENT_SECRET",
    "EMARSYS_WSSE_USER",
    "EMARSYS_WSSE_SECRET",
)


def emarsys_sandbox() -> Sandbox:
    """A sandbox with the order look-up and the Emarsys stand-in, at the tests' clock."""
    return Sandbox(seed=42, now=NOW, extensions=[orders.add_routes, emarsys_stand_in.add_routes])


def emarsys_overrides(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Settings for the Emarsys provider against the stand-in. The secrets come from the
    environment, as in a local run (shared/secrets.py: name -> NAME_IN_CAPS)."""
    values = emarsys_stand_in.env(sandbox)
    for name in EMARSYS_SECRET_ENV:
        monkeypatch.setenv(name, values[name])
    return {
        "email_provider": "emarsys",
        "emarsys_auth": "oauth",
        "emarsys_api_url": values["EMARSYS_API_URL"],
        "emarsys_auth_url": values["EMARSYS_AUTH_URL"],
        "emarsys_event_id": emarsys_stand_in.EVENT_ID,
    }


@pytest.fixture
def stand_in(sandbox: Sandbox) -> EmarsysStandIn:
    """The Emarsys stand-in of the module's sandbox (one built with ``emarsys_sandbox``)."""
    return emarsys_stand_in.stand_in(sandbox)
