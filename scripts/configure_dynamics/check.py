"""``check``: does Retail Server accept the connector's app? One real token, one call per channel.

The function app signs in with its managed identity as a federated credential, which only exists
inside Azure, so on an operator's machine the token is requested for the same app registration
with a client secret: by default a temporary one the check adds through Graph (valid one hour) and
removes again whatever happens, or ``ENTRA_CLIENT_SECRET`` from the environment with
``--credential secret``. Retail Server sees the same token either way (the app's client id as
``appid``, the server resource id as ``aud``), which is what Commerce's relying-party check is
about. The federated credential itself is checked by reading it back from Graph.

Then ``POST {RETAIL_SERVER_URL}/Commerce/OrgUnits/GetOrgUnitConfiguration?api-version=...`` with
``Authorization: id_token <token>`` and the ``OUN`` header, once per operating unit number. Each
failure is explained: the token request's AADSTS code, and for Retail Server's 401 the usual
causes, distribution job 1110 not run since the relying party was saved, or a server resource id
that is not the token's audience.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp

from scripts.configure_dynamics.deployment import Deployment, DeploymentError
from scripts.configure_dynamics.graph import Application, GraphClient, GraphError
from shared.identity import scope_for

TIMEOUT_SECONDS = 30.0
MAX_BODY_BYTES = 1024 * 1024
# The display name of the check's short-lived app password, never its value.
TEMPORARY_SECRET_NAME = "configure-dynamics check (removed after the check)"  # noqa: S105
TEMPORARY_SECRET_LIFETIME = timedelta(hours=1)
# A new secret takes a while to reach every Entra ID replica; until then it is "invalid".
PROPAGATION_CODES = {7000215, 700016, 7000229}

AADSTS_HELP = {
    500011: "the resource {audience} is not in tenant {tenant}: RETAIL_SERVER_AUDIENCE is not a server "
    "resource id Entra ID knows (a typo, or an api://... app registration of another tenant). Use the value "
    "you entered under Server resource IDs in headquarters.",
    700016: "app {client_id} is not in tenant {tenant}: ENTRA_TENANT_ID or ENTRA_CLIENT_ID is wrong.",
    7000229: "app {client_id} has no service principal in tenant {tenant}: run `configure` again.",
    7000215: "Entra ID refused the client secret (for a secret just created: it had not reached every "
    "replica yet; run the check again in a minute).",
    90002: "tenant {tenant} does not exist in this cloud: check ENTRA_TENANT_ID and ENTRA_AUTHORITY_HOST.",
    70021: "no federated credential of app {client_id} matches the managed identity's token: run "
    "`configure` again (issuer, subject = the identity's principal id, audience).",
    1002012: "the scope must be <server resource id>/.default: check RETAIL_SERVER_AUDIENCE.",
}

RETAIL_SERVER_401_HELP = (
    "Retail Server refused the app's token. The usual causes, most common first: distribution job 1110 "
    "has not run since the relying party was saved in headquarters; the client id {client_id} is not a "
    "relying party (Type Confidential, User type Application) of the tenant's identity provider ({issuer}); "
    "the relying party's Server resource IDs do not hold {audience}, the token's audience."
)


class CheckFailedError(Exception):
    """The check could not get as far as Retail Server; the message explains why."""


@dataclass(frozen=True)
class ChannelResult:
    oun: str
    ok: bool
    detail: str
    status: int | None = None


class TokenRefusedError(CheckFailedError):
    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


async def request_token(
    session: aiohttp.ClientSession, deployment: Deployment, *, client_id: str, secret: str
) -> str:
    """A client-credentials token for Retail Server from Entra ID's v2.0 token endpoint."""
    url = f"{deployment.authority_host}/{deployment.tenant}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
        "scope": scope_for(deployment.retail_server_audience),
    }
    try:
        async with session.post(url, data=form) as response:
            raw = await response.content.read(MAX_BODY_BYTES)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CheckFailedError(
            f"Entra ID could not be reached at {deployment.authority_host} ({type(exc).__name__}): "
            "check ENTRA_AUTHORITY_HOST and the network"
        ) from None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise CheckFailedError(f"Entra ID answered {response.status} without a JSON body")
    token = body.get("access_token")
    if isinstance(token, str) and token:
        return token
    codes = body.get("error_codes")
    code = int(codes[0]) if isinstance(codes, list) and codes and isinstance(codes[0], int) else None
    help_text = AADSTS_HELP.get(code or 0, "see the error description")
    first_line = (
        str(body.get("error_description", "")).splitlines()[0][:300] if body.get("error_description") else ""
    )
    raise TokenRefusedError(
        f"Entra ID refused a token for {deployment.retail_server_audience} to app {client_id}: "
        f"{body.get('error', 'unknown_error')} (AADSTS{code}): "
        + help_text.format(
            audience=deployment.retail_server_audience, tenant=deployment.tenant, client_id=client_id
        )
        + (f"\n    Entra ID said: {first_line}" if first_line else ""),
        code,
    )


