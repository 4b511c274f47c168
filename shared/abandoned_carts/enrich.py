"""Batched, coalesced look-ups of customers, products, images and channel data, with TTL caches.

The host runs several queue messages of one process at once (``batchSize`` in host.json). Rather
than one ``Customers/GetByAccountNumbers`` and one ``Products/GetByIds`` call each, concurrent
invocations put their ids into a :class:`Coalescer` batch that is sent once a short window has
passed (``COALESCE_WINDOW_MS``) or the batch is full. Products, media locations and the channel
configuration change rarely and are cached for a while; customers are never cached, because a
customer's consent can change at any moment.

Media locations are optional (DESIGN invariant 8): :meth:`Enricher.media_or_none` answers None when
the look-up fails (404 for an unpublished product, 5xx, a timeout, an unreadable answer), remembers
the failure for a short while so a broken media route is not asked again for every email, and warns
once per product per process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.concurrency import SingleFlight, retrieve_failure, unwrap
from shared.http import UpstreamConnectionError, UpstreamError, UpstreamTimeoutError
from shared.retail_server.client import (
    RetailServerClient,
    RetailServerContractError,
    RetailServerUnreadableError,
)
from shared.retail_server.models import Cart, ChannelConfiguration, Customer, MediaLocation, SimpleProduct

logger = logging.getLogger(__name__)

G = TypeVar("G", bound=Hashable)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Retail Server documents no limit on ids per call; keep requests and $top modest.
MAX_BATCH = 100
# A failed optional look-up is not repeated for this long (nor longer than the product cache).
OPTIONAL_FAILURE_TTL_SECONDS = 60.0


class TtlCache(Generic[K, V]):
    """A small in-process cache whose entries expire ``ttl`` seconds after they were stored."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000):
        self._ttl = ttl
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= self._clock():
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if self._ttl <= 0:
            return
        if len(self._entries) >= self._max_entries:
            # Oldest insertion first: dicts keep insertion order.
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (self._clock() + self._ttl, value)


class OnceLog(Generic[K]):
    """Remembers which keys were reported already, so a warning goes out once per key per process;
    bounded, forgetting the oldest key when full (which may then be reported once more)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max_entries = max_entries
        self._seen: dict[K, None] = {}

    def first_time(self, key: K) -> bool:
        if key in self._seen:
            return False
        if len(self._seen) >= self._max_entries:
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = None
        return True


def failure_text(exc: BaseException) -> str:
    """What went wrong with a look-up, for a log line: a status or a kind, never a body."""
    if isinstance(exc, RetailServerContractError | RetailServerUnreadableError):
        return "unreadable answer"
    if isinstance(exc, UpstreamError) and exc.status is not None:
        return f"HTTP {exc.status}"
    if isinstance(exc, UpstreamTimeoutError):
        return "timeout"
    if isinstance(exc, UpstreamConnectionError):
        return "connection failed"
    return type(exc).__name__


class _Batch(Generic[K, V]):
    """The keys of one upstream call, and the task that sends it once ``closed`` is set."""

    def __init__(self) -> None:
        self.keys: dict[K, None] = {}
        self.closed = asyncio.Event()
        self.task: asyncio.Task[Mapping[K, V]] | None = None


class Coalescer(Generic[G, K, V]):
    """Collect the keys asked for within ``window`` seconds, per group, and fetch them in one call.

    ``fetch(group, keys)`` returns what it found; missing keys are simply absent. A failure of the
    shared call is raised to every caller of that batch. Each batch runs as its own task that the
    callers await shielded, so cancelling one caller never cancels the batch for the others.
    """

    def __init__(
        self,
        fetch: Callable[[G, list[K]], Awaitable[Mapping[K, V]]],
        *,
        window: float,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._fetch = fetch
        self._window = window
        self._max_batch = max_batch
        self._open: dict[G, _Batch[K, V]] = {}
        self._tasks: set[asyncio.Task[Mapping[K, V]]] = set()

    async def get_many(self, group: G, keys: Iterable[K]) -> dict[K, V]:
        wanted = list(dict.fromkeys(keys))
        results: dict[K, V] = {}
        waits: dict[asyncio.Task[Mapping[K, V]], None] = {}
        for chunk_start in range(0, len(wanted), self._max_batch):
            chunk = wanted[chunk_start : chunk_start + self._max_batch]
            while chunk:
                batch = self._batch_for(group)
                room = self._max_batch - len(batch.keys)
                taken, chunk = chunk[:room], chunk[room:]
                batch.keys.update(dict.fromkeys(taken))
                assert batch.task is not None
                waits[batch.task] = None
                if len(batch.keys) >= self._max_batch:
                    self._close(group, batch)
        for found in await asyncio.gather(*(asyncio.shield(task) for task in waits)):
            for key in wanted:
                if key in found:
                    results[key] = found[key]
        return results

    async def get(self, group: G, key: K) -> V | None:
        return (await self.get_many(group, [key])).get(key)

    def _batch_for(self, group: G) -> _Batch[K, V]:
        batch = self._open.get(group)
        if batch is None:
            batch = _Batch()
            self._open[group] = batch
            task = asyncio.create_task(self._run(group, batch))
            batch.task = task
            self._tasks.add(task)
            task.add_done_callback(self._finished)
            asyncio.get_running_loop().call_later(self._window, self._close, group, batch)
        return batch

    def _close(self, group: G, batch: _Batch[K, V]) -> None:
        """No more keys join this batch: it is sent now."""
        if self._open.get(group) is batch:
            del self._open[group]
        batch.closed.set()

    async def _run(self, group: G, batch: _Batch[K, V]) -> Mapping[K, V]:
        await batch.closed.wait()
        return await self._fetch(group, list(batch.keys))

    def _finished(self, task: asyncio.Task[Mapping[K, V]]) -> None:
        self._tasks.discard(task)
        retrieve_failure(task)


@dataclass(frozen=True)
class CartCatalog:
    """What Retail Server knows about a cart's channel and products, for its email."""

    channel: ChannelConfiguration
    channel_id: int
    # The products found, by record id (a product the channel does not sell is absent).
    products: dict[int, SimpleProduct]
    # Media locations per found product; None where the optional look-up failed.
    media: dict[int, list[MediaLocation] | None]


