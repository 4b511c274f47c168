"""The function app's managed identity, as the platform exposes it, and federated credentials.

Azure Functions (App Service) gives an app with a managed identity two environment variables:
``IDENTITY_ENDPOINT``, a local URL, and ``IDENTITY_HEADER``, a value every request must carry in
``X-IDENTITY-HEADER``. ``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<uri>&client_id=<id>``
answers ``{access_token, expires_on, resource, token_type, client_id}`` (``expires_on`` in epoch
seconds, as text). This stand-in serves that protocol at ``/msi/token`` for one user-assigned
identity and signs its tokens with a key of its own: the Entra ID stand-in verifies a client
assertion against it, and checks the assertion's issuer, subject and audience against the app
registration's federated identity credentials (``Sandbox.federate``).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

if TYPE_CHECKING:
    from sandbox.server import Sandbox

MANAGED_IDENTITY_CLIENT_ID = "3f1d2c4b-7a8e-4c9d-9b1a-51d365c0ffee"
MANAGED_IDENTITY_PRINCIPAL_ID = "8e4b1f2a-6c3d-4e5f-a7b8-0d365c0ec0de"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
API_VERSION = "2019-08-01"
ROUTE = "/msi/token"
# Managed-identity tokens are long-lived (the platform caches them for hours); a day here.
DEFAULT_LIFETIME_SECONDS = 24 * 3600


@lru_cache(maxsize=1)
def _identity_key() -> rsa.RSAPrivateKey:
    # Not the tenant's token-signing key: an assertion is checked against this issuer's key only.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential of an app registration (Microsoft Graph's
    ``federatedIdentityCredential``). ``issuer`` None stands for the sandbox tenant's own
    ``{authority}/v2.0``, which only the running sandbox knows."""

    name: str
    subject: str
    issuer: str | None = None
    audiences: tuple[str, ...] = (TOKEN_EXCHANGE_AUDIENCE,)


@dataclass
class ManagedIdentityStandIn:
    """One user-assigned identity assigned to the function app, and its token endpoint."""

    sandbox: Sandbox
    client_id: str = MANAGED_IDENTITY_CLIENT_ID
    principal_id: str = MANAGED_IDENTITY_PRINCIPAL_ID
    # The platform rotates it; a sandbox draws one per start.
    header: str = field(default_factory=lambda: uuid.uuid4().hex)
    lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS
    key_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Tokens issued, per resource.
    issued: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._key = _identity_key()

    @property
    def endpoint(self) -> str:
        return f"{self.sandbox.base_url}{ROUTE}"

    @property
    def issuer(self) -> str:
        # Entra ID issues managed-identity tokens for the exchange audience from its v2.0 issuer.
        return self.sandbox.v2_issuer

    def env(self) -> dict[str, str]:
        """What the platform sets for the app (IDENTITY_*), and the identity's client id, which
        the Bicep sets as AZURE_CLIENT_ID."""
        return {
            "IDENTITY_ENDPOINT": self.endpoint,
            "IDENTITY_HEADER": self.header,
            "AZURE_CLIENT_ID": self.client_id,
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(ROUTE, self.token)

    # ----- the endpoint

    async def token(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != self.header:
            return _error(401, "the X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER")
        query = request.query
        if query.get("api-version") != API_VERSION:
            return _error(400, f"api-version must be {API_VERSION}")
        resource = query.get("resource", "")
        if not resource:
            return _error(400, "the 'resource' query parameter is required")
        chosen = [name for name in ("client_id", "principal_id", "object_id", "mi_res_id") if name in query]
        if len(chosen) > 1:
            return _error(400, f"only one of client_id, principal_id, object_id or mi_res_id: {chosen}")
        if not chosen:
            # The function app has no system-assigned identity, only the user-assigned one.
            return _error(400, "no system-assigned identity: name the user-assigned identity (client_id)")
        wanted = query[chosen[0]]
        known = self.client_id if chosen[0] == "client_id" else self.principal_id
        if chosen[0] == "mi_res_id" or wanted.lower() != known.lower():
            return _error(400, f"no user-assigned identity with {chosen[0]} {wanted} is assigned to this app")
        now = int(time.time())
        self.issued[resource] += 1
        return web.json_response(
            {
                "access_token": self.issue(resource, now=now),
                "expires_on": str(now + self.lifetime_seconds),
                "not_before": str(now),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": self.client_id,
            }
        )

    # ----- tokens

    def issue(self, audience: str, *, now: int | None = None, lifetime_seconds: int | None = None) -> str:
        """A token of the identity for ``audience``, shaped like Entra's v2.0 app-only tokens."""
        issued = int(time.time()) if now is None else now
        lifetime = self.lifetime_seconds if lifetime_seconds is None else lifetime_seconds
        claims = {
            "aud": audience,
            "iss": self.issuer,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "azp": self.client_id,
            "azpacr": "2",
            "idtyp": "app",
            "oid": self.principal_id,
            "sub": self.principal_id,
            "tid": self.sandbox.tenant_id,
            "uti": uuid.uuid4().hex,
            "ver": "2.0",
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id, "typ": "JWT"})

    def verify_signature(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this identity's key signed (lifetime and audience unchecked:
        the Entra stand-in reports those itself); None for any other token."""
        try:
            if jwt.get_unverified_header(token).get("kid") != self.key_id:
                return None
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_aud": False, "verify_iat": False},
            )
        except jwt.InvalidTokenError:
            return None
        return claims


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"statusCode": status, "message": message}, status=status)
