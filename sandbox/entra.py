"""Entra ID stand-in: OIDC discovery, JWKS and the client-credentials token endpoints.

Paths live under ``/entra/{tenant}/`` so that MSAL, given the authority
``{base}/entra/{tenant}`` with instance discovery off, finds
``{authority}/v2.0/.well-known/openid-configuration`` and the token endpoint it names.
Access tokens are RS256 JWTs shaped like Entra's v1 app tokens (the shape a resource such as
``https://commerce.dynamics.com`` gets): ``aud`` is the scope without ``/.default``.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

if TYPE_CHECKING:
    from sandbox.server import Sandbox

DEFAULT_SUFFIX = "/.default"
VERIFY_LEEWAY_SECONDS = 5
VERIFIED_TOKENS_KEPT = 64
ASSERTION_TYPE_JWT = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Allowed clock skew between an assertion's issuer and Entra ID.
ASSERTION_LEEWAY_SECONDS = 300


@lru_cache(maxsize=1)
def _signing_key() -> rsa.RSAPrivateKey:
    # One RSA key per process: generating it is the slowest part of starting a sandbox.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class App:
    client_id: str
    secret: str
    object_id: str


def service_principal_id(client_id: str) -> str:
    """The object id of an app's service principal: stable per client id, so the tokens' ``oid``,
    the Graph stand-in's service principal and a registered app agree."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-service-principal/{client_id}"))


class TokenRejectedError(Exception):
    """A presented token is missing, malformed, or not valid for this resource."""


