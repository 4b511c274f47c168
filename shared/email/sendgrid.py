"""SendGrid v3 Mail Send with a dynamic template: one personalization per recipient.

SendGrid has no idempotency key and does not de-duplicate: the message's dedup key travels as the
``dedup_key`` custom arg (visible in the Event Webhook), but preventing a second send is the
ledger's job alone. So a send whose answer was lost (a timeout after the request was written, a
reset) or that ended in a 5xx other than 503 raises :class:`ProviderUncertainError`, and notify
never repeats it. Custom args are stored by SendGrid as non-personal data, so only the opaque
dedup key goes there, never an address or a name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from shared.email.base import (
    EmailMessage,
    PartialSendError,
    ProviderConfigurationError,
    ProviderError,
    ProviderRejectedError,
    ProviderTransientError,
    ProviderUncertainError,
    SendResult,
    unanswered,
)
from shared.email.jsonbody import JSON_HEADERS, dumps, to_jsonable
from shared.http import HttpClient, UpstreamError, UpstreamResponse
from shared.privacy.redaction import redact
from shared.secrets import CachedSecrets, SecretNotFoundError

logger = logging.getLogger(__name__)

SERVICE = "sendgrid"
MAX_PERSONALIZATIONS = 1000
DEDUP_ARG = "dedup_key"
# Answers that say the request was not processed; any other 5xx may follow an accepted send.
_NOT_PROCESSED = frozenset({429, 503})


class SendGridProvider:
    name = "sendgrid"
    deduplicates = False
    # SendGrid offers the connector no deletion of a recipient (no ErasableProvider).
    retains = (
        "SendGrid keeps the recipient's email activity and any suppression (unsubscribe, bounce) "
        "entries; the connector cannot delete them. Erase the address in SendGrid (its privacy "
        "request process) if it must go."
    )

    def __init__(
        self,
        http: HttpClient,
        secrets: CachedSecrets,
        *,
        api_url: str,
        api_key_secret_name: str,
        template_id: str,
        from_email: str,
        from_name: str | None = None,
        unsubscribe_group_id: int | None = None,
    ) -> None:
        self._http = http
        self._secrets = secrets
        self._key_name = api_key_secret_name
        self.send_url = f"{api_url.rstrip('/')}/v3/mail/send"
        self.template_id = template_id
        self.from_email = from_email
        self.from_name = from_name
        self.unsubscribe_group_id = unsubscribe_group_id

    async def close(self) -> None:
        return None

    async def send(self, message: EmailMessage) -> SendResult:
        return (await self._send_request([message]))[0]

    async def send_many(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        outcomes: list[SendResult | ProviderError] = []
        failure: ProviderError | None = None
        for chunk in chunks(messages):
            if failure is not None:
                # Not attempted after an earlier request failed: certainly not sent.
                outcomes.extend(ProviderTransientError(f"not sent: {failure}") for _ in chunk)
                continue
            try:
                outcomes.extend(await self._send_request(chunk))
            except ProviderError as exc:
                failure = exc
                outcomes.extend(exc for _ in chunk)
        if failure is None:
            return [outcome for outcome in outcomes if isinstance(outcome, SendResult)]
        if all(outcome is failure for outcome in outcomes):
            raise failure
        # Mixed: an accepted message must not be reported (and retried) as failed, nor one never
        # tried as uncertain, so each message gets its own outcome.
        raise PartialSendError(outcomes)

    def body(self, messages: Sequence[EmailMessage]) -> dict[str, Any]:
        sender: dict[str, str] = {"email": self.from_email}
        if self.from_name:
            sender["name"] = self.from_name
        body: dict[str, Any] = {
            "from": sender,
            "template_id": self.template_id,
            "personalizations": [_personalization(m) for m in messages],
        }
        if self.unsubscribe_group_id is not None:
            body["asm"] = {"group_id": self.unsubscribe_group_id}
        return body

    async def _send_request(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        try:
            api_key = await self._secrets.get(self._key_name)
        except SecretNotFoundError as exc:
            raise ProviderConfigurationError(f"SendGrid API key missing: {exc}") from None
        try:
            response = await self._http.send(
                "POST",
                self.send_url,
                service=SERVICE,
                headers={**JSON_HEADERS, "Authorization": f"Bearer {api_key}"},
                data=dumps(self.body(messages)),
                # No idempotency key: a request that may have been processed is not sent again.
                idempotent=False,
            )
        except UpstreamError as exc:
            raise unanswered(exc) from None
        self._raise_for_status(response, len(messages))
        message_id = _header(response, "x-message-id")
        logger.info("SendGrid accepted %d message(s)", len(messages))
        results = []
        for message in messages:
            ids = {DEDUP_ARG: message.dedup_key, "correlation_id": response.correlation_id}
            if message_id:
                ids["x_message_id"] = message_id
            results.append(SendResult(status="sent", provider_ids=ids))
        return results

    def _raise_for_status(self, response: UpstreamResponse, count: int) -> None:
        status = response.status
        suffix = f"[correlation id {response.correlation_id}]"
        if status == 202:
            return
        if status in (401, 403):
            self._secrets.invalidate(self._key_name)
            raise ProviderConfigurationError(
                f"SendGrid refused the API key (HTTP {status}): check the secret {self._key_name!r} and "
                f"that the key has the Mail Send permission {suffix}"
            )
        if status in _NOT_PROCESSED:
            raise ProviderTransientError(
                f"SendGrid answered HTTP {status} for {count} message(s) {suffix}",
                retry_after=response.retry_after(),
            )
        if status >= 500:
            raise ProviderUncertainError(
                f"SendGrid answered HTTP {status} for {count} message(s), which may follow an accepted "
                f"send {suffix}",
                reason=f"http_{status}",
            )
        raise ProviderRejectedError(
            f"SendGrid refused {count} message(s) (HTTP {status}: {_errors(response)}) {suffix}"
        )


def chunks(messages: Sequence[EmailMessage]) -> Iterator[list[EmailMessage]]:
    """Groups of at most 1,000 personalizations in which no address appears twice (else HTTP 400)."""
    current: list[EmailMessage] = []
    seen: set[str] = set()
    for message in messages:
        address = str(message.recipient.email).casefold()
        if current and (len(current) >= MAX_PERSONALIZATIONS or address in seen):
            yield current
            current, seen = [], set()
        current.append(message)
        seen.add(address)
    if current:
        yield current


def _personalization(message: EmailMessage) -> dict[str, Any]:
    recipient: dict[str, str] = {"email": str(message.recipient.email)}
    name = " ".join(p for p in (message.recipient.first_name, message.recipient.last_name) if p)
    if name:
        recipient["name"] = name
    return {
        "to": [recipient],
        "dynamic_template_data": to_jsonable(message.data),
        "custom_args": {DEDUP_ARG: message.dedup_key},
    }


def _header(response: UpstreamResponse, name: str) -> str | None:
    for key, value in response.headers.items():
        if key.lower() == name:
            return value
    return None


def _errors(response: UpstreamResponse) -> str:
    try:
        body = response.json()
    except ValueError:
        return "unreadable answer"
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return "no error details"
    # Error messages may quote an address; redact before they reach an exception or a log.
    parts = [
        redact(f"{e.get('field') or '-'}: {e.get('message') or ''}")
        for e in body["errors"]
        if isinstance(e, dict)
    ]
    return "; ".join(parts[:5]) or "no error details"
