"""Erasure fails closed: only a caller that proves PRIVACY_APP_ROLE erases anything.

The proof is the platform's principal header when App Service authentication is really on
(WEBSITE_AUTH_ENABLED, set by the platform), or an Entra bearer token checked against the
sandbox tenant's keys. Every other request answers 401 or 403 and leaves everything in place.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.server import Sandbox
from shared.privacy.suppression import SuppressionList
from shared.runtime import Runtime, set_runtime
from shared.settings import Settings
from tests.customers.helpers import principal
from tests.privacy.helpers import API_AUDIENCE, API_CLIENT_ID, ERASE_ROLE, bearer, call, erasure_request
from tests.privacy.test_erasure import record, seeded

KEYS_ROUTE = "/entra/{tenant}/discovery/v2.0/keys"


@lru_cache(maxsize=1)
def _stranger_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(sandbox: Sandbox, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": API_AUDIENCE,
        "iss": sandbox.tokens.issuer,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "tid": sandbox.tenant_id,
        "roles": [ERASE_ROLE],
    }
    claims.update(overrides)
    return claims


def forged(sandbox: Sandbox) -> str:
    """Right claims and the tenant's key id, signed by a key that is not the tenant's."""
    return jwt.encode(
        claims_for(sandbox), _stranger_key(), algorithm="RS256", headers={"kid": sandbox.tokens.key_id}
    )


def unsigned(sandbox: Sandbox) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": sandbox.tokens.key_id}).encode())
    return f"{header}.{_b64(json.dumps(claims_for(sandbox)).encode())}."


def hmac_with_public_key(sandbox: Sandbox) -> str:
    """The classic confusion: HS256 keyed with the tenant's public key material."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": sandbox.tokens.key_id}).encode())
    body = _b64(json.dumps(claims_for(sandbox)).encode())
    secret = json.dumps(sandbox.tokens.jwks()["keys"][0]).encode()
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def bearer_of(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refused_headers(sandbox: Sandbox) -> dict[str, tuple[dict[str, str], int]]:
    """Each way in that must be refused, with the status it gets (WEBSITE_AUTH_ENABLED unset)."""
    now = time.time()
    return {
        "nothing": ({}, 401),
        "forged principal header": ({"X-MS-CLIENT-PRINCIPAL": principal(ERASE_ROLE)}, 401),
        "basic credentials": ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401),
        "bearer garbage": (bearer_of("not-a-jwt"), 401),
        "forged signature": (bearer_of(forged(sandbox)), 401),
        "alg none": (bearer_of(unsigned(sandbox)), 401),
        "HS256 with the public key": (bearer_of(hmac_with_public_key(sandbox)), 401),
        "other audience": (
            bearer_of(sandbox.caller_token(audience="https://commerce.dynamics.com", roles=[ERASE_ROLE])),
            401,
        ),
        "other issuer": (
            bearer_of(
                sandbox.caller_token(
                    audience=API_AUDIENCE, roles=[ERASE_ROLE], issuer="https://sts.windows.net/other-tenant/"
                )
            ),
            401,
        ),
        "expired": (bearer(sandbox, ERASE_ROLE, now=now - 7200, lifetime_seconds=3600), 401),
        "not yet valid": (bearer(sandbox, ERASE_ROLE, not_before=now + 3600), 401),
        "no roles claim": (
            bearer_of(sandbox.caller_token(audience=API_AUDIENCE, roles=None)),
            403,
        ),
        "another role": (bearer(sandbox, "Customers.Create"), 403),
    }


@pytest.fixture
async def at_risk(runtime: Runtime, sandbox: Sandbox) -> AsyncIterator[tuple[str, str]]:
    """A customer with ledger entries that a wrongly accepted erasure would delete."""
    email, account = seeded(sandbox)
    await record(runtime, account, "cart-A", "128")
    yield email, account
    # Whatever the test did, nothing may have been erased.
    assert not await SuppressionList(runtime.store).contains(email)
    assert len(await runtime.store.query("ledger", equals={"customerId": account})) == 2


async def attempt(functions: dict[str, Any], who: tuple[str, str], headers: dict[str, str]) -> Any:
    email, account = who
    return await call(
        functions, "privacy_erasure", erasure_request({"email": email, "customerAccount": account}, **headers)
    )


