"""The contract between the notify service and every email provider.

The service hands a provider a fully built :class:`EmailMessage`: the recipient, the template data
and a deterministic ``dedup_key`` derived from (cart id, cart version, step). Providers that can
de-duplicate on their side (Emarsys ``trigger_id``, the webhook's ``webhook-id``) must pass it on,
so a resend after a crash between "provider accepted" and "ledger recorded" is dropped by the
provider, and say so with ``deduplicates = True``.

A provider separates "certainly not sent" (a refused connection, 429, a 4xx refusal: the ordinary
errors below) from "maybe sent" (:class:`ProviderUncertainError`: no answer after the request was
written, a reset, a 5xx that may hide an accepted send). Notify repeats a maybe-sent message only
through a provider that de-duplicates; for any other it records ``uncertain`` and never repeats it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from shared.http import UpstreamError, UpstreamTimeoutError


class Recipient(BaseModel):
    # Built on first use: EmailStr loads email-validator, which compiles its grammar (about 20 ms).
    model_config = ConfigDict(frozen=True, defer_build=True)

    email: EmailStr
    first_name: str | None = None
    last_name: str | None = None
    language: str | None = None
    customer_id: str


class EmailMessage(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)  # it holds a Recipient

    dedup_key: str = Field(min_length=1, max_length=128)
    recipient: Recipient
    # Template data (see shared/abandoned_carts/payload.py); providers shape it for their API.
    data: dict[str, Any]


class SendResult(BaseModel):
    """``sent``: the provider accepted it. ``skipped``: deliberately not sent, ``reason`` says why
    (e.g. ``emarsys_contact_missing``). ``failed``: only from ``send_many``, where one message of a
    batch was refused for good while the others went through (what ``send`` raises as
    :class:`ProviderRejectedError`); ``reason`` says why."""

    model_config = ConfigDict(frozen=True)

    status: Literal["sent", "skipped", "failed"]
    reason: str | None = None
    provider_ids: dict[str, str] = Field(default_factory=dict)


class ProviderError(Exception):
    """Base of provider failures. The message is safe to log: no address, no secret."""


class ProviderTransientError(ProviderError):
    """Worth retrying later (rate limit, 5xx, timeout): the queue message is retried by the host."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ProviderUncertainError(ProviderTransientError):
    """The provider may have accepted the message although no acceptance came back: the answer
    was lost (a timeout after the request was written, a connection reset) or was a 5xx that can
    follow an accepted send. ``reason`` is short and stable (``timeout``, ``connection_lost``,
    ``http_500``). Only a provider that de-duplicates may be given the message again."""

    def __init__(self, message: str, *, reason: str, retry_after: float | None = None) -> None:
        self.reason = reason
        super().__init__(message, retry_after=retry_after)


def unanswered(exc: UpstreamError) -> ProviderTransientError:
    """The provider error for a call that got no answer: uncertain, unless the request certainly
    never reached the provider (no connection was made)."""
    if not exc.may_have_arrived:
        return ProviderTransientError(str(exc))
    reason = "timeout" if isinstance(exc, UpstreamTimeoutError) else "connection_lost"
    return ProviderUncertainError(str(exc), reason=reason)


class PartialSendError(ProviderError):
    """From ``send_many`` when some messages of the batch went out and others did not: one result
    or error per message, in order, so an accepted message is never reported as failed."""

    def __init__(self, outcomes: Sequence[SendResult | ProviderError]) -> None:
        self.outcomes = list(outcomes)
        failed = sum(1 for outcome in self.outcomes if isinstance(outcome, ProviderError))
        super().__init__(f"{failed} of {len(self.outcomes)} message(s) of a batch failed")


class ProviderConfigurationError(ProviderError):
    """The provider is set up wrongly (bad credentials, event not connected to a program):
    retrying will not help until an operator acts; the message says what to do."""


class ProviderRejectedError(ProviderError):
    """The provider refused this one message for good (e.g. invalid recipient)."""


class EmailProvider(Protocol):
    name: str
    # True when the provider drops a second message with the same dedup key, so a message whose
    # first attempt may have gone out can be sent again safely (exactly once). False: notify marks
    # the entry ``sending`` before the call and never repeats an uncertain send (at most once).
    deduplicates: bool

    async def send(self, message: EmailMessage) -> SendResult: ...

    async def send_many(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        """Send several at once (batch APIs); results in the same order as ``messages``."""
        ...

    async def close(self) -> None: ...


class ErasureSubject(BaseModel):
    """Whom to erase at the provider: the address, the customer account, or both."""

    model_config = ConfigDict(frozen=True)

    email: str | None = None
    customer_id: str | None = None


class ProviderErasure(BaseModel):
    """What a provider did about an erasure. ``deleted``: it held the person's data and deleted
    it. ``not_found``: it holds nothing under the key it was given. ``notified``: the receiver was
    told and erases its own copy. ``skipped``: nothing could be done with what was given;
    ``detail`` says what is missing. ``detail`` names no personal data."""

    model_config = ConfigDict(frozen=True)

    action: Literal["deleted", "not_found", "notified", "skipped"]
    detail: str


@runtime_checkable
class ErasableProvider(Protocol):
    """An optional capability: the provider can erase a person's data at its side.

    Failures raise the provider errors above, like ``send``; erasing twice is harmless."""

    name: str

    async def erase(self, subject: ErasureSubject) -> ProviderErasure: ...


def retained_data(provider: object) -> str | None:
    """What ``provider`` keeps that the connector cannot delete (its ``retains`` text), if it says."""
    text = getattr(provider, "retains", None)
    return text if isinstance(text, str) else None
