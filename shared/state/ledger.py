"""The ledger: one entry per (cart id, cart version, reminder step), moved through its states
with conditional writes so that nothing is sent twice and nothing is lost.

    pending -> claimed -> sent | previewed | skipped(reason) | failed(reason)
    claimed -> sending -> sent | uncertain(reason) | failed(reason)   (a provider without dedup)
    claimed | sending -> held_out (the recovery report's holdout group: never mailed)
    pending -> superseded (a newer cart of the same customer was recorded)
    failed  -> claimed (a retry)
    sending -> uncertain (stale: the invocation died during or after the provider call)

``sending`` is written right before the call of a provider that cannot de-duplicate (SendGrid):
from then on the message may have gone out, so the entry is never claimed again. ``uncertain`` is
terminal: the email went out once or not at all, and an operator may look (the provider's own
activity log, by the dedup key).

Beside the entries, a pointer per (channel, customer) names the customer's newest cart, so a
customer with several abandoned carts gets one email, about the most recent, without any run
holding all carts in memory.

Detection records a page of carts at once (``record_latest``): one read of the entries and
pointers the page touches, one write of what changes, then (``supersede``) the pending entries of
the carts that lost their customer's pointer, in one query round and one write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.state.store import (
    ConflictError,
    Document,
    DocumentStore,
    NotFoundError,
    PreconditionFailedError,
    WriteOp,
)
from shared.timeutil import UtcDateTime, sortable

_MAX_CONDITIONAL_ATTEMPTS = 8
# A claim older than this belongs to an invocation that died (functionTimeout is 10 minutes): notify
# may take it over, and detection queues it again, because the host deleted its message when the
# redelivery found the claim still live. A claimed entry was never handed to a provider without
# dedup (that one is marked sending first), and a provider with dedup drops the repeat.
CLAIM_LEASE = timedelta(minutes=15)
# Partitions queried at once when a page's superseded carts are looked up: a page holds at most
# 200 carts (CART_PAGE_SIZE), so its queries go out in one or two waves, each one store latency.
_QUERY_CONCURRENCY = 100
# The reason of an entry found "sending" after the lease: its invocation died during or after the
# provider call, so whether the email went out is unknown.
STALE_SENDING = "stale_sending"


class LedgerStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    # Handled by a dry run (the preview provider): nothing was sent, and nothing will be.
    PREVIEWED = "previewed"
    # Being handed to a provider that does not de-duplicate: never claimed again.
    SENDING = "sending"
    # Sent once or not at all, nobody can tell: terminal, for an operator to look at.
    UNCERTAIN = "uncertain"
    # In the recovery report's holdout group: deliberately not mailed, tracked like a sent one.
    HELD_OUT = "held_out"


class LedgerEntry(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    cart_id: str = Field(alias="cartId")
    cart_version: int = Field(alias="cartVersion")
    step: int = Field(ge=1)
    oun: str
    customer_id: str = Field(alias="customerId")
    modified_at: UtcDateTime = Field(alias="modifiedAt")
    due_at: UtcDateTime = Field(alias="dueAt")
    # When a message for this entry was last put on the queue; None until a run queues it.
    queued_at: UtcDateTime | None = Field(default=None, alias="queuedAt")
    status: LedgerStatus = LedgerStatus.PENDING
    reason: str | None = None
    provider_ids: dict[str, str] = Field(default_factory=dict, alias="providerIds")
    # Optional parts the email went without because their look-up failed ("images", ...).
    degraded: list[str] = Field(default_factory=list)
    attempts: int = 0
    updated_at: UtcDateTime = Field(alias="updatedAt")

    @property
    def key(self) -> str:
        return entry_key(self.cart_version, self.step)

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def entry_key(cart_version: int, step: int) -> str:
    return f"v{cart_version}|s{step}"


def pointer_partition(oun: str, customer_id: str) -> str:
    """The ledger partition of a customer's latest-cart pointer on one channel."""
    return f"customer|{oun}|{customer_id}"


RecordOutcome = Literal["latest", "superseded", "already_recorded"]


