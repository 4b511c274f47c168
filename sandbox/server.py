"""The sandbox: one HTTPS server on 127.0.0.1 that hosts every stand-in.

``Sandbox`` starts an aiohttp server with a throw-away CA (trustme) on an ephemeral loopback port,
serves the Entra ID stand-in under ``/entra`` and the Retail Server stand-in under ``/rs``, and
lets other stand-ins join through ``extensions``: callables ``add_routes(app, sandbox)`` that add
their routes to ``sandbox.app`` before it starts. Every route, including theirs, gets a
``request-id`` header, request counting in ``stats`` and fault injection from ``faults``.
"""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from sandbox.correlation import REQUEST_ID_KEY
from sandbox.data import SandboxData
from sandbox.entra import (
    App,
    EntraStandIn,
    TokenIssuer,
    TokenRejectedError,
    service_principal_id,
    unauthorized,
)
from sandbox.faults import FaultInjector
from sandbox.managed_identity import FederatedCredential, ManagedIdentityStandIn
from sandbox.retail_server import RetailServerStandIn, add_media_fault
from sandbox.tls import LoopbackTls

Extension = Callable[[web.Application, "Sandbox"], None]

TENANT_ID = "5f3a8c1e-2b7d-4e9a-8c61-0d4b7e2f9a13"
CLIENT_ID = "c0ffee00-5a4d-4b0c-9e11-d365c0ec7001"
CLIENT_SECRET = "sandbox-only~not-a-real-secret"
OPERATING_UNIT_NUMBERS = ("128", "067")


@dataclass
class Stats:
    """What reached the sandbox: token requests per client id, and requests per ``"METHOD /path"``."""

    token_requests: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.token_requests.clear()
        self.requests.clear()


