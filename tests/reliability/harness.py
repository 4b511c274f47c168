"""Drives one fault-matrix cell through the functions registered on ``function_app.app``.

Each cell gets its own SQLite state store and a fresh :class:`Runtime` per invocation: a message
the host redelivers (after ``visibilityTimeout``, possibly on another instance) finds only what
the state store kept, never an in-process cache or a client's throttle memory. What a warm
instance keeps for longer is shared instead, to keep the matrix fast: the HTTP connection pool
and, for the cells not about Entra ID or Key Vault, the app token. Faults come from the
sandbox's fault injector for the HTTP upstreams (Key Vault's stand-in included) and from
:class:`FaultyStore` for the state store. Retry waits are recorded instead of slept, so a
``Retry-After: 2`` costs nothing and the test can still see that it was honoured.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from sandbox import emarsys, fno, keyvault, managed_identity, orders, sendgrid, webhook
from sandbox.server import Sandbox
from shared import runtime as runtime_module
from shared.abandoned_carts.detect import DetectionFailedError
from shared.abandoned_carts.messages import CartMessage
from shared.abandoned_carts.payload import dedup_key
from shared.email import emarsys as emarsys_provider
from shared.http import HttpClient, build_ssl_context
from shared.identity import TokenProvider
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from shared.state.ledger import Ledger, LedgerEntry
from shared.state.sqlite import SqliteStore
from shared.state.store import ContainerName, Document, StoreError, WriteOp
from tests.conftest import OutStub, sandbox_settings
from tests.notify.conftest import NOTIFY_SETTINGS, NOW, consenting_customer, own_cart
from tests.reliability.matrix import SERVER_DELAY_SECONDS, Cell, Fault, Variant

ROOT = Path(__file__).resolve().parents[2]
MAX_DEQUEUE_COUNT: int = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"][
    "maxDequeueCount"
]
# Short client timeouts keep a timeout or hang cell near a second; not shorter, so that a busy
# machine (a cold MSAL start on a worker thread, say) does not read as an upstream timeout.
CLIENT_TIMEOUT = 0.5
# The longest the harness waits for one invocation before calling it hung: far beyond any
# timeout the cell's settings allow, so only an unbounded wait reaches it.
GUARD_SECONDS = 4.0
# The Key Vault stand-in's route in the fault injector: every secret read.
KEY_VAULT_ROUTE = "GET /secrets"
EXTENSIONS = [
    orders.add_routes,
    emarsys.add_routes,
    sendgrid.add_routes,
    webhook.add_routes,
    fno.add_routes,
    keyvault.add_routes,
]

FAST: dict[str, Any] = {
    "http_timeout_seconds": CLIENT_TIMEOUT,
    "http_connect_timeout_seconds": CLIENT_TIMEOUT,
    "http_max_attempts": 2,
    "http_backoff_base_seconds": 0.001,
    "http_backoff_max_seconds": 0.01,
    "fno_timeout_seconds": CLIENT_TIMEOUT,
    "fno_max_attempts": 2,
    # The Key Vault client's own.
    "key_vault_timeout_seconds": CLIENT_TIMEOUT,
    "key_vault_max_attempts": 2,
    "coalesce_window_ms": 1,
}


# Deadlines for a call made after the fault cleared, which only has to succeed.
HEALTHY: dict[str, Any] = {
    "http_timeout_seconds": 10.0,
    "http_connect_timeout_seconds": 10.0,
    "fno_timeout_seconds": 10.0,
    "key_vault_timeout_seconds": 10.0,
}
HEALTHY_GUARD_SECONDS = 30.0


# ----- what a cell observed


@dataclass
class Observation:
    outcome: str
    detail: str | None = None
    invocations: int = 0
    delivered: int = 0  # accepted at the stand-in for the cell's key (emails, triggers, customers)
    repeats_dropped: int = 0  # repeats the provider itself dropped (trigger_id, webhook-id)
    ledger: str | None = None
    waits: list[float] = field(default_factory=list)
    fault_hits: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.outcome if self.detail is None else f"{self.outcome}:{self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "detail": self.detail,
            "label": self.label,
            "invocations": self.invocations,
            "delivered": self.delivered,
            "repeatsDropped": self.repeats_dropped,
            "ledger": self.ledger,
            "waits": self.waits,
            "faultHits": self.fault_hits,
            "notes": self.notes,
        }


_SSL_CONTEXTS: dict[Any, Any] = {}


def _shared_ssl_context(extra_ca_bundle: Path | None) -> Any:
    """One TLS context per CA bundle for the whole matrix: loading the system store costs tens of
    milliseconds, which a process pays once and the matrix would pay per runtime."""
    if extra_ca_bundle not in _SSL_CONTEXTS:
        _SSL_CONTEXTS[extra_ca_bundle] = build_ssl_context(extra_ca_bundle)
    return _SSL_CONTEXTS[extra_ca_bundle]


class Waits:
    """A sleep that records what was asked and returns at once."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(round(seconds, 3))
        await asyncio.sleep(0)


