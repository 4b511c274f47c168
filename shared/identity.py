"""Entra ID client-credential tokens through MSAL, cached and shared, never blocking the event loop.

MSAL Python is synchronous (it uses ``requests``), so every call into it runs on a worker thread.
Tokens are kept in memory until shortly before they expire, so MSAL runs about once an hour per
scope; concurrent callers that need a new token wait for one shared request instead of each
asking Entra ID. That request runs in its own task, so cancelling one caller does not cancel it
for the others.

The app proves itself with a client secret (``ENTRA_CREDENTIAL=secret``) or, with no secret at
all, with its managed identity's token as a client assertion (``federated``,
``shared/managed_identity.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import certifi

from shared import telemetry
from shared.concurrency import SingleFlight
from shared.secrets import CachedSecrets

if TYPE_CHECKING:
    # MSAL and requests take about 60 ms to import: they load with the first token, on the
    # worker thread that builds the MSAL application, not when the app starts.
    import msal
    import requests

    from shared.identity_session import PinnedVerifySession

logger = logging.getLogger(__name__)

_PUBLIC_CLOUD_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


# OAuth 2.0's error codes for a token request the server refused (RFC 6749, section 5.2), and the
# one Entra ID adds for an unknown resource: the app, its secret, the tenant or the scope is wrong,
# which an operator fixes and a retry does not. Any other answer without a token (a 429 or 5xx,
# ``temporarily_unavailable``, ``server_error``) is Entra ID failing, which a retry may get past.
_REFUSALS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "invalid_resource",
    }
)


class TokenError(Exception):
    """Entra ID refused to issue a token (the app, its secret, the tenant or the scope is wrong):
    an operator's fix. Carries Entra's error code, never the secret. ``reason`` is the short,
    stable form for operators (the ledger's reason)."""

    reason = "entra_refused"

    def __init__(self, message: str, *, error: str | None = None, correlation_id: str | None = None) -> None:
        self.error = error
        self.correlation_id = correlation_id
        super().__init__(message)


class TokenUnreachableError(TokenError):
    """No connection to Entra ID could be made (DNS, refused, TLS). Its endpoints are always up,
    so the authority host or the network is wrong: an operator's fix too."""

    reason = "entra_unreachable"


class TokenUnavailableError(TokenError):
    """Entra ID failed to issue a token: throttled (429), a 5xx, a connection broken after the
    request was sent, an answer that is not JSON. Transient: a later try may succeed."""

    reason = "entra_unavailable"


class TokenTimeoutError(TokenUnavailableError):
    """Entra ID did not answer a token (or discovery) request within the provider's timeout."""


class ClientAssertion(Protocol):
    """A signed assertion MSAL presents instead of a client secret (the managed identity's token
    in ``shared/managed_identity.py``)."""

    async def refresh(self) -> str:
        """Make sure a valid assertion is held (on the event loop); returns it."""
        ...

    def current(self) -> str:
        """The assertion held: MSAL's callback, called on its worker thread."""
        ...

    def refusal(self, client_id: str, scope: str, result: Mapping[str, Any]) -> TokenError:
        """The error for Entra ID refusing a token to ``client_id`` for this assertion."""
        ...


def scope_for(audience: str) -> str:
    """``<audience>/.default``: Entra's scope for an app-only token to a resource."""
    return audience.rstrip("/") + "/.default"


def unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's payload read without verifying it, empty when it is no JWT: for what an operator is
    told (which issuer, subject, audience was presented), never for a decision to trust it."""
    import jwt

    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}


# The application's credential marker when it presents an assertion (a secret is its own marker).
_ASSERTION = "\x00assertion"


@dataclass
class _CachedToken:
    value: str
    expires_at: float


async def observed_token_request(
    request: Callable[[], Awaitable[str]],
    *,
    peer: str,
    route: str,
    method: str,
    server: str | None,
    service: str,
    for_service: str,
) -> str:
    """``request()`` as one client span, counted by its result ("ok" or the error code) and
    logged when it fails; neither the credential nor the token is ever recorded."""
    with telemetry.upstream_call(
        peer, route, method=method, server=server, attributes={"connector.token_for": for_service}
    ) as call:
        try:
            token = await request()
        except TokenError as exc:
            error = exc.error or exc.reason
            call.failed(error)
            telemetry.TOKENS_ACQUIRED.add(1, {"service": service, "result": error})
            logger.warning(
                "token request failed",
                extra={"event": "token_failure", "service": service, "error": error, "reason": exc.reason},
            )
            raise
        telemetry.TOKENS_ACQUIRED.add(1, {"service": service, "result": "ok"})
        return token


class TokenProvider:
    """Client-credential tokens for one (authority, client id); one instance per process.

    The app proves itself with the client secret ``secret_name`` read from ``secrets``, or, given
    an ``assertion``, with that assertion and no secret at all."""

    def __init__(
        self,
        *,
        authority: str,
        client_id: str,
        secret_name: str | None = None,
        secrets: CachedSecrets | None = None,
        assertion: ClientAssertion | None = None,
        extra_ca_bundle: Path | None = None,
        refresh_margin_seconds: float = 300.0,
        timeout_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authority = authority.rstrip("/")
        # The authority's host: the token span's server, and whether MSAL may use instance discovery.
        self._host = self.authority.split("/")[2].lower() if self.authority.count("/") >= 2 else None
        self.client_id = client_id
        if (assertion is None) == (secret_name is None or secrets is None):
            raise ValueError("a token provider needs either a secret name and source, or an assertion")
        self._secret_name = secret_name
        self._secrets = secrets
        self._assertion = assertion
        self._extra_ca_bundle = extra_ca_bundle
        self._margin = refresh_margin_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._tokens: dict[str, _CachedToken] = {}
        self._requests: SingleFlight[str, str] = SingleFlight()
        self._app: msal.ConfidentialClientApplication | None = None
        # What the application was built with: the secret itself, or the assertion's marker.
        self._app_credential: str | None = None
        self._http: PinnedVerifySession | None = None
        # Our temporary CA file: removed by close(), or when the provider is collected or the
        # process exits without close() (a provider nobody closes must not leave it behind).
        self._bundle: weakref.finalize[[Path], TokenProvider] | None = None
        self._app_lock = asyncio.Lock()
        self.requests_made = 0

    async def get_token(self, scope: str) -> str:
        cached = self._tokens.get(scope)
        if cached is not None and cached.expires_at - self._margin > self._clock():
            return cached.value
        # One request per scope, shared; cancelling a caller (an invocation timing out, say)
        # cancels only its wait. The request is bounded by the session's timeout.
        return await self._requests.run(scope, lambda: self._acquire(scope))

    def invalidate(self, scope: str) -> None:
        """Drop a cached token, e.g. after the upstream answered 401 to it."""
        self._tokens.pop(scope, None)
        if self._app is not None:
            # MSAL keeps its own cache and would hand the refused token back; this is in-memory only.
            self._app.remove_tokens_for_client()

    async def _acquire(self, scope: str) -> str:
        credential: str | dict[str, Any]
        if self._assertion is not None:
            # Fetched here, on the loop (its own client span when it asks the managed-identity
            # endpoint); MSAL's callback only hands over what is held.
            await self._assertion.refresh()
            credential, marker = {"client_assertion": self._assertion.current}, _ASSERTION
        else:
            assert self._secrets is not None and self._secret_name is not None  # checked in __init__
            credential = marker = await self._secrets.get(self._secret_name)
        service = telemetry.service_of_scope(scope)
        # One client span per token request (MSAL's discovery included), and the request counted
        # by its result: "ok" or Entra's error code, never the secret or the assertion.
        return await observed_token_request(
            lambda: self._request(scope, credential, marker),
            peer="Entra ID",
            route="/{tenant}/oauth2/v2.0/token",
            method="POST",
            server=self._host,
            service=service,
            for_service=service,
        )

    async def _request(self, scope: str, credential: str | dict[str, Any], marker: str) -> str:
        try:
            # Building the application runs MSAL's authority discovery over HTTP: off the loop too.
            async with self._app_lock:
                app = await asyncio.to_thread(self._application, credential, marker)
            self.requests_made += 1
            result: Mapping[str, Any] = await asyncio.to_thread(app.acquire_token_for_client, scopes=[scope])
        except Exception as exc:
            failure = self._failure(exc, scope)
            if failure is None:
                raise
            raise failure from exc
        if "access_token" not in result:
            error = str(result.get("error", "unknown_error"))
            refused = error in _REFUSALS
            if refused and self._assertion is not None:
                raise self._assertion.refusal(self.client_id, scope, result)
            if error in {"invalid_client", "unauthorized_client"} and self._secrets is not None:
                assert self._secret_name is not None
                # The secret may have been rotated in Key Vault: read it again next time.
                self._secrets.invalidate(self._secret_name)
            kind = TokenError if refused else TokenUnavailableError
            raise kind(
                f"Entra ID {'refused' if refused else 'failed'} a token for {scope} to client "
                f"{self.client_id}: {error}: {_first_line(str(result.get('error_description', '')))}",
                error=error,
                correlation_id=_str_or_none(result.get("correlation_id")),
            )
        expires_in = float(result.get("expires_in", 3600))
        token = str(result["access_token"])
        self._tokens[scope] = _CachedToken(token, self._clock() + expires_in)
        logger.info("acquired an app token for %s (valid %ds)", scope, int(expires_in))
        return token

    def _failure(self, exc: Exception, scope: str) -> TokenError | None:
        """The token error an exception from MSAL or requests stands for; None for any other.

        MSAL and requests are looked up among the loaded modules: an exception raised before they
        were imported cannot be one of theirs, and importing them only to ask would cost."""
        requests = sys.modules.get("requests")
        msal_exceptions = sys.modules.get("msal.exceptions")
        if requests is not None and isinstance(exc, requests.Timeout):
            return TokenTimeoutError(
                f"Entra ID did not answer within {self._timeout:g}s for a token for {scope} to client "
                f"{self.client_id} ({type(exc).__name__} from {self.authority})",
                error="timeout",
            )
        if requests is not None and isinstance(exc, requests.ConnectionError):
            if _never_connected(exc):
                return TokenUnreachableError(
                    f"Entra ID could not be reached at {self.authority} for a token for {scope} "
                    f"({type(exc).__name__}); check ENTRA_AUTHORITY_HOST and the network",
                    error="unreachable",
                )
            return TokenUnavailableError(
                f"the connection to Entra ID broke during a token request for {scope} "
                f"({type(exc).__name__} from {self.authority})",
                error="connection_lost",
            )
        unavailable: tuple[type[BaseException], ...] = (json.JSONDecodeError,)
        if requests is not None:
            unavailable += (requests.HTTPError,)
        if msal_exceptions is not None:
            unavailable += (msal_exceptions.MsalServiceError,)
        if isinstance(exc, unavailable):
            # MSAL raises these for a 5xx and for an answer that is not JSON (never quoting it).
            return TokenUnavailableError(
                f"Entra ID failed a token request for {scope} to client {self.client_id} "
                f"({type(exc).__name__} from {self.authority})",
                error="unavailable",
            )
        if isinstance(exc, ValueError):
            # MSAL's word for an authority or tenant it cannot use (discovery answered 400).
            return TokenError(
                f"MSAL could not use the authority {self.authority} for client {self.client_id} "
                f"({type(exc).__name__}); check ENTRA_TENANT_ID and ENTRA_AUTHORITY_HOST",
                error="invalid_authority",
            )
        return None

    def _application(
        self, credential: str | dict[str, Any], marker: str
    ) -> msal.ConfidentialClientApplication:
        # Runs on a worker thread, so the first call's imports do not hold up the event loop.
        import msal

        from shared.identity_session import PinnedVerifySession

        if self._app is None or self._app_credential != marker:
            if self._http is None:
                self._http = PinnedVerifySession(timeout=self._timeout)
                if self._extra_ca_bundle:
                    bundle = _bundle_with_system_roots(self._extra_ca_bundle)
                    self._bundle = weakref.finalize(self, _remove, bundle)
                    self._http.verify = str(bundle)
            self._app = msal.ConfidentialClientApplication(
                self.client_id,
                client_credential=credential,
                authority=self.authority,
                http_client=self._http,
                # Only Microsoft's own hosts are in the instance-discovery catalogue.
                instance_discovery=self._host in _PUBLIC_CLOUD_HOSTS,
            )
            self._app_credential = marker
        return self._app

    def close(self) -> None:
        self._requests.cancel_all()
        if self._http is not None:
            self._http.close()
            # A later call builds a new session (and bundle) instead of using a closed one.
            self._http = None
            self._app = None
            self._app_credential = None
        if self._bundle is not None:
            self._bundle()
            self._bundle = None


def _bundle_with_system_roots(extra: Path) -> Path:
    """A temporary CA file holding the public roots plus the extra CA, so both kinds of host verify."""
    handle, name = tempfile.mkstemp(prefix="ca-bundle-", suffix=".pem")
    with os.fdopen(handle, "wb") as bundle:
        bundle.write(Path(certifi.where()).read_bytes() + b"\n" + extra.read_bytes())
    return Path(name)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _never_connected(exc: requests.ConnectionError) -> bool:
    """No connection was made (DNS, refused) or Entra ID's certificate is not trusted: nothing
    reached Entra ID, whose endpoints are always up, so the authority, the trust store or the
    network is wrong. A connection reset or cut short (an EOF in TLS included) is not."""
    import ssl

    import urllib3

    cause = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    inner = reason.args[0] if isinstance(reason, Exception) and reason.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError) or isinstance(
        inner, ssl.SSLCertVerificationError
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None
