"""A state store that answers like a remote one: a delay per round trip, every round trip counted.

``LatencyStore`` wraps any ``DocumentStore`` and delegates every method by name, so bulk methods the
protocol gains later pass through (and are measured) without a change here. Each awaited call is
one round trip: it waits ``delay`` seconds, then runs the inner call. A bulk call counts once.

Two counts, because concurrency changes what a round trip costs the caller:

- ``calls``: every round trip, concurrent ones each counted (what the database serves and bills).
- ``waves``: round trips on the critical path. A call that starts while another is in flight joins
  that one's wave and is not counted again, so a set of writes issued together counts once.

Concurrent invocations share the store, so their waves blur together. ``message()`` follows one
invocation instead: the calls made in its task (and the tasks it gathers, which inherit its
context) are counted as that invocation's own waves, and an entry it writes as ``sent`` marks it
as a sent message.

Each call also gets a request-unit estimate from Cosmos DB's published cost model (see
``request_units`` and benchmarks/README.md), from the operation and the document sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, is_dataclass
from typing import Any

# learn.microsoft.com/azure/cosmos-db/understand-request-unit-consumption, "Document size":
# (size in KB, point read RU, write RU) with the default (consistent, all paths) indexing policy.
_SIZE_TABLE = (
    (1, 1.00, 4.95),
    (2, 1.04, 6.29),
    (4, 1.14, 6.67),
    (8, 1.33, 7.04),
    (16, 1.67, 9.52),
    (32, 2.19, 11.23),
    (64, 4.76, 22.67),
    (128, 9.95, 48.19),
)
# Assumptions (not in the published table): a query costs a fixed 2.8 RU plus a point read per
# document returned; a point read that finds nothing costs 1 RU; a delete costs a 1 KB write.
QUERY_BASE_RU = 2.8
MISS_RU = 1.0
DELETE_RU = 4.95
_READS = ("read", "get", "fetch", "load")
_CHEAP = frozenset({"close"})


def _interpolate(size_bytes: int, column: int) -> float:
    kb = max(size_bytes, 1) / 1024
    previous = _SIZE_TABLE[0]
    if kb <= previous[0]:
        return previous[column]
    for row in _SIZE_TABLE[1:]:
        if kb <= row[0]:
            share = (kb - previous[0]) / (row[0] - previous[0])
            return previous[column] + share * (row[column] - previous[column])
        previous = row
    last = _SIZE_TABLE[-1]
    return last[column] * kb / last[0]


def read_ru(size_bytes: int) -> float:
    return _interpolate(size_bytes, 1)


def write_ru(size_bytes: int) -> float:
    return _interpolate(size_bytes, 2)


def _size(body: Mapping[str, Any]) -> int:
    # Cosmos stores the body plus its system properties (id, pk, _etag, _ts...): about 150 bytes.
    return len(json.dumps(body, default=str, separators=(",", ":"))) + 150


def _documents(value: Any) -> list[Any]:
    """The documents in a result: one, a list of them, or a mapping of them."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return []
    if hasattr(value, "body") and isinstance(value.body, Mapping):
        return [value]
    if isinstance(value, Mapping):
        return [d for v in value.values() for d in _documents(v)]
    if isinstance(value, Iterable):
        return [d for v in value for d in _documents(v)]
    return []


def _bodies(value: Any, depth: int = 0) -> list[Mapping[str, Any]]:
    """The document bodies among a call's arguments (for a bulk write: one per item)."""
    if depth > 4 or value is None or isinstance(value, (bool, int, float, str, bytes)):
        return []
    if isinstance(value, Mapping):
        return [value]
    if is_dataclass(value) and not isinstance(value, type):
        # The body attribute itself: asdict() would deep-copy every operation, a cost the
        # measurement would add to the figures it measures.
        body = getattr(value, "body", None)
        return [body] if isinstance(body, Mapping) else []
    if isinstance(value, Iterable):
        return [b for item in value for b in _bodies(item, depth + 1)]
    return []


