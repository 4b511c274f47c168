"""The managed-identity endpoint stand-in (App Service's 2019-08-01 protocol), driven raw and by
azure-identity, and the Entra stand-in's checks of a JWT client assertion."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt
import pytest

from sandbox.managed_identity import TOKEN_EXCHANGE_AUDIENCE
from sandbox.server import Sandbox
from tests.sandbox.conftest import COMMERCE, Answer

EXCHANGE_SCOPE = f"{TOKEN_EXCHANGE_AUDIENCE}/.default"


async def identity_token(
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    *,
    header: str | None = "",
    query: dict[str, str] | None = None,
) -> Answer:
    identity = sandbox.managed_identity
    params = (
        {"api-version": "2019-08-01", "resource": TOKEN_EXCHANGE_AUDIENCE, "client_id": identity.client_id}
        if query is None
        else query
    )
    headers = {} if header is None else {"X-IDENTITY-HEADER": header or identity.header}
    async with http.get(identity.endpoint, params=params, headers=headers) as response:
        return Answer(response.status, response.headers, await response.json())


async def exchange(
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    assertion: str,
    *,
    client_id: str | None = None,
    assertion_type: str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
) -> Answer:
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id or sandbox.client_id,
        "client_assertion_type": assertion_type,
        "client_assertion": assertion,
        "scope": f"{COMMERCE}/.default",
    }
    async with http.post(f"{sandbox.authority}/oauth2/v2.0/token", data=form) as response:
        return Answer(response.status, response.headers, await response.json())


def code_of(answer: Answer) -> int:
    codes: list[int] = answer.body["error_codes"]
    return codes[0]


# ----- the managed-identity endpoint


async def test_the_endpoint_answers_as_app_service_does(
    http: aiohttp.ClientSession, sandbox_server: Sandbox
) -> None:
    identity = sandbox_server.managed_identity
    before = int(time.time())
    answer = await identity_token(http, sandbox_server)
    assert answer.status == 200, answer.body
    body = answer.body
    assert set(body) == {"access_token", "expires_on", "not_before", "resource", "token_type", "client_id"}
    assert (body["resource"], body["token_type"], body["client_id"]) == (
        TOKEN_EXCHANGE_AUDIENCE,
        "Bearer",
        identity.client_id,
    )
    # Epoch seconds, written as text.
    assert body["expires_on"].isdigit() and int(body["expires_on"]) >= before + identity.lifetime_seconds
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["iss"] == sandbox_server.v2_issuer
    assert claims["sub"] == claims["oid"] == identity.principal_id
    assert (claims["aud"], claims["azp"], claims["tid"]) == (
        TOKEN_EXCHANGE_AUDIENCE,
        identity.client_id,
        sandbox_server.tenant_id,
    )
    # The principal id names the same identity.
    by_principal = await identity_token(
        http,
        sandbox_server,
        query={"api-version": "2019-08-01", "resource": "api://x", "principal_id": identity.principal_id},
    )
    assert by_principal.status == 200


@pytest.mark.parametrize(
    ("header", "query", "status"),
    [
        (None, None, 401),
        ("not-the-identity-header", None, 401),
        ("", {"api-version": "2017-09-01", "resource": "api://x", "client_id": "c"}, 400),
        ("", {"api-version": "2019-08-01", "client_id": "c"}, 400),
        ("", {"api-version": "2019-08-01", "resource": "api://x"}, 400),
        ("", {"api-version": "2019-08-01", "resource": "api://x", "client_id": "0badc0de"}, 400),
        (
            "",
            {"api-version": "2019-08-01", "resource": "api://x", "client_id": "a", "principal_id": "b"},
            400,
        ),
    ],
    ids=[
        "no-header",
        "wrong-header",
        "api-version",
        "no-resource",
        "system-assigned",
        "other-identity",
        "two-ids",
    ],
)
async def test_the_endpoint_refuses_what_the_platform_refuses(
    http: aiohttp.ClientSession,
    sandbox_server: Sandbox,
    header: str | None,
    query: dict[str, str] | None,
    status: int,
) -> None:
    if query is not None and query.get("client_id") == "c":
        query["client_id"] = sandbox_server.managed_identity.client_id
    answer = await identity_token(http, sandbox_server, header=header, query=query)
    assert answer.status == status, answer.body
    assert "access_token" not in answer.body


async def test_azure_identity_gets_the_token_from_the_stand_in(
    sandbox_server: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What azure-identity sends (IDENTITY_* from the environment, X-IDENTITY-HEADER, api-version
    2019-08-01, resource and client_id) is what the stand-in requires, and it reads the answer."""
    from azure.core.pipeline.transport import AioHttpTransport
    from azure.identity.aio import ManagedIdentityCredential

    identity = sandbox_server.managed_identity
    for name, value in identity.env().items():
        monkeypatch.setenv(name, value)
    connector = aiohttp.TCPConnector(ssl=sandbox_server.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        transport = AioHttpTransport(session=session, session_owner=False)
        async with ManagedIdentityCredential(client_id=identity.client_id, transport=transport) as credential:
            token = await credential.get_token(EXCHANGE_SCOPE)
            again = await credential.get_token(EXCHANGE_SCOPE)
    assert token.token == again.token, "azure-identity caches it"
    assert identity.issued[TOKEN_EXCHANGE_AUDIENCE] == 1
    assert token.expires_on > time.time() + identity.lifetime_seconds - 60
    assert jwt.decode(token.token, options={"verify_signature": False})["sub"] == identity.principal_id


# ----- the Entra stand-in and a federated assertion


async def test_the_identity_token_buys_the_app_registrations_token(
    http: aiohttp.ClientSession, sandbox_server: Sandbox
) -> None:
    assertion = sandbox_server.managed_identity.issue(TOKEN_EXCHANGE_AUDIENCE)
    answer = await exchange(http, sandbox_server, assertion)
    assert answer.status == 200, answer.body
    claims = sandbox_server.tokens.verify(answer.body["access_token"], audience=COMMERCE)
    # The app registration's own token: Retail Server's relying party is unchanged.
    assert (claims["appid"], claims["appidacr"]) == (sandbox_server.client_id, "2")


@pytest.mark.parametrize(
    ("case", "status", "error", "code"),
    [
        ("expired", 401, "invalid_client", 700024),
        ("not-yet-valid", 401, "invalid_client", 700024),
        ("wrong-audience", 401, "invalid_client", 700212),
        ("wrong-subject", 401, "invalid_client", 700213),
        ("wrong-issuer", 401, "invalid_client", 700211),
        ("no-credential", 400, "invalid_request", 70021),
        ("other-key", 401, "invalid_client", 700027),
        ("not-a-jwt", 400, "invalid_request", 50027),
        ("wrong-type", 400, "invalid_request", 7000218),
    ],
)
async def test_the_assertion_is_refused_as_entra_refuses_it(
    http: aiohttp.ClientSession, sandbox_server: Sandbox, case: str, status: int, error: str, code: int
) -> None:
    sandbox = sandbox_server
    identity = sandbox.managed_identity
    now = int(time.time())
    assertion = identity.issue(TOKEN_EXCHANGE_AUDIENCE)
    options: dict[str, Any] = {}
    if case == "expired":
        assertion = identity.issue(TOKEN_EXCHANGE_AUDIENCE, now=now - 7200, lifetime_seconds=3600)
    elif case == "not-yet-valid":
        assertion = identity.issue(TOKEN_EXCHANGE_AUDIENCE, now=now + 3600)
    elif case == "wrong-audience":
        assertion = identity.issue("api://AzureADTokenExchangeChina")
    elif case == "wrong-subject":
        sandbox.unfederate(sandbox.client_id)
        sandbox.federate(sandbox.client_id, subject=identity.client_id)  # the client id, not the principal id
    elif case == "wrong-issuer":
        sandbox.unfederate(sandbox.client_id)
        sandbox.federate(sandbox.client_id, issuer=f"https://sts.windows.net/{sandbox.tenant_id}/")
    elif case == "no-credential":
        sandbox.unfederate(sandbox.client_id)
    elif case == "other-key":
        assertion = jwt.encode(
            jwt.decode(assertion, options={"verify_signature": False}),
            _other_key(),
            algorithm="RS256",
            headers={"kid": identity.key_id},
        )
    elif case == "not-a-jwt":
        assertion = "not.a.jwt"
    elif case == "wrong-type":
        options["assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
    answer = await exchange(http, sandbox, assertion, **options)
    assert (answer.status, answer.body["error"], code_of(answer)) == (status, error, code), answer.body
    assert "access_token" not in answer.body
    assert answer.body["error_description"].startswith(f"AADSTS{code}:")


async def test_the_secret_still_works_beside_the_federated_credential(
    http: aiohttp.ClientSession, sandbox_server: Sandbox
) -> None:
    from tests.sandbox.conftest import fetch_token

    answer = await fetch_token(http, sandbox_server)
    assert answer.status == 200
    claims = jwt.decode(answer.body["access_token"], options={"verify_signature": False})
    assert claims["appidacr"] == "1"


def _other_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
