"""Notification: turn one queued cart into one email, at most once, only while it is still wanted.

Per message (a :class:`CartMessage` naming cart id, version, channel and reminder step):

1. claim the ledger entry with a conditional write (pending or failed -> claimed); an entry that
   is claimed by a live invocation, being sent, sent, skipped or superseded ends the work here, so
   a redelivered message sends nothing more;
2. re-read the cart and skip if it is gone, changed, checked out or voided, if the customer has a
   newer cart, or if the customer ordered since the cart last changed (``ORDER_CHECK``);
3. load the customer, the channel configuration and the products (batched and cached, see
   ``enrich.py``), apply consent, the suppression list and the per-customer frequency cap;
4. build the payload, send it with a deterministic dedup key, record ``sent`` (with the provider's
   ids), ``skipped(reason)`` or ``failed(reason)``, and after a sent step arm the next one.

Optional data degrades, required data fails (DESIGN invariant 8): the cart, the customer and the
channel configuration must load; a failed media look-up or Store Commerce link leaves the email
without that part, and the outcome and the ledger entry name it in ``degraded``.

Exactly once where the provider de-duplicates, at most once where it cannot (invariant 9). A
provider that de-duplicates (``deduplicates = True``: Emarsys, the webhook, the preview) gets a
message again after any failure, with the same dedup key, and drops the repeat. For one that
cannot (SendGrid), the entry is marked ``sending`` (claimed -> sending, conditional on the claim)
right before the call; from then on it is never claimed again. A send that may have gone out
(:class:`ProviderUncertainError`, or an unexpected error) ends ``uncertain``, a terminal state for
an operator to look at; one that certainly did not (a refusal, 429, no connection) ends ``failed``
and is retried. A ``sending`` entry left by a dead invocation becomes ``uncertain`` when notify or
detection finds it after the claim lease.

Transient failures are recorded as ``failed`` and raised, so the host retries the message (and a
retry may re-claim a failed entry); permanent ones are recorded and the message completes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import ValidationError

from shared import json_limits
from shared.abandoned_carts.enrich import Enricher
from shared.abandoned_carts.images import Viewport, image_set
from shared.abandoned_carts.links import fill_template, product_url, uses_placeholder
from shared.abandoned_carts.messages import CartMessage
from shared.abandoned_carts.orders import OrderCheck
from shared.abandoned_carts.payload import AbandonedCartPayload, ProductImageData, ProductLine, dedup_key
from shared.email.base import (
    EmailMessage,
    EmailProvider,
    ProviderConfigurationError,
    ProviderError,
    ProviderRejectedError,
    ProviderTransientError,
    ProviderUncertainError,
    Recipient,
    SendResult,
)
from shared.email.batching import BatchingSender
from shared.http import UpstreamError, UpstreamResponseTooLargeError
from shared.identity import TokenError
from shared.json_limits import JsonTooDeepError
from shared.privacy.consent import ConsentPolicy, consent_refusal, email_of
from shared.privacy.suppression import SuppressionList
from shared.privacy.tokens import WeakSecretError, token_for
from shared.retail_server.client import (
    RetailServerClient,
    RetailServerContractError,
    RetailServerUnreadableError,
)
from shared.retail_server.models import Cart, CartStatus, CartType, Customer
from shared.secrets import SecretSource, SecretUnavailableError
from shared.settings import Settings
from shared.state.ledger import (
    CLAIM_LEASE,
    STALE_SENDING,
    Ledger,
    LedgerEntry,
    LedgerStatus,
    TransitionError,
)
from shared.state.store import ConflictError, DocumentStore, PreconditionFailedError
from shared.store_commerce import DeepLinkError, PricedItem, build_create_transaction_link
from shared.timeutil import sortable

logger = logging.getLogger(__name__)

_CLAIMABLE = frozenset({LedgerStatus.PENDING, LedgerStatus.FAILED})
_FROM_CLAIMED = frozenset({LedgerStatus.CLAIMED})
# After the provider answered (or certainly did not send): from either state this invocation holds.
_FROM_HELD = frozenset({LedgerStatus.CLAIMED, LedgerStatus.SENDING})
_FROM_SENDING = frozenset({LedgerStatus.SENDING})
# Optional parts of the email, named in ``degraded`` when their look-up failed.
DEGRADED_IMAGES = "images"
DEGRADED_STORE_COMMERCE_LINK = "store_commerce_link"
# An accepted send that the ledger could not record (it stays "sending", never sent again).
NOT_RECORDED = "not_recorded"
_MAX_CONDITIONAL_ATTEMPTS = 8
# Upstream answers that an operator must fix (credentials, relying party, role): retrying the
# message later is right, so they raise like transient failures and end in the poison queue.
_OPERATOR_STATUSES = frozenset({401, 403})
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})

Status = Literal["sent", "previewed", "skipped", "failed", "ignored", "uncertain"]


class MalformedMessageError(ValueError):
    """The queue message cannot be read; retrying it would fail the same way."""


def decode_message(body: bytes) -> CartMessage:
    """The message, or :class:`MalformedMessageError` with a reason that holds no message content.

    The reason names the message's own fields only; a field it does not know is counted and its
    JSON type given, never its name, since a name can be anything a writer put there (a person's).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessageError("the message is not UTF-8 text") from None
    try:
        raw = json_limits.loads(text)
    except JsonTooDeepError as exc:
        raise MalformedMessageError(f"the message is not JSON: {exc}") from None
    except ValueError:
        raise MalformedMessageError("the message is not JSON") from None
    if not isinstance(raw, dict):
        raise MalformedMessageError("the message is not a JSON object")
    if raw.get("v") != 1:
        raise MalformedMessageError("the message has no supported version (v must be 1)")
    try:
        return CartMessage.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=True)
        problems = [
            f"{'.'.join(str(p) for p in error['loc']) or 'message'} ({error['type']})"
            for error in errors
            if error["type"] != "extra_forbidden"
        ]
        unknown = [_json_type(error["input"]) for error in errors if error["type"] == "extra_forbidden"]
        if unknown:
            count = len(unknown)
            problems.append(
                f"{count} unknown field{'s' if count != 1 else ''} "
                f"({', '.join(f'{n} {t}' for t, n in sorted(Counter(unknown).items()))})"
            )
        raise MalformedMessageError(f"the message has invalid fields: {', '.join(problems)}") from None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


