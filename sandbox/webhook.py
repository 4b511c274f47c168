"""A webhook receiver stand-in at ``/webhook/receive``: verifies Standard Webhooks signatures
(5-minute timestamp tolerance), drops repeated ``webhook-id``s and records what it accepted: one
entry per unique id in ``received``, every signed delivery (repeats too) in ``deliveries``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from sandbox.server import Sandbox

PREFIX = "/webhook"
SIGNING_SECRET = "whsec_" + base64.b64encode(b"sandbox-only-webhook-signing-key!").decode()
TOLERANCE_SECONDS = 300


@dataclass
class WebhookReceiver:
    secret: str = SIGNING_SECRET
    clock: Callable[[], float] = time.time
    received: list[dict[str, Any]] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    duplicates: int = 0

    @property
    def deliveries(self) -> int:
        return len(self.received) + self.duplicates

    def events_of(self, event_type: str) -> list[dict[str, Any]]:
        """The accepted events of one ``type`` (``abandoned_cart.email``, ``customer.erased``)."""
        return [event for event in self.received if event.get("type") == event_type]

    def add_routes(self, app: web.Application, prefix: str = PREFIX) -> None:
        app.router.add_post(f"{prefix}/receive", self._receive)

    def _key(self) -> bytes:
        # Independent of the app's code on purpose: the receiver checks the sender.
        if self.secret.startswith("whsec_"):
            return base64.b64decode(self.secret[len("whsec_") :])
        return self.secret.encode()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        message_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "")
        signatures = request.headers.get("webhook-signature", "").split()
        if not message_id or not timestamp.isdigit():
            return web.json_response({"error": "missing webhook headers"}, status=400)
        if abs(int(timestamp) - self.clock()) > TOLERANCE_SECONDS:
            return web.json_response({"error": "timestamp outside tolerance"}, status=401)
        expected = base64.b64encode(
            hmac.new(self._key(), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        if not any(
            s.startswith("v1,") and hmac.compare_digest(s.removeprefix("v1,"), expected) for s in signatures
        ):
            return web.json_response({"error": "bad signature"}, status=401)
        if message_id in self.seen_ids:
            self.duplicates += 1
            return web.Response(status=204)
        self.seen_ids.add(message_id)
        self.received.append(json.loads(body))
        return web.Response(status=204)


_STATE: web.AppKey[WebhookReceiver] = web.AppKey("webhook_receiver", WebhookReceiver)


def add_routes(app: web.Application, sandbox: Sandbox) -> None:
    receiver = WebhookReceiver()
    app[_STATE] = receiver
    receiver.add_routes(app)


def receiver(sandbox: Sandbox) -> WebhookReceiver:
    return sandbox.app[_STATE]


def url(sandbox: Sandbox) -> str:
    return f"{sandbox.base_url}{PREFIX}/receive"


def env(sandbox: Sandbox) -> dict[str, str]:
    return {
        "EMAIL_PROVIDER": "webhook",
        "WEBHOOK_URL": url(sandbox),
        "WEBHOOK_SIGNING_SECRET": SIGNING_SECRET,
    }