class WarmTokens:
    """A runtime's view of the shared token provider: everything but closing it."""

    def __init__(self, inner: TokenProvider) -> None:
        self._inner = inner

    async def get_token(self, scope: str) -> str:
        return await self._inner.get_token(scope)

    def invalidate(self, scope: str) -> None:
        self._inner.invalidate(scope)

    def close(self) -> None:
        return None


class WarmSession:
    """A runtime's view of the shared HTTP session: everything but closing it."""

    def __init__(self, inner: aiohttp.ClientSession) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def close(self) -> None:
        return None


# ----- the sandbox faults, per matrix fault


def http_fault(fault: Fault, times: int | None) -> dict[str, Any]:
    """``FaultInjector.add`` arguments for a fault; ``times`` None means every request."""
    if fault is Fault.RETRY_AFTER:
        return {"status": 429, "headers": {"Retry-After": str(SERVER_DELAY_SECONDS)}, "times": times}
    if fault is Fault.RATELIMIT_RESET:
        # The epoch form Emarsys and SendGrid send, in whole seconds; taken when the fault is
        # installed, so it is set far enough ahead to be still ahead when the retry reads it.
        reset = int(time.time()) + SERVER_DELAY_SECONDS + 2
        return {"status": 429, "headers": {"X-RateLimit-Reset": str(reset)}, "times": times}
    if fault is Fault.THROTTLED:
        return {"status": 429, "times": times}
    if fault is Fault.SERVER_ERROR:
        return {"status": 500, "times": times}
    if fault is Fault.UNAVAILABLE:
        return {"status": 503, "times": times}
    if fault is Fault.TIMEOUT:
        # An answer that comes only after the client gave up.
        return {"latency": CLIENT_TIMEOUT * 5, "times": times}
    if fault is Fault.RESET:
        return {"reset": True, "times": times}
    if fault is Fault.MALFORMED:
        return {"status": 200, "body": '{"value": [', "times": times}
    if fault is Fault.REFUSED:
        return {"status": 401, "times": 1}
    if fault is Fault.HANG:
        # Held far longer than any client waits; never answered.
        return {"timeout": True, "times": times}
    raise AssertionError(fault)