@dataclass(frozen=True)
class NotifyConfig:
    consent_policy: ConsentPolicy
    frequency_cap: timedelta
    order_check: bool
    reminder_steps: list[timedelta]
    site_url: str | None
    return_to_cart_url_template: str | None
    unsubscribe_url_template: str | None
    image_base_url: str | None
    viewports: list[Viewport]
    # Sends that arrive within this window leave as one provider batch call (COALESCE_WINDOW_MS).
    send_window_seconds: float = 0.0
    # The signed {unsubscribeToken} of the unsubscribe link (shared/privacy/tokens.py).
    unsubscribe_signing_secret_name: str = "unsubscribe-signing-secret"  # noqa: S105 (a name, not a secret)
    unsubscribe_link_days: int = 365

    @property
    def unsubscribe_needs_token(self) -> bool:
        return uses_placeholder(self.unsubscribe_url_template, "unsubscribeToken")

    @classmethod
    def from_settings(cls, settings: Settings) -> NotifyConfig:
        return cls(
            consent_policy=settings.consent_policy,
            frequency_cap=timedelta(hours=settings.frequency_cap_hours),
            order_check=settings.order_check,
            reminder_steps=[timedelta(minutes=m) for m in settings.reminder_steps],
            site_url=settings.site_url,
            return_to_cart_url_template=settings.return_to_cart_url_template,
            unsubscribe_url_template=settings.unsubscribe_url_template,
            image_base_url=settings.image_base_url,
            viewports=[Viewport.from_setting(v) for v in settings.image_viewports],
            send_window_seconds=settings.coalesce_window_ms / 1000,
            unsubscribe_signing_secret_name=settings.unsubscribe_signing_secret_name,
            unsubscribe_link_days=settings.unsubscribe_link_days,
        )


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: str | None
    cart_id: str
    cart_version: int
    step: int
    provider_ids: dict[str, str] = field(default_factory=dict)
    # The optional parts the email went without ("images", "store_commerce_link").
    degraded: tuple[str, ...] = ()


