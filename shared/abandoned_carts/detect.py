"""Detection: find carts nobody touched inside the window, record them, queue one message each.

Per channel, the window runs from the channel's watermark (never earlier than now minus
``LOOKBACK_MINUTES``) to now minus ``ABANDONED_AFTER_MINUTES``. Carts come sorted by
``ModifiedDateTime`` then ``Id``; the watermark keeps the last instant processed and the ids seen at
exactly that instant, and is saved after every page with a conditional write, so a run that stops
anywhere (cap, crash, a concurrent run) loses and repeats nothing.

Many carts can share one instant (bulk updates); keyset paging alone would then fetch the same
first page forever, so while the cursor sits on such an instant the query also skips the carts
already seen there, minus a small overlap that tolerates carts leaving the group between pages.

Retail Server compares the bounds at its own precision (100-ns ticks) and so does this module with
the bounds it sent: they go on the wire with every microsecond the cursor holds, and a cart's
seven-digit time is cut (never rounded) to microseconds when read, so the server's answer starts
exactly at the cursor's instant and nothing inside the sent range is dropped or counted twice.

A page costs the state store a few round trips, however many carts it holds: the carts that need
no record are counted and dropped, each customer's newest cart of the page is kept (the others lose
to it in memory), the ledger entries and latest-cart pointers the page touches are read in one
call and the new ones written in another, and then the watermark moves. The next page is fetched
from Retail Server meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared import telemetry
from shared.abandoned_carts import observe
from shared.abandoned_carts.messages import CartMessage
from shared.http import UpstreamResponseTooLargeError
from shared.retail_server.client import CartSearchCriteria, RetailServerClient
from shared.retail_server.models import Cart, CartStatus, CartType
from shared.state.ledger import (
    Ledger,
    LedgerEntry,
    LedgerStatus,
    Supersede,
    TransitionError,
)
from shared.state.records import RunSummaryStore, Watermark, WatermarkConflictError, WatermarkStore
from shared.state.store import DocumentStore
from shared.timeutil import sortable

logger = logging.getLogger(__name__)

_SAME_INSTANT_OVERLAP = 10
# A pending entry queued this long ago and still unclaimed has lost its message: queue it again.
REQUEUE_AFTER = timedelta(minutes=30)


@dataclass(frozen=True)
class DetectionConfig:
    operating_unit_numbers: list[str]
    lookback: timedelta
    abandoned_after: timedelta
    max_carts_per_run: int
    page_size: int
    due_sweep_limit: int = 500
    # REMINDER_STEPS[0]: step 1 is due this long after the cart's last change. A cart found earlier
    # (ABANDONED_AFTER_MINUTES is shorter) is recorded as pending and queued by the due sweep later.
    first_step_delay: timedelta = timedelta(0)


@dataclass
class ChannelOutcome:
    window_from: datetime
    window_to: datetime
    found: int = 0
    queued: int = 0
    pages: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    stopped: str = "complete"
    # Telemetry: the newest instant whose carts are all recorded (the watermark saved last), and
    # the carts the cap left of the page it fell in (a lower bound of the backlog).
    covered_to: datetime | None = None
    left: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": {"from": sortable(self.window_from), "to": sortable(self.window_to)},
            "found": self.found,
            "queued": self.queued,
            "pages": self.pages,
            "skipped": dict(sorted(self.skipped.items())),
            "stopped": self.stopped,
        }


@dataclass
class RunResult:
    run_id: str
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    channels: dict[str, ChannelOutcome]
    requeued: int
    messages: list[str]

    @property
    def found(self) -> int:
        return sum(o.found for o in self.channels.values())

    @property
    def queued(self) -> int:
        return sum(o.queued for o in self.channels.values())

    @property
    def skipped(self) -> Counter[str]:
        """Carts found and not queued, by reason, over every channel."""
        total: Counter[str] = Counter()
        for outcome in self.channels.values():
            total.update(outcome.skipped)
        return total

    @property
    def failed_ouns(self) -> list[str]:
        return [oun for oun, outcome in self.channels.items() if outcome.stopped.startswith("error:")]

    def summary(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "startedAt": sortable(self.started_at),
            "finishedAt": sortable(self.finished_at),
            "durationMs": self.duration_ms,
            "found": self.found,
            "queued": self.queued,
            "requeued": self.requeued,
            "skipped": dict(sorted(self.skipped.items())),
            "channels": {oun: outcome.as_dict() for oun, outcome in self.channels.items()},
        }


class DetectionFailedError(Exception):
    """A detection run in which at least one channel failed. ``result`` holds what the others
    found and the messages still to queue; ``errors`` the failures (the first is the cause)."""

    def __init__(self, result: RunResult, errors: Sequence[Exception]) -> None:
        self.result = result
        self.errors = list(errors)
        failed = ", ".join(
            f"{oun} ({result.channels[oun].stopped.removeprefix('error:')})" for oun in result.failed_ouns
        )
        super().__init__(f"detection failed for channel(s) {failed}: {errors[0]}")


def fair_shares(budget: int, channels: Sequence[str]) -> dict[str, int]:
    """``budget`` split equally between ``channels``; the remainder goes one each to the first ones."""
    if not channels:
        return {}
    base, remainder = divmod(max(budget, 0), len(channels))
    return {oun: base + (1 if index < remainder else 0) for index, oun in enumerate(channels)}


def merge_outcomes(earlier: ChannelOutcome | None, later: ChannelOutcome) -> ChannelOutcome:
    """One channel's outcome over the rounds of a run: counts add up, the last round says why it stopped."""
    if earlier is None:
        return later
    earlier.found += later.found
    earlier.queued += later.queued
    earlier.pages += later.pages
    earlier.skipped.update(later.skipped)
    earlier.stopped = later.stopped
    earlier.covered_to = later.covered_to or earlier.covered_to
    earlier.left = later.left
    return earlier


