"""Emarsys stand-in: OAuth and WSSE authentication, external-event triggers and contact upserts.

Mounted on the sandbox server under ``/emarsys``: ``/emarsys/auth/oauth2/token`` issues bearer
tokens (client id and secret in HTTP Basic), ``/emarsys/api/v3/...`` accepts only those tokens and
``/emarsys/api/v2/...`` only a valid ``X-WSSE`` header (digest, 5-minute clock window, single-use
nonce). Triggers enforce the 1,000-contact and 1 MB limits, answer with Emarsys' reply codes
(2008 unknown contact, 5004 unknown event, 5005 event not connected, 7003 with HTTP 429 and
``X-RateLimit-*`` headers over the budget), drop a repeated ``trigger_id`` and record every accepted
trigger in :attr:`EmarsysStandIn.triggers`, every contact update in
:attr:`EmarsysStandIn.upserts` and every contact deletion in :attr:`EmarsysStandIn.deletions` for
tests.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from sandbox.server import Sandbox

PREFIX = "/emarsys"
CLIENT_ID = "sandbox_emarsys_oauth_client"
CLIENT_SECRET = "sandbox-only-emarsys-client-secret"
WSSE_USER = "sandbox_account001"
WSSE_SECRET = "sandbox-only-emarsys-wsse-secret"
EVENT_ID = 4711
UNCONNECTED_EVENT_ID = 4712
MAX_CONTACTS = 1000
MAX_EVENT_BYTES = 1_000_000
WSSE_WINDOW_SECONDS = 300
RATE_WINDOW_SECONDS = 60
EMAIL_FIELD = "3"
RATE_LIMITED_CODE = 7003

_WSSE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Trigger:
    """One accepted trigger, as Emarsys would process it."""

    event_id: int
    key_id: str
    external_id: str
    data: dict[str, Any]
    trigger_id: str | None
    api_version: str


@dataclass(frozen=True)
class ContactUpsert:
    """One ``PUT /contact`` that passed authentication, as it reached the stand-in."""

    api_version: str
    key_id: str
    create_if_not_exists: bool
    contacts: list[dict[str, Any]]


@dataclass
class EmarsysStandIn:
    """The stand-in's state; tests read and change it directly."""

    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    wsse_user: str = WSSE_USER
    wsse_secret: str = WSSE_SECRET
    token_lifetime_seconds: int = 3600
    # Requests per minute per API user; None means no limit.
    rate_limit: int | None = None
    events: dict[int, str] = field(
        default_factory=lambda: {EVENT_ID: "abandoned_cart", UNCONNECTED_EVENT_ID: "abandoned_cart_draft"}
    )
    unconnected_events: set[int] = field(default_factory=lambda: {UNCONNECTED_EVENT_ID})
    clock: Callable[[], float] = time.time
    contacts: list[dict[str, Any]] = field(default_factory=list)
    # Addresses that are contacts without being listed: a retailer's contact base synchronised
    # from Dynamics. ``python -m sandbox --carts`` points it at the bulk customers.
    directory: Callable[[str], bool] | None = None
    triggers: list[Trigger] = field(default_factory=list)
    upserts: list[ContactUpsert] = field(default_factory=list)
    # Each contact/delete call that passed authentication: (key field, values asked for).
    deletions: list[tuple[str, list[str]]] = field(default_factory=list)
    duplicates_dropped: int = 0
    token_requests: int = 0
    trigger_requests: int = 0
    # Contacts and bytes of each batch trigger request, in order.
    batch_sizes: list[int] = field(default_factory=list)
    batch_bytes: list[int] = field(default_factory=list)
    seen_trigger_ids: set[str] = field(default_factory=set)
    _tokens: dict[str, float] = field(default_factory=dict)
    _nonces: dict[str, float] = field(default_factory=dict)
    _window_start: float = 0.0
    _window_used: int = 0
    _next_contact_id: int = 100_000

    # ----- helpers for tests

    @property
    def deliveries(self) -> int:
        """Triggers that arrived, repeats of a trigger_id included (``triggers`` holds one each)."""
        return len(self.triggers) + self.duplicates_dropped

    def add_contact(self, email: str, *, first_name: str | None = None, last_name: str | None = None) -> int:
        contact: dict[str, Any] = {"id": self._new_contact_id(), EMAIL_FIELD: email}
        if first_name:
            contact["1"] = first_name
        if last_name:
            contact["2"] = last_name
        self.contacts.append(contact)
        return int(contact["id"])

    def remove_contact(self, email: str) -> None:
        self.contacts = [
            c for c in self.contacts if str(c.get(EMAIL_FIELD, "")).casefold() != email.casefold()
        ]

    def find_contact(self, key_id: str, value: str) -> dict[str, Any] | None:
        if key_id == EMAIL_FIELD and self.directory is not None and self.directory(value):
            return {"id": 0, EMAIL_FIELD: value}
        for contact in self.contacts:
            stored = contact.get(key_id)
            if stored is None:
                continue
            if key_id == EMAIL_FIELD and str(stored).casefold() == value.casefold():
                return contact
            if str(stored) == value:
                return contact
        return None

    def triggers_for(self, external_id: str) -> list[Trigger]:
        return [t for t in self.triggers if t.external_id.casefold() == external_id.casefold()]

    def expire_tokens(self) -> None:
        self._tokens.clear()

    def _new_contact_id(self) -> int:
        self._next_contact_id += 1
        return self._next_contact_id

    # ----- routes

    def add_routes(self, app: web.Application, prefix: str = PREFIX) -> None:
        app.router.add_post(f"{prefix}/auth/oauth2/token", self._token)
        for version in ("v2", "v3"):
            app.router.add_post(f"{prefix}/api/{version}/event/{{event_id}}/trigger", self._trigger)
            app.router.add_put(f"{prefix}/api/{version}/contact", self._upsert_contacts)
            app.router.add_post(f"{prefix}/api/{version}/contact/delete", self._delete_contacts)
            app.router.add_get(f"{prefix}/api/{version}/event", self._list_events)

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        client_id = client_secret = ""
        if scheme.lower() == "basic":
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
        if not (
            hmac.compare_digest(client_id, self.client_id)
            and hmac.compare_digest(client_secret, self.client_secret)
        ):
            return web.json_response(
                {"error": "invalid_client", "error_description": "client authentication failed"}, status=401
            )
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self.clock() + self.token_lifetime_seconds
        return web.json_response(
            {"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime_seconds}
        )

    def _authenticate(self, request: web.Request, version: str) -> web.Response | None:
        """None when the request is authenticated for this API version, else the 401 answer."""
        if version == "v3":
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            expires = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if expires is None or expires <= self.clock():
                return _reply(1, "Unauthorized: invalid or expired bearer token", status=401)
            return None
        return self._check_wsse(request.headers.get("X-WSSE") or request.headers.get("WSSE") or "")

    def _check_wsse(self, header: str) -> web.Response | None:
        if not header.startswith("UsernameToken "):
            return _reply(1, "Unauthorized: X-WSSE header missing", status=401)
        parts = dict(_WSSE.findall(header))
        username, digest = parts.get("Username", ""), parts.get("PasswordDigest", "")
        nonce, created = parts.get("Nonce", ""), parts.get("Created", "")
        if not (username and digest and nonce and created) or username != self.wsse_user:
            return _reply(1, "Unauthorized: unknown user or incomplete UsernameToken", status=401)
        try:
            when = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return _reply(1, "Unauthorized: Created is not an ISO 8601 timestamp", status=401)
        if when.tzinfo is None or abs(when.timestamp() - self.clock()) > WSSE_WINDOW_SECONDS:
            return _reply(1, "Unauthorized: Created is outside the 5-minute window", status=401)
        if not hmac.compare_digest(digest, _digest(nonce, created, self.wsse_secret)):
            return _reply(1, "Unauthorized: PasswordDigest does not match", status=401)
        now = self.clock()
        self._nonces = {n: t for n, t in self._nonces.items() if t > now - 2 * WSSE_WINDOW_SECONDS}
        if nonce in self._nonces:
            return _reply(1, "Unauthorized: Nonce was used before", status=401)
        self._nonces[nonce] = now
        return None

    def _rate_headers(self) -> dict[str, str]:
        if self.rate_limit is None:
            return {}
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-Ratelimit-Remaining": str(max(0, self.rate_limit - self._window_used)),
            "X-RateLimit-Reset": str(int(self._window_start + RATE_WINDOW_SECONDS)),
        }

    def _take_budget(self) -> web.Response | None:
        if self.rate_limit is None:
            return None
        now = self.clock()
        if now >= self._window_start + RATE_WINDOW_SECONDS:
            self._window_start, self._window_used = now, 0
        if self._window_used >= self.rate_limit:
            return _reply(
                RATE_LIMITED_CODE,
                "Too many requests for this API user in the last minute",
                status=429,
                headers=self._rate_headers(),
            )
        self._window_used += 1
        return None

    async def _guard(self, request: web.Request) -> tuple[str, web.Response | None]:
        version = request.path.split("/api/", 1)[1].split("/", 1)[0]
        rejected = self._authenticate(request, version)
        if rejected is None:
            rejected = self._take_budget()
        return version, rejected

    async def _list_events(self, request: web.Request) -> web.Response:
        _, rejected = await self._guard(request)
        if rejected is not None:
            return rejected
        return _reply(0, "OK", data=[{"id": str(i), "name": n} for i, n in self.events.items()])

    async def _trigger(self, request: web.Request) -> web.Response:
        version, rejected = await self._guard(request)
        if rejected is not None:
            return rejected
        self.trigger_requests += 1
        headers = self._rate_headers()
        # Read past aiohttp's own body limit, so the 1 MB rule answers the way Emarsys does.
        raw = await request.content.read()
        if len(raw) > MAX_EVENT_BYTES:
            return _reply(
                5008, "Event payload exceeds 1 MB; nothing was triggered", status=400, headers=headers
            )
        try:
            body = json.loads(raw)
        except ValueError:
            return _reply(1001, "Invalid JSON in request body", status=400, headers=headers)
        if not isinstance(body, dict):
            return _reply(1001, "Parameters invalid or missing", status=400, headers=headers)
        try:
            event_id = int(request.match_info["event_id"])
        except ValueError:
            return _reply(5001, "Invalid event id", status=400, headers=headers)
        if event_id not in self.events:
            return _reply(5004, f"Event {event_id} does not exist", status=400, headers=headers)
        key_id = str(body.get("key_id", EMAIL_FIELD))
        if not (key_id.isdigit() or key_id in ("id", "uid")):
            return _reply(2004, "Invalid key field id", status=400, headers=headers)
        if "contacts" in body:
            contacts = body["contacts"]
            self.batch_sizes.append(len(contacts) if isinstance(contacts, list) else 0)
            self.batch_bytes.append(len(raw))
            return self._batch(event_id, key_id, body, version, headers)
        problem = _check_item(body)
        if problem is not None:
            return _reply(*problem, status=400, headers=headers)
        if event_id in self.unconnected_events:
            return _reply(5005, "No program or campaign is triggered", status=400, headers=headers)
        external_id = str(body["external_id"])
        if self.find_contact(key_id, external_id) is None:
            return _reply(
                2008, f"No contact found with the external id: {key_id}", status=400, headers=headers
            )
        self._record(event_id, key_id, body, version)
        return _reply(0, "OK", data={}, headers=headers)

    def _batch(
        self, event_id: int, key_id: str, body: dict[str, Any], version: str, headers: dict[str, str]
    ) -> web.Response:
        contacts = body["contacts"]
        if not isinstance(contacts, list) or not contacts:
            return _reply(1001, "contacts must be a non-empty array", status=400, headers=headers)
        if len(contacts) > MAX_CONTACTS:
            return _reply(
                1000, f"Batch too large: at most {MAX_CONTACTS} contacts", status=400, headers=headers
            )
        if event_id in self.unconnected_events:
            return _reply(5005, "No program or campaign is triggered", status=400, headers=headers)
        ids: list[str] = []
        errors: dict[str, dict[str, str]] = {}
        for item in contacts:
            if not isinstance(item, dict):
                return _reply(1001, "contacts must hold objects", status=400, headers=headers)
            external_id = str(item.get("external_id", ""))
            problem = _check_item(item)
            if problem is not None:
                errors[external_id] = {str(problem[0]): problem[1]}
                continue
            contact = self.find_contact(key_id, external_id)
            if contact is None:
                errors[external_id] = {"2008": f"No contact found with the external id: {key_id}"}
                continue
            self._record(event_id, key_id, item, version)
            ids.append(str(contact["id"]))
        return _reply(0, "OK", data={"ids": ids, "errors": errors}, headers=headers)

    def _record(self, event_id: int, key_id: str, item: dict[str, Any], version: str) -> None:
        trigger_id = item.get("trigger_id")
        if trigger_id is not None:
            # Emarsys processes only the first trigger with a given trigger_id and answers OK to the rest.
            if str(trigger_id) in self.seen_trigger_ids:
                self.duplicates_dropped += 1
                return
            self.seen_trigger_ids.add(str(trigger_id))
        self.triggers.append(
            Trigger(
                event_id=event_id,
                key_id=key_id,
                external_id=str(item["external_id"]),
                data=dict(item.get("data") or {}),
                trigger_id=None if trigger_id is None else str(trigger_id),
                api_version=version,
            )
        )

    async def _upsert_contacts(self, request: web.Request) -> web.Response:
        version, rejected = await self._guard(request)
        if rejected is not None:
            return rejected
        headers = self._rate_headers()
        try:
            body = await request.json()
        except ValueError:
            return _reply(1001, "Invalid JSON in request body", status=400, headers=headers)
        if not isinstance(body, dict):
            return _reply(1001, "Parameters invalid or missing", status=400, headers=headers)
        key_id = str(body.get("key_id", EMAIL_FIELD))
        items = body.get("contacts")
        if items is None:
            items = [{k: v for k, v in body.items() if k not in ("key_id", "contact_list_id")}]
        if not isinstance(items, list) or len(items) > MAX_CONTACTS:
            return _reply(1000, f"At most {MAX_CONTACTS} contacts per call", status=400, headers=headers)
        create = request.query.get("create_if_not_exists") == "1"
        self.upserts.append(
            ContactUpsert(
                api_version=version,
                key_id=key_id,
                create_if_not_exists=create,
                contacts=[dict(item) for item in items if isinstance(item, dict)],
            )
        )
        ids: list[int | str] = []
        errors: dict[str, dict[str, str]] = {}
        for item in items:
            value = str(item.get(key_id, "")) if isinstance(item, dict) else ""
            if not value:
                errors[value] = {"2005": "No value provided for key field"}
                continue
            assert isinstance(item, dict)
            fields = {str(k): v for k, v in item.items()}
            contact = self.find_contact(key_id, value)
            if contact is not None:
                contact.update(fields)
                ids.append(str(contact["id"]))  # existing contacts come back as strings
            elif create:
                new_id = self._new_contact_id()
                self.contacts.append({"id": new_id, **fields})
                ids.append(new_id)  # created ones as integers
            else:
                errors[value] = {"2008": f"No contact found with the external id: {key_id}"}
        return _reply(0, "OK", data={"ids": ids, "errors": errors}, headers=headers)

    async def _delete_contacts(self, request: web.Request) -> web.Response:
        """``POST /contact/delete``: ``{"key_id": k, "<k>": [values]}``; ``key_id`` may be left
        out for e-mail (3). Duplicates of a non-unique key are not deleted (reply 2010 for that
        value); a call that finds nothing answers HTTP 404 with reply 2008."""
        _, rejected = await self._guard(request)
        if rejected is not None:
            return rejected
        headers = self._rate_headers()
        try:
            body = await request.json()
        except ValueError:
            return _reply(1001, "Invalid JSON in request body", status=400, headers=headers)
        if not isinstance(body, dict):
            return _reply(1001, "Parameters invalid or missing", status=400, headers=headers)
        key_id = str(body.get("key_id", EMAIL_FIELD))
        raw = body.get(key_id)
        values = raw if isinstance(raw, list) else [raw] if raw is not None else []
        if not values or not all(isinstance(v, str) and v for v in values):
            return _reply(2005, f"No value provided for key field: {key_id}", status=400, headers=headers)
        if len(values) > MAX_CONTACTS:
            return _reply(1000, f"At most {MAX_CONTACTS} contacts per call", status=400, headers=headers)
        self.deletions.append((key_id, [str(v) for v in values]))
        deleted = 0
        errors: dict[str, dict[str, str]] = {}
        for value in values:
            matches = [c for c in self.contacts if self._matches(c, key_id, value)]
            if len(matches) > 1:
                errors[value] = {"2010": f"More contacts found with the external id: {key_id}"}
            elif not matches:
                errors[value] = {"2008": f"No contact found with the external id: {key_id}"}
            else:
                self.contacts.remove(matches[0])
                deleted += 1
        if deleted == 0 and all("2008" in e for e in errors.values()):
            return _reply(
                2008, f"No contact found with the external id: {key_id}", status=404, headers=headers
            )
        return _reply(0, "OK", data={"deleted_contacts": str(deleted), "errors": errors}, headers=headers)

    @staticmethod
    def _matches(contact: dict[str, Any], key_id: str, value: str) -> bool:
        stored = contact.get(key_id)
        if stored is None:
            return False
        if key_id == EMAIL_FIELD:
            return str(stored).casefold() == value.casefold()
        return str(stored) == value


