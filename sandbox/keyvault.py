"""Key Vault stand-in: the secrets REST API as ``azure-keyvault-secrets`` calls it, and a credential.

It serves ``GET /secrets/{name}[/]`` and ``GET /secrets/{name}/{version}`` at the sandbox's root
(the client parses a secret's ``id`` as ``{vault}/secrets/{name}/{version}``, so a vault cannot
live under a path prefix), each with a required ``api-version`` query parameter.

Authentication is Key Vault's challenge flow. A request without ``Authorization`` gets 401 with
``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
resource="https://vault.azure.net"``;
the client then asks its credential for a token for ``https://vault.azure.net/.default`` in that
tenant and repeats the request with ``Authorization: Bearer <jwt>``. The token must come from the
sandbox's issuer with audience ``https://vault.azure.net`` (no trailing slash), or the answer is
401 with the challenge again; a caller whose app id holds no read role on secrets gets 403. A
known secret answers 200 with ``value``, ``id`` and ``attributes``; another one 404
``SecretNotFound``. Error bodies are ``{"error": {"code", "message"}}``.

Sources: learn.microsoft.com/azure/key-vault/general/rest-error-codes (the 401 and 403 cases and
the resource ``https://vault.azure.net``); azure-keyvault-secrets 4.12's
``_shared/async_challenge_auth_policy.py`` and ``_shared/http_challenge.py`` (the challenge's
``authorization`` and ``resource`` parameters, the tenant taken from the authorization path) and
``_shared/__init__.py`` ``parse_key_vault_id`` (the id's shape).

The app's vault URL for it is the sandbox's base URL. The SDK checks that a challenge's resource
is the vault's own domain, which a loopback address cannot be, so the app's client is built with
that check off for the sandbox (``Runtime.create(..., verify_key_vault_challenge=False)``).
Hangs, latency and error statuses come from the sandbox's fault middleware (route ``/secrets``).

Enable it with ``Sandbox(extensions=[sandbox.keyvault.add_routes])``, find it with
``stand_in(sandbox)``, and sign in with ``SandboxCredential(sandbox)``.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiohttp import web
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from sandbox.entra import TokenRejectedError

if TYPE_CHECKING:
    from sandbox.server import Sandbox

RESOURCE = "https://vault.azure.net"
# The challenge names the tenant's authority on Entra's public host, as Azure's vaults do; the SDK
# takes the tenant from its path, and the credential never calls it.
AUTHORITY_HOST = "https://login.microsoftonline.com"
STAND_IN_KEY: web.AppKey[KeyVaultStandIn] = web.AppKey("keyvault_stand_in")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


@dataclass
class KeyVaultStandIn:
    sandbox: Sandbox
    secrets: dict[str, str] = field(default_factory=dict)
    # App ids with a read role on secrets (Key Vault Secrets User).
    readers: set[str] = field(default_factory=set)
    # Secret values served, by name; challenges answered.
    reads: Counter[str] = field(default_factory=Counter)
    challenges: int = 0

    @property
    def vault_url(self) -> str:
        return self.sandbox.base_url

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/secrets/{name}", self.get_secret)
        # The SDK asks for the latest version as "/secrets/{name}/" (an empty version).
        app.router.add_get("/secrets/{name}/", self.get_secret)
        app.router.add_get("/secrets/{name}/{version}", self.get_secret)

    def _challenge(self) -> dict[str, str]:
        self.challenges += 1
        authority = f"{AUTHORITY_HOST}/{self.sandbox.tenant_id}"
        return {"WWW-Authenticate": f'Bearer authorization="{authority}", resource="{RESOURCE}"'}

    async def get_secret(self, request: web.Request) -> web.Response:
        if not request.query.get("api-version"):
            return _error(400, "BadParameter", "The request URI contains an invalid or missing api-version.")
        if not request.headers.get("Authorization"):
            return _error(401, "Unauthorized", "Request is missing a Bearer or PoP token.", self._challenge())
        try:
            claims = self.sandbox.authenticate(request, audience=RESOURCE, scheme="Bearer")
        except TokenRejectedError as exc:
            return _error(401, "Unauthorized", f"The token is not valid: {exc}", self._challenge())
        if claims.get("appid") not in self.readers:
            return _error(403, "Forbidden", "Caller is not authorized to perform action on resource.")
        name = request.match_info["name"]
        if name not in self.secrets:
            return _error(
                404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault."
            )
        self.reads[name] += 1
        version = request.match_info.get("version") or uuid.uuid5(uuid.NAMESPACE_URL, name).hex
        updated = int(time.time())
        return web.json_response(
            {
                "value": self.secrets[name],
                "id": f"{self.vault_url}/secrets/{name}/{version}",
                "attributes": {
                    "enabled": True,
                    "created": updated,
                    "updated": updated,
                    "recoveryLevel": "Recoverable+Purgeable",
                },
                "tags": {},
            }
        )


class SandboxCredential:
    """The app's managed identity in the sandbox: tokens from the sandbox's issuer for any resource.

    It implements ``azure.core.credentials_async.AsyncTokenCredential`` the way
    ``DefaultAzureCredential`` does for the app in Azure (there, from the instance's identity
    endpoint), without any HTTP of its own.
    """

    def __init__(self, sandbox: Sandbox, client_id: str | None = None) -> None:
        self._sandbox = sandbox
        self._client_id = client_id or sandbox.client_id
        self.requests: Counter[str] = Counter()

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise ClientAuthenticationError(f"one '<resource>/.default' scope is needed, not {scopes}")
        if tenant_id is not None and tenant_id != self._sandbox.tenant_id:
            raise ClientAuthenticationError(f"the identity is not in tenant {tenant_id}")
        audience = scopes[0].removesuffix("/.default")
        self.requests[audience] += 1
        tokens = self._sandbox.tokens
        token = tokens.issue(self._sandbox.apps[self._client_id], audience)
        return AccessToken(token, int(time.time()) + tokens.lifetime_seconds)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> SandboxCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        return None


def add_routes(app: web.Application, sandbox: Sandbox) -> None:
    """The sandbox extension: a vault at the sandbox's root that the sandbox's own app may read."""
    vault = KeyVaultStandIn(sandbox, readers={sandbox.client_id})
    vault.add_routes(app)
    app[STAND_IN_KEY] = vault


def stand_in(sandbox: Sandbox) -> KeyVaultStandIn:
    """The Key Vault stand-in of a sandbox started with ``extensions=[add_routes]``."""
    vault = sandbox.app.get(STAND_IN_KEY)
    if not isinstance(vault, KeyVaultStandIn):
        raise RuntimeError("this sandbox has no Key Vault; pass extensions=[sandbox.keyvault.add_routes]")
    return vault
