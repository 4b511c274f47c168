"""Exactly once where the provider de-duplicates, at most once where it cannot (DESIGN invariant 9).

Four ways a send's result can be uncertain, for every real provider, through the queue function
registered on ``function_app.app`` (and detection's timer function where its sweep is involved),
against the stand-ins over HTTPS:

1. the provider accepts, but its answer arrives after the client's timeout;
2. the provider accepts, then the connection is reset before the answer;
3. the provider accepts, then the ledger write of ``sent`` fails;
4. the provider accepts, then the worker dies; detection's stale-claim sweep runs after the lease.

Emarsys (``trigger_id``) and the webhook (``webhook-id``) drop a repeat: the message is retried
with the same dedup key, and the stand-in holds exactly one email (one unique key, more than one
delivery). SendGrid cannot: the entry ends ``uncertain`` and is never sent again (at most one).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from sandbox import emarsys, orders, sendgrid, webhook
from sandbox.data import Cart
from sandbox.server import Sandbox
from shared.abandoned_carts.blueprint import notify_service
from shared.abandoned_carts.payload import dedup_key
from shared.runtime import Runtime
from shared.state.ledger import CLAIM_LEASE, Ledger, LedgerEntry, LedgerStatus
from shared.state.store import ContainerName, Document, DocumentStore, StoreError
from tests.notify.conftest import (
    NOW,
    Clock,
    Queued,
    consenting_customer,
    emarsys_overrides,
    ids_of,
    ledger_status,
    own_cart,
    put_on_ledger,
    run_detection,
    run_notify,
)

# Every invocation in these tests runs at the clock's time, which some tests move.
pytestmark = pytest.mark.usefixtures("clock")


@dataclass(frozen=True)
class Stand:
    """How one provider's stand-in is reached and what it counted."""

    name: str
    route: str
    # Emails that reached a recipient for a dedup key, and deliveries (requests) that carried it.
    emails: Callable[[Sandbox, str], int]
    deliveries: Callable[[Sandbox, str], int]
    deduplicates: bool


def _emarsys_emails(sandbox: Sandbox, key: str) -> int:
    return sum(1 for t in emarsys.stand_in(sandbox).triggers if t.trigger_id == key)


def _sendgrid_emails(sandbox: Sandbox, key: str) -> int:
    return sum(1 for m in sendgrid.stand_in(sandbox).mails if m.custom_args.get("dedup_key") == key)


def _webhook_emails(sandbox: Sandbox, key: str) -> int:
    return sum(1 for r in webhook.receiver(sandbox).received if r["data"]["dedup_key"] == key)


STANDS = {
    "emarsys": Stand(
        "emarsys",
        f"POST /emarsys/api/v3/event/{emarsys.EVENT_ID}/trigger",
        _emarsys_emails,
        lambda sandbox, key: emarsys.stand_in(sandbox).deliveries,
        deduplicates=True,
    ),
    "sendgrid": Stand(
        "sendgrid",
        "POST /sendgrid/v3/mail/send",
        _sendgrid_emails,
        lambda sandbox, key: sendgrid.stand_in(sandbox).requests,
        deduplicates=False,
    ),
    "webhook": Stand(
        "webhook",
        "POST /webhook/receive",
        _webhook_emails,
        lambda sandbox, key: webhook.receiver(sandbox).deliveries,
        deduplicates=True,
    ),
}


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    # Same name as the shared fixture, so the log privacy guard checks these tests too.
    extensions = [orders.add_routes, emarsys.add_routes, sendgrid.add_routes, webhook.add_routes]
    async with Sandbox(seed=42, now=NOW, extensions=extensions) as running:
        yield running


@pytest.fixture(params=sorted(STANDS))
def stand(request: pytest.FixtureRequest) -> Stand:
    return STANDS[request.param]