def skip_reason(cart: Cart) -> str | None:
    """Why a cart found in the window gets no reminder, or None when it should get one."""
    if cart.cart_type_value != CartType.SHOPPING:
        return "not_shopping_cart"
    if cart.cart_status_value == CartStatus.VOIDED:
        return "voided"
    if cart.cart_status_value == CartStatus.SUSPENDED:
        # Parked at a till to be recalled there: not the online shopper's abandoned cart.
        return "suspended"
    if not cart.customer_id:
        return "anonymous"
    if not cart.cart_lines:
        return "no_lines"
    if not cart.active_lines:
        return "only_voided_lines"
    if cart.modified_date_time is None:
        return "no_modified_time"
    return None


def _order(cart: Cart) -> tuple[datetime, str]:
    """Which of a customer's carts is the newest: the latest change, ties to the larger id (as the
    ledger's latest-cart pointer decides)."""
    assert cart.modified_date_time is not None
    return cart.modified_date_time, cart.id


class Detector:
    def __init__(self, retail: RetailServerClient, store: DocumentStore, config: DetectionConfig) -> None:
        self._retail = retail
        self._config = config
        self._ledger = Ledger(store)
        self._watermarks = WatermarkStore(store)
        self._runs = RunSummaryStore(store)

    async def run(self, now: datetime) -> RunResult:
        started = time.monotonic()
        run_id = f"{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        # The output binding takes the run's messages at the end, so they are in memory anyway;
        # keyed by (channel, customer), a newer cart of a customer replaces the older one's message
        # instead of queueing a message that notify would only find superseded.
        fresh: dict[tuple[str, str], str] = {}
        outcomes: dict[str, ChannelOutcome] = {}
        errors: list[Exception] = []
        ouns = self._config.operating_unit_numbers
        budget = self._config.max_carts_per_run
        # Rounds: every channel that may still have carts gets an equal share of what is left, so a
        # busy channel cannot starve the others; one that finds fewer than its share is done, and
        # what it left unused goes round again to the channels that filled theirs. Each call
        # resumes from the channel's saved watermark, so a round costs one search, never memory.
        active = list(ouns)
        while active and budget > 0:
            shares = fair_shares(budget, active)
            still_busy: list[str] = []
            for oun in active:
                if shares[oun] == 0:
                    still_busy.append(oun)
                    continue
                outcome = await self._detect_channel_safely(oun, now, shares[oun], fresh, errors)
                outcomes[oun] = merge_outcomes(outcomes.get(oun), outcome)
                budget -= outcome.found
                if outcome.stopped == "cap_reached":
                    still_busy.append(oun)
            active = still_busy
        for oun in ouns:
            if oun not in outcomes:
                # The cap ran out before this channel's turn: its window, and nothing read.
                outcomes[oun] = await self._detect_channel_safely(oun, now, 0, fresh, errors)
        channels = {oun: outcomes[oun] for oun in ouns}
        messages = list(fresh.values())
        requeued = await self._queue_due_entries(now, messages)
        result = RunResult(
            run_id=run_id,
            started_at=now,
            finished_at=now + timedelta(seconds=time.monotonic() - started),
            duration_ms=int((time.monotonic() - started) * 1000),
            channels=channels,
            requeued=requeued,
            messages=messages,
        )
        summary = result.summary()
        record = observe.run_record(result)
        await self._runs.save(run_id, {**summary, "status": record["status"]})
        logger.log(logging.ERROR if errors else logging.INFO, "detection run finished", extra=record)
        observe.record_run(result)
        if errors:
            # A channel failed (Retail Server down, credentials refused, a wrong OUN): the run
            # fails where the platform's failure rate and the operator see it, after every other
            # channel's progress is saved. The error carries the run's messages, which the caller
            # must still queue (the entries are marked queued; the sweep of a later run would queue
            # them again only after REQUEUE_AFTER).
            raise DetectionFailedError(result, errors) from errors[0]
        return result

    async def _detect_channel_safely(
        self,
        oun: str,
        now: datetime,
        budget: int,
        messages: dict[tuple[str, str], str],
        errors: list[Exception],
    ) -> ChannelOutcome:
        with observe.channel_span(oun, budget) as span:
            try:
                outcome = await self._detect_channel(oun, now, budget, messages)
            except Exception as exc:
                telemetry.record_failure(span, exc)
                errors.append(exc)
                # One channel failing (a wrong OUN, an outage of its scale unit) must not stop the
                # others: they go on, and the run fails at its end. Its watermark stayed where the
                # last good page left it, so nothing is lost.
                logger.error("channel %s: detection failed and resumes next run: %s", oun, exc)
                return ChannelOutcome(window_from=now, window_to=now, stopped=f"error:{type(exc).__name__}")
            observe.describe_channel(span, outcome)
            return outcome

    async def _detect_channel(
        self, oun: str, now: datetime, budget: int, messages: dict[tuple[str, str], str]
    ) -> ChannelOutcome:
        floor = now - self._config.lookback
        window_to = now - self._config.abandoned_after
        watermark, etag = await self._watermarks.load(oun)
        if watermark is None or watermark.modified_at < floor:
            cursor, seen = floor, set[str]()
        else:
            cursor, seen = watermark.modified_at, set(watermark.ids_at_modified)
        outcome = ChannelOutcome(window_from=cursor, window_to=window_to)
        if budget <= 0:
            outcome.stopped = "cap_reached"
            return outcome
        if cursor >= window_to:
            return outcome
        # A page is recorded in a few store round trips (``_record_page``); the next page depends
        # only on the cursor, so it is fetched while this one is written.
        page_size = self._config.page_size
        pending: asyncio.Task[tuple[list[Cart], int]] | None = asyncio.ensure_future(
            self._fetch_page(oun, cursor, len(seen), window_to, page_size)
        )
        try:
            while pending is not None:
                page, page_size = await pending
                pending = None
                outcome.pages += 1
                fresh: list[Cart] = []
                capped = False
                for position, cart in enumerate(page):
                    modified = cart.modified_date_time
                    if modified is None or modified < cursor or (modified == cursor and cart.id in seen):
                        continue
                    fresh.append(cart)
                    if modified > cursor:
                        cursor, seen = modified, {cart.id}
                    else:
                        seen.add(cart.id)
                    if outcome.found + len(fresh) >= budget:
                        capped = True
                        outcome.left = len(page) - position - 1
                        break
                outcome.found += len(fresh)
                if fresh and not capped:
                    pending = asyncio.ensure_future(
                        self._fetch_page(oun, cursor, len(seen), window_to, page_size)
                    )
                if fresh:
                    supersede = await self._record_page(oun, fresh, now, outcome, messages)
                    mark = Watermark(modified_at=cursor, ids_at_modified=sorted(seen), updated_at=now)
                    # The watermark moves only after the page's entries are written; voiding the
                    # entries of carts that lost their customer's pointer can go alongside it (notify
                    # checks the pointer anyway).
                    saved, voided = await asyncio.gather(
                        self._watermarks.save(oun, mark, etag),
                        self._ledger.supersede(supersede, now=now),
                        return_exceptions=True,
                    )
                    if isinstance(voided, BaseException):
                        raise voided
                    if isinstance(saved, WatermarkConflictError):
                        outcome.stopped = "concurrent_run"
                        logger.warning(
                            "channel %s: another detection run moved the watermark; stopping here", oun
                        )
                        return outcome
                    if isinstance(saved, BaseException):
                        raise saved
                    etag = saved
                    outcome.covered_to = cursor
                if capped:
                    outcome.stopped = "cap_reached"
            return outcome
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    async def _fetch_page(
        self, oun: str, cursor: datetime, seen_at_cursor: int, window_to: datetime, page_size: int
    ) -> tuple[list[Cart], int]:
        """One page of carts from ``cursor``, and the page size that fetched it."""
        while True:
            # The carts already seen at the cursor's instant are skipped, minus a small overlap.
            skip = max(0, seen_at_cursor - min(_SAME_INSTANT_OVERLAP, page_size // 2))
            try:
                page = await self._retail.search_carts(
                    oun,
                    CartSearchCriteria(last_modified_from=cursor, last_modified_to=window_to),
                    top=page_size,
                    skip=skip,
                )
            except UpstreamResponseTooLargeError:
                # Carts with many lines: the same carts in smaller pages. A single cart over the
                # cap fails the channel with the error naming MAX_RESPONSE_BYTES; its watermark
                # stays before that cart until the setting is raised.
                if page_size == 1:
                    raise
                page_size //= 2
                logger.warning(
                    "channel %s: a Carts/Search page was over MAX_RESPONSE_BYTES; reading %d carts a page",
                    oun,
                    page_size,
                )
                continue
            return page, page_size

    async def _record_page(
        self,
        oun: str,
        carts: list[Cart],
        now: datetime,
        outcome: ChannelOutcome,
        messages: dict[tuple[str, str], str],
    ) -> list[Supersede]:
        """Record a page's carts: those that need no record are counted, each customer's newest
        cart is recorded (the older ones of the page lose to it in memory, unrecorded), in one
        read and one write. Returns the carts whose pending entries the page superseded."""
        newest: dict[str, Cart] = {}
        for cart in carts:
            reason = skip_reason(cart)
            if reason is not None:
                outcome.skipped[reason] += 1
                continue
            assert cart.customer_id is not None
            best = newest.get(cart.customer_id)
            if best is None or _order(cart) > _order(best):
                newest[cart.customer_id] = cart
            if best is not None:
                outcome.skipped["superseded"] += 1
        if not newest:
            return []
        entries = [self._entry(oun, cart, now) for cart in newest.values()]
        recorded = await self._ledger.record_latest(entries, now=now)
        for entry, result in zip(entries, recorded.outcomes, strict=True):
            if result != "latest":
                outcome.skipped[result] += 1
                continue
            if entry.queued_at is None:
                outcome.skipped["not_yet_due"] += 1
                continue
            key = (oun, entry.customer_id)
            if key in messages:
                # This run queued the customer's older cart already; its ledger entry is superseded now.
                outcome.queued -= 1
                outcome.skipped["superseded"] += 1
            messages[key] = CartMessage(
                cart_id=entry.cart_id, cart_version=entry.cart_version, oun=oun, step=1
            ).encode()
            outcome.queued += 1
        return recorded.supersede

    def _entry(self, oun: str, cart: Cart, now: datetime) -> LedgerEntry:
        assert cart.customer_id is not None
        assert cart.modified_date_time is not None
        due_at = max(now, cart.modified_date_time + self._config.first_step_delay)
        return LedgerEntry(
            cart_id=cart.id,
            cart_version=cart.version,
            step=1,
            oun=oun,
            customer_id=cart.customer_id,
            modified_at=cart.modified_date_time,
            due_at=due_at,
            queued_at=now if due_at <= now else None,
            updated_at=now,
        )

    async def _queue_due_entries(self, now: datetime, messages: list[str]) -> int:
        """Queue pending entries that came due, or whose message was queued long ago and never claimed."""
        requeued = 0
        for entry in await self._ledger.due_pending(now=now, limit=self._config.due_sweep_limit):
            if entry.queued_at is not None and entry.queued_at > now - REQUEUE_AFTER:
                continue
            if entry.status is not LedgerStatus.PENDING or not await self._ledger.mark_queued(entry, now=now):
                continue
            messages.append(
                CartMessage(
                    cart_id=entry.cart_id, cart_version=entry.cart_version, oun=entry.oun, step=entry.step
                ).encode()
            )
            requeued += 1
        # An invocation that died mid-send left its entry claimed, and its message is gone: queue
        # it again; notify takes the stale claim over (a claimed entry never reached a provider
        # without dedup, and one with dedup drops the repeat).
        for entry in await self._ledger.stale_claims(now=now, limit=self._config.due_sweep_limit):
            messages.append(
                CartMessage(
                    cart_id=entry.cart_id, cart_version=entry.cart_version, oun=entry.oun, step=entry.step
                ).encode()
            )
            requeued += 1
        await self._settle_stale_sending(now)
        return requeued

    async def _settle_stale_sending(self, now: datetime) -> None:
        """An invocation died during or after the call of a provider that cannot de-duplicate: the
        email may have gone out, so it is never queued again; the entry ends ``uncertain``."""
        for entry in await self._ledger.stale_sending(now=now, limit=self._config.due_sweep_limit):
            try:
                await self._ledger.settle_stale_sending(entry, now=now)
            except TransitionError:
                continue
            logger.warning(
                "cart %s v%d step %d: its send was interrupted; recorded uncertain (sent once or not at "
                "all, never sent again)",
                entry.cart_id,
                entry.cart_version,
                entry.step,
            )
