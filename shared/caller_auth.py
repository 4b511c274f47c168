"""Who is calling an HTTP endpoint, verified; nothing a caller merely claims is believed.

Two ways to prove an app role, and no other:

- **The platform's principal.** With App Service authentication on, the platform validates the
  caller's Entra token, strips any ``X-MS-*`` header the caller sent and passes the token's claims
  in ``X-MS-CLIENT-PRINCIPAL`` (Base64 JSON ``{"claims": [{"typ", "val"}], "role_typ"}``). The
  platform sets the environment variable ``WEBSITE_AUTH_ENABLED=True`` on the app when that
  feature is on; the header is read only then. Without it the header is the caller's own text,
  and is ignored.
- **A bearer token** (``Authorization: Bearer <JWT>``) verified here against Entra ID: RS256
  signature by a key of the tenant's JWKS (from its OpenID configuration, cached, refetched at
  most once per :data:`MIN_REFRESH_SECONDS` when a token names an unknown key), ``aud`` one of
  the configured audiences (``API_AUDIENCE``, ``API_CLIENT_ID``), ``iss`` the tenant's v1 or v2
  issuer (both are in the OpenID configurations), ``exp``/``nbf`` with a little clock skew, and
  the app role among the ``roles`` claims.

The discovery documents and keys come through the app's one aiohttp session; signature checks are
a few microseconds of CPU, so nothing here blocks the event loop. Errors carry messages safe to
show and log: never a token, a claim value or a key.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from shared import json_limits
from shared.concurrency import SingleFlight
from shared.http import HttpClient, UpstreamError

if TYPE_CHECKING:
    # PyJWT (and the cryptography it verifies RS256 with) loads with the first bearer token, and
    # never when only the platform authenticates callers.
    import jwt

logger = logging.getLogger(__name__)

SERVICE = "Entra ID (caller tokens)"
PLATFORM_AUTH_VARIABLE = "WEBSITE_AUTH_ENABLED"
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
ROLE_CLAIM_TYPES = frozenset({"roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"})
# Keys and issuers are re-read this often; Entra announces new keys well before signing with them.
METADATA_TTL_SECONDS = 6 * 3600.0
# A token naming an unknown key makes one refetch, then no more for this long (so a stream of
# made-up key ids cannot make the app hammer Entra).
MIN_REFRESH_SECONDS = 300.0
CLOCK_SKEW_SECONDS = 120
# Entra access tokens are a few kilobytes; anything far larger is not one.
MAX_TOKEN_LENGTH = 16_384
MAX_PRINCIPAL_LENGTH = 65_536


class UnauthenticatedError(Exception):
    """No credential the app can verify (answer 401). The message is safe to show."""


class ForbiddenError(Exception):
    """A verified caller without the required role (answer 403)."""


class IdentityProviderUnavailableError(Exception):
    """Entra's keys could not be read, so no token can be checked now (answer 503)."""


@dataclass(frozen=True)
class Caller:
    roles: frozenset[str]
    source: Literal["platform", "bearer"]


@dataclass(frozen=True)
class _Metadata:
    issuers: frozenset[str]
    keys: Mapping[str, jwt.PyJWK]
    fetched_at: float