@pytest.fixture
def notify_overrides(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, stand: Stand) -> dict[str, Any]:
    """The provider's settings; its secrets come from the environment, as in a local run."""
    # A held answer costs one client timeout: keep it short (the sandbox answers in milliseconds).
    common: dict[str, Any] = {"http_timeout_seconds": 1.0}
    if stand.name == "emarsys":
        return {**common, **emarsys_overrides(sandbox, monkeypatch)}
    if stand.name == "sendgrid":
        values = sendgrid.env(sandbox)
        monkeypatch.setenv("SENDGRID_API_KEY", values["SENDGRID_API_KEY"])
        return {
            **common,
            "email_provider": "sendgrid",
            "sendgrid_api_url": values["SENDGRID_API_URL"],
            "sendgrid_template_id": values["SENDGRID_TEMPLATE_ID"],
            "sendgrid_from_email": values["SENDGRID_FROM_EMAIL"],
        }
    values = webhook.env(sandbox)
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", values["WEBHOOK_SIGNING_SECRET"])
    return {**common, "email_provider": "webhook", "webhook_url": values["WEBHOOK_URL"]}


@pytest.fixture
async def abandoned(sandbox: Sandbox, runtime: Runtime) -> tuple[Cart, Queued]:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    return cart, await put_on_ledger(runtime, cart)


def key_of(cart: Cart) -> str:
    return dedup_key(cart.id, cart.version, 1)


class WorkerDied(BaseException):
    """The worker process ends abruptly (host timeout, scale-in, OOM): no ``except Exception`` runs."""


def fail_ledger_writes(
    monkeypatch: pytest.MonkeyPatch,
    error: Callable[[], BaseException],
    *,
    to: LedgerStatus,
    times: int | None = 1,
) -> list[LedgerStatus]:
    """Make the next ``times`` (None: every) transitions to ``to`` raise ``error()``; returns all targets tried."""
    original = Ledger.transition
    tried: list[LedgerStatus] = []
    left = [times]

    async def transition(self: Ledger, *args: Any, **kwargs: Any) -> LedgerEntry:
        tried.append(kwargs["to"])
        if kwargs["to"] is to and (left[0] is None or left[0] > 0):
            if left[0] is not None:
                left[0] -= 1
            raise error()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "transition", transition)
    return tried


class FailingSentWrite:
    """The state store, except that the next ``times`` writes of a ledger entry as ``sent`` fail."""

    def __init__(self, inner: DocumentStore, *, times: int | None) -> None:
        self._inner = inner
        self._left = times
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def replace(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        etag: str,
        ttl_seconds: int | None = None,
    ) -> Document:
        if container == "ledger" and body.get("status") == "sent" and (self._left is None or self._left > 0):
            if self._left is not None:
                self._left -= 1
            self.failed += 1
            raise StoreError("simulated: the state store did not take the write")
        return await self._inner.replace(container, partition, key, body, etag=etag, ttl_seconds=ttl_seconds)


def uncertain_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and getattr(r, "event", None) == "notify_outcome"
        and getattr(r, "outcome", None) == "uncertain"
        and "once or not at all" in getattr(r, "advice", "")
    ]


async def assert_never_again(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    clock: Clock,
    cart: Cart,
    queued: Queued,
    stand: Stand,
) -> None:
    """An uncertain entry is not sent by a redelivery, nor queued again by detection, ever."""
    requests = sandbox.stats.requests[stand.route]
    await run_notify(registered_functions, queued.body, dequeue_count=2)
    clock.now = NOW + CLAIM_LEASE + timedelta(hours=1)
    assert await run_detection(registered_functions, cart) == []
    await run_notify(registered_functions, queued.body, dequeue_count=3)
    assert sandbox.stats.requests[stand.route] == requests
    assert stand.emails(sandbox, key_of(cart)) == 1
    assert (await ledger_status(runtime, cart))[0] == "uncertain"


# ----- 1 and 2: accepted, but the answer is lost


@pytest.mark.parametrize(
    ("fault", "reason"), [("timeout_after", "timeout"), ("reset_after", "connection_lost")]
)
async def test_an_accepted_send_whose_answer_is_lost(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    abandoned: tuple[Cart, Queued],
    clock: Clock,
    stand: Stand,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    reason: str,
) -> None:
    cart, queued = abandoned
    sandbox.faults.add(stand.route, **{fault: True})

    with caplog.at_level(logging.INFO):
        poison = await run_notify(registered_functions, queued.body)

    assert poison.get() is None
    key = key_of(cart)
    assert stand.emails(sandbox, key) == 1
    if stand.deduplicates:
        # Sent again with the same key within the invocation; the provider dropped the repeat.
        assert stand.deliveries(sandbox, key) == 2
        assert await ledger_status(runtime, cart) == ("sent", None)
        return
    assert stand.deliveries(sandbox, key) == 1
    assert await ledger_status(runtime, cart) == ("uncertain", f"sendgrid_{reason}")
    assert notify_service(runtime).outcomes[f"uncertain:sendgrid_{reason}"] == 1
    assert uncertain_logs(caplog)
    await assert_never_again(sandbox, runtime, registered_functions, clock, cart, queued, stand)