async def test_every_unverified_or_unentitled_caller_is_refused_and_nothing_is_erased(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    at_risk: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    for case, (headers, status) in refused_headers(sandbox).items():
        response = await attempt(registered_functions, at_risk, headers)
        assert response.status_code == status, (case, response.get_body())
        problem = json.loads(response.get_body())
        assert problem["type"].endswith(":unauthorized" if status == 401 else ":forbidden"), case
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_easy_auth_enabled_alone_does_not_make_the_header_trusted(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    settings: Settings,
    at_risk: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The forged-principal attack: EASY_AUTH_ENABLED=true and a self-made principal claiming the role."""
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    created = Runtime.create(settings.model_copy(update={"easy_auth_enabled": True}))
    set_runtime(created)
    try:
        response = await attempt(
            registered_functions, at_risk, {"X-MS-CLIENT-PRINCIPAL": principal(ERASE_ROLE)}
        )
        assert response.status_code == 401
    finally:
        set_runtime(runtime)
        await created.close()


@pytest.mark.parametrize("platform_says", ["false", "", "0"])
async def test_the_header_needs_the_platform_to_say_authentication_is_on(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    at_risk: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    platform_says: str,
) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", platform_says)
    response = await attempt(registered_functions, at_risk, {"X-MS-CLIENT-PRINCIPAL": principal(ERASE_ROLE)})
    assert response.status_code == 401


async def test_without_api_client_id_a_genuine_bearer_token_is_not_enough(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    settings: Settings,
    at_risk: tuple[str, str],
) -> None:
    created = Runtime.create(settings.model_copy(update={"api_client_id": None}))
    set_runtime(created)
    try:
        response = await attempt(registered_functions, at_risk, bearer(sandbox))
        assert response.status_code == 401
        assert "API_CLIENT_ID" in json.loads(response.get_body())["detail"]
    finally:
        set_runtime(runtime)
        await created.close()


async def test_with_entra_unreachable_the_answer_is_503_and_nothing_is_erased(
    registered_functions: dict[str, Any],
    runtime: Runtime,
    sandbox: Sandbox,
    at_risk: tuple[str, str],
) -> None:
    sandbox.faults.add(KEYS_ROUTE.format(tenant=sandbox.tenant_id), status=503, times=None)
    response = await attempt(registered_functions, at_risk, bearer(sandbox))
    assert response.status_code == 503
    assert json.loads(response.get_body())["type"].endswith(":identity-provider-unavailable")


# ----- the ways in


async def test_the_platform_principal_with_the_role_erases_when_authentication_is_on(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    email, account = seeded(sandbox)
    await record(runtime, account, "cart-A", "128")
    lacking = await attempt(
        registered_functions, (email, account), {"X-MS-CLIENT-PRINCIPAL": principal("Customers.Create")}
    )
    assert lacking.status_code == 403
    unreadable = await attempt(registered_functions, (email, account), {"X-MS-CLIENT-PRINCIPAL": "%%%"})
    assert unreadable.status_code == 401
    assert await runtime.store.query("ledger", equals={"customerId": account})

    role_uri = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    response = await attempt(
        registered_functions,
        (email, account),
        {"X-MS-CLIENT-PRINCIPAL": principal(ERASE_ROLE, role_typ=role_uri)},
    )
    assert response.status_code == 200
    assert await SuppressionList(runtime.store).contains(email)
    assert await runtime.store.query("ledger", equals={"customerId": account}) == []


@pytest.mark.parametrize("version", ["1.0", "2.0"])
async def test_a_verified_bearer_token_with_the_role_erases(
    registered_functions: dict[str, Any], runtime: Runtime, sandbox: Sandbox, version: str
) -> None:
    email, account = seeded(sandbox)
    await record(runtime, account, "cart-A", "128")
    # v1.0 tokens name the Application ID URI, v2.0 tokens the client id.
    audience = API_AUDIENCE if version == "1.0" else API_CLIENT_ID
    token = sandbox.caller_token(audience=audience, roles=["Other.Role", ERASE_ROLE], version=version)
    response = await attempt(registered_functions, (email, account), bearer_of(token))
    assert response.status_code == 200, response.get_body()
    assert json.loads(response.get_body())["ledgerEntriesDeleted"] == 2