class Enricher:
    """What the notify service needs from Retail Server, batched and cached, one per process."""

    def __init__(
        self,
        retail: RetailServerClient,
        *,
        window_seconds: float,
        product_ttl_seconds: float,
        channel_ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._retail = retail
        self._customers: Coalescer[str, str, Customer] = Coalescer(
            self._fetch_customers, window=window_seconds
        )
        self._products: Coalescer[tuple[str, int], int, SimpleProduct] = Coalescer(
            self._fetch_products, window=window_seconds
        )
        self._product_cache: TtlCache[tuple[str, int, int], SimpleProduct] = TtlCache(
            product_ttl_seconds, clock=clock
        )
        self._media_cache: TtlCache[tuple[str, int, int], list[MediaLocation]] = TtlCache(
            product_ttl_seconds, clock=clock
        )
        self._media_failures: TtlCache[tuple[str, int, int], str] = TtlCache(
            min(product_ttl_seconds, OPTIONAL_FAILURE_TTL_SECONDS), clock=clock
        )
        self._media_warned: OnceLog[int] = OnceLog()
        self._channel_cache: TtlCache[str, ChannelConfiguration] = TtlCache(channel_ttl_seconds, clock=clock)
        # One call in flight per key, shared by whoever asks for the same thing meanwhile.
        self._channel_calls: SingleFlight[str, ChannelConfiguration] = SingleFlight()
        self._media_calls: SingleFlight[tuple[str, int, int], list[MediaLocation]] = SingleFlight()

    async def catalog(self, oun: str, cart: Cart) -> CartCatalog:
        """The channel configuration, the products and their media for ``cart``, fetched together:
        the channel and the products at once (when the cart names its channel), then the media of
        the products found. A failure of the channel is raised before one of the products."""
        product_ids = [line.product_id for line in cart.active_lines if line.product_id is not None]
        if cart.channel_id:
            settled = await asyncio.gather(
                self.channel(oun), self.products(oun, cart.channel_id, product_ids), return_exceptions=True
            )
            channel, channel_id, products = unwrap(settled[0]), cart.channel_id, unwrap(settled[1])
        else:
            channel = await self.channel(oun)
            channel_id = channel.record_id
            products = await self.products(oun, channel_id, product_ids)
        found = [pid for pid in dict.fromkeys(product_ids) if pid in products]
        media = await asyncio.gather(*(self.media_or_none(oun, channel_id, pid) for pid in found))
        return CartCatalog(channel, channel_id, products, dict(zip(found, media, strict=True)))

    async def customer(self, oun: str, account_number: str) -> Customer | None:
        return await self._customers.get(oun, account_number)

    async def products(
        self, oun: str, channel_id: int, product_ids: Sequence[int]
    ) -> dict[int, SimpleProduct]:
        found: dict[int, SimpleProduct] = {}
        missing: list[int] = []
        for product_id in dict.fromkeys(product_ids):
            cached = self._product_cache.get((oun, channel_id, product_id))
            if cached is not None:
                found[product_id] = cached
            else:
                missing.append(product_id)
        if missing:
            fetched = await self._products.get_many((oun, channel_id), missing)
            for product_id, product in fetched.items():
                self._product_cache.put((oun, channel_id, product_id), product)
            found.update(fetched)
        return found

    async def media(self, oun: str, channel_id: int, product_id: int) -> list[MediaLocation]:
        key = (oun, channel_id, product_id)
        cached = self._media_cache.get(key)
        if cached is not None:
            return cached
        media = await self._media_calls.run(
            key, lambda: self._retail.get_media_locations(oun, channel_id, product_id)
        )
        self._media_cache.put(key, media)
        return media

    async def media_or_none(self, oun: str, channel_id: int, product_id: int) -> list[MediaLocation] | None:
        """The product's media locations, or None when they cannot be had: the email then goes
        without what they give (the image and its alt text), and says so as ``degraded``."""
        key = (oun, channel_id, product_id)
        if self._media_failures.get(key) is not None:
            return None
        try:
            return await self.media(oun, channel_id, product_id)
        except Exception as exc:  # any failure of an optional look-up degrades, none fails the email
            reason = failure_text(exc)
            self._media_failures.put(key, reason)
            if self._media_warned.first_time(product_id):
                logger.warning(
                    "product %d: GetMediaLocations failed (%s) on channel %s; emails show it without "
                    "its image (degraded: images). Warned once per product per process.",
                    product_id,
                    reason,
                    oun,
                )
            return None

    async def channel(self, oun: str) -> ChannelConfiguration:
        cached = self._channel_cache.get(oun)
        if cached is not None:
            return cached
        configuration = await self._channel_calls.run(
            oun, lambda: self._retail.get_channel_configuration(oun)
        )
        self._channel_cache.put(oun, configuration)
        return configuration

    async def _fetch_customers(self, oun: str, account_numbers: list[str]) -> dict[str, Customer]:
        customers = await self._retail.get_customers(oun, account_numbers)
        return {customer.account_number: customer for customer in customers}

    async def _fetch_products(
        self, group: tuple[str, int], product_ids: list[int]
    ) -> dict[int, SimpleProduct]:
        oun, channel_id = group
        products = await self._retail.get_products(oun, channel_id, product_ids)
        return {product.record_id: product for product in products}
