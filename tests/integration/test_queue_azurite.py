"""The queue contract between detection and notification, against a real Azurite queue service.

The Functions host cannot run here, so these tests do its part with ``azure-storage-queue``: the
timer's output binding value goes onto the queue named by ``DETECTION_QUEUE_NAME`` with the
encoding host.json declares; each message is received back, handed to the registered queue
function as the host's ``QueueMessage`` (id, body, dequeue count), and deleted when the function
returns. A poison output goes to ``<queue>-poison``; a function that raises leaves its message on
the queue, to come back after the visibility timeout with a higher dequeue count.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage as HostQueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueMessage, TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from sandbox import orders
from sandbox.server import Sandbox
from sandbox.telemetry import LocalTelemetry
from shared.abandoned_carts.detect import DetectionFailedError
from shared.http import UpstreamError
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from shared.state.ledger import Ledger, LedgerStatus
from tests.azurite import (
    HOST_JSON,
    encoding_policies,
    host_message_encoding,
    host_queue_client,
    raw_queue_client,
)
from tests.conftest import OutStub, personal_data_patterns, sandbox_settings

pytestmark = pytest.mark.azurite

NOW = datetime.now(UTC).replace(microsecond=0)
CART_ROUTE = "/rs/Commerce/Carts"
# Longer than any test here: a received message stays hidden unless a test asks for less.
HIDDEN_SECONDS = 60
# Bounded wait for a message to become visible again (its visibility timeout is 1 s).
REAPPEAR_WITHIN_SECONDS = 20.0


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    # Notify checks orders through SalesOrders/SearchOrders, which the orders extension serves.
    async with Sandbox(seed=42, now=NOW, extensions=[orders.add_routes]) as running:
        yield running


@pytest.fixture
def settings(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    # A queue of its own per test: the Azurite process is shared by the whole session.
    return sandbox_settings(
        sandbox,
        tmp_path,
        preview_dir=tmp_path / "previews",
        detection_queue_name=f"abandoned-carts-{uuid.uuid4().hex[:12]}",
    )


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registered functions read the clock the sandbox's data was generated against."""
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", lambda: NOW)


@pytest.fixture
async def queue(azurite_connection_string: str, settings: Settings) -> AsyncIterator[QueueClient]:
    """The detection queue in Azurite, with the host's message encoding."""
    async with host_queue_client(azurite_connection_string, settings.detection_queue_name) as client:
        await client.create_queue()
        yield client
        await client.delete_queue()


@pytest.fixture
async def poison_queue(azurite_connection_string: str, settings: Settings) -> AsyncIterator[QueueClient]:
    """``<queue>-poison``, where the host puts what the poison output binding is set to."""
    name = f"{settings.detection_queue_name}-poison"
    async with host_queue_client(azurite_connection_string, name) as client:
        await client.create_queue()
        yield client
        await client.delete_queue()


# ----- the host's part


def host_batch_size() -> int:
    host = json.loads(HOST_JSON.read_text("utf-8"))
    size: int = host["extensions"]["queues"]["batchSize"]
    return size


async def run_timer(functions: dict[str, Any]) -> list[str]:
    """The registered timer function; returns what it set on its queue output binding."""
    out = OutStub()
    await functions["detect_abandoned_carts"].get_user_function()(TimerRequest(past_due=False), out)
    messages: list[str] = out.get() or []
    return messages


async def put_output_on_queue(queue: QueueClient, value: str | list[str]) -> None:
    """What the host does with a queue output binding's value: one queue message per list item."""
    for item in [value] if isinstance(value, str) else value:
        await queue.send_message(item)


async def receive_all(queue: QueueClient, *, visibility_timeout: int = HIDDEN_SECONDS) -> list[QueueMessage]:
    """Every visible message, each hidden for ``visibility_timeout`` seconds once received."""
    received: list[QueueMessage] = []
    while True:
        page = [
            m
            async for m in queue.receive_messages(
                messages_per_page=32, max_messages=32, visibility_timeout=visibility_timeout
            )
        ]
        if not page:
            return received
        received.extend(page)


def host_message(received: QueueMessage) -> HostQueueMessage:
    """The trigger's ``func.QueueMessage`` as the host builds it from a dequeued message (decoded body)."""
    assert isinstance(received.content, str)
    return HostQueueMessage(
        id=received.id,
        body=received.content.encode("utf-8"),
        dequeue_count=received.dequeue_count,
        expiration_time=received.expires_on,
        insertion_time=received.inserted_on,
        time_next_visible=received.next_visible_on,
        pop_receipt=received.pop_receipt,
    )


async def deliver(functions: dict[str, Any], received: QueueMessage) -> OutStub:
    """Call the registered queue function as the host does; returns its poison output binding."""
    poison = OutStub()
    await functions["notify_abandoned_cart"].get_user_function()(host_message(received), poison)
    return poison


