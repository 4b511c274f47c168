"""The Coalescer and SingleFlight helpers: one upstream call shared by concurrent callers, and a
cancelled caller cancels only its own wait, never the call the others are waiting for."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from shared.abandoned_carts.enrich import Coalescer, SingleFlight


class FakeFetch:
    """Records each batch; answers every key with ``value-<key>`` once ``release`` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, group: str, keys: list[int]) -> Mapping[int, str]:
        self.calls.append((group, keys))
        self.started.set()
        await self.release.wait()
        return {key: f"value-{key}" for key in keys}


async def test_concurrent_gets_share_one_batch() -> None:
    fetch = FakeFetch()
    fetch.release.set()
    coalescer: Coalescer[str, int, str] = Coalescer(fetch, window=0.01)
    results = await asyncio.gather(coalescer.get("oun", 1), coalescer.get_many("oun", [2, 1]))
    assert results == ["value-1", {2: "value-2", 1: "value-1"}]
    assert fetch.calls == [("oun", [1, 2])]


@pytest.mark.parametrize("while_", ["collecting", "fetching"])
@pytest.mark.parametrize("cancelled", [0, 1], ids=["first caller cancelled", "second caller cancelled"])
async def test_cancelling_one_caller_leaves_the_batch_to_the_others(while_: str, cancelled: int) -> None:
    fetch = FakeFetch()
    coalescer: Coalescer[str, int, str] = Coalescer(fetch, window=0.05)
    callers = [
        asyncio.create_task(coalescer.get("oun", 1)),
        asyncio.create_task(coalescer.get_many("oun", [2])),
    ]
    if while_ == "fetching":
        await fetch.started.wait()
    else:
        await asyncio.sleep(0)  # both have joined the open batch; the window has not passed
        assert not fetch.started.is_set()
    callers[cancelled].cancel()
    fetch.release.set()
    expected: list[object] = ["value-1", {2: "value-2"}]
    assert await callers[1 - cancelled] == expected[1 - cancelled]
    with pytest.raises(asyncio.CancelledError):
        await callers[cancelled]
    assert fetch.calls == [("oun", [1, 2])]


async def test_a_failed_batch_reaches_every_caller() -> None:
    async def failing(group: str, keys: list[int]) -> Mapping[int, str]:
        raise ConnectionError("upstream down")

    coalescer: Coalescer[str, int, str] = Coalescer(failing, window=0.01)
    results = await asyncio.gather(coalescer.get("oun", 1), coalescer.get("oun", 2), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]


async def test_a_full_batch_is_sent_at_once_and_the_rest_go_in_the_next() -> None:
    fetch = FakeFetch()
    fetch.release.set()
    coalescer: Coalescer[str, int, str] = Coalescer(fetch, window=60, max_batch=2)
    first = asyncio.create_task(coalescer.get_many("oun", [1, 2]))
    assert await asyncio.wait_for(first, 5) == {1: "value-1", 2: "value-2"}
    assert fetch.calls == [("oun", [1, 2])]


@pytest.mark.parametrize("cancelled", [0, 1], ids=["first caller cancelled", "second caller cancelled"])
async def test_single_flight_cancelling_one_caller_leaves_the_call_to_the_others(cancelled: int) -> None:
    calls = 0
    release = asyncio.Event()

    async def call() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "channel"

    flight: SingleFlight[str, str] = SingleFlight()
    callers = [asyncio.create_task(flight.run("oun", call)) for _ in range(2)]
    await asyncio.sleep(0)
    callers[cancelled].cancel()
    release.set()
    assert await callers[1 - cancelled] == "channel"
    with pytest.raises(asyncio.CancelledError):
        await callers[cancelled]
    assert calls == 1
