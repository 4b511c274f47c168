"""One trace per cart's journey: the detection run's span context travels in the queue
message, so the notify invocation, its Retail Server look-ups, its ledger writes and the provider's
HTTP call are spans of the detection run's trace. Spans come from the in-memory exporter the suite
installs (tests/conftest.py), whose privacy guard also scans every one of them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from sandbox.emarsys import EmarsysStandIn
from sandbox.server import Sandbox
from sandbox.telemetry import LocalTelemetry, journey
from shared.runtime import Runtime
from tests.notify.conftest import (
    consenting_customer,
    emarsys_overrides,
    emarsys_sandbox,
    ids_of,
    own_cart,
    run_detection,
    run_notify,
)

pytestmark = pytest.mark.usefixtures("clock")


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    # Same name as the shared fixture, so the privacy guard checks these tests' spans too.
    async with emarsys_sandbox() as running:
        yield running


@pytest.fixture
def notify_overrides(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return emarsys_overrides(sandbox, monkeypatch)


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next(
        (s for s in spans if s.context is not None and s.context.span_id == span.parent.span_id), None
    )


def ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> list[str]:
    names: list[str] = []
    current = parent_of(span, spans)
    while current is not None:
        names.append(current.name)
        current = parent_of(current, spans)
    return names


async def test_one_carts_trace_runs_from_the_timer_to_the_provider(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    stand_in: EmarsysStandIn,
    telemetry: LocalTelemetry,
) -> None:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    [body] = await run_detection(registered_functions, cart)
    assert json.loads(body)["v"] == 2

    poison = await run_notify(registered_functions, body)

    assert poison.get() is None and len(stand_in.triggers) == 1
    spans = telemetry.spans()
    [run] = [s for s in spans if s.name == "detect_abandoned_carts"]
    assert run.parent is None and run.kind is SpanKind.SERVER and run.status.is_ok
    assert attributes(run)["faas.trigger"] == "timer"
    trace_id = run.context.trace_id
    [notify] = [s for s in spans if s.name == "notify_abandoned_cart"]
    assert notify.context.trace_id == trace_id, "notify goes on with the detection run's trace"
    assert notify.kind is SpanKind.CONSUMER
    assert notify.parent is not None and notify.parent.is_remote
    channel = parent_of(notify, spans)
    assert channel is not None and channel.name == "detect channel"
    assert attributes(channel)["connector.oun"] == "128"
    assert parent_of(channel, spans) is run
    assert attributes(notify)["connector.cart_id"] == cart.id
    assert attributes(notify)["connector.outcome"] == "sent"

    in_notify = [s for s in spans if "notify_abandoned_cart" in ancestors(s, spans)]
    assert all(s.context.trace_id == trace_id for s in in_notify)
    names = {s.name for s in in_notify}
    # The Retail Server look-ups, with the channel and the route template, never the URL.
    lookups = [s for s in in_notify if attributes(s).get("connector.service") == "retail_server"]
    assert {"POST Carts/Search", "POST Customers/GetByAccountNumbers"} <= {s.name for s in lookups}
    assert all(s.kind is SpanKind.CLIENT and attributes(s)["connector.oun"] == "128" for s in lookups)
    assert all(attributes(s)["http.response.status_code"] == 200 for s in lookups)
    # The ledger writes.
    assert any(
        attributes(s).get("connector.service") == "state_store"
        and attributes(s)["db.operation.name"] == "replace"
        for s in in_notify
    )
    # The provider: its batch call, and the HTTP trigger call under it.
    assert "email send" in names and "email provider emarsys" in names
    [trigger] = [s for s in in_notify if s.name.endswith("/api/v3/event/{id}/trigger")]
    assert attributes(trigger)["connector.service"] == "emarsys"
    assert ancestors(trigger, spans)[:3] == ["email provider emarsys", "email send", "notify_abandoned_cart"]

    # The demo's view of the same trace: the run, the channel, then this cart's invocation.
    tree = journey(spans, cart.id)
    assert [(depth, span.name) for depth, span in tree[:3]] == [
        (0, "detect_abandoned_carts"),
        (1, "detect channel"),
        (2, "notify_abandoned_cart"),
    ]
    assert any(span is trigger for _, span in tree)


async def test_a_version_1_message_is_still_accepted_and_starts_a_trace_of_its_own(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    stand_in: EmarsysStandIn,
    telemetry: LocalTelemetry,
) -> None:
    """A message queued before the upgrade (version 1, no trace context) is sent as before."""
    cart = own_cart(sandbox, consenting_customer(sandbox))
    [body] = await run_detection(registered_functions, cart)
    old = ids_of(json.loads(body)) | {"v": 1}
    telemetry.clear()

    poison = await run_notify(registered_functions, json.dumps(old))

    assert poison.get() is None and len(stand_in.triggers) == 1
    [notify] = [s for s in telemetry.spans() if s.name == "notify_abandoned_cart"]
    assert notify.parent is None
    assert attributes(notify)["connector.message_version"] == 1
    assert attributes(notify)["connector.outcome"] == "sent"


async def test_a_traceparent_that_cannot_be_read_costs_the_trace_never_the_email(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    stand_in: EmarsysStandIn,
    telemetry: LocalTelemetry,
) -> None:
    cart = own_cart(sandbox, consenting_customer(sandbox))
    [body] = await run_detection(registered_functions, cart)
    broken = json.loads(body) | {"traceparent": "00-not-a-trace-01"}
    telemetry.clear()

    poison = await run_notify(registered_functions, json.dumps(broken))

    assert poison.get() is None and len(stand_in.triggers) == 1
    [notify] = [s for s in telemetry.spans() if s.name == "notify_abandoned_cart"]
    assert notify.parent is None
