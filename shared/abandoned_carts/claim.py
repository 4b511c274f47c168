"""Claim: take this invocation's hold on the ledger entry of a message, and read what the checks
need from the state store on the way.

Two round trips: the entry (and the previous step's, for a reminder) in one; the conditional claim
(pending or failed -> claimed, on the etag just read) together with the customer's latest-cart
pointer and frequency-cap document in the other. An entry that is claimed by a live invocation,
being sent, sent, skipped or superseded ends the work here, so a redelivered message sends nothing
more; a ``sending`` entry left by a dead invocation becomes ``uncertain`` (invariant 9).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias, TypeVar

from shared.abandoned_carts.frequency_cap import CapSnapshot, FrequencyCap
from shared.abandoned_carts.messages import CartMessage
from shared.abandoned_carts.outcome import Outcome
from shared.concurrency import unwrap
from shared.state.ledger import (
    CLAIM_LEASE,
    STALE_SENDING,
    Hold,
    Ledger,
    LedgerEntry,
    LedgerStatus,
    TransitionError,
)
from shared.state.store import DocumentStore, PreconditionFailedError

T = TypeVar("T")

_CLAIMABLE = frozenset({LedgerStatus.PENDING, LedgerStatus.FAILED})
_MAX_CONDITIONAL_ATTEMPTS = 8

# A read's value, or the error it failed with: raised where the pipeline first needs it, once the
# claim is held, so the failure is recorded against the entry like any other.
Settled: TypeAlias = T | BaseException


@dataclass(frozen=True)
class Claimed:
    hold: Hold
    previous: Settled[LedgerEntry | None]
    latest_cart_id: Settled[str | None]
    cap: Settled[CapSnapshot | None]

    @property
    def entry(self) -> LedgerEntry:
        return self.hold.entry


async def _discard(pending: Awaitable[object]) -> None:
    """Wait for reads nobody needs any more (the claim was not taken), dropping their errors."""
    with contextlib.suppress(BaseException):
        await pending


class Claimer:
    def __init__(self, store: DocumentStore, ledger: Ledger, cap: FrequencyCap) -> None:
        self._store = store
        self._ledger = ledger
        self._cap = cap

    async def claim(self, message: CartMessage, now: datetime) -> Claimed | Outcome:
        """The claimed entry and the reads beside it, or the outcome of a message with nothing to do."""
        ids = (message.cart_id, message.cart_version, message.step)
        found_settled, previous = await asyncio.gather(
            self._ledger.get(*ids), self._previous_step(message), return_exceptions=True
        )
        found = unwrap(found_settled)
        side: asyncio.Future[tuple[Settled[str | None], Settled[CapSnapshot | None]]] | None = None
        try:
            for _ in range(_MAX_CONDITIONAL_ATTEMPTS):
                if found is None:
                    return Outcome("ignored", "no_ledger_entry", *ids)
                entry, etag = found
                stale = entry.updated_at < now - CLAIM_LEASE
                if entry.status is LedgerStatus.SENDING and stale:
                    return await self._settle_stale_sending(entry, now)
                stale_claim = entry.status is LedgerStatus.CLAIMED and stale
                if entry.status not in _CLAIMABLE and not stale_claim:
                    return Outcome("ignored", f"already_{entry.status.value}", *ids)
                if side is None:
                    # They depend on the customer only, not on the claim: read during its write.
                    side = asyncio.gather(
                        self._ledger.latest_cart(entry.oun, entry.customer_id),
                        self._cap.read(entry.customer_id),
                        return_exceptions=True,
                    )
                claimed = entry.model_copy(
                    update={
                        "status": LedgerStatus.CLAIMED,
                        "reason": None,
                        "attempts": entry.attempts + 1,
                        "updated_at": now,
                    }
                )
                try:
                    written = await self._store.replace(
                        "ledger", entry.cart_id, entry.key, claimed.body(), etag=etag
                    )
                except PreconditionFailedError:
                    found = await self._ledger.get(*ids)
                    continue
                latest, cap = await side
                side = None
                return Claimed(Hold(claimed, written.etag), previous, latest, cap)
            return Outcome("ignored", "claim_contended", *ids)
        finally:
            if side is not None:
                await _discard(side)

    async def _previous_step(self, message: CartMessage) -> LedgerEntry | None:
        if message.step == 1:
            return None
        found = await self._ledger.get(message.cart_id, message.cart_version, message.step - 1)
        return None if found is None else found[0]

    async def _settle_stale_sending(self, entry: LedgerEntry, now: datetime) -> Outcome:
        """An invocation died during or after the call of a provider without dedup: the email may
        have gone out, so it is never sent again; the entry ends ``uncertain``."""
        ids = (entry.cart_id, entry.cart_version, entry.step)
        try:
            await self._ledger.settle_stale_sending(entry, now=now)
        except TransitionError as exc:
            moved = exc.entry.status.value if exc.entry is not None else "gone"
            return Outcome("ignored", f"already_{moved}", *ids)
        return Outcome("uncertain", STALE_SENDING, *ids, degraded=tuple(entry.degraded))
