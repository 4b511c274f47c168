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
import logging
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime

from pydantic import ValidationError

from shared import json_limits
from shared.abandoned_carts import observe
from shared.abandoned_carts.checks import cart_refusal, previous_step_refusal, superseded_refusal
from shared.abandoned_carts.claim import Claimed, Claimer
from shared.abandoned_carts.enrich import Enricher
from shared.abandoned_carts.frequency_cap import FrequencyCap
from shared.abandoned_carts.messages import SUPPORTED_VERSIONS, CartMessage
from shared.abandoned_carts.notify_config import NotifyConfig
from shared.abandoned_carts.orders import OrderCheck
from shared.abandoned_carts.outcome import Outcome, Status
from shared.abandoned_carts.payload import dedup_key
from shared.abandoned_carts.render import (
    DEGRADED_IMAGES,
    DEGRADED_STORE_COMMERCE_LINK,
    Rendered,
    Renderer,
    RenderSkipError,
)
from shared.concurrency import unwrap
from shared.email.base import (
    EmailProvider,
    ProviderConfigurationError,
    ProviderError,
    ProviderRejectedError,
    ProviderTransientError,
    ProviderUncertainError,
    SendResult,
)
from shared.email.batching import BatchingSender
from shared.http import UpstreamError, UpstreamResponseTooLargeError
from shared.identity import TokenError
from shared.json_limits import JsonTooDeepError
from shared.privacy.consent import consent_refusal, email_of
from shared.privacy.redaction import redact
from shared.privacy.suppression import SuppressionList
from shared.recovery.experiment import Experiment
from shared.recovery.records import TrackedCart
from shared.retail_server.client import (
    RetailServerClient,
    RetailServerContractError,
    RetailServerUnreadableError,
)
from shared.retail_server.models import Cart, Customer
from shared.secrets import SecretSource, SecretUnavailableError
from shared.state.ledger import CLAIM_LEASE, Hold, Ledger, LedgerEntry, LedgerStatus, TransitionError
from shared.state.store import DocumentStore

__all__ = [
    "CLAIM_LEASE",
    "DEGRADED_IMAGES",
    "DEGRADED_STORE_COMMERCE_LINK",
    "NOT_RECORDED",
    "MalformedMessageError",
    "NotifyConfig",
    "NotifyService",
    "Outcome",
    "Status",
    "decode_message",
    "failure_reason",
    "is_permanent",
]

logger = logging.getLogger(__name__)

_FROM_CLAIMED = frozenset({LedgerStatus.CLAIMED})
# After the provider answered (or certainly did not send): from either state this invocation holds.
_FROM_HELD = frozenset({LedgerStatus.CLAIMED, LedgerStatus.SENDING})
_FROM_SENDING = frozenset({LedgerStatus.SENDING})
# An accepted send that the ledger could not record (it stays "sending", never sent again).
NOT_RECORDED = "not_recorded"
# Upstream answers that an operator must fix (credentials, relying party, role): retrying the
# message later is right, so they raise like transient failures and end in the poison queue.
_OPERATOR_STATUSES = frozenset({401, 403})
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


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
    if raw.get("v") not in SUPPORTED_VERSIONS or isinstance(raw.get("v"), bool):
        raise MalformedMessageError("the message has no supported version (v must be 1 or 2)")
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


