"""The app's user-assigned managed identity as the federated credential of its app registration.

With ``ENTRA_CREDENTIAL=federated`` the app holds no client secret. It asks the platform's
managed-identity endpoint (through azure-identity) for a token of its user-assigned identity for
the token-exchange audience (``api://AzureADTokenExchange`` in the global cloud), and MSAL presents
that token as the ``client_assertion`` of the client-credentials request. Entra ID issues the app
registration's token when the registration has a federated identity credential whose issuer,
subject and audience equal the presented token's ``iss``, ``sub`` and ``aud``
(docs/reference/federated-credential.md has the facts and their sources).

The identity's token is fetched on the event loop (azure-identity's aio client over the process's
aiohttp session), kept until shortly before it expires and shared by every app registration the
process signs in as (Retail Server's and F&O's). MSAL, which runs on a worker thread, only reads
the token already fetched: nothing blocks the loop, and the endpoint is asked about once a day.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.concurrency import SingleFlight
from shared.identity import (
    TokenError,
    TokenTimeoutError,
    TokenUnavailableError,
    observed_token_request,
    scope_for,
    unverified_claims,
)

if TYPE_CHECKING:
    # azure-identity (with azure-core and MSAL's cache) loads when the first token is fetched.
    import aiohttp
    from azure.core.credentials_async import AsyncTokenCredential

logger = logging.getLogger(__name__)

# The audience a managed identity's token must carry to be exchanged, per Entra ID cloud (Learn,
# "Configure an application to trust a managed identity"); the authority host names the cloud.
GLOBAL_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
_EXCHANGE_AUDIENCES = {
    "login.microsoftonline.us": "api://AzureADTokenExchangeUSGov",
    "login.chinacloudapi.cn": "api://AzureADTokenExchangeChina",
    "login.partner.microsoftonline.cn": "api://AzureADTokenExchangeChina",
}

# AADSTS codes of an assertion no federated identity credential matches: 70021 (none at all),
# 700211 (issuer), 700212 (audience), 700213 (subject).
_NO_MATCHING_CREDENTIAL = frozenset({70021, 700211, 700212, 700213})
_OUTSIDE_TIME_RANGE = 700024
_APP_NOT_FOUND = 700016
# A signature Entra ID could not validate, or an assertion that is no JWT at all.
_BAD_ASSERTION = frozenset({700027, 50027})

# The service dimension of the identity's token requests (``connector.tokens.acquired``).
_SERVICE = "managed_identity"


def token_exchange_audience(authority_host: str) -> str:
    """The token-exchange audience of the Entra ID cloud that ``authority_host`` belongs to."""
    host = authority_host.split("://", 1)[-1].split("/", 1)[0].lower()
    return _EXCHANGE_AUDIENCES.get(host, GLOBAL_EXCHANGE_AUDIENCE)


class FederatedCredentialError(TokenError):
    """The federated credential cannot work as configured (an operator's fix): the message says
    what to check, and never holds a token."""


class FederationError(FederatedCredentialError):
    """Entra ID refused the managed identity's assertion for an app registration. The message
    names the app registration and what its federated credential must hold."""

    def __init__(
        self,
        message: str,
        *,
        error: str | None = None,
        correlation_id: str | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message, error=error, correlation_id=correlation_id)
        self.code = code


@dataclass(frozen=True)
class Presented:
    """The claims of the identity's token that a federated identity credential must match."""

    issuer: str
    subject: str
    audience: str


@dataclass
class _Held:
    value: str
    expires_at: float


class ManagedIdentityAssertion:
    """The user-assigned identity's token for the token-exchange audience, as MSAL's assertion.

    One instance per process, shared by the token providers of every app registration.
    ``refresh()`` (on the loop) makes sure a token is held; ``current()`` (MSAL's callback, on a
    worker thread) hands it over."""

    def __init__(
        self,
        *,
        client_id: str,
        audience: str = GLOBAL_EXCHANGE_AUDIENCE,
        session: aiohttp.ClientSession | None = None,
        timeout_seconds: float = 30.0,
        connect_timeout_seconds: float = 10.0,
        max_attempts: int = 4,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        refresh_margin_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        self.client_id = client_id
        self.audience = audience
        self._session = session
        self._timeout = timeout_seconds
        self._connect_timeout = min(connect_timeout_seconds, timeout_seconds)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base_seconds
        self._backoff_max = backoff_max_seconds
        self._margin = refresh_margin_seconds
        self._clock = clock
        self._credential = credential
        self._owns_credential = credential is None
        self._held: _Held | None = None
        self._flight: SingleFlight[str, str] = SingleFlight()
        self.fetches = 0

    @property
    def scope(self) -> str:
        return scope_for(self.audience)

    async def refresh(self) -> str:
        """The held token, or a new one when none is held or it expires within the margin."""
        held = self._held
        if held is not None and held.expires_at - self._margin > self._clock():
            return held.value
        return await self._flight.run("assertion", self._fetch)

    def current(self) -> str:
        """MSAL's ``client_assertion`` callback: the token ``refresh()`` fetched last."""
        held = self._held
        if held is None:
            raise RuntimeError("no managed-identity token was fetched before MSAL asked for one")
        return held.value

    def presented(self) -> Presented | None:
        """Issuer, subject and audience of the held token (read, not verified: for messages)."""
        held = self._held
        return _claims_of(held.value) if held is not None else None

    def refusal(self, client_id: str, scope: str, result: Mapping[str, Any]) -> TokenError:
        """The error for Entra ID refusing a token to ``client_id`` for the presented assertion,
        saying what to check; Entra's text is quoted only up to its first line."""
        error = str(result.get("error", "unknown_error"))
        codes = result.get("error_codes")
        code = codes[0] if isinstance(codes, list) and codes and isinstance(codes[0], int) else None
        description = _first_line(str(result.get("error_description", "")))
        presented = self.presented()
        if code == _OUTSIDE_TIME_RANGE:
            # Fetch a new one next time rather than present the same again.
            self._held = None
        message = (
            f"Entra ID refused the managed identity's assertion for a token for {scope} to app "
            f"registration {client_id}: {error}: {description}"
        )
        check = self._what_to_check(code, error, client_id, presented)
        return FederationError(
            f"{message}. {check}" if check else message,
            error=error,
            correlation_id=_str_or_none(result.get("correlation_id")),
            code=code,
        )

    def _what_to_check(
        self, code: int | None, error: str, client_id: str, presented: Presented | None
    ) -> str:
        if code == _OUTSIDE_TIME_RANGE:
            return (
                f"The token of managed identity {self.client_id} was outside its valid time range "
                "when Entra ID checked it (expired, or the clocks disagree); the next try fetches a new one"
            )
        if code == _APP_NOT_FOUND:
            return (
                f"No app registration {client_id} exists in the tenant: check ENTRA_CLIENT_ID "
                "(or FNO_CLIENT_ID) and ENTRA_TENANT_ID"
            )
        if code in _BAD_ASSERTION:
            return (
                "Entra ID could not validate the assertion: it must be the token the managed-identity "
                f"endpoint issued to identity {self.client_id} (AZURE_CLIENT_ID) in this tenant"
            )
        if code in _NO_MATCHING_CREDENTIAL or error == "invalid_client":
            if presented is None:
                claims = f"audience '{self.audience}'"
            else:
                claims = (
                    f"issuer '{presented.issuer}', subject '{presented.subject}' (the principal id of "
                    f"managed identity {self.client_id}) and audience '{presented.audience}'"
                )
            return (
                f"Check the federated identity credentials of app registration {client_id} (Certificates "
                f"& secrets > Federated credentials): one must have {claims}, exactly as written "
                "(the match is case-sensitive); see docs/reference/federated-credential.md"
            )
        return ""

    async def _fetch(self) -> str:
        # The endpoint the platform exposes to the app (a local URL, no secret in it; the header
        # that authenticates the request is never recorded).
        endpoint = urlsplit(os.environ.get("IDENTITY_ENDPOINT", ""))
        # One client span per token request to the endpoint (azure-identity's retries included),
        # counted like Entra ID's: "ok" or the error, under service "managed_identity".
        return await observed_token_request(
            self._request,
            peer="Managed identity",
            route=endpoint.path or "/msi/token",
            method="GET",
            server=endpoint.hostname,
            service=_SERVICE,
            for_service="entra",
        )

    async def _request(self) -> str:
        credential = self._credential_or_new()
        self.fetches += 1
        try:
            # The pipeline's own timeouts bound each attempt; this bounds them all together.
            async with asyncio.timeout(self._timeout * self._max_attempts):
                token = await credential.get_token(self.scope)
        except TimeoutError:
            raise TokenTimeoutError(
                f"the managed-identity endpoint did not answer in time for a token of identity "
                f"{self.client_id} for {self.audience}",
                error="timeout",
            ) from None
        except Exception as exc:
            failure = self._failure(exc)
            if failure is None:
                raise
            raise failure from None
        self._held = _Held(token.token, float(token.expires_on))
        logger.info(
            "acquired the managed identity's token for %s (valid %ds)",
            self.audience,
            int(token.expires_on - self._clock()),
        )
        return token.token

    def _credential_or_new(self) -> AsyncTokenCredential:
        if self._credential is None:
            from azure.core.pipeline.transport import AioHttpTransport
            from azure.identity.aio import ManagedIdentityCredential

            retries = self._max_attempts - 1
            options: dict[str, Any] = {
                "retry_total": retries,
                "retry_connect": retries,
                "retry_read": retries,
                "retry_status": retries,
                "retry_backoff_factor": self._backoff_base,
                "retry_backoff_max": self._backoff_max,
            }
            if self._session is not None:
                # The process's session (its trust store includes EXTRA_CA_BUNDLE), not closed by
                # the credential.
                options["transport"] = AioHttpTransport(
                    session=self._session,
                    session_owner=False,
                    connection_timeout=self._connect_timeout,
                    read_timeout=self._timeout,
                )
            self._credential = ManagedIdentityCredential(client_id=self.client_id, **options)
        return self._credential

    def _failure(self, exc: Exception) -> TokenError | None:
        """The token error an azure-identity or azure-core exception stands for; None for others."""
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
        from azure.identity import CredentialUnavailableError

        status = getattr(exc, "status_code", None)
        if isinstance(exc, CredentialUnavailableError) and status is None:
            return FederatedCredentialError(
                f"no managed identity is available to this process ({type(exc).__name__}): "
                "ENTRA_CREDENTIAL=federated needs the platform's managed-identity endpoint "
                "(IDENTITY_ENDPOINT and IDENTITY_HEADER, which Azure Functions sets when an identity "
                "is assigned); use ENTRA_CREDENTIAL=secret for local runs",
                error="managed_identity_unavailable",
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return TokenUnavailableError(
                f"the managed-identity endpoint could not be reached for a token of identity "
                f"{self.client_id} ({type(exc).__name__})",
                error="managed_identity_unreachable",
            )
        if isinstance(exc, HttpResponseError):
            if status is None or status == 429 or status >= 500:
                return TokenUnavailableError(
                    f"the managed-identity endpoint failed a token of identity {self.client_id} "
                    f"({type(exc).__name__}{f', HTTP {status}' if status else ''})",
                    error="managed_identity_unavailable",
                )
            if status < 300:
                # A success that holds no token (not JSON, or no access_token): the platform's
                # endpoint misbehaving, not the configuration; transient like a 5xx.
                return TokenUnavailableError(
                    f"the managed-identity endpoint answered HTTP {status} without a readable token of "
                    f"identity {self.client_id} ({type(exc).__name__})",
                    error="managed_identity_unavailable",
                )
            check = (
                "check that AZURE_CLIENT_ID is the client id of a user-assigned identity assigned to "
                "this function app"
                if status in (400, 404)
                else "the platform sets IDENTITY_ENDPOINT and IDENTITY_HEADER: an app setting must not "
                "override them"
            )
            return FederatedCredentialError(
                f"the managed-identity endpoint refused a token of identity {self.client_id} for "
                f"{self.audience} (HTTP {status}): {check}",
                error="managed_identity_refused",
            )
        return None

    async def close(self) -> None:
        self._flight.cancel_all()
        if self._credential is not None and self._owns_credential:
            await self._credential.close()
        self._credential = None if self._owns_credential else self._credential


def _claims_of(token: str) -> Presented | None:
    payload = unverified_claims(token)
    if not payload:
        return None
    audience = payload.get("aud")
    if isinstance(audience, list):
        audience = " ".join(str(a) for a in audience)
    return Presented(str(payload.get("iss", "")), str(payload.get("sub", "")), str(audience or ""))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None