def oauth_refusal(fault: Fault) -> dict[str, Any]:
    """Entra's token endpoint answers errors in OAuth's JSON shape."""
    if fault is Fault.REFUSED:
        body = {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."}
        return {"body": json.dumps(body)}
    return {}


# ----- the state store: the real SQLite store, failing on demand


_STORE_FAILURES: dict[Fault, str] = {
    Fault.RETRY_AFTER: "throttled (429, retry after 2 s)",
    Fault.SERVER_ERROR: "internal error (500)",
    Fault.UNAVAILABLE: "unavailable (503)",
    Fault.TIMEOUT: "timeout",
    Fault.RESET: "connection reset",
}


class FaultyStore:
    """The cell's SQLite document store, raising the store's own error (``StoreError``) for the
    calls ``applies`` picks, ``times`` times (None: every time). The error is raised before the
    call reaches SQLite, so a failed write wrote nothing. Every runtime of the cell shares the one
    SQLite connection, which the cell closes: closing a runtime leaves it open."""

    def __init__(
        self,
        inner: SqliteStore,
        state: StoreFaultState,
    ) -> None:
        self._inner = inner
        self._state = state

    def _check(self, operation: str, container: ContainerName, body: Mapping[str, Any] | None) -> None:
        self._state.check(operation, container, body)

    async def read(self, container: ContainerName, partition: str, key: str) -> Document | None:
        self._check("read", container, None)
        return await self._inner.read(container, partition, key)

    async def create(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document:
        self._check("create", container, body)
        return await self._inner.create(container, partition, key, body, ttl_seconds=ttl_seconds)

    async def replace(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        etag: str,
        ttl_seconds: int | None = None,
    ) -> Document:
        self._check("replace", container, body)
        return await self._inner.replace(container, partition, key, body, etag=etag, ttl_seconds=ttl_seconds)

    async def upsert(
        self,
        container: ContainerName,
        partition: str,
        key: str,
        body: Mapping[str, Any],
        *,
        ttl_seconds: int | None = None,
    ) -> Document:
        self._check("upsert", container, body)
        return await self._inner.upsert(container, partition, key, body, ttl_seconds=ttl_seconds)

    async def delete(
        self, container: ContainerName, partition: str, key: str, *, etag: str | None = None
    ) -> None:
        self._check("delete", container, None)
        await self._inner.delete(container, partition, key, etag=etag)

    async def read_many(
        self, container: ContainerName, refs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Document]:
        self._check("read", container, None)
        return await self._inner.read_many(container, refs)

    async def write_many(
        self, container: ContainerName, ops: Sequence[WriteOp]
    ) -> list[Document | StoreError]:
        # Every operation is checked before any reaches SQLite: a failed batch wrote nothing.
        for op in ops:
            self._check(op.kind, container, op.body)
        return await self._inner.write_many(container, ops)

    async def query(self, container: ContainerName, **kwargs: Any) -> list[Document]:
        self._check("query", container, None)
        return await self._inner.query(container, **kwargs)

    async def close(self) -> None:
        return None


StorePredicate = Callable[[str, ContainerName, Mapping[str, Any] | None], bool]


def any_call(operation: str, container: ContainerName, body: Mapping[str, Any] | None) -> bool:
    return True


def ledger_sent_write(operation: str, container: ContainerName, body: Mapping[str, Any] | None) -> bool:
    return operation == "replace" and container == "ledger" and (body or {}).get("status") == "sent"


@dataclass
class StoreFaultState:
    """Shared by every runtime of a cell, so "once" means once across redeliveries."""

    fault: Fault | None
    times: int | None
    applies: StorePredicate = any_call
    hits: int = 0

    def check(self, operation: str, container: ContainerName, body: Mapping[str, Any] | None) -> None:
        if self.fault is None or not self.applies(operation, container, body):
            return
        if self.times is not None and self.hits >= self.times:
            return
        self.hits += 1
        raise StoreError(f"simulated state store fault: {_STORE_FAILURES[self.fault]}")


# ----- one cell


@dataclass
class Context:
    sandbox: Sandbox
    functions: dict[str, Any]
    directory: Path
    monkeypatch: pytest.MonkeyPatch
    logs: Any  # the log capture of tests/conftest.py
    waits: Waits = field(default_factory=Waits)
    store_faults: StoreFaultState = field(default_factory=lambda: StoreFaultState(None, None))
    secrets: dict[str, str] = field(default_factory=dict)
    # A warm instance's token provider, shared by the cells that are not about Entra ID or Key Vault.
    warm_tokens: TokenProvider | None = None
    # A warm instance's HTTP session (its connection pool), shared the same way.
    warm_session: aiohttp.ClientSession | None = None

    _store: SqliteStore | None = None

    @property
    def state_path(self) -> Path:
        return self.directory / "state.sqlite3"

    @property
    def store(self) -> SqliteStore:
        """The cell's state store, as the harness reads and seeds it (no faults)."""
        if self._store is None:
            self._store = SqliteStore(self.state_path)
        return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()

    def install(self, *, key_vault: bool, cold_tokens: bool) -> None:
        """Route the runtime's store, secrets and retry waits through the cell's fault points.

        ``cold_tokens``: every runtime gets a token provider of its own, so each invocation asks
        Entra ID (and reads the client secret) afresh, with no throttle memory from the last."""
        waits = self.waits

        class RecordingHttpClient(HttpClient):
            def __init__(self, session: Any, policy: Any, **kwargs: Any) -> None:
                super().__init__(session, policy, **{**kwargs, "sleep": waits})

        class RecordingEmarsys(emarsys_provider.EmarsysProvider):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **{**kwargs, "sleep": waits})

        patch = self.monkeypatch
        patch.setattr(runtime_module, "build_ssl_context", _shared_ssl_context)
        patch.setattr(runtime_module, "HttpClient", RecordingHttpClient)
        patch.setattr("shared.customers.service.HttpClient", RecordingHttpClient)
        patch.setattr("shared.email.emarsys.EmarsysProvider", RecordingEmarsys)
        store_faults = self.store_faults
        store = FaultyStore(self.store, store_faults)
        patch.setattr(runtime_module, "create_store", lambda s: store)
        if self.warm_session is not None:
            session = WarmSession(self.warm_session)
            patch.setattr(runtime_module, "new_session", lambda **kwargs: session)
        warm = self.warm_tokens
        if not cold_tokens and warm is not None:
            patch.setattr(runtime_module, "TokenProvider", lambda **kwargs: WarmTokens(warm))
        if key_vault:
            keyvault.stand_in(self.sandbox).secrets.update(self.secrets)

    @asynccontextmanager
    async def runtime(self, settings: Settings) -> AsyncIterator[Runtime]:
        """A fresh process runtime: what a redelivery on a new instance (or after the visibility
        timeout) finds is the state store only."""
        if settings.key_vault_url:
            # As the host builds it with KEY_VAULT_URL set, signed in to the stand-in.
            created = Runtime.create(
                settings,
                key_vault_credential=keyvault.SandboxCredential(self.sandbox),
                verify_key_vault_challenge=False,
            )
        else:
            created = Runtime.create(settings)
        set_runtime(created)
        try:
            yield created
        finally:
            set_runtime(None)
            await created.close()


def settings_for(ctx: Context, row_id: str, **extra: Any) -> Settings:
    sandbox = ctx.sandbox
    values: dict[str, Any] = {**NOTIFY_SETTINGS, **FAST, "preview_dir": ctx.directory / "previews"}
    provider = "webhook"
    if row_id in ("emarsys",):
        provider = "emarsys"
    elif row_id in ("sendgrid", "store-sent-sendgrid"):
        provider = "sendgrid"
    if provider == "emarsys":
        env = emarsys.env(sandbox)
        values |= {
            "email_provider": "emarsys",
            "emarsys_auth": "oauth",
            "emarsys_api_url": env["EMARSYS_API_URL"],
            "emarsys_auth_url": env["EMARSYS_AUTH_URL"],
            "emarsys_event_id": emarsys.EVENT_ID,
        }
    elif provider == "sendgrid":
        env = sendgrid.env(sandbox)
        values |= {
            "email_provider": "sendgrid",
            "sendgrid_api_url": env["SENDGRID_API_URL"],
            "sendgrid_template_id": env["SENDGRID_TEMPLATE_ID"],
            "sendgrid_from_email": env["SENDGRID_FROM_EMAIL"],
        }
    else:
        values |= {"email_provider": "webhook", "webhook_url": webhook.url(sandbox)}
    if row_id.startswith("keyvault"):
        values["key_vault_url"] = keyvault.stand_in(sandbox).vault_url
    if row_id == "managed-identity":
        values |= {"entra_credential": "federated", "azure_client_id": sandbox.managed_identity.client_id}
    values["fno_url"] = fno.fno_url(sandbox)
    values["sqlite_path"] = ctx.state_path
    values |= extra
    return sandbox_settings(sandbox, ctx.directory, **values)


def federated(ctx: Context) -> None:
    """As a function app with a managed identity and no client secret: the platform's IDENTITY_*
    variables point at the sandbox's endpoint, and no Entra client secret exists to be read (a
    read would fail the cell)."""
    for name, value in ctx.sandbox.managed_identity.env().items():
        ctx.monkeypatch.setenv(name, value)
    ctx.monkeypatch.delenv("ENTRA_CLIENT_SECRET", raising=False)


def stand_in_secrets(sandbox: Sandbox) -> dict[str, str]:
    """Every secret of the stand-ins, by Key Vault name (and, upper-cased, as environment)."""
    env = {
        **emarsys.env(sandbox),
        **sendgrid.env(sandbox),
        **webhook.env(sandbox),
        "ENTRA_CLIENT_SECRET": sandbox.client_secret,
    }
    names = (
        "ENTRA_CLIENT_SECRET",
        "EMARSYS_CLIENT_ID",
        "EMARSYS_CLIENT_SECRET",
        "SENDGRID_API_KEY",
        "WEBHOOK_SIGNING_SECRET",
    )
    return {name.lower().replace("_", "-"): env[name] for name in names}


def dequeue_counts(cell: Cell) -> list[int]:
    """The deliveries the host makes while the message keeps raising: every one for a fault that
    happens once; the first and the last (``maxDequeueCount``) for a persistent one, since the
    function does nothing different on the deliveries in between."""
    if cell.variant is Variant.ONCE:
        return list(range(1, MAX_DEQUEUE_COUNT + 1))
    return [1, MAX_DEQUEUE_COUNT]


def install_key_vault_fault(ctx: Context, cell: Cell) -> Any:
    """The cell's fault on the Key Vault stand-in's secret reads."""
    return ctx.sandbox.faults.add(KEY_VAULT_ROUTE, **http_fault(cell.fault, times_of(cell)))


def guard_for(row: str) -> float:
    """Key Vault's SDK and azure-identity sleep a Retry-After for real (the app's clients record it
    instead)."""
    return GUARD_SECONDS + (SERVER_DELAY_SECONDS if row.startswith(("keyvault", "managed-identity")) else 0)


def times_of(cell: Cell) -> int | None:
    return 1 if cell.variant is Variant.ONCE else None


async def guarded(call: Awaitable[Any], seconds: float = GUARD_SECONDS) -> tuple[str, Any]:
    """("ok", result), ("raised", exception) or ("hung", None) after ``seconds``."""
    try:
        return "ok", await asyncio.wait_for(call, seconds)
    except TimeoutError:
        return "hung", None
    except Exception as exc:
        return "raised", exc


# ----- notify


_NOTIFY_ROUTES: dict[str, Callable[[Sandbox], str]] = {
    "entra": lambda s: f"POST /entra/{s.tenant_id}/oauth2/v2.0/token",
    "managed-identity": lambda s: "GET " + managed_identity.ROUTE,
    "retail-cart": lambda s: "POST /rs/Commerce/Carts/Search",
    "retail-customer": lambda s: "POST /rs/Commerce/Customers/GetByAccountNumbers",
    "retail-media": lambda s: "GET /rs/Commerce/Products(",
    "emarsys": lambda s: f"POST /emarsys/api/v3/event/{emarsys.EVENT_ID}/trigger",
    "sendgrid": lambda s: "POST /sendgrid/v3/mail/send",
    "webhook": lambda s: "POST /webhook/receive",
}


class Deliveries:
    """What the providers' stand-ins accepted for one dedup key, read before and after a cell."""

    def __init__(self, sandbox: Sandbox, key: str) -> None:
        self._sandbox = sandbox
        self._key = key
        self._start = self._repeats()

    def _repeats(self) -> int:
        return emarsys.stand_in(self._sandbox).duplicates_dropped + webhook.receiver(self._sandbox).duplicates

    def accepted(self) -> list[dict[str, Any]]:
        """The template data of every delivery of the key, whichever provider took it."""
        sandbox, key = self._sandbox, self._key
        found = [t.data for t in emarsys.stand_in(sandbox).triggers if t.trigger_id == key]
        found += [
            m.dynamic_template_data
            for m in sendgrid.stand_in(sandbox).mails
            if m.custom_args.get("dedup_key") == key
        ]
        found += [
            r["data"]["data"] for r in webhook.receiver(sandbox).received if r["data"]["dedup_key"] == key
        ]
        return found

    def repeats_dropped(self) -> int:
        return self._repeats() - self._start


def _degraded(delivered: list[dict[str, Any]], ledger_body: Mapping[str, Any]) -> bool:
    """Sent without an optional part: the ledger entry names it, or a delivered line has no image."""
    if ledger_body.get("degraded"):
        return True
    return any(line.get("image") is None for data in delivered for line in data.get("products", []))


async def drive_notify(ctx: Context, cell: Cell) -> Observation:
    sandbox, row = ctx.sandbox, cell.row.id
    settings = settings_for(ctx, row)
    ctx.install(
        key_vault=row.startswith("keyvault"), cold_tokens=row in ("entra", "keyvault", "managed-identity")
    )
    if row == "managed-identity":
        federated(ctx)
    customer = consenting_customer(sandbox)
    first, second = list(sandbox.data.products)[:2]
    cart = own_cart(sandbox, customer, lines=[(first, 1), (second, 1)])
    body = await _queue(ctx, cart)
    key = dedup_key(cart.id, cart.version, 1)
    deliveries = Deliveries(sandbox, key)
    fault = None
    if row in _NOTIFY_ROUTES:
        fault = sandbox.faults.add(
            _NOTIFY_ROUTES[row](sandbox), **http_fault(cell.fault, times_of(cell)), **_route_body(row, cell)
        )
    elif row.startswith("keyvault"):
        fault = install_key_vault_fault(ctx, cell)
    else:
        ctx.store_faults.fault, ctx.store_faults.times = cell.fault, times_of(cell)
        ctx.store_faults.applies = any_call if row == "store-claim" else ledger_sent_write

    observation = Observation(outcome="")
    state, last_error = "raised", None
    for count in dequeue_counts(cell):
        observation.invocations += 1
        async with ctx.runtime(settings):
            state, result = await guarded(_deliver(ctx.functions, body, count), guard_for(row))
        if state == "ok":
            if result is not None:
                observation.notes.append("poisoned by the function itself")
            break
        if state == "hung":
            break
        last_error = result
    sandbox.faults.clear()
    ctx.store_faults.fault = None

    entry = await _ledger_entry(ctx, cart.id, cart.version)
    delivered = deliveries.accepted()
    observation.delivered = len(delivered)
    observation.repeats_dropped = deliveries.repeats_dropped()
    observation.waits = list(ctx.waits.asked)
    observation.fault_hits = (fault.hits if fault else 0) + ctx.store_faults.hits
    status, reason = (entry.status.value, entry.reason) if entry else ("missing", None)
    observation.ledger = status if reason is None else f"{status}({reason})"
    ledger_body = entry.body() if entry else {}
    if state == "hung":
        observation.outcome = "hung"
    elif state == "raised":
        observation.outcome = "poisoned"
        observation.detail = reason or type(last_error).__name__
        if row == "managed-identity" and _names_identity(last_error, sandbox.managed_identity.client_id):
            observation.notes.append(IDENTITY_NAMED)
    elif status == "sent":
        observation.outcome = "degraded" if _degraded(delivered, ledger_body) else "sent"
    elif status in ("skipped", "failed"):
        observation.outcome, observation.detail = status, reason
    elif status in ("uncertain", "sending"):
        # "sending": written before a provider without dedup was called, and left there when the
        # result could not be recorded; never claimed again, and detection settles it uncertain.
        observation.outcome = "uncertain"
    else:
        observation.outcome = status
    return observation


# The note of a managed-identity cell whose failure says which identity's token failed.
IDENTITY_NAMED = "names the managed identity"


def _names_identity(error: BaseException | None, client_id: str) -> bool:
    """The error, or one it was raised from, names the managed identity (its client id)."""
    while error is not None:
        if "managed-identity endpoint" in str(error) and client_id in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _route_body(row: str, cell: Cell) -> dict[str, Any]:
    return oauth_refusal(cell.fault) if row == "entra" else {}


async def _queue(ctx: Context, cart: Any) -> str:
    """What detection leaves for one cart: a pending ledger entry, the latest-cart pointer, a message."""
    ledger = Ledger(ctx.store)
    entry = LedgerEntry(
        cart_id=cart.id,
        cart_version=cart.version,
        step=1,
        oun="128",
        customer_id=cart.customer_id,
        modified_at=cart.modified_date_time,
        due_at=NOW,
        queued_at=NOW,
        updated_at=NOW,
    )
    assert await ledger.record(entry)
    await ledger.register_latest_cart(
        "128", cart.customer_id, cart.id, cart.version, cart.modified_date_time, now=NOW
    )
    return CartMessage(cart_id=cart.id, cart_version=cart.version, oun="128", step=1).encode()


async def _deliver(functions: dict[str, Any], body: str, dequeue_count: int) -> str | None:
    """One delivery of the message, as the host makes it; the poison output, if the function set it."""
    poison = OutStub()
    message = QueueMessage(id=f"fm-{uuid.uuid4().hex[:8]}", body=body.encode(), dequeue_count=dequeue_count)
    await functions["notify_abandoned_cart"].get_user_function()(message, poison)
    value: str | None = poison.get()
    return value


async def _ledger_entry(ctx: Context, cart_id: str, version: int) -> LedgerEntry | None:
    found = await Ledger(ctx.store).get(cart_id, version, 1)
    return None if found is None else found[0]


# ----- detection


async def drive_detect(ctx: Context, cell: Cell, index: int) -> Observation:
    """A cart alone in a window of its own, a run with the fault and a run after it cleared."""
    sandbox = ctx.sandbox
    settings = settings_for(ctx, cell.row.id, lookback_minutes=120, abandoned_after_minutes=60)
    ctx.install(key_vault=False, cold_tokens=False)
    at = NOW + timedelta(days=30 + index)
    customer = consenting_customer(sandbox, 1)
    cart = sandbox.data.add_cart(
        oun="128", customer_id=customer.account_number, modified=at - timedelta(minutes=61)
    )
    fault = sandbox.faults.add("POST /rs/Commerce/Carts/Search", **http_fault(cell.fault, times_of(cell)))
    observation = Observation(outcome="")
    queued: list[list[str]] = []
    states: list[tuple[str, Any]] = []
    try:
        for run, when in enumerate((at, at + timedelta(minutes=1))):
            if run == 1:
                sandbox.faults.clear()
            ctx.monkeypatch.setattr("shared.abandoned_carts.blueprint.utcnow", lambda when=when: when)
            out = OutStub()
            async with ctx.runtime(settings):
                states.append(
                    await guarded(
                        ctx.functions["detect_abandoned_carts"].get_user_function()(
                            TimerRequest(past_due=False), out
                        )
                    )
                )
            queued.append([m for m in (out.get() or []) if json.loads(m)["cartId"] == cart.id])
    finally:
        sandbox.faults.clear()
        del sandbox.data.carts[cart.id]
    observation.invocations = len(states)
    observation.delivered = sum(len(messages) for messages in queued)
    observation.waits = list(ctx.waits.asked)
    observation.fault_hits = fault.hits
    first_state, first_result = states[0]
    if first_state == "hung":
        observation.outcome = "hung"
    elif queued[0]:
        observation.outcome = "sent"
    elif first_state == "raised":
        # A failed run raises DetectionFailedError; the channel's own error is its cause.
        failure = first_result.__cause__ if isinstance(first_result, DetectionFailedError) else first_result
        observation.outcome, observation.detail = "skipped", f"error:{type(failure).__name__}"
    else:
        observation.outcome, observation.detail = "skipped", "not_queued"
    observation.ledger = (
        "queued in run 2" if queued[1] else ("queued in run 1" if queued[0] else "never queued")
    )
    return observation


# ----- create_customer


_CREATE_ROUTES: dict[str, Callable[[Sandbox], str]] = {
    "entra-fno": lambda s: f"POST /entra/{s.tenant_id}/oauth2/v2.0/token",
    "fno": lambda s: "POST /fno" + fno.CREATE_CUSTOMER_PATH,
}


def customer_payload(email: str) -> dict[str, Any]:
    address = {
        "Street": "1 Microsoft Way",
        "Addresstype": "Billing",
        "PrimaryAddress": "Yes",
        "City": "Redmond",
        "CountryCode": "USA",
        "State": "WA",
    }
    return {
        "Customer": {
            "LegalEntity": "USRT",
            "FirstName": "Fault",
            "LastName": "Matrix",
            "CurrencyCode": "USD",
            "EmailAddress": email,
            "BillingAddress": [address],
        }
    }


def _request(body: Any, key: str) -> func.HttpRequest:
    return func.HttpRequest(
        "POST",
        "http://localhost/api/customers",
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
        body=json.dumps(body).encode(),
    )


async def drive_create(ctx: Context, cell: Cell) -> Observation:
    """The till's call with an ``Idempotency-Key``, then its retry with the same key once the fault
    cleared: the retry must replay a kept answer or create, never create a second customer."""
    sandbox, row = ctx.sandbox, cell.row.id
    settings = settings_for(ctx, row)
    ctx.install(key_vault=row.startswith("keyvault"), cold_tokens=row in ("entra-fno", "keyvault-fno"))
    email = f"fm-{uuid.uuid4().hex[:12]}@example.org"
    payload, key = customer_payload(email), f"fm-{uuid.uuid4().hex}"
    fault = None
    if row in _CREATE_ROUTES:
        fault = sandbox.faults.add(
            _CREATE_ROUTES[row](sandbox),
            **http_fault(cell.fault, times_of(cell)),
            **(oauth_refusal(cell.fault) if row == "entra-fno" else {}),
        )
    elif row.startswith("keyvault"):
        fault = install_key_vault_fault(ctx, cell)
    else:
        ctx.store_faults.fault, ctx.store_faults.times = cell.fault, times_of(cell)
    create = ctx.functions["create_customer"].get_user_function()
    observation = Observation(outcome="")
    async with ctx.runtime(settings):
        state, first = await guarded(create(_request(payload, key)), guard_for(row))
    sandbox.faults.clear()
    ctx.store_faults.fault = None
    # The fault is gone: the retry's deadlines need not be short, and a cold token path on a busy
    # machine must not pass for an upstream failure.
    async with ctx.runtime(settings.model_copy(update=HEALTHY)):
        _, again = await guarded(create(_request(payload, key)), HEALTHY_GUARD_SECONDS)
    observation.invocations = 2
    created = [c for c in fno.stand_in(sandbox).customers if c.email == email]
    observation.delivered = len(created)
    observation.waits = list(ctx.waits.asked)
    observation.fault_hits = (fault.hits if fault else 0) + ctx.store_faults.hits
    if state != "ok":
        observation.outcome = "hung" if state == "hung" else "raised"
        return observation
    status = first.status_code
    replayed = isinstance(again, func.HttpResponse) and again.headers.get("Idempotent-Replayed") == "true"
    observation.ledger = (
        f"retry: {again.status_code}{' (replayed)' if replayed else ''}"
        if isinstance(again, func.HttpResponse)
        else "retry: none"
    )
    if status == 201:
        observation.outcome = "sent"
        return observation
    observation.outcome, observation.detail = "http", str(status)
    problem = json.loads(first.get_body())
    if first.mimetype != "application/problem+json" or problem.get("correlationId") != first.headers.get(
        "x-correlation-id"
    ):
        observation.notes.append("not problem+json with the correlation id")
    observation.notes.append(f"type {str(problem.get('type', '')).rsplit(':', 1)[-1]}")
    return observation