class TokenIssuer:
    """Signs and verifies the sandbox's access tokens."""

    def __init__(self, tenant_id: str, *, lifetime_seconds: int) -> None:
        self.tenant_id = tenant_id
        self.lifetime_seconds = lifetime_seconds
        self.key_id = uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-signing-key/{tenant_id}").hex
        self._key = _signing_key()
        # Every key the JWKS publishes, the signing one included (a rollover keeps the old one).
        self._published: dict[str, rsa.RSAPrivateKey] = {self.key_id: self._key}
        # Tokens that passed ``verify``, by token and audience, with their key id: a client sends
        # the same token until it expires, and decoding one costs PyJWT about a millisecond.
        self._verified: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def rotate_key(self, *, publish: bool = True) -> str:
        """Sign with a new key from now on, still publishing the old one (Entra's rollover).
        ``publish=False`` leaves the new key out of the JWKS: tokens then name a key id the
        tenant never announced, as a forger's would."""
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = uuid.uuid4().hex
        if publish:
            self._published[self.key_id] = self._key
        return self.key_id

    def issue_caller_token(
        self,
        *,
        audience: str,
        roles: list[str] | None,
        client_id: str = "c11e4700-0000-4000-8000-00000000ca11",
        version: str = "1.0",
        now: float | None = None,
        lifetime_seconds: int | None = None,
        not_before: float | None = None,
        issuer: str | None = None,
    ) -> str:
        """An app-only access token for the connector's own API, as a caller (an admin tool, a
        POS back end) gets one with client credentials: ``roles`` are the app roles assigned to
        it (left out when None, as Entra does when none is assigned). A v2.0 token needs the
        ``issuer`` (``{authority}/v2.0``, which only the running sandbox knows)."""
        if version != "1.0" and issuer is None:
            raise ValueError("a v2.0 token needs its issuer: use Sandbox.caller_token")
        issued = int(time.time() if now is None else now)
        lifetime = self.lifetime_seconds if lifetime_seconds is None else lifetime_seconds
        object_id = service_principal_id(client_id)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": issuer or self.issuer,
            "iat": issued,
            "nbf": int(not_before) if not_before is not None else issued,
            "exp": issued + lifetime,
            "oid": object_id,
            "sub": object_id,
            "tid": self.tenant_id,
            "idtyp": "app",
            "ver": version,
            "jti": uuid.uuid4().hex,
        }
        claims["appid" if version == "1.0" else "azp"] = client_id
        if roles is not None:
            claims["roles"] = roles
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id, "typ": "JWT"})

    @property
    def issuer(self) -> str:
        # Resource tokens from Entra's v1 issuer, which Commerce's identity provider entry names.
        return f"https://sts.windows.net/{self.tenant_id}/"

    def issue(self, app: App, audience: str, *, now: float | None = None, client_auth: str = "1") -> str:
        """An app token; ``client_auth`` is ``appidacr``: 1 for a client secret, 2 for an assertion
        (a certificate, or a federated credential's token)."""
        issued = int(time.time() if now is None else now)
        claims = {
            "aud": audience,
            "iss": self.issuer,
            "iat": issued,
            "nbf": issued,
            "exp": issued + self.lifetime_seconds,
            "appid": app.client_id,
            "azp": app.client_id,
            "appidacr": client_auth,
            "idp": self.issuer,
            "idtyp": "app",
            "oid": app.object_id,
            "sub": app.object_id,
            "tid": self.tenant_id,
            "jti": uuid.uuid4().hex,
            "ver": "1.0",
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})

    def verify(self, token: str, *, audience: str) -> dict[str, Any]:
        known = self._verified.get((token, audience))
        if known is not None and known[0] in self._published:
            claims = known[1]
            # The lifetime is checked on every use, as PyJWT checks it (``exp`` with the leeway).
            if claims["exp"] <= time.time() - VERIFY_LEEWAY_SECONDS:
                raise TokenRejectedError("the token has expired")
            return dict(claims)
        claims = self._verify(token, audience=audience)
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            self._verified.clear()
        self._verified[(token, audience)] = (str(jwt.get_unverified_header(token).get("kid")), claims)
        return dict(claims)

    def _verify(self, token: str, *, audience: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            key = self._published.get(str(header.get("kid")))
            if key is None:
                raise TokenRejectedError("the token was not signed by this tenant's key")
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key(),
                algorithms=["RS256"],
                audience=audience,
                issuer=self.issuer,
                leeway=VERIFY_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "nbf", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejectedError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejectedError(f"the token's audience is not {audience}") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRejectedError(f"the token is not valid: {type(exc).__name__}") from None
        if claims.get("tid") != self.tenant_id:
            raise TokenRejectedError("the token was issued for another tenant")
        return claims

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self._published.items():
            numbers = key.public_key().public_numbers()
            keys.append(
                {"kty": "RSA", "use": "sig", "kid": kid, "n": _b64url(numbers.n), "e": _b64url(numbers.e)}
            )
        return {"keys": keys}


def _b64url(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def aadsts_error(
    status: int, error: str, code: int, description: str, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An error the way Entra ID answers one: OAuth fields plus its AADSTS code and trace ids."""
    correlation_id = str(uuid.uuid4())
    trace_id = str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace_id} "
        f"Correlation ID: {correlation_id} Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": "https://login.microsoftonline.com/error?code=" + str(code),
    }
    return web.json_response(body, status=status, headers=headers)


class EntraStandIn:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/entra/{tenant}/v2.0/.well-known/openid-configuration", self.openid_v2)
        app.router.add_get("/entra/{tenant}/.well-known/openid-configuration", self.openid_v1)
        app.router.add_get("/entra/{tenant}/discovery/v2.0/keys", self.keys)
        app.router.add_get("/entra/{tenant}/discovery/keys", self.keys)
        app.router.add_post("/entra/{tenant}/oauth2/v2.0/token", self.token_v2)
        app.router.add_post("/entra/{tenant}/oauth2/token", self.token_v1)

    def _tenant_base(self, request: web.Request) -> str:
        tenant = request.match_info["tenant"]
        if tenant != self.sandbox.tenant_id:
            raise aadsts_error_exception(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have "
                "the correct tenant ID and are signing into the correct cloud.",
            )
        return f"{self.sandbox.authority_host}/{tenant}"

    async def openid_v2(self, request: web.Request) -> web.Response:
        base = self._tenant_base(request)
        return web.json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "sandbox.invalid",
            }
        )

    async def openid_v1(self, request: web.Request) -> web.Response:
        base = self._tenant_base(request)
        return web.json_response(
            {
                "issuer": self.sandbox.tokens.issuer,
                "authorization_endpoint": f"{base}/oauth2/authorize",
                "token_endpoint": f"{base}/oauth2/token",
                "jwks_uri": f"{base}/discovery/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        self._tenant_base(request)
        return web.json_response(self.sandbox.tokens.jwks())

    async def token_v2(self, request: web.Request) -> web.Response:
        return await self._token(request, v1=False)

    async def token_v1(self, request: web.Request) -> web.Response:
        return await self._token(request, v1=True)

    async def _token(self, request: web.Request, *, v1: bool) -> web.Response:
        self._tenant_base(request)
        form = await request.post()
        fields = {key: str(value) for key, value in form.items() if isinstance(value, str)}
        client_id, secret = _client_credentials(request, fields)
        if client_id:
            self.sandbox.stats.token_requests[client_id] += 1
        grant_type = fields.get("grant_type")
        if grant_type != "client_credentials":
            return aadsts_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type '" + (grant_type or "") + "'.",
            )
        if not client_id:
            return aadsts_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        audience = self._audience(fields, v1=v1)
        if isinstance(audience, web.Response):
            return audience
        app = self.sandbox.apps.get(client_id)
        if app is None:
            return aadsts_error(
                401,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.sandbox.tenant_id}'.",
            )
        if "client_assertion" in fields or "client_assertion_type" in fields:
            refused = self._check_assertion(client_id, fields)
            if refused is not None:
                return refused
            return self._issued(app, audience, v1=v1, client_auth="2")
        if secret is None:
            return aadsts_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'.",
            )
        if secret != app.secret:
            return aadsts_error(
                401,
                "invalid_client",
                7000215,
                f"Invalid client secret provided. Ensure the secret being sent in the request is the "
                f"client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        return self._issued(app, audience, v1=v1)

    def _issued(self, app: App, audience: str, *, v1: bool, client_auth: str = "1") -> web.Response:
        lifetime = self.sandbox.tokens.lifetime_seconds
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self.sandbox.tokens.issue(app, audience, client_auth=client_auth),
        }
        if v1:
            now = int(time.time())
            body.update(expires_on=str(now + lifetime), not_before=str(now), resource=audience)
            body["expires_in"] = str(lifetime)
            body["ext_expires_in"] = str(lifetime)
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _check_assertion(self, client_id: str, fields: Mapping[str, str]) -> web.Response | None:
        """None when the JWT client assertion matches a federated identity credential of the app
        and carries a valid signature of a known issuer; else Entra's refusal."""
        assertion_type = fields.get("client_assertion_type", "")
        assertion = fields.get("client_assertion", "")
        if assertion_type != ASSERTION_TYPE_JWT:
            return aadsts_error(
                400,
                "invalid_request",
                7000218,
                f"client_assertion_type must be '{ASSERTION_TYPE_JWT}', not '{assertion_type}'.",
            )
        try:
            claims: dict[str, Any] = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return aadsts_error(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        issuer, subject, audience = (str(claims.get(name, "")) for name in ("iss", "sub", "aud"))
        credentials = self.sandbox.federated_credentials.get(client_id, [])
        if not credentials:
            return aadsts_error(
                400,
                "invalid_request",
                70021,
                f"No matching federated identity record found for presented assertion. Assertion "
                f"Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'.",
            )
        own_issuer = self.sandbox.v2_issuer
        credentials = [c for c in credentials if (c.issuer or own_issuer) == issuer]
        if not credentials:
            return _no_match(700211, "issuer", issuer)
        identity = self.sandbox.managed_identity
        if issuer != identity.issuer or identity.verify_signature(assertion) is None:
            return aadsts_error(
                401, "invalid_client", 700027, "Client assertion failed signature validation."
            )
        now = int(time.time())
        expires, not_before = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
        if (
            not isinstance(expires, int)
            or not isinstance(not_before, int)
            or expires < now - ASSERTION_LEEWAY_SECONDS
            or not_before > now + ASSERTION_LEEWAY_SECONDS
        ):
            return aadsts_error(
                401,
                "invalid_client",
                700024,
                f"Client assertion is not within its valid time range. Current time: {_iso(now)}, "
                f"assertion valid from {_iso(not_before)}, expiry time of assertion {_iso(expires)}.",
            )
        credentials = [c for c in credentials if c.subject == subject]
        if not credentials:
            return _no_match(700213, "subject", subject)
        if not any(audience in c.audiences for c in credentials):
            return _no_match(700212, "audience", audience)
        return None

    @staticmethod
    def _audience(fields: Mapping[str, str], *, v1: bool) -> str | web.Response:
        if v1:
            resource = fields.get("resource", "")
            if not resource:
                return aadsts_error(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'resource'.",
                )
            return resource
        scopes = fields.get("scope", "").split()
        if not scopes:
            return aadsts_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        # MSAL adds these to every request; they do not name a resource.
        resource_scopes = [s for s in scopes if s not in {"openid", "profile", "offline_access"}]
        if len(resource_scopes) != 1 or not resource_scopes[0].endswith(DEFAULT_SUFFIX):
            return aadsts_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {' '.join(scopes)} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        return resource_scopes[0][: -len(DEFAULT_SUFFIX)]


def _no_match(code: int, claim: str, value: str) -> web.Response:
    return aadsts_error(
        401,
        "invalid_client",
        code,
        f"No matching federated identity record found for presented assertion {claim} '{value}'. "
        "Please check your federated identity credential Subject, Audience and Issuer against the "
        "presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
    )


def _iso(stamp: object) -> str:
    if not isinstance(stamp, int):
        return "(not given)"
    return time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(stamp))


def aadsts_error_exception(status: int, error: str, code: int, description: str) -> web.HTTPException:
    response = aadsts_error(status, error, code, description)
    exception = web.HTTPBadRequest if status == 400 else web.HTTPUnauthorized
    assert isinstance(response.text, str)
    return exception(text=response.text, content_type="application/json")


def _client_credentials(request: web.Request, fields: Mapping[str, str]) -> tuple[str, str | None]:
    """Client id and secret from the form (client_secret_post) or HTTP Basic (client_secret_basic)."""
    authorization = request.headers.get("Authorization", "")
    if authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except ValueError:
            return fields.get("client_id", ""), None
        raw_id, _, raw_secret = decoded.partition(":")
        # RFC 6749 2.3.1: both parts are form-url-encoded before Basic encoding.
        return unquote_plus(raw_id), unquote_plus(raw_secret)
    return fields.get("client_id", ""), fields.get("client_secret")


def bearer_challenge(error_description: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{error_description}"'}


def unauthorized(reason: str) -> web.HTTPUnauthorized:
    body = json.dumps({"error": "invalid_token", "error_description": reason})
    return web.HTTPUnauthorized(text=body, content_type="application/json", headers=bearer_challenge(reason))
