"""Emarsys API authentication: OAuth 2.0 client credentials (v3) and the legacy WSSE header (v2).

OAuth is the default. WSSE is kept for accounts that have not created OpenID Connect credentials
yet; Emarsys retires it at the end of 2026. Both hand the trigger client the headers for one
request and say which API version their credentials work with.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets as token_random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ValidationError

from shared.email.base import ProviderConfigurationError, ProviderTransientError
from shared.http import HttpClient, UpstreamError
from shared.secrets import CachedSecrets, SecretNotFoundError

SERVICE = "emarsys"
TOKEN_PATH = "/oauth2/token"  # noqa: S105  # a URL path, not a secret
# Refresh this long before the token expires, so a request never carries a token that dies in flight.
REFRESH_MARGIN_SECONDS = 60.0
# Emarsys does not document the lifetime; one hour is what peers assume when expires_in is absent.
DEFAULT_TOKEN_LIFETIME_SECONDS = 3600.0


class EmarsysAuth(Protocol):
    api_version: Literal["v2", "v3"]

    async def headers(self) -> dict[str, str]:
        """Authentication headers for one request."""
        ...

    def invalidate(self) -> None:
        """Forget cached credentials after Emarsys answered 401 (rotated secret, revoked token)."""
        ...


class _TokenResponse(BaseModel):
    access_token: str
    expires_in: float | None = None


class OAuthTokenSource:
    """Client-credentials tokens from ``{auth_url}/oauth2/token``, cached until shortly before expiry.

    Concurrent callers that find no valid token wait for one shared token request.
    """

    api_version: Literal["v2", "v3"] = "v3"

    def __init__(
        self,
        http: HttpClient,
        secrets: CachedSecrets,
        *,
        auth_url: str,
        client_id_secret_name: str,
        client_secret_name: str,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
    ) -> None:
        self._http = http
        self._secrets = secrets
        self.token_url = auth_url.rstrip("/") + TOKEN_PATH
        self._client_id_name = client_id_secret_name
        self._client_secret_name = client_secret_name
        self._clock = clock
        self._margin = refresh_margin
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token()}"}

    async def token(self) -> str:
        if self._token is not None and self._clock() < self._expires_at:
            return self._token
        async with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
            token, lifetime = await self._request_token()
            self._token = token
            self._expires_at = self._clock() + max(0.0, lifetime - self._margin)
            return token

    def invalidate(self) -> None:
        self._token = None
        self._expires_at = 0.0
        self._secrets.invalidate(self._client_id_name)
        self._secrets.invalidate(self._client_secret_name)

    async def _request_token(self) -> tuple[str, float]:
        client_id = await _secret(self._secrets, self._client_id_name)
        client_secret = await _secret(self._secrets, self._client_secret_name)
        basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")
        try:
            response = await self._http.send(
                "POST",
                self.token_url,
                service=f"{SERVICE} token",
                headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
                data={"grant_type": "client_credentials"},
            )
        except UpstreamError as exc:
            raise ProviderTransientError(f"Emarsys token endpoint unreachable: {exc}") from None
        if response.status in (400, 401, 403):
            self._secrets.invalidate(self._client_id_name)
            self._secrets.invalidate(self._client_secret_name)
            raise ProviderConfigurationError(
                f"Emarsys refused the OAuth client credentials (HTTP {response.status}) at {self.token_url}: "
                f"check the secrets {self._client_id_name!r} and {self._client_secret_name!r} (an API "
                "credential of type OpenID Connect under Management > Security Settings) "
                f"[correlation id {response.correlation_id}]"
            )
        if response.status != 200:
            raise ProviderTransientError(
                f"Emarsys token endpoint answered HTTP {response.status} "
                f"[correlation id {response.correlation_id}]",
                retry_after=response.retry_after(),
            )
        try:
            parsed = _TokenResponse.model_validate_json(response.body)
        except ValidationError:
            raise ProviderTransientError(
                f"Emarsys token endpoint answered without an access_token "
                f"[correlation id {response.correlation_id}]"
            ) from None
        lifetime = parsed.expires_in if parsed.expires_in else DEFAULT_TOKEN_LIFETIME_SECONDS
        return parsed.access_token, lifetime


def wsse_digest(nonce: str, created: str, secret: str) -> str:
    """Emarsys' PasswordDigest: base64 of the *hex* SHA-1 of nonce + created + secret (56 chars)."""
    hex_digest = hashlib.sha1((nonce + created + secret).encode("utf-8"), usedforsecurity=False).hexdigest()
    return base64.b64encode(hex_digest.encode("ascii")).decode("ascii")


def wsse_header(username: str, secret: str, *, nonce: str, created: str) -> str:
    digest = wsse_digest(nonce, created, secret)
    return (
        f'UsernameToken Username="{username}", PasswordDigest="{digest}", '
        f'Nonce="{nonce}", Created="{created}"'
    )


def wsse_created(now: datetime) -> str:
    """ISO 8601 in UTC with an explicit zone: without one, Emarsys assumes Central European time."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WsseAuth:
    """The legacy ``X-WSSE`` header, recomputed with a fresh nonce for every request."""

    api_version: Literal["v2", "v3"] = "v2"

    def __init__(
        self,
        secrets: CachedSecrets,
        *,
        user_secret_name: str,
        secret_name: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._secrets = secrets
        self._user_name = user_secret_name
        self._secret_name = secret_name
        self._now = now

    async def headers(self) -> dict[str, str]:
        username = await _secret(self._secrets, self._user_name)
        secret = await _secret(self._secrets, self._secret_name)
        nonce = token_random.token_hex(16)
        return {"X-WSSE": wsse_header(username, secret, nonce=nonce, created=wsse_created(self._now()))}

    def invalidate(self) -> None:
        self._secrets.invalidate(self._user_name)
        self._secrets.invalidate(self._secret_name)

    def describe_credentials(self) -> str:
        return f"the secrets {self._user_name!r} and {self._secret_name!r} (the WSSE API user and secret)"


async def _secret(secrets: CachedSecrets, name: str) -> str:
    try:
        return await secrets.get(name)
    except SecretNotFoundError as exc:
        raise ProviderConfigurationError(f"Emarsys credentials missing: {exc}") from None