def _digest(nonce: str, created: str, secret: str) -> str:
    # Written out here rather than imported from the app, so the stand-in checks the app's digest.
    hexed = hashlib.sha1(f"{nonce}{created}{secret}".encode(), usedforsecurity=False).hexdigest()
    return base64.b64encode(hexed.encode()).decode()


def _check_item(item: dict[str, Any]) -> tuple[int, str] | None:
    if not item.get("external_id"):
        return 2005, "No value provided for key field"
    data = item.get("data")
    if data is not None and not isinstance(data, dict):
        return 5011, "Data must be an object"
    return None


def _reply(
    code: int,
    text: str,
    *,
    status: int = 200,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        {"replyCode": code, "replyText": text, "data": {} if data is None else data},
        status=status,
        headers=headers,
    )


_STATE: web.AppKey[EmarsysStandIn] = web.AppKey("emarsys_stand_in", EmarsysStandIn)


def extension(*, seed_contacts: bool = True, **options: Any) -> Callable[[web.Application, Sandbox], None]:
    """A sandbox extension with non-default stand-in options (``rate_limit``, ...)."""

    def add(app: web.Application, sandbox: Sandbox) -> None:
        stand_in = EmarsysStandIn(**options)
        if seed_contacts:
            for customer in sandbox.data.customers.values():
                if customer.email:
                    stand_in.add_contact(
                        customer.email, first_name=customer.first_name, last_name=customer.last_name
                    )
        app[_STATE] = stand_in
        stand_in.add_routes(app)

    return add