def request_units(
    method: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any, bodies: list[Mapping[str, Any]]
) -> float:
    """The estimated charge of one call: reads by the size of what came back, writes by the size of
    what went in (``bodies``, from :func:`_bodies`), a bulk call as the sum of its items (a
    transactional batch is charged so)."""
    name = method.lower()
    if "query" in name:
        return QUERY_BASE_RU + sum(read_ru(_size(d.body)) for d in _documents(result))
    if name.startswith(_READS) or "read" in name:
        found = _documents(result)
        asked = max(1, _asked(args, kwargs))
        return sum(read_ru(_size(d.body)) for d in found) + MISS_RU * max(0, asked - len(found))
    if "delete" in name:
        return DELETE_RU * max(1, _asked(args, kwargs))
    return sum(write_ru(_size(b)) for b in bodies) if bodies else write_ru(1024)


def _asked(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """How many documents a read asked for: one, or the length of a list of keys."""
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, (list, tuple, set, frozenset)) and value:
            return len(value)
    return 1


@dataclass
class MessageTrips:
    """One invocation's round trips: all of them, and those on its own critical path."""

    calls: int = 0
    waves: int = 0
    sent: bool = False
    in_flight: int = 0


_MESSAGE: contextvars.ContextVar[MessageTrips | None] = contextvars.ContextVar("message_trips", default=None)


class LatencyStore:
    """``inner`` with ``delay`` seconds per round trip, and the counts described above."""

    def __init__(self, inner: Any, *, delay: float) -> None:
        self._inner = inner
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.waves = 0
        self.ru: dict[str, float] = {}
        self.waiting_seconds = 0.0
        self._in_flight = 0

    def reset(self) -> None:
        self.calls.clear()
        self.ru.clear()
        self.waves = 0
        self.waiting_seconds = 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "round_trips": sum(self.calls.values()),
            "critical_path_round_trips": self.waves,
            "round_trips_by_operation": dict(self.calls.most_common()),
            "request_units": round(sum(self.ru.values()), 1),
            "request_units_by_operation": {
                k: round(v, 1) for k, v in sorted(self.ru.items(), key=lambda kv: -kv[1])
            },
            "store_busy_seconds": round(self.waiting_seconds, 3),
        }

    @contextlib.contextmanager
    def message(self) -> Iterator[MessageTrips]:
        """Count the round trips of the invocation run inside this block on their own."""
        trips = MessageTrips()
        token = _MESSAGE.set(trips)
        try:
            yield trips
        finally:
            _MESSAGE.reset(token)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name in _CHEAP or name.startswith("_") or not inspect.iscoroutinefunction(target):
            return target

        async def round_trip(*args: Any, **kwargs: Any) -> Any:
            if self._in_flight == 0:
                self.waves += 1
            self._in_flight += 1
            # Walked once: the sent mark and the charge both read the bodies a call writes.
            bodies = _bodies(list(args) + list(kwargs.values()))
            trips = _MESSAGE.get()
            if trips is not None:
                trips.calls += 1
                if trips.in_flight == 0:
                    trips.waves += 1
                trips.in_flight += 1
                trips.sent = trips.sent or any(body.get("status") == "sent" for body in bodies)
            started = time.perf_counter()
            # A refused call (a conflict, a failed precondition) is a round trip too; Cosmos
            # charges little for it: counted as a miss.
            charge = MISS_RU
            try:
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                result = await target(*args, **kwargs)
                charge = request_units(name, args, kwargs, result, bodies)
                return result
            finally:
                self._in_flight -= 1
                if trips is not None:
                    trips.in_flight -= 1
                self.waiting_seconds += time.perf_counter() - started
                self.calls[name] += 1
                self.ru[name] = self.ru.get(name, 0.0) + charge

        return round_trip