async def deliver_and_complete(
    functions: dict[str, Any], queue: QueueClient, received: QueueMessage
) -> OutStub:
    """Deliver; when the function returns, delete the message, as the host does on success."""
    poison = await deliver(functions, received)
    await queue.delete_message(received)
    return poison


async def visible_count(queue: QueueClient) -> int:
    return len(await queue.peek_messages(max_messages=32))


async def wait_for_redelivery(queue: QueueClient, message_id: str) -> QueueMessage:
    """Poll (bounded) until the message is visible again and receive it."""
    deadline = asyncio.get_running_loop().time() + REAPPEAR_WITHIN_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        for received in await receive_all(queue, visibility_timeout=1):
            if received.id == message_id:
                return received
        await asyncio.sleep(0.2)
    pytest.fail(f"message {message_id} did not become visible again within {REAPPEAR_WITHIN_SECONDS} s")


# ----- checks

TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def assert_ids_only(body: str, sandbox: Sandbox) -> dict[str, Any]:
    message = json.loads(body)
    # Ids, and the detection run's trace context (version 2): nothing else.
    assert set(message) == {"v", "cartId", "cartVersion", "oun", "step", "traceparent"}, body
    assert message["v"] == 2
    assert TRACEPARENT.fullmatch(message["traceparent"]), body
    assert isinstance(message["cartId"], str) and message["cartId"]
    assert isinstance(message["cartVersion"], int) and not isinstance(message["cartVersion"], bool)
    assert isinstance(message["oun"], str) and message["oun"] == "128"
    assert isinstance(message["step"], int) and message["step"] >= 1
    assert "@" not in body
    leaks = [p.pattern for p in personal_data_patterns(sandbox) if p.search(body)]
    assert not leaks, f"personal data in a queue message: {leaks}"
    for customer in sandbox.data.customers.values():
        for name in (customer.first_name, customer.last_name):
            if name and len(name) >= 3:
                assert not re.search(rf"\b{re.escape(name)}\b", body, re.IGNORECASE), body
    return message


# ----- tests


def test_queue_clients_use_the_encoding_host_json_declares() -> None:
    host = json.loads(HOST_JSON.read_text("utf-8"))
    declared = host["extensions"]["queues"]["messageEncoding"]
    assert declared == "base64", "the Functions host's default; the bindings and these tests must agree"
    assert host_message_encoding() == declared
    policies = encoding_policies(declared)
    assert isinstance(policies["message_encode_policy"], TextBase64EncodePolicy)
    assert isinstance(policies["message_decode_policy"], TextBase64DecodePolicy)


async def test_messages_are_stored_base64_encoded(azurite_connection_string: str, queue: QueueClient) -> None:
    """What the client puts on the queue is what the host expects to find there: base64 of the JSON."""
    body = '{"v":1,"cartId":"c-1","cartVersion":3,"oun":"128","step":1}'
    await queue.send_message(body)
    async with raw_queue_client(azurite_connection_string, queue.queue_name) as raw:
        [stored] = await raw.peek_messages()
    assert stored.content == base64.b64encode(body.encode("utf-8")).decode("ascii")
    [received] = await receive_all(queue)
    assert received.content == body
    await queue.delete_message(received)


async def test_detected_carts_travel_through_the_queue_to_notify(
    sandbox: Sandbox,
    settings: Settings,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    queue: QueueClient,
    telemetry: LocalTelemetry,
) -> None:
    produced = await run_timer(registered_functions)
    assert produced, "the sandbox has abandoned carts in the default window"
    await put_output_on_queue(queue, produced)

    received = await receive_all(queue)
    assert Counter(m.content for m in received) == Counter(produced), "every message arrives, once, intact"
    assert all(m.dequeue_count == 1 for m in received)
    keys = [assert_ids_only(m.content, sandbox) for m in received]

    # The host runs up to batchSize invocations of one instance at once.
    batch = host_batch_size()
    for start in range(0, len(received), batch):
        chunk = received[start : start + batch]
        poisons = await asyncio.gather(*(deliver_and_complete(registered_functions, queue, m) for m in chunk))
        assert [p.get() for p in poisons] == [None] * len(chunk)
    assert await visible_count(queue) == 0
    assert await receive_all(queue) == []
    # Through the queue, each notify invocation went on with the detection run's trace.
    [run] = [span for span in telemetry.spans() if span.name == "detect_abandoned_carts"]
    invocations = [span for span in telemetry.spans() if span.name == "notify_abandoned_cart"]
    assert len(invocations) == len(received)
    assert {span.context.trace_id for span in invocations} == {run.context.trace_id}

    ledger = Ledger(runtime.store)
    outcomes: Counter[str] = Counter()
    for key in keys:
        found = await ledger.get(key["cartId"], key["cartVersion"], key["step"])
        assert found is not None, key
        entry = found[0]
        # Detection marks an older cart of a customer superseded when it records a newer one in
        # the same pass; notify leaves such an entry alone. Everything else ends previewed (the
        # preview provider sends nothing) or skipped.
        assert entry.status in {LedgerStatus.PREVIEWED, LedgerStatus.SKIPPED, LedgerStatus.SUPERSEDED}, (
            key,
            entry.status,
            entry.reason,
        )
        if entry.status is LedgerStatus.PREVIEWED:
            assert entry.reason is None and entry.provider_ids, key
        else:
            assert entry.reason, (key, entry.status)
        outcomes[entry.status.value] += 1
    assert outcomes["previewed"] > 0, f"some sandbox customers consent: {outcomes}"
    previews = await asyncio.to_thread(lambda: list(Path(settings.preview_dir).glob("*.json")))
    assert len(previews) == outcomes["previewed"], "the preview provider wrote one email per step"