@dataclass(frozen=True)
class Supersede:
    """Pending entries of ``cart_id`` (but those of ``keep_version``) to mark superseded."""

    cart_id: str
    reason: str
    keep_version: int | None = None


@dataclass
class RecordedPage:
    """What ``record_latest`` did: an outcome per entry, in order, and the follow-up work."""

    outcomes: list[RecordOutcome]
    supersede: list[Supersede] = field(default_factory=list)


@dataclass
class Hold:
    """An entry as this invocation last wrote (or read) it, with that version's etag.

    A transition through a hold writes conditionally on the etag at once, without reading the
    entry first; only when someone else wrote meanwhile (412) does it read and decide again. Each
    write through it moves the hold on to the version just written."""

    entry: LedgerEntry
    etag: str


class TransitionError(Exception):
    """The entry is not in a state that allows the requested change (someone else moved it)."""

    def __init__(self, entry: LedgerEntry | None, message: str) -> None:
        self.entry = entry
        super().__init__(message)


def _allows(entry: LedgerEntry, allowed_from: frozenset[LedgerStatus], attempts: int | None) -> bool:
    return entry.status in allowed_from and (attempts is None or entry.attempts == attempts)


class Ledger:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def record(self, entry: LedgerEntry) -> bool:
        """Create the entry; False when it exists already (a rerun or an overlapping run)."""
        try:
            await self._store.create("ledger", entry.cart_id, entry.key, entry.body())
        except ConflictError:
            return False
        return True

    async def get(self, cart_id: str, cart_version: int, step: int) -> tuple[LedgerEntry, str] | None:
        document = await self._store.read("ledger", cart_id, entry_key(cart_version, step))
        if document is None:
            return None
        return LedgerEntry.model_validate(document.body), document.etag

    async def entries_of_cart(self, cart_id: str) -> list[LedgerEntry]:
        documents = await self._store.query(
            "ledger", partition=cart_id, equals={"cartId": cart_id}, limit=1000
        )
        return [LedgerEntry.model_validate(document.body) for document in documents]

    async def due_pending(self, *, now: datetime, limit: int) -> list[LedgerEntry]:
        """Pending entries whose time has come, oldest first (a cross-partition query, bounded)."""
        documents = await self._store.query(
            "ledger",
            equals={"status": LedgerStatus.PENDING.value},
            at_most={"dueAt": sortable(now)},
            order_by="dueAt",
            limit=limit,
        )
        return [LedgerEntry.model_validate(document.body) for document in documents]

    async def stale_claims(self, *, now: datetime, limit: int) -> list[LedgerEntry]:
        """Claimed entries whose invocation died: claimed longer ago than the lease, oldest first."""
        return await self._stale(LedgerStatus.CLAIMED, now=now, limit=limit)

    async def stale_sending(self, *, now: datetime, limit: int) -> list[LedgerEntry]:
        """Entries whose invocation died during or after the call of a provider without dedup."""
        return await self._stale(LedgerStatus.SENDING, now=now, limit=limit)

    async def settle_stale_sending(self, entry: LedgerEntry, *, now: datetime) -> None:
        """The email of a stale ``sending`` entry may have gone out: it ends ``uncertain``, never
        sent again. :class:`TransitionError` when another invocation moved it first."""
        await self.transition(
            entry.cart_id,
            entry.cart_version,
            entry.step,
            allowed_from=frozenset({LedgerStatus.SENDING}),
            to=LedgerStatus.UNCERTAIN,
            now=now,
            reason=STALE_SENDING,
        )

    async def _stale(self, status: LedgerStatus, *, now: datetime, limit: int) -> list[LedgerEntry]:
        documents = await self._store.query(
            "ledger",
            equals={"status": status.value},
            at_most={"updatedAt": sortable(now - CLAIM_LEASE)},
            order_by="updatedAt",
            limit=limit,
        )
        return [LedgerEntry.model_validate(document.body) for document in documents]

    async def mark_queued(self, entry: LedgerEntry, *, now: datetime) -> bool:
        """Note that a message for this pending entry went on the queue; False if it moved meanwhile."""
        found = await self.get(entry.cart_id, entry.cart_version, entry.step)
        if found is None or found[0].status is not LedgerStatus.PENDING:
            return False
        current, etag = found
        updated = current.model_copy(update={"queued_at": now, "updated_at": now})
        try:
            await self._store.replace("ledger", current.cart_id, current.key, updated.body(), etag=etag)
        except PreconditionFailedError:
            return False
        return True

    async def transition(
        self,
        cart_id: str,
        cart_version: int,
        step: int,
        *,
        allowed_from: frozenset[LedgerStatus],
        to: LedgerStatus,
        now: datetime,
        reason: str | None = None,
        provider_ids: dict[str, str] | None = None,
        degraded: list[str] | None = None,
        attempts: int | None = None,
        hold: Hold | None = None,
    ) -> LedgerEntry:
        """Move an entry to ``to`` if it is in one of ``allowed_from``; conditional on its etag.

        With ``attempts``, only while the entry's attempt count is still that one: the claim that
        counted it is still the holder, nobody took it over meanwhile. With ``hold``, the first
        attempt trusts the held version instead of reading it (one round trip instead of two), and
        the hold follows the write."""
        for attempt in range(_MAX_CONDITIONAL_ATTEMPTS):
            found = (hold.entry, hold.etag) if hold is not None and attempt == 0 else None
            if found is not None and not _allows(found[0], allowed_from, attempts):
                found = None  # what the hold saw does not allow it: decide on what is there now
            if found is None:
                found = await self.get(cart_id, cart_version, step)
            if found is None:
                raise TransitionError(None, f"no ledger entry for {cart_id} v{cart_version} step {step}")
            entry, etag = found
            if entry.status not in allowed_from:
                raise TransitionError(entry, f"entry is {entry.status}, not one of {sorted(allowed_from)}")
            if attempts is not None and entry.attempts != attempts:
                raise TransitionError(entry, f"entry was claimed again (attempt {entry.attempts})")
            updated = entry.model_copy(
                update={
                    "status": to,
                    "reason": reason,
                    "provider_ids": provider_ids if provider_ids is not None else entry.provider_ids,
                    "degraded": degraded if degraded is not None else entry.degraded,
                    "attempts": entry.attempts + (1 if to is LedgerStatus.CLAIMED else 0),
                    "updated_at": now,
                }
            )
            try:
                written = await self._store.replace("ledger", cart_id, entry.key, updated.body(), etag=etag)
            except PreconditionFailedError:
                continue
            if hold is not None:
                hold.entry, hold.etag = updated, written.etag
            return updated
        raise TransitionError(None, f"ledger entry for {cart_id} kept changing under concurrent writers")

    async def supersede_pending(
        self, cart_id: str, *, now: datetime, reason: str, keep_version: int | None = None
    ) -> int:
        """Mark the pending entries of a cart superseded (but those of ``keep_version``); returns how many."""
        changed = 0
        for entry in await self.entries_of_cart(cart_id):
            if entry.status is not LedgerStatus.PENDING or entry.cart_version == keep_version:
                continue
            try:
                await self.transition(
                    entry.cart_id,
                    entry.cart_version,
                    entry.step,
                    allowed_from=frozenset({LedgerStatus.PENDING}),
                    to=LedgerStatus.SUPERSEDED,
                    now=now,
                    reason=reason,
                )
            except TransitionError:
                continue
            changed += 1
        return changed

    async def register_latest_cart(
        self,
        oun: str,
        customer_id: str,
        cart_id: str,
        cart_version: int,
        modified_at: datetime,
        *,
        now: datetime,
    ) -> bool:
        """Record that ``cart_id`` is this customer's newest cart, superseding an older one.

        Returns False when the customer already has a newer cart: then ``cart_id`` is the one that
        is superseded. Ties on ``modified_at`` go to the larger cart id so every run decides alike.
        """
        partition = f"customer|{oun}|{customer_id}"
        mine = (modified_at, cart_id)
        body = {"cartId": cart_id, "modifiedAt": sortable(modified_at), "kind": "latest-cart"}
        for _ in range(_MAX_CONDITIONAL_ATTEMPTS):
            document = await self._store.read("ledger", partition, "latest")
            if document is None:
                try:
                    await self._store.create("ledger", partition, "latest", body)
                except ConflictError:
                    continue
                return True
            theirs = (datetime.fromisoformat(document.body["modifiedAt"]), str(document.body["cartId"]))
            if theirs[1] == cart_id:
                if mine[0] > theirs[0]:
                    try:
                        await self._store.replace("ledger", partition, "latest", body, etag=document.etag)
                    except PreconditionFailedError:
                        continue
                    # The cart changed since its last entry: the older version's reminder is void.
                    await self.supersede_pending(
                        cart_id, now=now, reason="cart_changed", keep_version=cart_version
                    )
                return True
            if theirs > mine:
                await self.supersede_pending(cart_id, now=now, reason="newer_cart_of_customer")
                return False
            try:
                await self._store.replace("ledger", partition, "latest", body, etag=document.etag)
            except PreconditionFailedError:
                continue
            await self.supersede_pending(theirs[1], now=now, reason="newer_cart_of_customer")
            return True
        raise TransitionError(
            None, "the customer's latest-cart pointer kept changing under concurrent writers"
        )

    async def record_latest(self, entries: Sequence[LedgerEntry], *, now: datetime) -> RecordedPage:
        """Record new entries (one per customer and channel) and point each customer at the newest
        of their carts, in one read and one write for all of them.

        Per entry, as ``record`` followed by ``register_latest_cart`` would decide: an entry that
        exists already is left alone (``already_recorded``); a cart older than the one its
        customer's pointer names is recorded superseded (``superseded``); otherwise it is recorded
        pending and the pointer moves to it (``latest``). The carts the pointers moved away from
        are returned in ``supersede``, for ``supersede`` to void their pending entries: until then
        notify finds them superseded by the pointer anyway. A pointer another writer moved meanwhile
        is settled one cart at a time by ``register_latest_cart``."""
        pointers = [pointer_partition(e.oun, e.customer_id) for e in entries]
        if len(set(pointers)) != len(pointers):
            raise ValueError("record_latest takes one entry per customer and channel")
        found = await self._store.read_many(
            "ledger", [(e.cart_id, e.key) for e in entries] + [(p, "latest") for p in pointers]
        )
        outcomes: list[RecordOutcome] = []
        ops: list[WriteOp] = []
        # Per entry: the index of its create in ``ops``, the index of its pointer write (or None),
        # and what a successful pointer write leaves to supersede.
        plans: list[tuple[int | None, int | None, Supersede | None]] = []
        for entry, partition in zip(entries, pointers, strict=True):
            if (entry.cart_id, entry.key) in found:
                outcomes.append("already_recorded")
                plans.append((None, None, None))
                continue
            pointer = found.get((partition, "latest"))
            mine = (entry.modified_at, entry.cart_id)
            body = _pointer_body(entry)
            pointer_op: WriteOp | None = None
            follow_up: Supersede | None = None
            outcome: RecordOutcome = "latest"
            if pointer is None:
                pointer_op = WriteOp("create", partition, "latest", body)
            else:
                theirs = (datetime.fromisoformat(pointer.body["modifiedAt"]), str(pointer.body["cartId"]))
                if theirs[1] == entry.cart_id:
                    if mine[0] > theirs[0]:
                        pointer_op = WriteOp("replace", partition, "latest", body, etag=pointer.etag)
                        # The cart changed since its last entry: the older version's reminder is void.
                        follow_up = Supersede(entry.cart_id, "cart_changed", keep_version=entry.cart_version)
                elif theirs > mine:
                    outcome = "superseded"
                else:
                    pointer_op = WriteOp("replace", partition, "latest", body, etag=pointer.etag)
                    follow_up = Supersede(theirs[1], "newer_cart_of_customer")
            recorded = entry
            if outcome == "superseded":
                recorded = entry.model_copy(
                    update={"status": LedgerStatus.SUPERSEDED, "reason": "newer_cart_of_customer"}
                )
            ops.append(WriteOp("create", entry.cart_id, entry.key, recorded.body()))
            create_at = len(ops) - 1
            pointer_at: int | None = None
            if pointer_op is not None:
                ops.append(pointer_op)
                pointer_at = len(ops) - 1
            outcomes.append(outcome)
            plans.append((create_at, pointer_at, follow_up))
        results = await self._store.write_many("ledger", ops) if ops else []
        supersede: list[Supersede] = []
        for index, (entry, plan) in enumerate(zip(entries, plans, strict=True)):
            create_index, pointer_index, planned = plan
            if create_index is None:
                continue
            created = results[create_index]
            if isinstance(created, ConflictError):
                # Another run recorded it between the read and the write: that run queues it.
                outcomes[index] = "already_recorded"
            elif not isinstance(created, Document):
                raise created
            if pointer_index is None:
                continue
            moved = results[pointer_index]
            if isinstance(moved, Document):
                # Whoever moves the pointer voids what it moved away from, recorded or not.
                if planned is not None:
                    supersede.append(planned)
                continue
            if not isinstance(moved, ConflictError | PreconditionFailedError | NotFoundError):
                raise moved
            if outcomes[index] == "already_recorded":
                continue
            # Another writer moved the pointer since it was read: decide this cart alone, with the
            # conditional loop (it supersedes what loses, this cart included).
            latest = await self.register_latest_cart(
                entry.oun, entry.customer_id, entry.cart_id, entry.cart_version, entry.modified_at, now=now
            )
            outcomes[index] = "latest" if latest else "superseded"
        return RecordedPage(outcomes, supersede)

    async def supersede(self, targets: Sequence[Supersede], *, now: datetime) -> int:
        """Mark the pending entries of ``targets`` superseded: one round of queries, one write.
        An entry that moved meanwhile is retried alone, conditionally; returns how many changed."""
        if not targets:
            return 0
        limit = asyncio.Semaphore(_QUERY_CONCURRENCY)

        async def pending(cart_id: str) -> list[Document]:
            async with limit:
                return await self._store.query(
                    "ledger",
                    partition=cart_id,
                    equals={"cartId": cart_id, "status": LedgerStatus.PENDING.value},
                    limit=1000,
                )

        found = await asyncio.gather(*(pending(target.cart_id) for target in targets))
        ops: list[WriteOp] = []
        seen: set[tuple[str, str]] = set()
        for target, documents in zip(targets, found, strict=True):
            for document in documents:
                entry = LedgerEntry.model_validate(document.body)
                if entry.cart_version == target.keep_version or (entry.cart_id, entry.key) in seen:
                    continue
                seen.add((entry.cart_id, entry.key))
                updated = entry.model_copy(
                    update={"status": LedgerStatus.SUPERSEDED, "reason": target.reason, "updated_at": now}
                )
                ops.append(WriteOp("replace", entry.cart_id, entry.key, updated.body(), etag=document.etag))
        changed = 0
        for op, result in zip(ops, await self._store.write_many("ledger", ops) if ops else [], strict=True):
            if isinstance(result, Document):
                changed += 1
                continue
            entry = LedgerEntry.model_validate(op.body)
            try:
                await self.transition(
                    entry.cart_id,
                    entry.cart_version,
                    entry.step,
                    allowed_from=frozenset({LedgerStatus.PENDING}),
                    to=LedgerStatus.SUPERSEDED,
                    now=now,
                    reason=entry.reason,
                )
            except TransitionError:
                continue
            changed += 1
        return changed

    async def latest_cart(self, oun: str, customer_id: str) -> str | None:
        document = await self._store.read("ledger", f"customer|{oun}|{customer_id}", "latest")
        return None if document is None else str(document.body["cartId"])


def _pointer_body(entry: LedgerEntry) -> dict[str, Any]:
    return {"cartId": entry.cart_id, "modifiedAt": sortable(entry.modified_at), "kind": "latest-cart"}