class _SkippedError(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _ClaimLostError(Exception):
    """Another invocation took this entry over before the send: this one must not send."""


@dataclass(frozen=True)
class _Prepared:
    message: EmailMessage
    degraded: tuple[str, ...]


class FrequencyCap:
    """At most one abandoned-cart sequence per customer per window, across all carts and channels.

    One document per customer (``state``, partition ``freqcap|<account>``) names the cart version
    that holds the window; it is taken with a conditional write, so of two carts of one customer
    sent at the same moment only one passes. The reminder steps of the holding cart version pass:
    their timing is what ``REMINDER_STEPS`` asks for.
    """

    def __init__(self, store: DocumentStore, window: timedelta, *, namespace: str = "freqcap") -> None:
        self._store = store
        self._window = window
        self._namespace = namespace

    def _partition(self, customer_id: str) -> str:
        return f"{self._namespace}|{customer_id}"

    def _ttl(self) -> int:
        return int(self._window.total_seconds()) + 86_400

    async def reserve(self, customer_id: str, holder: str, now: datetime) -> bool:
        if self._window <= timedelta(0):
            return True
        partition = self._partition(customer_id)
        for _ in range(_MAX_CONDITIONAL_ATTEMPTS):
            document = await self._store.read("state", partition, "cap")
            previous = None if document is None else document.body.get("sentAt")
            body = {
                "kind": "frequency-cap",
                "holder": holder,
                "sentAt": sortable(now),
                "previousAt": previous,
            }
            try:
                if document is None:
                    await self._store.create("state", partition, "cap", body, ttl_seconds=self._ttl())
                    return True
                if document.body.get("holder") == holder:
                    return True
                if previous is not None and datetime.fromisoformat(previous) > now - self._window:
                    return False
                await self._store.replace(
                    "state", partition, "cap", body, etag=document.etag, ttl_seconds=self._ttl()
                )
                return True
            except (ConflictError, PreconditionFailedError):
                continue
        return False

    async def held_by_other(self, customer_id: str, holder: str, now: datetime) -> bool:
        """Whether ``reserve`` would refuse now; a read only, to skip work that would be wasted."""
        if self._window <= timedelta(0):
            return False
        document = await self._store.read("state", self._partition(customer_id), "cap")
        if document is None or document.body.get("holder") == holder:
            return False
        sent_at = document.body.get("sentAt")
        return sent_at is not None and datetime.fromisoformat(sent_at) > now - self._window

    async def release(self, customer_id: str, holder: str) -> None:
        """Give the window back when the email did not go out after all."""
        if self._window <= timedelta(0):
            return
        partition = self._partition(customer_id)
        document = await self._store.read("state", partition, "cap")
        if document is None or document.body.get("holder") != holder:
            return
        previous = document.body.get("previousAt")
        try:
            if previous is None:
                await self._store.delete("state", partition, "cap", etag=document.etag)
            else:
                body = {"kind": "frequency-cap", "holder": None, "sentAt": previous, "previousAt": None}
                await self._store.replace(
                    "state", partition, "cap", body, etag=document.etag, ttl_seconds=self._ttl()
                )
        except PreconditionFailedError:
            return


def is_permanent(exc: BaseException) -> bool:
    """Failures a retry of the same message cannot fix and no operator action is waiting for."""
    if isinstance(exc, ProviderRejectedError | RetailServerContractError):
        return True
    if isinstance(exc, UpstreamError) and exc.status is not None:
        return 400 <= exc.status < 500 and exc.status not in _OPERATOR_STATUSES | _RETRYABLE_STATUSES
    return False


def _certainly_not_sent(exc: BaseException) -> bool:
    """A provider error that proves the message did not go out: a refusal, a rate limit, an outage
    answered before processing, no connection. An uncertain one, or anything else, proves nothing."""
    return isinstance(exc, ProviderError) and not isinstance(exc, ProviderUncertainError)


def failure_reason(exc: BaseException) -> str:
    """A short, stable reason for the ledger; the detail (safe to log) is in the log line."""
    if isinstance(exc, UpstreamResponseTooLargeError):
        # It has the status of an answer that came, so "unreachable" would send operators astray.
        return f"{exc.service.lower().replace(' ', '_')}_response_too_large"
    if isinstance(exc, RetailServerUnreadableError):
        return "retail_server_unreadable"
    if isinstance(exc, UpstreamError):
        return f"{exc.service.lower().replace(' ', '_')}_{exc.status or 'unreachable'}"
    if isinstance(exc, SecretUnavailableError):
        return "key_vault_unavailable"
    if isinstance(exc, TokenError):
        return exc.reason
    if isinstance(exc, ProviderConfigurationError):
        return "provider_misconfigured"
    if isinstance(exc, ProviderUncertainError):
        return f"provider_{exc.reason}"
    if isinstance(exc, ProviderTransientError):
        return "provider_unavailable"
    if isinstance(exc, ProviderRejectedError):
        return "provider_rejected"
    return type(exc).__name__


class NotifyService:
    def __init__(
        self,
        *,
        retail: RetailServerClient,
        store: DocumentStore,
        provider: EmailProvider,
        enricher: Enricher,
        config: NotifyConfig,
        secrets: SecretSource | None = None,
    ) -> None:
        self._retail = retail
        # Only needed when UNSUBSCRIBE_URL_TEMPLATE uses {unsubscribeToken}.
        self._secrets = secrets
        self._ledger = Ledger(store)
        self._store = store
        self._provider = provider
        self._sender = BatchingSender(provider, window_seconds=config.send_window_seconds)
        # The preview provider (EMAIL_PROVIDER=preview, DRY_RUN=true) writes files, sends nothing.
        self._previews_only = not getattr(provider, "sends_email", True)
        # A provider that does not say it de-duplicates is taken not to: at most once is the safe side.
        self._deduplicates = bool(getattr(provider, "deduplicates", False))
        self._orders = OrderCheck(retail, enabled=config.order_check)
        self._enricher = enricher
        self._config = config
        self._suppression = SuppressionList(store)
        # A dry run is capped like real sends, so its previews show what would go out, but in a
        # namespace of its own, so going live finds every customer's real window free.
        self._cap = FrequencyCap(
            store, config.frequency_cap, namespace="freqcap-dryrun" if self._previews_only else "freqcap"
        )
        self.outcomes: Counter[str] = Counter()

    async def close(self) -> None:
        """Let batched sends finish; the provider itself is closed by its own owner."""
        await self._sender.close()

    async def handle(self, message: CartMessage, now: datetime) -> Outcome:
        claimed = await self._claim(message, now)
        if isinstance(claimed, Outcome):
            return self._log(claimed)
        try:
            outcome = await self._process(claimed, now)
        except _ClaimLostError:
            outcome = Outcome("ignored", "claim_lost", claimed.cart_id, claimed.cart_version, claimed.step)
            return self._log(outcome)
        except Exception as exc:
            reason = failure_reason(exc)
            # Only a failure that certainly sent nothing may leave "sending" for the retryable
            # "failed"; anything else keeps "sending", which no retry takes (it becomes "uncertain").
            allowed = _FROM_HELD if _certainly_not_sent(exc) else _FROM_CLAIMED
            try:
                await self._finish(claimed, LedgerStatus.FAILED, now, reason=reason, allowed_from=allowed)
            except Exception:
                logger.exception(
                    "could not record the failure of cart %s step %d", claimed.cart_id, claimed.step
                )
            outcome = Outcome("failed", reason, claimed.cart_id, claimed.cart_version, claimed.step)
            self._log(outcome, error=exc)
            if is_permanent(exc):
                return outcome
            raise
        return self._log(outcome)

    # ----- claim and record

    async def _claim(self, message: CartMessage, now: datetime) -> LedgerEntry | Outcome:
        """The claimed entry, or the outcome of a message that finds nothing to do."""
        ids = (message.cart_id, message.cart_version, message.step)
        for _ in range(_MAX_CONDITIONAL_ATTEMPTS):
            found = await self._ledger.get(*ids)
            if found is None:
                return Outcome("ignored", "no_ledger_entry", *ids)
            entry, etag = found
            stale = entry.updated_at < now - CLAIM_LEASE
            if entry.status is LedgerStatus.SENDING and stale:
                return await self._settle_stale_sending(entry, now)
            stale_claim = entry.status is LedgerStatus.CLAIMED and stale
            if entry.status not in _CLAIMABLE and not stale_claim:
                return Outcome("ignored", f"already_{entry.status.value}", *ids)
            claimed = entry.model_copy(
                update={
                    "status": LedgerStatus.CLAIMED,
                    "reason": None,
                    "attempts": entry.attempts + 1,
                    "updated_at": now,
                }
            )
            try:
                await self._store.replace("ledger", entry.cart_id, entry.key, claimed.body(), etag=etag)
            except PreconditionFailedError:
                continue
            return claimed
        return Outcome("ignored", "claim_contended", *ids)

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

    async def _finish(
        self,
        entry: LedgerEntry,
        status: LedgerStatus,
        now: datetime,
        *,
        reason: str | None = None,
        provider_ids: dict[str, str] | None = None,
        degraded: tuple[str, ...] | None = None,
        allowed_from: frozenset[LedgerStatus] = _FROM_HELD,
    ) -> None:
        await self._ledger.transition(
            entry.cart_id,
            entry.cart_version,
            entry.step,
            allowed_from=allowed_from,
            to=status,
            now=now,
            reason=reason,
            provider_ids=provider_ids,
            degraded=None if degraded is None else list(degraded),
        )

    def _log(self, outcome: Outcome, *, error: BaseException | None = None) -> Outcome:
        self.outcomes[f"{outcome.status}:{outcome.reason}" if outcome.reason else outcome.status] += 1
        for part in outcome.degraded:
            self.outcomes[f"degraded:{part}"] += 1
        text = "abandoned-cart notify %s"
        record = {
            "cartId": outcome.cart_id,
            "cartVersion": outcome.cart_version,
            "step": outcome.step,
            "status": outcome.status,
            "reason": outcome.reason,
            "degraded": list(outcome.degraded),
        }
        if error is not None:
            # str() of these errors is safe to log by contract: no address, no secret.
            logger.error(text + ": %s", json.dumps(record), error)
        elif outcome.status == "uncertain" or outcome.reason == NOT_RECORDED:
            logger.warning(
                text + ": the email went out once or not at all and is never sent again; the "
                "provider's activity for dedup key %s tells which",
                json.dumps(record),
                dedup_key(outcome.cart_id, outcome.cart_version, outcome.step),
            )
        else:
            logger.info(text, json.dumps(record))
        return outcome

    # ----- the decision

    async def _process(self, entry: LedgerEntry, now: datetime) -> Outcome:
        try:
            prepared = await self._prepare(entry, now)
        except _SkippedError as skip:
            await self._finish(entry, LedgerStatus.SKIPPED, now, reason=skip.reason)
            return Outcome("skipped", skip.reason, entry.cart_id, entry.cart_version, entry.step)
        holder = self._holder(entry)
        if not await self._cap.reserve(entry.customer_id, holder, now):
            await self._finish(entry, LedgerStatus.SKIPPED, now, reason="frequency_cap")
            return Outcome("skipped", "frequency_cap", entry.cart_id, entry.cart_version, entry.step)
        if not self._deduplicates:
            await self._mark_sending(entry, now)
        try:
            result = await self._sender.send(prepared.message)
        except (ProviderRejectedError, ProviderConfigurationError):
            # Certainly not sent, so the customer's window is given back. After a transient error
            # it is kept: a timeout can hide an accepted send, and the retry holds the window anyway.
            await self._cap.release(entry.customer_id, holder)
            raise
        except Exception as exc:
            if self._deduplicates or _certainly_not_sent(exc):
                raise
            # The provider may have sent it and cannot drop a repeat: never again. The window stays held.
            return await self._record_uncertain(entry, exc, prepared.degraded, now)
        if self._previews_only:
            return await self._record_preview(entry, result, prepared.degraded, now)
        return await self._record_result(entry, result, prepared.degraded, holder, now)

    async def _mark_sending(self, entry: LedgerEntry, now: datetime) -> None:
        """claimed -> sending, only while this invocation's claim holds (a takeover counts an attempt)."""
        try:
            await self._ledger.transition(
                entry.cart_id,
                entry.cart_version,
                entry.step,
                allowed_from=_FROM_CLAIMED,
                to=LedgerStatus.SENDING,
                now=now,
                attempts=entry.attempts,
            )
        except TransitionError:
            raise _ClaimLostError() from None

    async def _record_uncertain(
        self, entry: LedgerEntry, exc: Exception, degraded: tuple[str, ...], now: datetime
    ) -> Outcome:
        detail = exc.reason if isinstance(exc, ProviderUncertainError) else "unexpected_error"
        reason = f"{self._provider.name}_{detail}"
        # str() of provider errors is safe to log by contract; an unexpected one is named by type.
        logger.warning(
            "cart %s step %d: the send through %s may have gone out (%s)",
            entry.cart_id,
            entry.step,
            self._provider.name,
            exc if isinstance(exc, ProviderError) else type(exc).__name__,
        )
        try:
            await self._finish(
                entry,
                LedgerStatus.UNCERTAIN,
                now,
                reason=reason,
                degraded=degraded,
                allowed_from=_FROM_SENDING,
            )
        except Exception:
            # It stays "sending", which nothing re-sends; the claim lease turns it "uncertain" later.
            logger.exception("could not record cart %s step %d as uncertain", entry.cart_id, entry.step)
        return Outcome("uncertain", reason, entry.cart_id, entry.cart_version, entry.step, degraded=degraded)

    @staticmethod
    def _holder(entry: LedgerEntry) -> str:
        return f"{entry.cart_id}|v{entry.cart_version}"

    async def _record_preview(
        self, entry: LedgerEntry, result: SendResult, degraded: tuple[str, ...], now: datetime
    ) -> Outcome:
        """The terminal ``previewed`` state: a cart handled in a dry run is not mailed later, when
        the connector goes live, unless it changes (a new version starts again at step 1)."""
        ids = dict(result.provider_ids)
        await self._finish(entry, LedgerStatus.PREVIEWED, now, provider_ids=ids, degraded=degraded)
        return Outcome("previewed", None, entry.cart_id, entry.cart_version, entry.step, ids, degraded)

    async def _record_result(
        self,
        entry: LedgerEntry,
        result: SendResult,
        degraded: tuple[str, ...],
        holder: str,
        now: datetime,
    ) -> Outcome:
        if result.status == "sent":
            return await self._record_sent(entry, result, degraded, now)
        await self._cap.release(entry.customer_id, holder)
        reason = result.reason or f"provider_{result.status}"
        status = LedgerStatus.SKIPPED if result.status == "skipped" else LedgerStatus.FAILED
        await self._finish(entry, status, now, reason=reason, provider_ids=dict(result.provider_ids))
        return Outcome(
            "skipped" if result.status == "skipped" else "failed",
            reason,
            entry.cart_id,
            entry.cart_version,
            entry.step,
        )

    async def _record_sent(
        self, entry: LedgerEntry, result: SendResult, degraded: tuple[str, ...], now: datetime
    ) -> Outcome:
        ids = dict(result.provider_ids)
        outcome = Outcome("sent", None, entry.cart_id, entry.cart_version, entry.step, ids, degraded)
        try:
            await self._finish(entry, LedgerStatus.SENT, now, provider_ids=ids, degraded=degraded)
        except Exception as exc:
            if self._deduplicates:
                # Recorded as failed and retried: the provider drops the repeat (exactly once).
                raise
            if not await self._retry_sent(entry, ids, degraded, now, exc):
                return replace(outcome, reason=NOT_RECORDED)
        await self._arm_next_step(entry, now)
        return outcome

    async def _retry_sent(
        self,
        entry: LedgerEntry,
        ids: dict[str, str],
        degraded: tuple[str, ...],
        now: datetime,
        first: Exception,
    ) -> bool:
        """The provider accepted, the ledger write failed; a provider without dedup must never be
        asked again, so the write is tried once more here rather than by a retry of the message.
        False when it failed again: the entry stays ``sending`` (never re-sent, ``uncertain`` after
        the claim lease)."""
        logger.warning(
            "cart %s step %d: recording the accepted send failed (%s); trying once more",
            entry.cart_id,
            entry.step,
            type(first).__name__,
        )
        try:
            await self._finish(entry, LedgerStatus.SENT, now, provider_ids=ids, degraded=degraded)
        except TransitionError as exc:
            # The first write may have landed after all.
            if exc.entry is not None and exc.entry.status is LedgerStatus.SENT:
                return True
            logger.error("cart %s step %d: %s", entry.cart_id, entry.step, exc)
            return False
        except Exception as exc:
            logger.error(
                "cart %s step %d: the provider accepted the email but the ledger could not record it "
                "(%s); it stays 'sending' and is never sent again",
                entry.cart_id,
                entry.step,
                type(exc).__name__,
            )
            return False
        return True

    async def _arm_next_step(self, entry: LedgerEntry, now: datetime) -> None:
        steps = self._config.reminder_steps
        if entry.step >= len(steps):
            return
        following = LedgerEntry(
            cart_id=entry.cart_id,
            cart_version=entry.cart_version,
            step=entry.step + 1,
            oun=entry.oun,
            customer_id=entry.customer_id,
            modified_at=entry.modified_at,
            # On schedule, but never sooner after this step than the schedule spaces them: a step
            # sent late (go-live, downtime, a backlog) must not be followed by the next at once.
            due_at=max(
                entry.modified_at + steps[entry.step],
                now + (steps[entry.step] - steps[entry.step - 1]),
            ),
            queued_at=None,
            updated_at=now,
        )
        await self._ledger.record(following)

    async def _prepare(self, entry: LedgerEntry, now: datetime) -> _Prepared:
        if entry.step > 1:
            before = await self._ledger.get(entry.cart_id, entry.cart_version, entry.step - 1)
            if before is None or before[0].status is not LedgerStatus.SENT:
                raise _SkippedError("previous_step_not_sent")
        cart = await self._current_cart(entry)
        latest = await self._ledger.latest_cart(entry.oun, entry.customer_id)
        if latest is not None and latest != entry.cart_id:
            raise _SkippedError("superseded")
        customer = await self._enricher.customer(entry.oun, entry.customer_id)
        if customer is None:
            raise _SkippedError("customer_not_found")
        refusal = consent_refusal(customer, self._config.consent_policy)
        if refusal is not None:
            raise _SkippedError(refusal)
        email = email_of(customer)
        assert email is not None  # consent_refusal answers "no_email" otherwise
        if await self._suppression.contains(email):
            raise _SkippedError("suppressed")
        # Cheap checks first: a capped customer costs no order search and no product look-ups.
        # The reservation that really decides is taken right before sending.
        if await self._cap.held_by_other(entry.customer_id, self._holder(entry), now):
            raise _SkippedError("frequency_cap")
        if await self._orders.ordered_since(entry.oun, entry.customer_id, entry.modified_at, now):
            raise _SkippedError("ordered_since")
        payload, degraded = await self._payload(entry, cart, customer, email, now)
        try:
            recipient = Recipient(
                email=email,
                first_name=customer.first_name or None,
                last_name=customer.last_name or None,
                language=payload.language,
                customer_id=customer.account_number,
            )
        except ValidationError:
            raise _SkippedError("invalid_email") from None
        message = EmailMessage(
            dedup_key=dedup_key(entry.cart_id, entry.cart_version, entry.step),
            recipient=recipient,
            data=payload.data(),
        )
        return _Prepared(message, degraded)

    async def _current_cart(self, entry: LedgerEntry) -> Cart:
        cart = await self._retail.get_cart(entry.oun, entry.cart_id)
        if cart is None:
            # Checking out turns the cart into an order and removes it from the cart table.
            raise _SkippedError("cart_gone")
        if cart.cart_status_value == CartStatus.VOIDED:
            raise _SkippedError("voided")
        if cart.cart_type_value != CartType.SHOPPING:
            raise _SkippedError("checked_out")
        if cart.version != entry.cart_version or cart.modified_date_time != entry.modified_at:
            raise _SkippedError("cart_changed")
        if not cart.active_lines:
            raise _SkippedError("no_lines")
        return cart

    async def _payload(
        self, entry: LedgerEntry, cart: Cart, customer: Customer, email: str, now: datetime
    ) -> tuple[AbandonedCartPayload, tuple[str, ...]]:
        """The email's data, and the optional parts it goes without because their look-up failed."""
        channel = await self._enricher.channel(entry.oun)
        channel_id = cart.channel_id or channel.record_id
        lines = [line for line in cart.active_lines if line.product_id is not None]
        product_ids = [line.product_id for line in lines if line.product_id is not None]
        products = await self._enricher.products(entry.oun, channel_id, product_ids)
        found_ids = [pid for pid in dict.fromkeys(product_ids) if pid in products]
        media = dict(
            zip(
                found_ids,
                await asyncio.gather(
                    *(self._enricher.media_or_none(entry.oun, channel_id, pid) for pid in found_ids)
                ),
                strict=True,
            )
        )
        degraded: list[str] = []
        if any(found is None for found in media.values()):
            degraded.append(DEGRADED_IMAGES)
        product_lines: list[ProductLine] = []
        for line in lines:
            assert line.product_id is not None
            product = products.get(line.product_id)
            if product is None:
                logger.warning(
                    "cart %s: product %d not found on channel %s; its line is left out",
                    entry.cart_id,
                    line.product_id,
                    entry.oun,
                )
                continue
            name = product.name or line.description or product.item_id or str(product.record_id)
            images = image_set(
                # Without its media locations (the look-up failed) the product's primary image,
                # if Products/GetByIds gave one, still serves, without its alt text.
                media=media.get(product.record_id) or [],
                primary_image_url=product.primary_image_url,
                product_name=name,
                base_url=self._config.image_base_url,
                viewports=self._config.viewports,
            )
            product_lines.append(
                ProductLine(
                    product_id=product.record_id,
                    item_id=line.item_id or product.item_id,
                    name=name,
                    quantity=line.quantity,
                    unit_price=line.price,
                    line_amount=(
                        line.extended_price if line.extended_price is not None else line.price * line.quantity
                    ),
                    url=product_url(self._config.site_url, name, product.record_id),
                    image=ProductImageData.of(images),
                )
            )
        if not product_lines:
            raise _SkippedError("no_products_found")
        link, omitted = self._store_commerce_link(entry, product_lines)
        if link is None:
            degraded.append(DEGRADED_STORE_COMMERCE_LINK)
        values: dict[str, str | int] = {
            "cartId": cart.id,
            "oun": entry.oun,
            "channelId": channel_id,
            "customerId": customer.account_number,
        }
        if self._config.unsubscribe_needs_token:
            values["unsubscribeToken"] = await self._unsubscribe_token(email, now)
        subtotal = cart.subtotal_amount
        if subtotal is None:
            subtotal = sum((p.line_amount for p in product_lines), Decimal(0))
        payload = AbandonedCartPayload(
            cart_id=cart.id,
            cart_version=cart.version,
            step=entry.step,
            oun=entry.oun,
            channel_id=channel_id,
            customer_id=customer.account_number,
            first_name=customer.first_name or None,
            last_name=customer.last_name or None,
            email=email,
            language=customer.language or channel.default_language_id,
            currency=channel.currency,
            cart_url=fill_template(self._config.return_to_cart_url_template, values),
            products=product_lines,
            subtotal=subtotal,
            total=cart.total_amount if cart.total_amount is not None else subtotal,
            store_commerce_link=link,
            store_commerce_link_omitted_products=omitted,
            unsubscribe_url=fill_template(self._config.unsubscribe_url_template, values),
        )
        return payload, tuple(degraded)

    async def _unsubscribe_token(self, email: str, now: datetime) -> str:
        if self._secrets is None:
            raise ProviderConfigurationError(
                "UNSUBSCRIBE_URL_TEMPLATE uses {unsubscribeToken} but notify has no secret source"
            )
        name = self._config.unsubscribe_signing_secret_name
        secret = await self._secrets.get(name)
        try:
            return token_for(email, secret=secret, now=now, days=self._config.unsubscribe_link_days)
        except WeakSecretError as exc:
            raise ProviderConfigurationError(
                f"secret {name!r} (UNSUBSCRIBE_SIGNING_SECRET_NAME): {exc}"
            ) from None

    def _store_commerce_link(
        self, entry: LedgerEntry, lines: list[ProductLine]
    ) -> tuple[str | None, list[int]]:
        items = [
            PricedItem(product_id=line.product_id, quantity=line.quantity, unit_price=line.unit_price)
            for line in lines
            if line.quantity > 0
        ]
        try:
            built = build_create_transaction_link(entry.customer_id, items)
        except (DeepLinkError, ValidationError) as exc:
            # Optional: the email goes without it (degraded), never fails for it.
            logger.warning("cart %s: no Store Commerce link (%s)", entry.cart_id, type(exc).__name__)
            return None, []
        return built.url, built.dropped_product_ids
