"""A ``DocumentStore`` wrapper that counts what a caller costs the store.

``calls`` counts requests by operation. ``round_trips`` counts the waits a caller sits through:
calls issued together (concurrently) overlap in time and count once, because with a store that
answers in milliseconds they cost one latency, not one each. The counter goes up whenever a call
starts while no other call is in flight.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.state.forwarding import ForwardingStore, StoreCall
from shared.state.store import DocumentStore

_T = TypeVar("_T")


class CountingStore(ForwardingStore):
    def __init__(self, inner: DocumentStore) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.round_trips = 0
        self._in_flight = 0

    def reset(self) -> None:
        """Start counting afresh (the calls in flight still finish as they began)."""
        self.calls.clear()
        self.round_trips = 0

    async def _forward(self, call: StoreCall, request: Callable[[], Awaitable[_T]]) -> _T:
        self.calls[call.operation] += 1
        if self._in_flight == 0:
            self.round_trips += 1
        self._in_flight += 1
        try:
            # A request takes time on the wire: let the calls issued with this one start before
            # it answers, even where a backend (an in-process fake) could answer at once.
            await asyncio.sleep(0)
            return await request()
        finally:
            self._in_flight -= 1