class Sandbox:
    """Entra ID and Retail Server stand-ins over HTTPS on loopback; an async context manager."""

    def __init__(
        self,
        *,
        seed: int = 42,
        now: datetime | None = None,
        token_lifetime_seconds: int = 3600,
        retail_server_audience: str = "https://commerce.dynamics.com",
        max_page_size: int = 1000,
        extensions: Sequence[Extension] = (),
        port: int = 0,
        access_log: bool = False,
        media_fault: str | None = None,
    ) -> None:
        self.now = now if now is not None else datetime.now(UTC)
        self.tenant_id = TENANT_ID
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.retail_server_audience = retail_server_audience
        self.max_page_size = max_page_size
        self.data = SandboxData(seed=seed, now=self.now)
        self.faults = FaultInjector()
        if media_fault:
            # Products(id)/GetMediaLocations fails for every product (an optional look-up: emails
            # go out without images); see retail_server.add_media_fault for the kinds.
            add_media_fault(self.faults, media_fault)
        self.stats = Stats()
        self.tokens = TokenIssuer(self.tenant_id, lifetime_seconds=token_lifetime_seconds)
        self.apps: dict[str, App] = {}
        self.relying_parties: set[str] = set()
        # Federated identity credentials per app registration (client id).
        self.federated_credentials: dict[str, list[FederatedCredential]] = {}
        self.register_app(self.client_id, self.client_secret, relying_party=True)
        self.app = web.Application(middlewares=[self._observe, self.faults.middleware()])
        EntraStandIn(self).add_routes(self.app)
        # The function app's user-assigned identity; the connector's app registration trusts it,
        # as the deployment sets it up (ENTRA_CREDENTIAL=federated).
        self.managed_identity = ManagedIdentityStandIn(self)
        self.managed_identity.add_routes(self.app)
        self.federate(self.client_id)
        self._retail = RetailServerStandIn(self)
        self._retail.add_routes(self.app)
        self._extensions = list(extensions)
        self._port = port
        self._access_log = access_log
        self._base_url: str | None = None
        self._tls: LoopbackTls | None = None
        self._directory: Path | None = None
        self._runner: web.AppRunner | None = None

    # ----- configuration

    def register_app(self, client_id: str, secret: str, *, relying_party: bool) -> None:
        """An app registration that can get tokens; ``relying_party`` puts it on Retail Server's
        allow-list (Commerce shared parameters > Identity providers > Relying parties)."""
        object_id = service_principal_id(client_id)
        self.apps[client_id] = App(client_id=client_id, secret=secret, object_id=object_id)
        if relying_party:
            self.relying_parties.add(client_id)
        else:
            self.relying_parties.discard(client_id)

    def federate(
        self,
        client_id: str,
        *,
        subject: str | None = None,
        issuer: str | None = None,
        audiences: Sequence[str] | None = None,
        name: str = "function-app-identity",
    ) -> FederatedCredential:
        """Add a federated identity credential to an app registration. The defaults trust the
        sandbox's managed identity: subject its principal id, issuer the tenant's v2.0 issuer,
        audience api://AzureADTokenExchange."""
        credential = FederatedCredential(
            name=name,
            subject=self.managed_identity.principal_id if subject is None else subject,
            issuer=issuer,
            **({} if audiences is None else {"audiences": tuple(audiences)}),
        )
        self.federated_credentials.setdefault(client_id, []).append(credential)
        return credential

    def unfederate(self, client_id: str) -> None:
        """Remove every federated identity credential of an app registration."""
        self.federated_credentials.pop(client_id, None)

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the sandbox is not running; use 'async with Sandbox() as sandbox'")
        return self._base_url

    @property
    def ca_path(self) -> Path:
        if self._tls is None:
            raise RuntimeError("the sandbox is not running; use 'async with Sandbox() as sandbox'")
        return self._tls.ca_path

    @property
    def authority_host(self) -> str:
        return f"{self.base_url}/entra"

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def retail_server_url(self) -> str:
        return f"{self.base_url}/rs"

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts the sandbox CA only, for clients in tests and tools."""
        if self._tls is None:
            raise RuntimeError("the sandbox is not running")
        return self._tls.client_context()

    def env(self) -> dict[str, str]:
        """The app settings that point the connector at this sandbox."""
        return {
            "RETAIL_SERVER_URL": self.retail_server_url,
            "RETAIL_SERVER_AUDIENCE": self.retail_server_audience,
            "ENTRA_AUTHORITY_HOST": self.authority_host,
            "ENTRA_TENANT_ID": self.tenant_id,
            "ENTRA_CLIENT_ID": self.client_id,
            "ENTRA_CLIENT_SECRET": self.client_secret,
            "EXTRA_CA_BUNDLE": str(self.ca_path),
            "OPERATING_UNIT_NUMBERS": ",".join(OPERATING_UNIT_NUMBERS),
        }

    @property
    def v2_issuer(self) -> str:
        """The issuer of v2.0 tokens, as the tenant's v2 OpenID configuration names it."""
        return f"{self.authority}/v2.0"

    def caller_token(
        self, *, audience: str, roles: list[str] | None, version: str = "1.0", **options: Any
    ) -> str:
        """An app-role token for the connector's own API (``TokenIssuer.issue_caller_token``)."""
        if version != "1.0":
            options.setdefault("issuer", self.v2_issuer)
        return self.tokens.issue_caller_token(audience=audience, roles=roles, version=version, **options)

    # ----- tokens for any stand-in

    def verify_token(self, request: web.Request, *, audience: str, scheme: str) -> dict[str, Any]:
        """The claims of the request's ``Authorization: <scheme> <jwt>``; raises ``HTTPUnauthorized``
        when the header, scheme, signature, lifetime, issuer, tenant or audience is wrong."""
        try:
            return self.authenticate(request, audience=audience, scheme=scheme)
        except TokenRejectedError as exc:
            raise unauthorized(str(exc)) from None

    def authenticate(self, request: web.Request, *, audience: str, scheme: str) -> dict[str, Any]:
        """Like ``verify_token`` but raises ``TokenRejectedError`` so a stand-in can shape its own 401."""
        header = request.headers.get("Authorization", "").strip()
        if not header:
            raise TokenRejectedError("the request has no Authorization header")
        presented, _, token = header.partition(" ")
        if presented.lower() != scheme.lower():
            raise TokenRejectedError(f"the Authorization scheme must be '{scheme}', not '{presented}'")
        if not token.strip():
            raise TokenRejectedError("the Authorization header carries no token")
        return self.tokens.verify(token.strip(), audience=audience)

    # ----- lifecycle

    async def __aenter__(self) -> Sandbox:
        if self._runner is not None:
            raise RuntimeError("this sandbox is running already")
        self._directory = Path(tempfile.mkdtemp(prefix="d365-sandbox-"))
        self._tls = LoopbackTls(self._directory)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", self._port))
        except OSError:
            listener.close()
            self._cleanup_directory()
            raise
        self._base_url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        # Extensions run once the address is known, so they may build absolute URLs.
        for extension in self._extensions:
            extension(self.app, self)
        self._retail.add_fallback(self.app)
        runner = web.AppRunner(
            self.app,
            access_log=logging.getLogger("aiohttp.access") if self._access_log else None,
            # A held or reset request must not keep shutdown waiting.
            handler_cancellation=True,
            shutdown_timeout=0.5,
        )
        await runner.setup()
        self._runner = runner
        site = web.SockSite(runner, listener, ssl_context=self._tls.server_context())
        await site.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._cleanup_directory()

    def _cleanup_directory(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    # ----- shared middleware

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        request[REQUEST_ID_KEY] = request_id
        self.stats.requests[f"{request.method} {request.path}"] += 1
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers["request-id"] = request_id
            raise
        response.headers["request-id"] = request_id
        return response