async def test_malformed_message_goes_to_the_poison_queue(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    queue: QueueClient,
    poison_queue: QueueClient,
) -> None:
    body = "this is not JSON {"
    await queue.send_message(body)
    [received] = await receive_all(queue)

    poison = await deliver(registered_functions, received)
    assert poison.get() == body
    # The host writes the poison output binding's value, then completes (deletes) the trigger message.
    await put_output_on_queue(poison_queue, poison.get())
    await queue.delete_message(received)

    [poisoned] = await receive_all(poison_queue)
    assert poisoned.content == body, "the poison queue holds the message intact"
    await poison_queue.delete_message(poisoned)
    assert await visible_count(queue) == 0
    assert await receive_all(queue, visibility_timeout=1) == []


async def test_transient_failure_leaves_the_message_for_host_retries(
    sandbox: Sandbox,
    runtime: Runtime,
    registered_functions: dict[str, Any],
    queue: QueueClient,
    telemetry: LocalTelemetry,
) -> None:
    produced = await run_timer(registered_functions)
    ledger = Ledger(runtime.store)
    pending = []
    for body in produced:
        key = json.loads(body)
        found = await ledger.get(key["cartId"], key["cartVersion"], key["step"])
        if found is not None and found[0].status is LedgerStatus.PENDING:
            pending.append((body, key))
    assert pending, "detection left pending entries to notify"
    body, key = pending[0]
    await put_output_on_queue(queue, body)

    # Retail Server answers 503 on the cart route on every request until the fault is cleared.
    sandbox.faults.add(CART_ROUTE, status=503, times=None)
    [first] = await receive_all(queue, visibility_timeout=1)
    assert first.dequeue_count == 1
    with pytest.raises(UpstreamError) as caught:
        await deliver(registered_functions, first)
    assert caught.value.status == 503
    # The function raised: the host does not delete the message, it comes back after the timeout.
    second = await wait_for_redelivery(queue, first.id)
    assert second.content == body
    assert second.dequeue_count == 2
    with pytest.raises(UpstreamError):
        await deliver(registered_functions, second)
    found = await ledger.get(key["cartId"], key["cartVersion"], key["step"])
    assert found is not None
    assert found[0].status is LedgerStatus.FAILED
    assert found[0].reason and found[0].reason.endswith("503"), found[0].reason
    assert found[0].attempts == 2

    # Retail Server recovers: the next delivery completes and the message is deleted.
    sandbox.faults.clear()
    third = await wait_for_redelivery(queue, first.id)
    assert third.dequeue_count == 3
    poison = await deliver_and_complete(registered_functions, queue, third)
    assert poison.get() is None
    found = await ledger.get(key["cartId"], key["cartVersion"], key["step"])
    assert found is not None
    assert found[0].status in {LedgerStatus.PREVIEWED, LedgerStatus.SKIPPED}, (
        found[0].status,
        found[0].reason,
    )
    assert found[0].attempts == 3
    assert await receive_all(queue, visibility_timeout=1) == []


async def test_a_failed_run_puts_the_healthy_channels_messages_on_the_queue_itself(
    sandbox: Sandbox,
    tmp_path: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    registered_functions: dict[str, Any],
    queue: QueueClient,
    azurite_connection_string: str,
) -> None:
    """A channel failed, so the invocation fails and the host drops its output binding: the other
    channel's messages go on the queue through azure-storage-queue, in the host's encoding, and the
    queue trigger reads them like the binding's."""
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string)
    # 999 is no channel of this Retail Server: every search there answers 404.
    failing = settings.model_copy(update={"operating_unit_numbers": ["999", "128"]})
    runtime = Runtime.create(failing)
    set_runtime(runtime)
    try:
        out = OutStub()
        with pytest.raises(DetectionFailedError) as caught:
            await registered_functions["detect_abandoned_carts"].get_user_function()(
                TimerRequest(past_due=False), out
            )
        expected = caught.value.result.messages
        assert expected and out.get() is None
        received = await receive_all(queue)
        assert Counter(m.content for m in received) == Counter(expected)
        assert {assert_ids_only(m.content, sandbox)["oun"] for m in received} == {"128"}
        poison = await deliver_and_complete(registered_functions, queue, received[0])
        assert poison.get() is None
    finally:
        set_runtime(None)
        await runtime.close()
