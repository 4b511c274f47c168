"""A generic signed webhook: POST each message as JSON to one HTTPS endpoint (Standard Webhooks).

Headers: ``webhook-id`` (the dedup key, stable across retries, so the receiver can drop repeats),
``webhook-timestamp`` (unix seconds) and ``webhook-signature`` = ``v1,<base64 HMAC-SHA256>`` of
``"{id}.{timestamp}.{body}"``. A secret written as ``whsec_<base64>`` is used decoded; any other
value is used as its UTF-8 bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from shared.email.base import (
    EmailMessage,
    ErasureSubject,
    ProviderConfigurationError,
    ProviderErasure,
    ProviderRejectedError,
    ProviderTransientError,
    ProviderUncertainError,
    SendResult,
    unanswered,
)
from shared.email.jsonbody import JSON_HEADERS, dumps
from shared.http import HttpClient, UpstreamError, UpstreamResponse
from shared.secrets import CachedSecrets, SecretNotFoundError

logger = logging.getLogger(__name__)

SERVICE = "email webhook"
# Errors name the call by its setting: a receiver's path often carries a token of its own.
_ROUTE = "POST WEBHOOK_URL"
EVENT_TYPE = "abandoned_cart.email"
ERASURE_EVENT_TYPE = "customer.erased"
CONCURRENCY = 8


def signing_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            pass
    return secret.encode("utf-8")


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def payload(message: EmailMessage, timestamp: int) -> dict[str, Any]:
    return {
        "type": EVENT_TYPE,
        "timestamp": timestamp,
        "data": {
            "dedup_key": message.dedup_key,
            "recipient": message.recipient.model_dump(mode="json"),
            "data": message.data,
        },
    }


class WebhookProvider:
    name = "webhook"
    # Receivers drop a repeated webhook-id (Standard Webhooks), so a lost answer is safely retried.
    deduplicates = True

    def __init__(
        self,
        http: HttpClient,
        secrets: CachedSecrets,
        *,
        url: str,
        signing_secret_name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._secrets = secrets
        self.url = url
        self._secret_name = signing_secret_name
        self._clock = clock

    async def close(self) -> None:
        return None

    async def _post_signed(self, message_id: str, event: Callable[[int], Any]) -> UpstreamResponse:
        """POST ``event(timestamp)`` signed as Standard Webhooks asks; raises ``UpstreamError``
        when no answer came."""
        try:
            secret = await self._secrets.get(self._secret_name)
        except SecretNotFoundError as exc:
            raise ProviderConfigurationError(f"webhook signing secret missing: {exc}") from None
        timestamp = int(self._clock())
        body = dumps(event(timestamp))
        headers = {
            **JSON_HEADERS,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, message_id, timestamp, body),
        }
        return await self._http.send(
            "POST", self.url, service=SERVICE, route=_ROUTE, headers=headers, data=body
        )

    async def send(self, message: EmailMessage) -> SendResult:
        try:
            # webhook-id lets the receiver drop a repeat, so a retry after a lost answer is safe.
            response = await self._post_signed(message.dedup_key, lambda at: payload(message, at))
        except UpstreamError as exc:
            raise unanswered(exc) from None
        status = response.status
        suffix = f"[correlation id {response.correlation_id}]"
        if 200 <= status < 300:
            logger.info("webhook accepted %s (HTTP %d)", message.dedup_key, status)
            return SendResult(
                status="sent",
                provider_ids={"webhook_id": message.dedup_key, "correlation_id": response.correlation_id},
            )
        if status in (429, 503):
            raise ProviderTransientError(
                f"webhook answered HTTP {status} {suffix}", retry_after=response.retry_after()
            )
        if status >= 500:
            raise ProviderUncertainError(
                f"webhook answered HTTP {status}, the receiver may have taken it {suffix}",
                reason=f"http_{status}",
                retry_after=response.retry_after(),
            )
        if status in (401, 403, 404, 410):
            raise ProviderConfigurationError(
                f"webhook endpoint answered HTTP {status}: check WEBHOOK_URL and that the receiver uses the "
                f"secret {self._secret_name!r} {suffix}"
            )
        raise ProviderRejectedError(f"webhook refused {message.dedup_key} (HTTP {status}) {suffix}")

    async def send_many(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(message: EmailMessage) -> SendResult:
            async with limit:
                try:
                    return await self.send(message)
                except ProviderRejectedError:
                    return SendResult(status="failed", reason="webhook_rejected")

        return list(await asyncio.gather(*(one(m) for m in messages)))

    async def erase(self, subject: ErasureSubject) -> ProviderErasure:
        """Tell the receiver to forget a person: a ``customer.erased`` event, signed like every
        other, ``data`` holding what the erasure request named (``email``, ``customer_id``).
        Each erasure gets a new ``webhook-id``; retries of one request keep it."""
        message_id = f"erasure-{uuid.uuid4()}"
        data = {"email": subject.email, "customer_id": subject.customer_id}
        try:
            response = await self._post_signed(
                message_id, lambda at: {"type": ERASURE_EVENT_TYPE, "timestamp": at, "data": data}
            )
        except UpstreamError as exc:
            raise ProviderTransientError(str(exc)) from None
        status = response.status
        suffix = f"[correlation id {response.correlation_id}]"
        if 200 <= status < 300:
            logger.info("webhook accepted %s (HTTP %d)", message_id, status)
            return ProviderErasure(
                action="notified",
                detail=f"the webhook receiver accepted {ERASURE_EVENT_TYPE} ({message_id}); it erases its "
                "own copy, which the connector cannot check",
            )
        if status == 429 or status >= 500:
            raise ProviderTransientError(
                f"webhook answered HTTP {status} to {ERASURE_EVENT_TYPE} {suffix}",
                retry_after=response.retry_after(),
            )
        if status in (401, 403, 404, 410):
            raise ProviderConfigurationError(
                f"webhook endpoint answered HTTP {status} to {ERASURE_EVENT_TYPE}: check WEBHOOK_URL and "
                f"the secret {self._secret_name!r} {suffix}"
            )
        raise ProviderRejectedError(f"webhook refused {ERASURE_EVENT_TYPE} (HTTP {status}) {suffix}")
