"""Detection through the timer function registered on ``function_app.app``, against the sandbox's
Retail Server over HTTPS, with the SQLite store."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from sandbox.server import Sandbox
from sandbox.telemetry import LocalTelemetry
from shared.abandoned_carts.blueprint import detection_config
from shared.abandoned_carts.detect import DetectionFailedError, Detector, skip_reason
from shared.retail_server.client import CartSearchCriteria, RetailServerError
from shared.retail_server.models import Cart
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from shared.state.counting import CountingStore
from shared.state.ledger import Ledger, LedgerStatus
from shared.state.records import RunSummaryStore, WatermarkStore
from tests.conftest import OutStub, sandbox_settings

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, now=NOW) as running:
        yield running


async def all_carts_in_window(runtime: Runtime, oun: str, start: datetime, end: datetime) -> list[Cart]:
    """Every cart in the window, read independently of the detector (one big page, offset paging)."""
    carts: list[Cart] = []
    while True:
        page = await runtime.retail.search_carts(
            oun, CartSearchCriteria(last_modified_from=start, last_modified_to=end), top=1000, skip=len(carts)
        )
        carts.extend(page)
        if not page:
            return carts


def expected_queued(carts: list[Cart]) -> set[str]:
    """The most recent eligible cart of each customer."""
    latest: dict[str, Cart] = {}
    for cart in carts:
        if skip_reason(cart) is not None:
            continue
        assert cart.customer_id and cart.modified_date_time
        best = latest.get(cart.customer_id)
        if best is None or (cart.modified_date_time, cart.id) > (best.modified_date_time, best.id):  # type: ignore[operator]
            latest[cart.customer_id] = cart
    return {cart.id for cart in latest.values()}


def window(settings: Settings) -> tuple[datetime, datetime]:
    return NOW - timedelta(minutes=settings.lookback_minutes), NOW - timedelta(
        minutes=settings.abandoned_after_minutes
    )


def cart_ids(messages: list[str]) -> list[str]:
    return [json.loads(m)["cartId"] for m in messages]


async def run_detector(runtime: Runtime, settings: Settings, now: datetime = NOW) -> Any:
    return await Detector(runtime.retail, runtime.store, detection_config(settings)).run(now)


def test_timer_function_metadata(registered_functions: dict[str, Any]) -> None:
    function = registered_functions["detect_abandoned_carts"]
    trigger = function.get_trigger()
    assert trigger.get_binding_name() == "timerTrigger"
    spec = json.loads(function.get_function_json())
    by_type = {b["type"]: b for b in spec["bindings"]}
    assert by_type["timerTrigger"]["schedule"] == "%DETECT_SCHEDULE%"
    assert by_type["timerTrigger"]["runOnStartup"] is False
    assert by_type["queue"]["queueName"] == "%DETECTION_QUEUE_NAME%"
    assert by_type["queue"]["connection"] == "AzureWebJobsStorage"
    assert by_type["queue"]["direction"] == "OUT"


async def assert_one_email_per_customer(runtime: Runtime, queued: list[str], carts: list[Cart]) -> None:
    """Every customer's newest eligible cart is queued; any older cart queued in the same pass was
    marked superseded when the newer one was recorded, so notify skips it: one email per customer."""
    assert len(queued) == len(set(queued)), "no cart queued twice"
    expected = expected_queued(carts)
    assert expected <= set(queued)
    ledger = Ledger(runtime.store)
    for cart_id in set(queued) - expected:
        entries = await ledger.entries_of_cart(cart_id)
        assert [e.status for e in entries] == [LedgerStatus.SUPERSEDED], cart_id


async def test_registered_timer_queues_ids_only(
    sandbox: Sandbox,
    settings: Settings,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    registered_functions: dict[str, Any],
) -> None:
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", lambda: NOW)
    out = OutStub()
    timer = registered_functions["detect_abandoned_carts"].get_user_function()
    await timer(TimerRequest(past_due=False), out)
    messages: list[str] = out.get()
    assert messages, "the sandbox has abandoned carts in the default window"
    for raw in messages:
        message = json.loads(raw)
        # Ids only, and the detection run's W3C trace context (version 2).
        assert set(message) == {"v", "cartId", "cartVersion", "oun", "step", "traceparent"}
        assert message["v"] == 2 and message["oun"] == "128" and message["step"] == 1
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", message["traceparent"])
    start, end = window(settings)
    await assert_one_email_per_customer(
        runtime, cart_ids(messages), await all_carts_in_window(runtime, "128", start, end)
    )
    # A run queues only each customer's newest cart, not older ones notify would find superseded.
    customers = [sandbox.data.carts[cart_id].customer_id for cart_id in cart_ids(messages)]
    assert len(customers) == len(set(customers))
    summaries = await RunSummaryStore(runtime.store).recent()
    assert summaries[0]["queued"] == len(messages)
    assert summaries[0]["channels"]["128"]["stopped"] == "complete"


async def test_a_page_costs_a_few_store_round_trips(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered_functions: dict[str, Any]
) -> None:
    """Per page: one read of the entries and pointers it touches, one write of the new ones, then
    the watermark (the superseded carts' entries voided alongside it, then written in one call):
    at most 4 waits on the store per page, far below 0.1 per cart found."""
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", lambda: NOW)
    settings = sandbox_settings(sandbox, tmp_path, lookback_minutes=4 * 24 * 60, max_carts_per_run=5000)
    runtime = Runtime.create(settings)
    counting = CountingStore(runtime.store)
    runtime.store = counting
    set_runtime(runtime)
    try:
        out = OutStub()
        await registered_functions["detect_abandoned_carts"].get_user_function()(
            TimerRequest(past_due=False), out
        )
        summary = (await RunSummaryStore(runtime.store).recent())[0]
    finally:
        set_runtime(None)
        await runtime.close()
    found, pages = summary["found"], summary["channels"]["128"]["pages"]
    assert found > 500 and summary["queued"] == len(out.get())
    # The run's own costs besides its pages: the watermark read, the sweep of due and stale
    # entries (three queries) and the run summary.
    assert counting.round_trips <= 4 * pages + 5, counting.calls
    assert counting.round_trips / found <= 0.1
    # No cart costs a call of its own: entries and pointers go in bulk, one watermark per page.
    assert counting.calls["read"] == 1 and counting.calls["create"] <= 1
    assert counting.calls["read_many"] == counting.calls["replace"] + counting.calls["create"] == pages - 1


async def test_keyset_paging_loses_and_repeats_nothing(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    # Small pages over a window holding hundreds of carts that share one ModifiedDateTime.
    settings = sandbox_settings(sandbox, tmp_path, cart_page_size=7, lookback_minutes=4 * 24 * 60)
    runtime = Runtime.create(settings)
    try:
        start, end = window(settings)
        carts = await all_carts_in_window(runtime, "128", start, end)
        instants = [c.modified_date_time for c in carts]
        assert max(instants.count(t) for t in set(instants)) >= 300, "the sandbox's same-instant block"
        result = await run_detector(runtime, settings)
        outcome = result.channels["128"]
        assert outcome.found == len(carts)
        assert outcome.queued + sum(outcome.skipped.values()) == len(carts)
        await assert_one_email_per_customer(runtime, cart_ids(result.messages), carts)
        again = await run_detector(runtime, settings, NOW + timedelta(minutes=1))
        assert again.messages == []
        assert again.channels["128"].found == 0
    finally:
        await runtime.close()


async def test_cap_stops_and_next_runs_continue(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    settings = sandbox_settings(sandbox, tmp_path, cart_page_size=20, max_carts_per_run=60)
    runtime = Runtime.create(settings)
    try:
        start, end = window(settings)
        carts = await all_carts_in_window(runtime, "128", start, end)
        assert len(carts) > 60
        queued: list[str] = []
        found = 0
        runs = 0
        while True:
            result = await run_detector(runtime, settings)
            runs += 1
            found += result.channels["128"].found
            queued.extend(cart_ids(result.messages))
            if result.channels["128"].stopped != "cap_reached":
                break
            assert result.channels["128"].found == 60
        assert found == len(carts)
        assert runs == -(-len(carts) // 60) or runs == -(-len(carts) // 60) + 1
        await assert_one_email_per_customer(runtime, queued, carts)
    finally:
        await runtime.close()


async def test_overlapping_runs_change_nothing_twice(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    settings = sandbox_settings(sandbox, tmp_path, cart_page_size=15)
    runtime = Runtime.create(settings)
    try:
        first, second = await asyncio.gather(run_detector(runtime, settings), run_detector(runtime, settings))
        queued = cart_ids(first.messages) + cart_ids(second.messages)
        start, end = window(settings)
        await assert_one_email_per_customer(
            runtime, queued, await all_carts_in_window(runtime, "128", start, end)
        )
    finally:
        await runtime.close()


async def test_window_and_downtime(sandbox: Sandbox, settings: Settings, runtime: Runtime) -> None:
    first = await run_detector(runtime, settings)
    assert first.channels["128"].window_from == NOW - timedelta(minutes=settings.lookback_minutes)
    # Three days later: the watermark is older than the lookback window, so the run starts at its floor.
    later = NOW + timedelta(days=3)
    result = await run_detector(runtime, settings, later)
    assert result.channels["128"].window_from == later - timedelta(minutes=settings.lookback_minutes)
    assert result.channels["128"].window_to == later - timedelta(minutes=settings.abandoned_after_minutes)


async def test_two_channels_keep_their_own_watermarks(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    settings = sandbox_settings(sandbox, tmp_path, operating_unit_numbers="128,067")
    runtime = Runtime.create(settings)
    try:
        result = await run_detector(runtime, settings)
        assert set(result.channels) == {"128", "067"}
        assert result.channels["067"].found > 0
        ouns = {json.loads(m)["oun"] for m in result.messages}
        assert ouns == {"128", "067"}
    finally:
        await runtime.close()


async def test_retries_then_typed_error_keeps_watermark(
    sandbox: Sandbox, settings: Settings, runtime: Runtime, telemetry: LocalTelemetry
) -> None:
    sandbox.faults.add("/rs/Commerce/Carts/Search", status=503, times=2)
    result = await run_detector(runtime, settings)
    assert result.channels["128"].found > 0, "two 503s are retried away"
    # One client span for the call, each retry an event on it with its attempt and its wait.
    [first] = [s for s in telemetry.spans() if s.name == "POST Carts/Search"][:1]
    attributes = dict(first.attributes or {})
    assert (attributes["connector.service"], attributes["connector.oun"]) == ("retail_server", "128")
    assert (attributes["http.response.status_code"], attributes["connector.attempts"]) == (200, 3)
    retries = [dict(e.attributes or {}) for e in first.events if e.name == "retry"]
    assert [(r["connector.attempt"], r["connector.reason"]) for r in retries] == [
        (1, "HTTP 503"),
        (2, "HTTP 503"),
    ]
    assert all(r["connector.retry_wait_s"] >= 0 for r in retries)
    kept, _ = await WatermarkStore(runtime.store).load("128")
    sandbox.faults.add("/rs/Commerce/Carts/Search", status=503, times=None)
    with pytest.raises(DetectionFailedError) as caught:
        await run_detector(runtime, settings, NOW + timedelta(minutes=30))
    cause = caught.value.__cause__
    assert isinstance(cause, RetailServerError) and cause.status == 503
    assert (await WatermarkStore(runtime.store).load("128"))[0] == kept


async def test_one_token_request_for_many_calls(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    settings = sandbox_settings(sandbox, tmp_path, cart_page_size=10)
    runtime = Runtime.create(settings)
    try:
        result = await run_detector(runtime, settings)
        assert result.channels["128"].pages > 10
        assert sandbox.stats.token_requests[sandbox.client_id] == 1
    finally:
        await runtime.close()


async def test_app_not_on_allow_list_gets_401(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.register_app("99999999-0000-0000-0000-000000000001", "other-secret", relying_party=False)
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", "other-secret")
    settings = sandbox_settings(sandbox, tmp_path, entra_client_id="99999999-0000-0000-0000-000000000001")
    runtime = Runtime.create(settings)
    try:
        with pytest.raises(DetectionFailedError) as caught:
            await run_detector(runtime, settings)
        cause = caught.value.__cause__
        assert isinstance(cause, RetailServerError) and cause.status == 401
        assert "relying party" in str(cause)
        # The 401 made the client drop its token and try once more with a fresh one.
        assert sandbox.stats.token_requests["99999999-0000-0000-0000-000000000001"] == 2
    finally:
        await runtime.close()
        set_runtime(None)


async def test_a_failing_channel_fails_the_run_after_the_others_are_saved(
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    registered_functions: dict[str, Any],
    log_privacy_guard: Any,
    telemetry: LocalTelemetry,
) -> None:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage__queueServiceUri", raising=False)
    # 999 is no channel of this Retail Server: every search there answers 404.
    settings = sandbox_settings(sandbox, tmp_path, operating_unit_numbers="999,128")
    runtime = Runtime.create(settings)
    set_runtime(runtime)
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", lambda: NOW)
    try:
        out = OutStub()
        timer = registered_functions["detect_abandoned_carts"].get_user_function()
        # A failed invocation, so the platform's failure rate and alerts see it.
        with pytest.raises(DetectionFailedError) as caught:
            await timer(TimerRequest(past_due=False), out)
        assert isinstance(caught.value.__cause__, RetailServerError)
        # The other channel's progress is saved and its messages are kept for the queue.
        summary = (await RunSummaryStore(runtime.store).recent())[0]
        assert summary["status"] == "failed"
        assert summary["channels"]["999"]["stopped"] == "error:RetailServerError"
        assert summary["channels"]["128"]["stopped"] == "complete"
        messages = caught.value.result.messages
        assert messages and {json.loads(m)["oun"] for m in messages} == {"128"}
        watermark, _ = await WatermarkStore(runtime.store).load("128")
        assert watermark is not None
        # No queue connection here: the messages wait for a later run's sweep, and the log says so.
        assert any("could not be queued directly" in line for line in log_privacy_guard.lines)
        [run] = [span for span in telemetry.spans() if span.name == "detect_abandoned_carts"]
        assert not run.status.is_ok
        failed = [s for s in telemetry.spans() if s.name == "detect channel" and not s.status.is_ok]
        assert [dict(s.attributes or {})["connector.oun"] for s in failed] == ["999"]
    finally:
        set_runtime(None)
        await runtime.close()


async def test_every_channel_failing_fails_the_run(
    sandbox: Sandbox, settings: Settings, runtime: Runtime
) -> None:
    sandbox.faults.add("/rs/Commerce/Carts/Search", status=503, times=None)
    with pytest.raises(DetectionFailedError) as caught:
        await run_detector(runtime, settings)
    assert isinstance(caught.value.__cause__, RetailServerError)
    watermark, _ = await WatermarkStore(runtime.store).load("128")
    assert watermark is None, "nothing was read, so the next run starts from the window's start"


async def test_the_cap_is_shared_fairly_between_channels(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    settings = sandbox_settings(sandbox, tmp_path, operating_unit_numbers="128,067", max_carts_per_run=40)
    runtime = Runtime.create(settings)
    try:
        result = await run_detector(runtime, settings)
        assert result.channels["128"].found == 20 and result.channels["128"].stopped == "cap_reached"
        assert result.channels["067"].found == 20 and result.channels["067"].stopped == "cap_reached"
    finally:
        await runtime.close()


async def test_a_suspended_cart_is_skipped(sandbox: Sandbox, settings: Settings, runtime: Runtime) -> None:
    customer = next(c for c in sandbox.data.customers.values() if c.email)
    cart = sandbox.data.add_cart(
        customer_id=customer.account_number, modified=NOW - timedelta(hours=2), cart_status_value=2
    )
    result = await run_detector(runtime, settings)
    assert cart.id not in cart_ids(result.messages)
    assert result.channels["128"].skipped["suspended"] == 1


async def run_timer(
    registered_functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch, at: datetime
) -> list[str]:
    """One run of the registered timer function at ``at``; the cart ids it queued."""
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", lambda: at)
    out = OutStub()
    await registered_functions["detect_abandoned_carts"].get_user_function()(
        TimerRequest(past_due=False), out
    )
    return cart_ids(out.get() or [])


async def test_carts_on_both_bounds_with_sub_millisecond_parts(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registered_functions: dict[str, Any]
) -> None:
    """Retail Server compares the window's bounds at its full precision (100-ns ticks). Carts inside
    the From bound's millisecond, a bulk update at one seven-digit instant there (more carts than a
    page), and carts on either side of the To bound are each queued once over two runs; a cart a
    tick before the From bound is outside the window and never queued."""
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    settings = sandbox_settings(sandbox, tmp_path, cart_page_size=3)
    runtime = Runtime.create(settings)
    set_runtime(runtime)
    # Ten days on, every generated cart is older than the window: only the carts below are in it.
    first_run = NOW + timedelta(days=10, microseconds=123_456)
    second_run = first_run + timedelta(minutes=15)
    floor = first_run - timedelta(minutes=settings.lookback_minutes)
    edge = first_run - timedelta(minutes=settings.abandoned_after_minutes)
    customers = iter(sandbox.data.customers)

    def cart_at(base: datetime, offset_100ns: int) -> str:
        modified = base + timedelta(microseconds=offset_100ns // 10)
        cart = sandbox.data.add_cart(
            customer_id=next(customers), modified=modified, modified_100ns=offset_100ns % 10
        )
        return cart.id

    try:
        before_floor = cart_at(floor, -5)
        on_floor = {cart_at(floor, offset) for offset in (0, 5, 1_000, 2_000)}
        bulk = {cart_at(floor, 3_005) for _ in range(4)}
        on_edge = {cart_at(edge, -5), cart_at(edge, 0)}
        past_edge = cart_at(edge, 5)
        wire = sandbox.data.carts[past_edge].wire()["ModifiedDateTime"]
        assert len(wire.rpartition(".")[2].rstrip("Z")) == 7, "seven fraction digits on the wire"

        first = await run_timer(registered_functions, monkeypatch, first_run)
        second = await run_timer(registered_functions, monkeypatch, second_run)

        assert len(first) == len(set(first))
        assert set(first) == on_floor | bulk | on_edge, "everything inside the first run's bounds"
        assert second == [past_edge], "a tick past the To bound waits for the next run, then comes once"
        assert before_floor not in first + second
    finally:
        set_runtime(None)
        await runtime.close()


@pytest.mark.parametrize(
    ("carts", "found"),
    [
        # A share fixed in channel order (10 // 3, then a half of what is left, then the rest)
        # found 6, 6 and 8 of the 10 carts the cap allows.
        ((7, 3, 0), (7, 3, 0)),
        ((12, 1, 2), (7, 1, 2)),
        ((9, 9, 2), (5, 3, 2)),
    ],
)
async def test_the_cap_goes_round_until_it_or_the_carts_run_out(
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    registered_functions: dict[str, Any],
    carts: tuple[int, int, int],
    found: tuple[int, int, int],
) -> None:
    """MAX_CARTS_PER_RUN=10 over three channels: what a quiet channel leaves goes to the busy ones."""
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    sandbox.data.channels["300"] = replace(sandbox.data.channels["128"], oun="300", channel_id=5637144600)
    ouns = ("128", "067", "300")
    settings = sandbox_settings(
        sandbox, tmp_path, operating_unit_numbers=",".join(ouns), max_carts_per_run=10, cart_page_size=4
    )
    runtime = Runtime.create(settings)
    set_runtime(runtime)
    # Ten days on, every generated cart is older than the window: only the carts below are in it.
    at = NOW + timedelta(days=10)
    accounts = list(sandbox.data.customers)
    for oun, count in zip(ouns, carts, strict=True):
        for index in range(count):
            sandbox.data.add_cart(
                oun=oun, customer_id=accounts[index], modified=at - timedelta(hours=2, seconds=index)
            )
    try:
        first = await run_timer(registered_functions, monkeypatch, at)
        summary = (await RunSummaryStore(runtime.store).recent())[0]
        assert tuple(summary["channels"][oun]["found"] for oun in ouns) == found
        assert summary["found"] == min(10, sum(carts))
        second = await run_timer(registered_functions, monkeypatch, at + timedelta(minutes=15))
        later = (await RunSummaryStore(runtime.store).recent())[0]
        assert summary["found"] + later["found"] == sum(carts), "the next run takes the rest"
        assert len(first + second) == len(set(first + second)), "nothing queued twice"
    finally:
        set_runtime(None)
        await runtime.close()