async def call_channel(
    session: aiohttp.ClientSession, deployment: Deployment, *, token: str, oun: str
) -> ChannelResult:
    base = deployment.require(
        deployment.retail_server_url, "RETAIL_SERVER_URL", "set it with azd or pass --retail-server-url"
    )
    url = f"{base}/Commerce/OrgUnits/GetOrgUnitConfiguration"
    headers = {"Authorization": f"id_token {token}", "OUN": oun, "Accept": "application/json"}
    try:
        async with session.post(
            url, params={"api-version": deployment.retail_server_api_version}, json={}, headers=headers
        ) as response:
            status = response.status
            raw = await response.content.read(MAX_BODY_BYTES)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return ChannelResult(
            oun, False, f"Retail Server could not be reached at {base} ({type(exc).__name__})"
        )
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    if status == 200:
        currency = body.get("Currency") or "?"
        return ChannelResult(oun, True, f"channel {body.get('RecordId', '?')}, currency {currency}", status)
    said = str(body.get("LocalizedMessage") or body.get("ErrorResourceId") or "").strip()[:300]
    said_text = f" Retail Server said: {said}" if said else ""
    if status == 401:
        # The causes are the same for every channel: the caller prints them once.
        return ChannelResult(oun, False, f"401: the app's token was refused.{said_text}", status)
    if status == 404:
        return ChannelResult(
            oun,
            False,
            f"404: no channel has the operating unit number {oun} (OPERATING_UNIT_NUMBERS).{said_text}",
        )
    if status == 400:
        return ChannelResult(
            oun,
            False,
            f"400: check RETAIL_SERVER_API_VERSION ({deployment.retail_server_api_version}).{said_text}",
        )
    return ChannelResult(oun, False, f"{status}: Retail Server did not answer the call.{said_text}")


@dataclass
class TemporarySecret:
    """An app password added for the check and removed afterwards, whatever happens in between."""

    graph: GraphClient
    application: Application
    key_id: str | None = None

    async def add(self) -> str:
        end = (datetime.now(UTC) + TEMPORARY_SECRET_LIFETIME).strftime("%Y-%m-%dT%H:%M:%SZ")
        password = await self.graph.add_password(
            self.application, display_name=TEMPORARY_SECRET_NAME, end=end
        )
        self.key_id = password.key_id
        return password.secret_text

    async def remove(self) -> None:
        if self.key_id is None:
            return
        key_id, self.key_id = self.key_id, None
        try:
            await self.graph.remove_password(self.application, key_id)
        except GraphError as exc:
            raise CheckFailedError(
                f"the check's temporary secret (key id {key_id}) could not be removed: delete it under "
                f"the app "
                f"registration's Certificates & secrets; it expires within the hour anyway ({exc})"
            ) from None


async def token_with_patience(
    fetch: Callable[[], Awaitable[str]],
    *,
    patience_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> str:
    """``fetch()``, again every few seconds while Entra ID has not yet taken in a new secret."""
    deadline = clock() + patience_seconds
    delay = 2.0
    while True:
        try:
            return await fetch()
        except TokenRefusedError as exc:
            if exc.code not in PROPAGATION_CODES or clock() + delay > deadline:
                raise
        await sleep(delay)
        delay = min(delay * 2, 15.0)


def secret_from_environment() -> str:
    secret = os.environ.get("ENTRA_CLIENT_SECRET", "")
    if not secret:
        raise DeploymentError(
            "--credential secret reads the client secret from ENTRA_CLIENT_SECRET, which is not set"
        )
    return secret


def new_session(ssl_context: ssl.SSLContext | None) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
        connector=aiohttp.TCPConnector(ssl=ssl_context or True),
    )
