"""MAX_RESPONSE_BYTES through the registered timer function, against the sandbox's Retail Server:
a page over the cap is read again in smaller pages; a cart over it fails with an error naming the
setting, and nothing larger than the cap is ever read."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from sandbox.data import ticks
from sandbox.server import Sandbox
from shared.abandoned_carts.detect import DetectionFailedError
from shared.http import UpstreamResponseTooLargeError
from shared.runtime import Runtime, set_runtime
from shared.state.records import RunSummaryStore, WatermarkStore
from tests.conftest import OutStub, sandbox_settings

NOW = datetime.now(UTC).replace(microsecond=0)
CAP = 64 * 1024
SEARCH = "/rs/Commerce/Carts/Search"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, now=NOW) as running:
        yield running


@pytest.fixture
async def capped(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runtime]:
    """The process runtime with a 64 KiB cap and the default page of 100 carts (~160 KB here)."""
    monkeypatch.setenv("ENTRA_CLIENT_SECRET", sandbox.client_secret)
    runtime = Runtime.create(sandbox_settings(sandbox, tmp_path, max_response_bytes=CAP))
    set_runtime(runtime)
    try:
        yield runtime
    finally:
        set_runtime(None)
        await runtime.close()


async def run_timer(
    registered_functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch, at: datetime
) -> list[str]:
    monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", lambda: at)
    out = OutStub()
    await registered_functions["detect_abandoned_carts"].get_user_function()(
        TimerRequest(past_due=False), out
    )
    return [json.loads(message)["cartId"] for message in out.get() or []]


def carts_in_window(sandbox: Sandbox, runtime: Runtime, at: datetime) -> int:
    settings = runtime.settings
    start = ticks(at - timedelta(minutes=settings.lookback_minutes))
    end = ticks(at - timedelta(minutes=settings.abandoned_after_minutes))
    return sum(
        1
        for cart in sandbox.data.carts_in("128")
        if cart.cart_type_value == 1 and cart.customer_id and start <= cart.modified_ticks <= end
    )


async def test_an_oversize_page_is_read_again_in_smaller_pages(
    sandbox: Sandbox,
    capped: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    registered_functions: dict[str, Any],
    log_privacy_guard: Any,
) -> None:
    # The first answer is a 256 MiB stream with no Content-Length; the next ones are real pages.
    stream = sandbox.faults.add(SEARCH, stream_bytes=256 * 1024 * 1024)
    queued = await run_timer(registered_functions, monkeypatch, NOW)
    assert stream.hits == 1
    assert stream.bytes_sent < 32 * 1024 * 1024, (
        "the client hung up near the cap, it did not drain the stream"
    )
    summary = (await RunSummaryStore(capped.store).recent())[0]
    channel = summary["channels"]["128"]
    assert channel["stopped"] == "complete"
    assert channel["found"] == carts_in_window(sandbox, capped, NOW) > 100
    assert queued and len(queued) == len(set(queued))
    halvings = [line for line in log_privacy_guard.lines if "over MAX_RESPONSE_BYTES" in line]
    # 100 carts (~160 KB) and 50 (~80 KB) are over 64 KiB; 25 fit.
    assert [line.rsplit("reading ", 1)[1] for line in halvings] == [
        "50 carts a page",
        "25 carts a page",
    ]


async def test_a_cart_over_the_cap_fails_the_run_naming_the_setting(
    sandbox: Sandbox, capped: Runtime, monkeypatch: pytest.MonkeyPatch, registered_functions: dict[str, Any]
) -> None:
    """A cart of 1,000 lines is about 450 KB: no page size helps, the operator must raise the cap."""
    later = NOW + timedelta(days=10)  # every generated cart is older than this window
    product = next(iter(sandbox.data.products))
    sandbox.data.add_cart(
        customer_id="004001", modified=later - timedelta(hours=2), lines=[(product, 1)] * 1000
    )
    with pytest.raises(DetectionFailedError) as failed:
        await run_timer(registered_functions, monkeypatch, later)
    caught = failed.value.__cause__
    assert isinstance(caught, UpstreamResponseTooLargeError)
    assert caught.declared is not None, "refused on its Content-Length, before reading"
    message = str(caught)
    assert "MAX_RESPONSE_BYTES" in message and "Retail Server" in message and "Carts/Search" in message
    assert "api-version" not in message and "$top" not in message, "no query in the error"
    summary = (await RunSummaryStore(capped.store).recent())[0]
    assert summary["channels"]["128"]["stopped"] == "error:UpstreamResponseTooLargeError"
    watermark, _ = await WatermarkStore(capped.store).load("128")
    assert watermark is None, "the next run starts before that cart again"