class _SkippedError(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _refuse(reason: str | None) -> None:
    if reason is not None:
        raise _SkippedError(reason)


class _ClaimLostError(Exception):
    """Another invocation took this entry over before the send: this one must not send."""


@dataclass
class _Run:
    """One invocation's claim, and whether the provider was called yet: before the call, no
    failure can have sent anything."""

    claimed: Claimed
    provider_called: bool = False
    # The cart's group in the recovery report's experiment, recorded with the step's outcome.
    enrolment: TrackedCart | None = None

    @property
    def entry(self) -> LedgerEntry:
        return self.claimed.entry

    @property
    def hold(self) -> Hold:
        return self.claimed.hold

    @property
    def holder(self) -> str:
        """The frequency cap's holder: this cart version (its reminder steps share the window)."""
        return f"{self.entry.cart_id}|v{self.entry.cart_version}"


@dataclass(frozen=True)
class _Prepared:
    cart: Cart
    customer: Customer
    rendered: Rendered


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
    """The pipeline of one message: claim, checks, enrich, render, send, record."""

    def __init__(
        self,
        *,
        retail: RetailServerClient,
        store: DocumentStore,
        provider: EmailProvider,
        enricher: Enricher,
        config: NotifyConfig,
        secrets: SecretSource | None = None,
        experiment: Experiment | None = None,
    ) -> None:
        self._retail = retail
        self._ledger = Ledger(store)
        self._provider = provider
        self._sender = BatchingSender(provider, window_seconds=config.send_window_seconds)
        # The preview provider (EMAIL_PROVIDER=preview, DRY_RUN=true) writes files, sends nothing.
        self._previews_only = not getattr(provider, "sends_email", True)
        # A provider that does not say it de-duplicates is taken not to: at most once is the safe side.
        self._deduplicates = bool(getattr(provider, "deduplicates", False))
        self._orders = OrderCheck(retail, enabled=config.order_check)
        self._enricher = enricher
        self._renderer = Renderer(config, secrets)
        self._config = config
        self._suppression = SuppressionList(store)
        # A dry run is capped like real sends, so its previews show what would go out, but in a
        # namespace of its own, so going live finds every customer's real window free.
        self._cap = FrequencyCap(
            store, config.frequency_cap, namespace="freqcap-dryrun" if self._previews_only else "freqcap"
        )
        self._claimer = Claimer(store, self._ledger, self._cap)
        # The holdout of the recovery report (shared/recovery): None measures nothing.
        self._experiment = experiment
        self.outcomes: Counter[str] = Counter()

    async def close(self) -> None:
        """Let batched sends finish; the provider itself is closed by its own owner."""
        await self._sender.close()

    async def handle(self, message: CartMessage, now: datetime) -> Outcome:
        claimed = await self._claimer.claim(message, now)
        if isinstance(claimed, Outcome):
            return self._log(claimed, message.oun)
        run = _Run(claimed)
        entry = run.entry
        try:
            outcome = await self._process(run, now)
        except _ClaimLostError:
            outcome = Outcome("ignored", "claim_lost", entry.cart_id, entry.cart_version, entry.step)
            return self._log(outcome, message.oun)
        except Exception as exc:
            reason = failure_reason(exc)
            # Only a failure that certainly sent nothing may leave "sending" for the retryable
            # "failed"; anything else keeps "sending", which no retry takes (it becomes "uncertain").
            certain = not run.provider_called or _certainly_not_sent(exc)
            try:
                await self._finish(
                    run,
                    LedgerStatus.FAILED,
                    now,
                    reason=reason,
                    allowed_from=_FROM_HELD if certain else _FROM_CLAIMED,
                )
            except Exception:
                logger.exception("could not record the failure of cart %s step %d", entry.cart_id, entry.step)
            outcome = Outcome("failed", reason, entry.cart_id, entry.cart_version, entry.step)
            self._log(outcome, message.oun, error=exc)
            if is_permanent(exc):
                return outcome
            raise
        return self._log(outcome, message.oun)

    async def _process(self, run: _Run, now: datetime) -> Outcome:
        entry = run.entry
        try:
            prepared = await self._prepare(run, now)
        except (_SkippedError, RenderSkipError) as skip:
            return await self._skip(run, skip.reason, now)
        if not await self._reserve(run, now):
            return await self._skip(run, "frequency_cap", now)
        if self._experiment is not None:
            currency = prepared.rendered.message.data.get("currency")
            run.enrolment = await self._experiment.enrolment(entry, prepared.cart, currency, now)
            if run.enrolment is not None and run.enrolment.group == "holdout":
                return await self._hold_out(run, now)
        degraded = prepared.rendered.degraded
        run.provider_called = True
        try:
            result = await self._sender.send(prepared.rendered.message)
        except (ProviderRejectedError, ProviderConfigurationError):
            # Certainly not sent, so the customer's window is given back. After a transient error
            # it is kept: a timeout can hide an accepted send, and the retry holds the window anyway.
            await self._cap.release(entry.customer_id, run.holder)
            raise
        except Exception as exc:
            if self._deduplicates or _certainly_not_sent(exc):
                raise
            # The provider may have sent it and cannot drop a repeat: never again. The window stays held.
            return await self._record_uncertain(run, exc, degraded, now)
        if self._previews_only:
            return await self._record_preview(run, result, degraded, now)
        return await self._record_result(run, result, degraded, now)

    # ----- checks, enrich, render

    async def _prepare(self, run: _Run, now: datetime) -> _Prepared:
        """The email, after every refusal in order; each look-up set runs together, and the cheap
        refusals come before the look-ups they make pointless."""
        entry, claimed = run.entry, run.claimed
        _refuse(previous_step_refusal(entry, unwrap(claimed.previous)))
        cart_read, customer_read = await asyncio.gather(
            self._retail.get_cart(entry.oun, entry.cart_id),
            self._enricher.customer(entry.oun, entry.customer_id),
            return_exceptions=True,
        )
        cart = unwrap(cart_read)
        _refuse(cart_refusal(entry, cart))
        assert cart is not None
        _refuse(superseded_refusal(entry, unwrap(claimed.latest_cart_id)))
        customer = unwrap(customer_read)
        if customer is None:
            raise _SkippedError("customer_not_found")
        _refuse(consent_refusal(customer, self._config.consent_policy))
        email = email_of(customer)
        assert email is not None  # consent_refusal answers "no_email" otherwise
        if self._cap.refuses(unwrap(claimed.cap), run.holder, now):
            # A capped customer costs no order search and no product look-ups.
            _refuse("suppressed" if await self._suppression.contains(email) else "frequency_cap")
        suppressed, ordered, catalog = await asyncio.gather(
            self._suppression.contains(email),
            self._orders.ordered_since(entry.oun, entry.customer_id, entry.modified_at, now),
            self._enricher.catalog(entry.oun, cart),
            return_exceptions=True,
        )
        if unwrap(suppressed):
            raise _SkippedError("suppressed")
        if unwrap(ordered):
            raise _SkippedError("ordered_since")
        rendered = await self._renderer.render(entry, cart, customer, email, unwrap(catalog), now)
        return _Prepared(cart, customer, rendered)

    # ----- send

    async def _reserve(self, run: _Run, now: datetime) -> bool:
        """Take the customer's window (on the cap read of the claim) and, for a provider without
        dedup, mark the entry ``sending``, both at once; False when another cart holds the window."""
        entry = run.entry
        reserved, marked = await asyncio.gather(
            self._cap.reserve(entry.customer_id, run.holder, now, seen=unwrap(run.claimed.cap)),
            self._mark_sending(run, now),
            return_exceptions=True,
        )
        unwrap(marked)
        return unwrap(reserved)

    async def _mark_sending(self, run: _Run, now: datetime) -> None:
        """claimed -> sending, only while this invocation's claim holds (a takeover counts an attempt)."""
        if self._deduplicates:
            return
        try:
            await self._ledger.transition(
                run.entry.cart_id,
                run.entry.cart_version,
                run.entry.step,
                allowed_from=_FROM_CLAIMED,
                to=LedgerStatus.SENDING,
                now=now,
                attempts=run.entry.attempts,
                hold=run.hold,
            )
        except TransitionError:
            raise _ClaimLostError() from None

    # ----- record

    async def _finish(
        self,
        run: _Run,
        status: LedgerStatus,
        now: datetime,
        *,
        reason: str | None = None,
        provider_ids: dict[str, str] | None = None,
        degraded: tuple[str, ...] | None = None,
        allowed_from: frozenset[LedgerStatus] = _FROM_HELD,
    ) -> None:
        entry = run.entry
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
            hold=run.hold,
        )

    async def _skip(self, run: _Run, reason: str, now: datetime) -> Outcome:
        await self._finish(run, LedgerStatus.SKIPPED, now, reason=reason)
        return Outcome("skipped", reason, run.entry.cart_id, run.entry.cart_version, run.entry.step)

    async def _hold_out(self, run: _Run, now: datetime) -> Outcome:
        """Held out: no email, ever, for this cart version; the customer's window stays taken, as
        a mailed customer's would, so both groups see the same frequency cap."""
        finished, _ = await asyncio.gather(
            self._finish(run, LedgerStatus.HELD_OUT, now), self._enrol(run), return_exceptions=True
        )
        unwrap(finished)
        return Outcome("held_out", None, run.entry.cart_id, run.entry.cart_version, run.entry.step)

    async def _enrol(self, run: _Run) -> None:
        """Put the cart in its group for the recovery report; a failure costs that cart's tracking,
        never its email or its ledger record."""
        if self._experiment is None or run.enrolment is None:
            return
        try:
            await self._experiment.enrol(run.enrolment)
        except Exception as exc:
            logger.warning(
                "cart %s: could not enrol it for the recovery report (%s)",
                run.entry.cart_id,
                type(exc).__name__,
            )

    async def _record_uncertain(
        self, run: _Run, exc: Exception, degraded: tuple[str, ...], now: datetime
    ) -> Outcome:
        entry = run.entry
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
                run, LedgerStatus.UNCERTAIN, now, reason=reason, degraded=degraded, allowed_from=_FROM_SENDING
            )
        except Exception:
            # It stays "sending", which nothing re-sends; the claim lease turns it "uncertain" later.
            logger.exception("could not record cart %s step %d as uncertain", entry.cart_id, entry.step)
        return Outcome("uncertain", reason, entry.cart_id, entry.cart_version, entry.step, degraded=degraded)

    async def _record_preview(
        self, run: _Run, result: SendResult, degraded: tuple[str, ...], now: datetime
    ) -> Outcome:
        """The terminal ``previewed`` state: a cart handled in a dry run is not mailed later, when
        the connector goes live, unless it changes (a new version starts again at step 1)."""
        entry = run.entry
        ids = dict(result.provider_ids)
        await self._finish(run, LedgerStatus.PREVIEWED, now, provider_ids=ids, degraded=degraded)
        return Outcome("previewed", None, entry.cart_id, entry.cart_version, entry.step, ids, degraded)

    async def _record_result(
        self, run: _Run, result: SendResult, degraded: tuple[str, ...], now: datetime
    ) -> Outcome:
        if result.status == "sent":
            return await self._record_sent(run, result, degraded, now)
        entry = run.entry
        await self._cap.release(entry.customer_id, run.holder)
        reason = result.reason or f"provider_{result.status}"
        status = LedgerStatus.SKIPPED if result.status == "skipped" else LedgerStatus.FAILED
        await self._finish(run, status, now, reason=reason, provider_ids=dict(result.provider_ids))
        return Outcome(
            "skipped" if result.status == "skipped" else "failed",
            reason,
            entry.cart_id,
            entry.cart_version,
            entry.step,
        )

    async def _record_sent(
        self, run: _Run, result: SendResult, degraded: tuple[str, ...], now: datetime
    ) -> Outcome:
        """``sent``, and the next reminder step armed in the same round trip. The next step waits
        on this one being ``sent`` (``previous_step_not_sent``), so arming it is safe even when
        recording this one fails."""
        entry = run.entry
        ids = dict(result.provider_ids)
        outcome = Outcome("sent", None, entry.cart_id, entry.cart_version, entry.step, ids, degraded)
        finished, armed, _ = await asyncio.gather(
            self._finish(run, LedgerStatus.SENT, now, provider_ids=ids, degraded=degraded),
            self._arm_next_step(entry, now),
            self._enrol(run),
            return_exceptions=True,
        )
        if isinstance(finished, BaseException):
            if self._deduplicates or not isinstance(finished, Exception):
                # Recorded as failed and retried: the provider drops the repeat (exactly once).
                raise finished
            if not await self._retry_sent(run, ids, degraded, now, finished):
                return replace(outcome, reason=NOT_RECORDED)
        unwrap(armed)
        return outcome

    async def _retry_sent(
        self,
        run: _Run,
        ids: dict[str, str],
        degraded: tuple[str, ...],
        now: datetime,
        first: Exception,
    ) -> bool:
        """The provider accepted, the ledger write failed; a provider without dedup must never be
        asked again, so the write is tried once more here rather than by a retry of the message.
        False when it failed again: the entry stays ``sending`` (never re-sent, ``uncertain`` after
        the claim lease)."""
        entry = run.entry
        logger.warning(
            "cart %s step %d: recording the accepted send failed (%s); trying once more",
            entry.cart_id,
            entry.step,
            type(first).__name__,
        )
        try:
            await self._finish(run, LedgerStatus.SENT, now, provider_ids=ids, degraded=degraded)
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

    def _log(self, outcome: Outcome, oun: str, *, error: BaseException | None = None) -> Outcome:
        """The outcome as a ``notify outcome`` record (its fields as custom dimensions) and a metric."""
        self.outcomes[f"{outcome.status}:{outcome.reason}" if outcome.reason else outcome.status] += 1
        for part in outcome.degraded:
            self.outcomes[f"degraded:{part}"] += 1
        record = observe.outcome_record(outcome, oun=oun, provider=self._provider.name)
        observe.record_outcome(record)
        if error is not None:
            # str() of these errors is safe to log by contract: no address, no secret; a field is
            # not scanned like a message, so it is redacted here all the same.
            record["error"] = redact(f"{type(error).__name__}: {error}")
            logger.error("notify outcome", extra=record)
        elif outcome.status == "uncertain" or outcome.reason == NOT_RECORDED:
            record["dedup_key"] = dedup_key(outcome.cart_id, outcome.cart_version, outcome.step)
            record["advice"] = observe.UNCERTAIN_ADVICE
            logger.warning("notify outcome", extra=record)
        else:
            logger.info("notify outcome", extra=record)
        return outcome
