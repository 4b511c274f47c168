"""SendGrid stand-in: ``POST /sendgrid/v3/mail/send`` with Bearer API-key auth.

It checks what SendGrid checks for a dynamic-template send (``from``, a ``d-`` template id, 1 to
1,000 personalizations, each address once), answers 202 with an ``X-Message-Id``, 429 with
``X-RateLimit-*`` headers over an optional budget, and records every accepted personalization.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from sandbox.server import Sandbox

PREFIX = "/sendgrid"
API_KEY = "SG.sandbox-only.not-a-real-key"
TEMPLATE_ID = "d-0a1b2c3d4e5f40718293a4b5c6d7e8f9"
FROM_EMAIL = "shop@example.com"
MAX_PERSONALIZATIONS = 1000


@dataclass(frozen=True)
class Mail:
    message_id: str
    to: str
    template_id: str
    dynamic_template_data: dict[str, Any]
    custom_args: dict[str, str]


@dataclass
class SendGridStandIn:
    api_key: str = API_KEY
    rate_limit: int | None = None
    clock: Callable[[], float] = time.time
    mails: list[Mail] = field(default_factory=list)
    requests: int = 0
    _window_start: float = 0.0
    _used: int = 0

    def add_routes(self, app: web.Application, prefix: str = PREFIX) -> None:
        app.router.add_post(f"{prefix}/v3/mail/send", self._send)

    def _rate(self) -> tuple[dict[str, str], bool]:
        if self.rate_limit is None:
            return {}, True
        now = self.clock()
        if now >= self._window_start + 60:
            self._window_start, self._used = now, 0
        allowed = self._used < self.rate_limit
        if allowed:
            self._used += 1
        headers = {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - self._used)),
            "X-RateLimit-Reset": str(int(self._window_start + 60)),
        }
        return headers, allowed

    async def _send(self, request: web.Request) -> web.Response:
        self.requests += 1
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip(), self.api_key):
            return _errors(401, "The provided authorization grant is invalid, expired, or revoked")
        headers, allowed = self._rate()
        if not allowed:
            return _errors(429, "too many requests", headers)
        try:
            body = await request.json()
        except ValueError:
            return _errors(400, "Bad Request", headers)
        problem = _validate(body)
        if problem is not None:
            return _errors(400, problem[1], headers, problem[0])
        message_id = secrets.token_urlsafe(16)
        for personalization in body["personalizations"]:
            self.mails.append(
                Mail(
                    message_id=message_id,
                    to=personalization["to"][0]["email"],
                    template_id=body["template_id"],
                    dynamic_template_data=dict(personalization.get("dynamic_template_data") or {}),
                    custom_args=dict(personalization.get("custom_args") or {}),
                )
            )
        return web.Response(status=202, headers={**headers, "X-Message-Id": message_id})


def _validate(body: Any) -> tuple[str, str] | None:
    if not isinstance(body, dict):
        return "", "Bad Request"
    if not isinstance(body.get("from"), dict) or not body["from"].get("email"):
        return "from.email", "The from email does not contain a valid address."
    template = body.get("template_id")
    if not isinstance(template, str) or not template.startswith("d-"):
        return "template_id", "The template_id must be a dynamic template id."
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return "personalizations", "The personalizations field is required and must have at least one item."
    if len(personalizations) > MAX_PERSONALIZATIONS:
        return "personalizations", "The personalizations field must have no more than 1000 items."
    seen: set[str] = set()
    for index, item in enumerate(personalizations):
        to = item.get("to") if isinstance(item, dict) else None
        if (
            not isinstance(to, list)
            or not to
            or not isinstance(to[0], dict)
            or "@" not in str(to[0].get("email"))
        ):
            return f"personalizations.{index}.to", "Does not contain a valid address."
        address = str(to[0]["email"]).casefold()
        if address in seen:
            return (
                f"personalizations.{index}.to",
                "Each email address in the personalization block should be unique.",
            )
        seen.add(address)
    return None


def _errors(
    status: int, message: str, headers: dict[str, str] | None = None, field: str = ""
) -> web.Response:
    body = {"errors": [{"message": message, "field": field or None, "help": None}]}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


_STATE: web.AppKey[SendGridStandIn] = web.AppKey("sendgrid_stand_in", SendGridStandIn)


def add_routes(app: web.Application, sandbox: Sandbox) -> None:
    stand_in = SendGridStandIn()
    app[_STATE] = stand_in
    stand_in.add_routes(app)


def stand_in(sandbox: Sandbox) -> SendGridStandIn:
    return sandbox.app[_STATE]


def api_url(sandbox: Sandbox) -> str:
    return f"{sandbox.base_url}{PREFIX}"


def env(sandbox: Sandbox) -> dict[str, str]:
    return {
        "EMAIL_PROVIDER": "sendgrid",
        "SENDGRID_API_URL": api_url(sandbox),
        "SENDGRID_TEMPLATE_ID": TEMPLATE_ID,
        "SENDGRID_FROM_EMAIL": FROM_EMAIL,
        "SENDGRID_API_KEY": API_KEY,
    }