def add_routes(app: web.Application, sandbox: Sandbox) -> None:
    """The Emarsys stand-in with defaults: every sandbox customer with an address is a contact."""
    extension()(app, sandbox)


def stand_in(sandbox: Sandbox) -> EmarsysStandIn:
    return sandbox.app[_STATE]


def api_url(sandbox: Sandbox) -> str:
    return f"{sandbox.base_url}{PREFIX}"


def auth_url(sandbox: Sandbox) -> str:
    return f"{sandbox.base_url}{PREFIX}/auth"


def env(sandbox: Sandbox, *, auth: str = "oauth", event_id: int = EVENT_ID) -> dict[str, str]:
    """App settings and secrets (as environment variables) that point the app at this stand-in."""
    return {
        "EMAIL_PROVIDER": "emarsys",
        "EMARSYS_AUTH": auth,
        "EMARSYS_API_URL": api_url(sandbox),
        "EMARSYS_AUTH_URL": auth_url(sandbox),
        "EMARSYS_EVENT_ID": str(event_id),
        "EMARSYS_CLIENT_ID": CLIENT_ID,
        "EMARSYS_CLIENT_SECRET": CLIENT_SECRET,
        "EMARSYS_WSSE_USER": WSSE_USER,
        "EMARSYS_WSSE_SECRET": WSSE_SECRET,
    }
