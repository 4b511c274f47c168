"""Emarsys: trigger an external event per recipient, the event starting the abandoned-cart email.

One trigger is ``POST {api}/api/{v3|v2}/event/{eventId}/trigger`` with ``key_id`` (3 = E-Mail),
``external_id``, ``trigger_id`` (the message's dedup key, so Emarsys drops a resend) and ``data``
for the ESL template (``{{event.firstName}}``, ``{% foreach item in event.products %}``).
Emarsys reports application errors in ``replyCode`` even under HTTP 200, and batch calls report
per-contact errors keyed by the external id, so every answer is read, whatever its status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.email.base import (
    EmailMessage,
    ErasureSubject,
    ProviderConfigurationError,
    ProviderErasure,
    ProviderRejectedError,
    ProviderTransientError,
    SendResult,
    unanswered,
)
from shared.email.emarsys_auth import EmarsysAuth
from shared.email.jsonbody import JSON_HEADERS, dumps
from shared.http import RETRYABLE_STATUSES, HttpClient, RetryPolicy, UpstreamError, UpstreamResponse
from shared.privacy.redaction import redact

logger = logging.getLogger(__name__)

SERVICE = "emarsys"
MAX_BATCH_CONTACTS = 1000
# Emarsys rejects external-event payloads over 1 MB; the decimal reading is the stricter one.
MAX_BODY_BYTES = 1_000_000
EMAIL_FIELD = "3"
FIRST_NAME_FIELD = "1"
LAST_NAME_FIELD = "2"
SKIP_CONTACT_MISSING = "emarsys_contact_missing"
# ``ems_event_time`` inside data is reserved by Emarsys and ignored.
_RESERVED_DATA_KEYS = ("ems_event_time",)

OK = 0
CONTACT_MISSING = 2008
NOT_CONNECTED = 5005
ALREADY_TRIGGERED = 9003
RATE_LIMITED = 7003
_TRANSIENT_CODES = frozenset({1003, 2011, RATE_LIMITED})
_UNKNOWN_EVENT = frozenset({5001, 5004})
# X-RateLimit-Reset is a whole-second timestamp of a window that can end up to a second after it,
# and clocks differ: a retry at exactly the stated second is refused again, after which the reset
# lies in the past and every further retry would wait nothing. Wait this much beyond what is asked.
SERVER_DELAY_SLACK_SECONDS = 1.0

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class _Reply:
    response: UpstreamResponse
    code: int | None
    text: str
    data: Any

    @property
    def status(self) -> int:
        return self.response.status


@dataclass
class _Entry:
    index: int
    message: EmailMessage
    external_id: str
    encoded: bytes
    result: SendResult | None = None
    missing: bool = False
    extra_ids: dict[str, str] = field(default_factory=dict)


class EmarsysProvider:
    name = "emarsys"
    # Emarsys processes one trigger per trigger_id (the dedup key): a repeat is dropped.
    deduplicates = True

    def __init__(
        self,
        http: HttpClient,
        auth: EmarsysAuth,
        *,
        api_url: str,
        event_id: int,
        key_id: str = EMAIL_FIELD,
        create_missing_contacts: bool = False,
        max_batch_contacts: int = MAX_BATCH_CONTACTS,
        max_body_bytes: int = MAX_BODY_BYTES,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._auth = auth
        self._policy = http.policy
        # Retries happen here, not in the shared client: a WSSE header (its nonce) is single-use, so
        # every attempt needs fresh authentication headers.
        self._once = HttpClient(
            http.session, RetryPolicy(max_attempts=1), max_response_bytes=http.max_response_bytes
        )
        self._sleep = sleep
        self.event_id = event_id
        self.key_id = key_id
        self.create_missing_contacts = create_missing_contacts
        self.max_batch_contacts = min(max_batch_contacts, MAX_BATCH_CONTACTS)
        self.max_body_bytes = max_body_bytes
        base = f"{api_url.rstrip('/')}/api/{auth.api_version}"
        self.trigger_url = f"{base}/event/{event_id}/trigger"
        self.contact_url = f"{base}/contact"
        self.contact_delete_url = f"{base}/contact/delete"

    async def close(self) -> None:
        return None

    # ----- single trigger

    async def send(self, message: EmailMessage) -> SendResult:
        body = self._single_body(message)
        if len(body) > self.max_body_bytes:
            raise ProviderRejectedError(
                f"Emarsys trigger {message.dedup_key}: payload of {len(body)} bytes exceeds the 1 MB limit"
            )
        reply = await self._post(self.trigger_url, body)
        if reply.code == CONTACT_MISSING:
            if not self.create_missing_contacts:
                logger.info("Emarsys trigger %s skipped: no such contact", message.dedup_key)
                return SendResult(status="skipped", reason=SKIP_CONTACT_MISSING)
            await self._upsert_contacts([message])
            reply = await self._post(self.trigger_url, body)
            if reply.code == CONTACT_MISSING:
                logger.warning(
                    "Emarsys trigger %s skipped: contact still missing after upsert", message.dedup_key
                )
                return SendResult(status="skipped", reason=SKIP_CONTACT_MISSING)
        self._raise_for_reply(reply, f"trigger {message.dedup_key}")
        self._check_connected(reply)
        logger.info("Emarsys event %s triggered for %s", self.event_id, message.dedup_key)
        return SendResult(status="sent", provider_ids=self._ids(reply, message))

    def _single_body(self, message: EmailMessage) -> bytes:
        return dumps(
            {
                "key_id": self.key_id,
                "external_id": self.external_id(message),
                "trigger_id": message.dedup_key,
                "data": event_data(message),
            }
        )

    # ----- batch

    async def send_many(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        entries = [self._entry(i, m) for i, m in enumerate(messages)]
        for entry in entries:
            if len(entry.encoded) + len(self._batch_frame()) > self.max_body_bytes:
                logger.warning("Emarsys trigger %s refused: payload over 1 MB", entry.message.dedup_key)
                entry.result = SendResult(status="failed", reason="emarsys_payload_too_large")
        for chunk in self.chunks([e for e in entries if e.result is None]):
            await self._send_chunk(chunk)
        missing = [e for e in entries if e.missing]
        if missing:
            if self.create_missing_contacts:
                await self._upsert_contacts([e.message for e in missing])
                for entry in missing:
                    entry.missing = False
                for chunk in self.chunks(missing):
                    await self._send_chunk(chunk)
            for entry in missing:
                if entry.missing:
                    entry.result = SendResult(status="skipped", reason=SKIP_CONTACT_MISSING)
        results: list[SendResult] = []
        for entry in entries:
            assert entry.result is not None
            results.append(entry.result)
        sent = sum(1 for r in results if r.status == "sent")
        logger.info("Emarsys event %s batch: %d of %d triggered", self.event_id, sent, len(results))
        return results

    def _entry(self, index: int, message: EmailMessage) -> _Entry:
        external_id = self.external_id(message)
        encoded = dumps(
            {"external_id": external_id, "trigger_id": message.dedup_key, "data": event_data(message)}
        )
        return _Entry(index=index, message=message, external_id=external_id, encoded=encoded)

    def _batch_frame(self) -> bytes:
        return dumps({"key_id": self.key_id, "contacts": []})

    def chunks(self, entries: Sequence[_Entry]) -> Iterator[list[_Entry]]:
        """Consecutive groups within the contact and byte limits. One external id appears at most
        once per group, because Emarsys reports batch errors keyed by the external id."""
        frame = len(self._batch_frame())
        current: list[_Entry] = []
        size = frame
        seen: set[str] = set()
        for entry in entries:
            key = entry.external_id.casefold()
            added = len(entry.encoded) + (1 if current else 0)
            if current and (
                len(current) >= self.max_batch_contacts or size + added > self.max_body_bytes or key in seen
            ):
                yield current
                current, size, seen = [], frame, set()
                added = len(entry.encoded)
            current.append(entry)
            size += added
            seen.add(key)
        if current:
            yield current

    def _batch_body(self, chunk: Sequence[_Entry]) -> bytes:
        frame = self._batch_frame()
        # frame ends with b"[]}": put the contacts between the brackets.
        return frame[:-2] + b",".join(e.encoded for e in chunk) + frame[-2:]

    async def _send_chunk(self, chunk: list[_Entry]) -> None:
        reply = await self._post(self.trigger_url, self._batch_body(chunk))
        self._raise_for_reply(reply, f"batch of {len(chunk)}")
        self._check_connected(reply)
        errors = _batch_errors(reply.data)
        transient: list[int] = []
        for entry in chunk:
            error = errors.get(entry.external_id, errors.get(entry.external_id.casefold()))
            if error is None or error[0] == ALREADY_TRIGGERED:
                entry.result = SendResult(status="sent", provider_ids=self._ids(reply, entry.message))
                continue
            code, text = error
            if code == CONTACT_MISSING:
                entry.missing = True
            elif code in _TRANSIENT_CODES:
                transient.append(code)
            elif code == NOT_CONNECTED or code in _UNKNOWN_EVENT or code == 2004:
                raise self._configuration_error(code, text)
            else:
                logger.warning(
                    "Emarsys refused trigger %s: reply %d %s", entry.message.dedup_key, code, redact(text)
                )
                entry.result = SendResult(status="failed", reason=f"emarsys_reply_{code}")
        if transient:
            # The whole batch is retried later; trigger ids make Emarsys drop the ones that went through.
            raise ProviderTransientError(
                f"Emarsys batch: {len(transient)} contact(s) failed temporarily (reply {transient[0]}) "
                f"[correlation id {reply.response.correlation_id}]"
            )

    # ----- contacts

    async def _upsert_contacts(self, messages: Sequence[EmailMessage]) -> None:
        """Create the missing contacts (key field, e-mail, first and last name), updating any that
        exist meanwhile; the trigger is then retried once."""
        contacts: list[dict[str, str]] = []
        for message in messages:
            contact = {self.key_id: self.external_id(message), EMAIL_FIELD: str(message.recipient.email)}
            if message.recipient.first_name:
                contact[FIRST_NAME_FIELD] = message.recipient.first_name
            if message.recipient.last_name:
                contact[LAST_NAME_FIELD] = message.recipient.last_name
            contacts.append(contact)
        for start in range(0, len(contacts), MAX_BATCH_CONTACTS):
            part = contacts[start : start + MAX_BATCH_CONTACTS]
            body = dumps({"key_id": self.key_id, "contacts": part})
            reply = await self._post(
                self.contact_url, body, method="PUT", params={"create_if_not_exists": "1"}
            )
            self._raise_for_reply(reply, "contact upsert")
            errors = _batch_errors(reply.data)
            logger.info("Emarsys contact upsert: %d sent, %d refused", len(part), len(errors))

    # ----- erasure (ErasableProvider)

    async def erase(self, subject: ErasureSubject) -> ProviderErasure:
        """Delete the contact: ``POST /api/{v2|v3}/contact/delete`` with ``{"key_id": <key field>,
        "<key field>": [<value>]}``. Irreversible at Emarsys; not found is HTTP 404 with reply 2008
        (docs/reference/erasure-and-caller-auth.md)."""
        by_email = self.key_id in (EMAIL_FIELD, "email")
        value = subject.email if by_email else subject.customer_id
        if value is None:
            needed = "email" if by_email else "customerAccount"
            return ProviderErasure(
                action="skipped",
                detail=f"Emarsys finds contacts by key field {self.key_id} (EMARSYS_KEY_ID), which needs "
                f"{needed}; send it too to delete the contact",
            )
        body = dumps({"key_id": self.key_id, self.key_id: [value]})
        reply = await self._post(self.contact_delete_url, body)
        errors = {code for code, _ in _batch_errors(reply.data).values()}
        if reply.code == CONTACT_MISSING or errors == {CONTACT_MISSING}:
            logger.info("Emarsys contact delete: no such contact")
            return ProviderErasure(action="not_found", detail="Emarsys holds no contact with that key")
        self._raise_for_reply(reply, "contact delete")
        if errors:
            # E.g. 2010: several contacts share the key, and Emarsys deletes none of them.
            raise ProviderRejectedError(
                f"Emarsys did not delete the contact (reply {min(errors)}) "
                f"[correlation id {reply.response.correlation_id}]"
            )
        logger.info("Emarsys contact deleted [correlation id %s]", reply.response.correlation_id)
        return ProviderErasure(action="deleted", detail="the Emarsys contact and all its data were deleted")

    # ----- wire

    def external_id(self, message: EmailMessage) -> str:
        """The value of the key field: the address for E-Mail (3), else the customer id, which a
        custom key field is expected to hold."""
        if self.key_id in (EMAIL_FIELD, "email"):
            return str(message.recipient.email)
        return message.recipient.customer_id

    async def _post(
        self, url: str, body: bytes, *, method: str = "POST", params: dict[str, str] | None = None
    ) -> _Reply:
        reauthenticated = False
        attempt = 0
        while True:
            attempt += 1
            headers = {**JSON_HEADERS, **await self._auth.headers()}
            try:
                response = await self._once.send(
                    method, url, service=SERVICE, headers=headers, data=body, params=params
                )
            except UpstreamError as exc:
                if attempt >= self._policy.max_attempts:
                    raise unanswered(exc) from None
                await self._wait(attempt, None, type(exc).__name__)
                continue
            if response.status == 401 and not reauthenticated:
                # A revoked token or a rotated secret: fetch fresh credentials once.
                reauthenticated = True
                self._auth.invalidate()
                continue
            if response.status in RETRYABLE_STATUSES and attempt < self._policy.max_attempts:
                server_delay = response.retry_after()
                if server_delay is None or server_delay <= self._policy.max_server_delay:
                    await self._wait(attempt, server_delay, f"HTTP {response.status}")
                    continue
            return _parse(response)

    async def _wait(self, attempt: int, server_delay: float | None, reason: str) -> None:
        delay = self._policy.delay(attempt, server_delay)
        if server_delay is not None:
            delay += SERVER_DELAY_SLACK_SECONDS
        logger.warning(
            "retrying Emarsys call after %s (attempt %d of %d, waiting %.2fs)",
            reason,
            attempt,
            self._policy.max_attempts,
            delay,
        )
        await self._sleep(delay)

    def _raise_for_reply(self, reply: _Reply, what: str) -> None:
        """Raise the provider error for anything but replyCode 0 (or 9003, already triggered)."""
        status, code = reply.status, reply.code
        suffix = f"[correlation id {reply.response.correlation_id}]"
        if 200 <= status < 300 and code in (OK, ALREADY_TRIGGERED):
            return
        if status == 401 or code == 1:
            raise ProviderConfigurationError(
                f"Emarsys rejected the API credentials for {what} (HTTP {status}): check the "
                f"{'OAuth client' if self._auth.api_version == 'v3' else 'WSSE user'} secrets "
                f"and, for WSSE, the server clock (5-minute window) {suffix}"
            )
        if status == 403:
            raise ProviderConfigurationError(
                f"Emarsys API user may not make the {what} call (HTTP 403): enable the external event "
                f"and contact permissions on the API credential (Management > Security Settings) {suffix}"
            )
        if status == 429 or code == RATE_LIMITED:
            retry_after = reply.response.retry_after()
            raise ProviderTransientError(
                f"Emarsys rate limit reached for {what} (HTTP {status}, reply {code}) {suffix}",
                retry_after=retry_after,
            )
        if status >= 500 or code in _TRANSIENT_CODES:
            raise ProviderTransientError(
                f"Emarsys failed {what} (HTTP {status}, reply {code}) {suffix}",
                retry_after=reply.response.retry_after(),
            )
        if code is None:
            raise ProviderTransientError(
                f"Emarsys answered {what} without a replyCode (HTTP {status}) {suffix}"
            )
        if code == NOT_CONNECTED or code in _UNKNOWN_EVENT or code == 2004:
            raise self._configuration_error(code, reply.text)
        raise ProviderRejectedError(
            f"Emarsys refused {what} (HTTP {status}, reply {code}: {redact(reply.text)}) {suffix}"
        )

    def _configuration_error(self, code: int, text: str) -> ProviderConfigurationError:
        if code == NOT_CONNECTED:
            return not_connected_error(self.event_id)
        if code in _UNKNOWN_EVENT:
            return ProviderConfigurationError(
                f"Emarsys does not know external event {self.event_id} (reply {code}): set EMARSYS_EVENT_ID "
                "to the numeric id of the event (GET /api/v2/event lists ids and names)"
            )
        return ProviderConfigurationError(
            f"Emarsys does not accept key field {self.key_id!r} (reply {code}: {redact(text)}): set "
            "EMARSYS_KEY_ID to 3 (E-Mail) or the id of an indexed custom field"
        )

    def _check_connected(self, reply: _Reply) -> None:
        """Accounts with Interactions answer 200 even when nothing is connected; ``connectedTo``
        says so, and then nothing was sent."""
        if not isinstance(reply.data, dict) or "connectedTo" not in reply.data:
            return
        connected = reply.data["connectedTo"]
        if connected is False or (isinstance(connected, dict) and not any(connected.values())):
            raise not_connected_error(self.event_id)

    def _ids(self, reply: _Reply, message: EmailMessage) -> dict[str, str]:
        ids = {
            "trigger_id": message.dedup_key,
            "event_id": str(self.event_id),
            "correlation_id": reply.response.correlation_id,
        }
        if reply.response.upstream_request_id:
            ids["request_id"] = reply.response.upstream_request_id
        if reply.code == ALREADY_TRIGGERED:
            ids["duplicate"] = "true"
        return ids


def not_connected_error(event_id: int) -> ProviderConfigurationError:
    return ProviderConfigurationError(
        f"Emarsys external event {event_id} is not connected to a launched email or an executable "
        "program (reply 5005), so nothing was sent. In Emarsys, open Automation Center, create a "
        f"program whose entry point is 'External event' with this event ({event_id}), add the "
        "abandoned-cart email node and launch (activate) the program; or launch an email campaign "
        f"with the recipient source 'On external event' and event {event_id}. "
        f"GET /api/v2/event/{event_id}/usages lists what the event starts."
    )


def event_data(message: EmailMessage) -> dict[str, Any]:
    """``data`` for the ESL template: flat keys (``{{event.firstName}}``) and the ``products`` array."""
    data = {k: v for k, v in message.data.items() if k not in _RESERVED_DATA_KEYS}
    recipient = message.recipient
    for key, value in (
        ("firstName", recipient.first_name),
        ("lastName", recipient.last_name),
        ("language", recipient.language),
    ):
        if value is not None:
            data.setdefault(key, value)
    return data


def _parse(response: UpstreamResponse) -> _Reply:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _Reply(response=response, code=None, text="", data=None)
    raw = body.get("replyCode")
    try:
        code = int(raw) if raw is not None else None
    except (TypeError, ValueError):
        code = None
    return _Reply(response=response, code=code, text=str(body.get("replyText") or ""), data=body.get("data"))


def _batch_errors(data: Any) -> dict[str, tuple[int, str]]:
    """``data.errors`` of a batch answer: ``{external_id: {replyCode: text}}`` as (code, text)."""
    if not isinstance(data, dict) or not isinstance(data.get("errors"), dict):
        return {}
    errors: dict[str, tuple[int, str]] = {}
    for external_id, detail in data["errors"].items():
        code, text = 0, ""
        if isinstance(detail, dict) and detail:
            raw_code, raw_text = next(iter(detail.items()))
            text = str(raw_text)
            try:
                code = int(raw_code)
            except (TypeError, ValueError):
                code = 0
        errors[str(external_id)] = (code, text)
        errors.setdefault(str(external_id).casefold(), (code, text))
    return errors