class EntraTokenValidator:
    """Verifies Entra access tokens for this app's API."""

    def __init__(
        self,
        http: HttpClient,
        *,
        authority: str,
        audiences: Collection[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._authority = authority.rstrip("/")
        self.audiences = frozenset(audiences)
        self._clock = clock
        self._metadata: _Metadata | None = None
        self._flight: SingleFlight[str, _Metadata] = SingleFlight()

    def close(self) -> None:
        """Stop a key fetch still running (on shutdown)."""
        self._flight.cancel_all()

    async def validate(self, token: str) -> dict[str, Any]:
        """The claims of a genuine, current token for one of :attr:`audiences`."""
        if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
            raise UnauthenticatedError("the bearer token is not a JWT")
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise UnauthenticatedError("the bearer token is not a JWT") from None
        kid = header.get("kid")
        if header.get("alg") != "RS256" or not isinstance(kid, str):
            raise UnauthenticatedError("the bearer token is not signed the way Entra ID signs")
        metadata = await self._current()
        key = metadata.keys.get(kid)
        if key is None and self._clock() - metadata.fetched_at >= MIN_REFRESH_SECONDS:
            metadata = await self._refresh()
            key = metadata.keys.get(kid)
        if key is None:
            raise UnauthenticatedError("the bearer token is not signed by a key of the tenant")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.audiences,
                issuer=metadata.issuers,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "nbf", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("the bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise UnauthenticatedError("the bearer token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise UnauthenticatedError("the bearer token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise UnauthenticatedError("the bearer token is from another issuer") from None
        except jwt.InvalidTokenError as exc:
            raise UnauthenticatedError(f"the bearer token is not valid ({type(exc).__name__})") from None
        return claims

    async def _current(self) -> _Metadata:
        metadata = self._metadata
        if metadata is not None and self._clock() - metadata.fetched_at < METADATA_TTL_SECONDS:
            return metadata
        try:
            return await self._refresh()
        except IdentityProviderUnavailableError:
            if metadata is None:
                raise
            # Keys that were right an hour ago are better than refusing every caller.
            logger.warning("Entra ID keys could not be refreshed; using the ones read before")
            return metadata

    async def _refresh(self) -> _Metadata:
        return await self._flight.run("metadata", self._fetch)

    async def _fetch(self) -> _Metadata:
        import jwt

        v2 = await self._document(f"{self._authority}/v2.0/.well-known/openid-configuration")
        v1 = await self._document(f"{self._authority}/.well-known/openid-configuration")
        jwks_uri = v2.get("jwks_uri")
        issuers = {doc.get("issuer") for doc in (v1, v2)}
        if not isinstance(jwks_uri, str) or not all(isinstance(i, str) and i for i in issuers):
            raise IdentityProviderUnavailableError("the tenant's OpenID configuration is incomplete")
        keys: dict[str, jwt.PyJWK] = {}
        entries = (await self._document(jwks_uri)).get("keys")
        for entry in entries if isinstance(entries, list) else []:
            if (
                not isinstance(entry, dict)
                or entry.get("kty") != "RSA"
                or not isinstance(entry.get("kid"), str)
            ):
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry, algorithm="RS256")
            except jwt.PyJWTError:
                logger.warning("skipped an unreadable key in the tenant's JWKS")
        if not keys:
            raise IdentityProviderUnavailableError("the tenant's JWKS holds no RSA signing key")
        metadata = _Metadata(frozenset(str(i) for i in issuers), keys, self._clock())
        self._metadata = metadata
        logger.info("read %d Entra ID signing key(s) for caller tokens", len(keys))
        return metadata

    async def _document(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.send("GET", url, service=SERVICE)
            response.raise_for_status(SERVICE)
            document = response.json()
        except UpstreamError as exc:
            logger.warning("Entra ID metadata unavailable: %s", exc)
            raise IdentityProviderUnavailableError("Entra ID's keys could not be read") from None
        except ValueError:
            raise IdentityProviderUnavailableError(
                "Entra ID answered with something that is not JSON"
            ) from None
        if not isinstance(document, dict):
            raise IdentityProviderUnavailableError("Entra ID answered with something that is not an object")
        return document


class CallerVerifier:
    """Finds and verifies the caller of a request; see the module docstring."""

    def __init__(
        self, validator: EntraTokenValidator | None, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self._validator = validator
        self._environ = environ if environ is not None else os.environ

    def close(self) -> None:
        if self._validator is not None:
            self._validator.close()

    @property
    def platform_auth_on(self) -> bool:
        """True only when App Service authentication is on (the platform sets the variable)."""
        return self._environ.get(PLATFORM_AUTH_VARIABLE, "").strip().lower() == "true"

    async def caller(self, headers: Mapping[str, str]) -> Caller:
        principal = _header(headers, PRINCIPAL_HEADER)
        if principal and self.platform_auth_on:
            return Caller(_principal_roles(principal), "platform")
        if principal:
            logger.warning("%s ignored: App Service authentication is not on", PRINCIPAL_HEADER)
        authorization = (_header(headers, "Authorization") or "").strip()
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("sign in with an Entra ID token (Authorization: Bearer)")
        if self._validator is None:
            raise UnauthenticatedError("bearer tokens are not accepted: API_CLIENT_ID is not set")
        claims = await self._validator.validate(token.strip())
        roles = claims.get("roles")
        return Caller(
            frozenset(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else frozenset(),
            "bearer",
        )

    async def require_role(self, headers: Mapping[str, str], role: str) -> Caller:
        caller = await self.caller(headers)
        if role not in caller.roles:
            raise ForbiddenError(f"the caller lacks the app role {role}")
        return caller


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _principal_roles(header: str) -> frozenset[str]:
    if len(header) > MAX_PRINCIPAL_LENGTH:
        raise UnauthenticatedError("the client principal header is too long")
    try:
        principal = json_limits.loads(base64.b64decode(header, validate=False).decode("utf-8"))
    except (binascii.Error, ValueError):
        raise UnauthenticatedError("the client principal header is unreadable") from None
    if not isinstance(principal, dict):
        raise UnauthenticatedError("the client principal header is unreadable")
    claims = principal.get("claims")
    role_types = set(ROLE_CLAIM_TYPES)
    if isinstance(principal.get("role_typ"), str):
        role_types.add(principal["role_typ"])
    return frozenset(
        claim["val"]
        for claim in (claims if isinstance(claims, list) else [])
        if isinstance(claim, dict) and claim.get("typ") in role_types and isinstance(claim.get("val"), str)
    )