async def test_a_5xx_that_may_follow_an_accepted_send(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    abandoned: tuple[Cart, Queued],
    stand: Stand,
) -> None:
    """A 5xx other than 503 may come from a provider that took the message: with dedup it is
    retried; SendGrid's entry ends uncertain."""
    cart, queued = abandoned
    sandbox.faults.add(stand.route, status=500)

    if stand.deduplicates:
        # Retried within the call, with the same key.
        await run_notify(registered_functions, queued.body)
        assert await ledger_status(runtime, cart) == ("sent", None)
        assert stand.emails(sandbox, key_of(cart)) == 1
        return
    await run_notify(registered_functions, queued.body)
    assert await ledger_status(runtime, cart) == ("uncertain", "sendgrid_http_500")
    # This stand-in's 500 came before processing, so nothing went out: at most one, here none.
    assert stand.emails(sandbox, key_of(cart)) == 0
    requests = sandbox.stats.requests[stand.route]
    await run_notify(registered_functions, queued.body, dequeue_count=2)
    assert sandbox.stats.requests[stand.route] == requests


async def test_a_refused_connection_is_certainly_not_sent_and_is_retried(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    abandoned: tuple[Cart, Queued],
    stand: Stand,
) -> None:
    """429 says "not processed": even SendGrid's entry goes back to failed and the retry sends."""
    cart, queued = abandoned
    sandbox.faults.add(stand.route, status=429, times=None, headers={"Retry-After": "0"})

    with pytest.raises(Exception, match=r"429|rate limit"):
        await run_notify(registered_functions, queued.body)
    assert (await ledger_status(runtime, cart))[0] == "failed"

    sandbox.faults.clear()
    await run_notify(registered_functions, queued.body, dequeue_count=2)
    assert await ledger_status(runtime, cart) == ("sent", None)
    assert stand.emails(sandbox, key_of(cart)) == 1


# ----- 3: accepted, then the ledger write fails


async def test_a_failed_ledger_write_after_acceptance(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    abandoned: tuple[Cart, Queued],
    stand: Stand,
) -> None:
    """The write of ``sent`` fails once. A provider with dedup: failed, retried by the host, the
    repeat dropped. SendGrid: the write is tried again in the invocation, never the send."""
    cart, queued = abandoned
    store = FailingSentWrite(runtime.store, times=1)
    runtime.store = store  # type: ignore[assignment]

    if stand.deduplicates:
        with pytest.raises(StoreError):
            await run_notify(registered_functions, queued.body)
        assert await ledger_status(runtime, cart) == ("failed", "StoreError")
        await run_notify(registered_functions, queued.body, dequeue_count=2)
        assert stand.deliveries(sandbox, key_of(cart)) == 2
    else:
        await run_notify(registered_functions, queued.body)
        assert stand.deliveries(sandbox, key_of(cart)) == 1
    assert store.failed == 1
    assert await ledger_status(runtime, cart) == ("sent", None)
    assert stand.emails(sandbox, key_of(cart)) == 1


@pytest.mark.parametrize("stand", [STANDS["sendgrid"]], ids=["sendgrid"])
async def test_sendgrid_accepted_but_the_ledger_cannot_record_it_is_never_sent_again(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    abandoned: tuple[Cart, Queued],
    clock: Clock,
    stand: Stand,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every write of ``sent`` fails for a while: the entry stays ``sending``, which no retry
    takes, and detection records it ``uncertain`` after the lease."""
    cart, queued = abandoned
    store = FailingSentWrite(runtime.store, times=None)
    runtime.store = store  # type: ignore[assignment]

    with caplog.at_level(logging.INFO):
        await run_notify(registered_functions, queued.body)

    assert store.failed == 2
    assert await ledger_status(runtime, cart) == ("sending", None)
    assert notify_service(runtime).outcomes["sent:not_recorded"] == 1
    assert [r for r in caplog.records if r.levelno == logging.ERROR and "never sent again" in r.getMessage()]
    await run_notify(registered_functions, queued.body, dequeue_count=2)
    assert stand.deliveries(sandbox, key_of(cart)) == 1

    clock.now = NOW + CLAIM_LEASE + timedelta(seconds=1)
    assert await run_detection(registered_functions, cart) == []
    assert await ledger_status(runtime, cart) == ("uncertain", "stale_sending")
    await assert_never_again(sandbox, runtime, registered_functions, clock, cart, queued, stand)


# ----- 4: accepted, then the worker dies; detection sweeps after the lease


async def test_worker_death_after_acceptance_then_the_stale_claim_sweep(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    abandoned: tuple[Cart, Queued],
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
    stand: Stand,
) -> None:
    cart, queued = abandoned
    fail_ledger_writes(monkeypatch, WorkerDied, to=LedgerStatus.SENT)

    with pytest.raises(WorkerDied):
        await run_notify(registered_functions, queued.body)
    assert stand.emails(sandbox, key_of(cart)) == 1
    held = "claimed" if stand.deduplicates else "sending"
    assert await ledger_status(runtime, cart) == (held, None)

    # A redelivery inside the lease leaves the entry alone.
    clock.now = NOW + CLAIM_LEASE - timedelta(seconds=1)
    await run_notify(registered_functions, queued.body, dequeue_count=2)
    assert stand.deliveries(sandbox, key_of(cart)) == 1

    clock.now = NOW + CLAIM_LEASE + timedelta(seconds=1)
    again = await run_detection(registered_functions, cart)
    if not stand.deduplicates:
        assert again == []
        assert await ledger_status(runtime, cart) == ("uncertain", "stale_sending")
        await assert_never_again(sandbox, runtime, registered_functions, clock, cart, queued, stand)
        return
    assert [ids_of(json.loads(m)) for m in again] == [ids_of(json.loads(queued.body))]
    await run_notify(registered_functions, again[0])
    assert await ledger_status(runtime, cart) == ("sent", None)
    assert stand.emails(sandbox, key_of(cart)) == 1
    assert stand.deliveries(sandbox, key_of(cart)) == 2


async def test_worker_death_before_the_provider_call_is_taken_over_and_sent_once(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    abandoned: tuple[Cart, Queued],
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
    stand: Stand,
) -> None:
    """A stale ``claimed`` entry never reached the provider: taking it over is safe for every provider."""
    cart, queued = abandoned
    died_at = NOW - CLAIM_LEASE - timedelta(minutes=1)
    found = await Ledger(runtime.store).get(cart.id, cart.version, 1)
    assert found is not None
    claimed = found[0].model_copy(
        update={"status": LedgerStatus.CLAIMED, "attempts": 1, "updated_at": died_at}
    )
    await runtime.store.replace("ledger", cart.id, claimed.key, claimed.body(), etag=found[1])

    again = await run_detection(registered_functions, cart)
    assert [ids_of(json.loads(m)) for m in again] == [ids_of(json.loads(queued.body))]
    await run_notify(registered_functions, again[0])

    assert await ledger_status(runtime, cart) == ("sent", None)
    assert stand.emails(sandbox, key_of(cart)) == 1
    assert stand.deliveries(sandbox, key_of(cart)) == 1


@pytest.mark.parametrize("stand", [STANDS["sendgrid"]], ids=["sendgrid"])
async def test_a_claim_taken_over_meanwhile_is_not_sent_by_its_first_holder(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    abandoned: tuple[Cart, Queued],
    monkeypatch: pytest.MonkeyPatch,
    stand: Stand,
) -> None:
    """The ``sending`` mark is conditional on this invocation's claim: if another invocation took
    the entry over meanwhile (its attempt count moved on), the first one sends nothing."""
    cart, queued = abandoned
    original = Ledger.transition

    async def taken_over_first(self: Ledger, *args: Any, **kwargs: Any) -> LedgerEntry:
        if kwargs["to"] is LedgerStatus.SENDING:
            found = await self.get(cart.id, cart.version, 1)
            assert found is not None
            bumped = found[0].model_copy(update={"attempts": found[0].attempts + 1})
            await runtime.store.replace("ledger", cart.id, bumped.key, bumped.body(), etag=found[1])
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "transition", taken_over_first)
    await run_notify(registered_functions, queued.body)

    assert stand.deliveries(sandbox, key_of(cart)) == 0
    assert notify_service(runtime).outcomes["ignored:claim_lost"] == 1
