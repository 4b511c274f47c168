"""The Entra ID stand-in, driven by real MSAL and by raw OAuth requests."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import jwt
import msal
import pytest
import requests
from aiohttp import web

from sandbox import entra
from sandbox.entra import App, TokenIssuer, TokenRejectedError
from sandbox.server import Sandbox
from tests.sandbox.conftest import COMMERCE, NOW, fetch_token

SCOPE = f"{COMMERCE}/.default"


class PinnedSession(requests.Session):
    """requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace ``verify``; keep the sandbox CA."""

    def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        settings: dict[str, Any] = super().merge_environment_settings(*args, **kwargs)
        settings["verify"] = self.verify
        return settings


def msal_app(sandbox: Sandbox, secret: str) -> tuple[msal.ConfidentialClientApplication, requests.Session]:
    session = PinnedSession()
    session.verify = str(sandbox.ca_path)
    app = msal.ConfidentialClientApplication(
        sandbox.client_id,
        client_credential=secret,
        authority=sandbox.authority,
        instance_discovery=False,
        http_client=session,
    )
    return app, session


async def msal_token(sandbox: Sandbox, secret: str, times: int = 1) -> list[dict[str, Any]]:
    """MSAL is synchronous and discovers the authority in its constructor: run all of it in a thread,
    or it would block the event loop that serves the sandbox."""

    def acquire() -> list[dict[str, Any]]:
        app, session = msal_app(sandbox, secret)
        try:
            return [app.acquire_token_for_client(scopes=[SCOPE]) for _ in range(times)]
        finally:
            session.close()

    return await asyncio.to_thread(acquire)


async def test_msal_gets_a_token_with_entra_claims(sandbox_server: Sandbox) -> None:
    first, again = await msal_token(sandbox_server, sandbox_server.client_secret, times=2)
    assert first["token_type"] == "Bearer" and first["expires_in"] == 3600
    assert again["access_token"] == first["access_token"], "MSAL serves the second call from its cache"
    assert sandbox_server.stats.token_requests[sandbox_server.client_id] == 1
    claims = jwt.decode(first["access_token"], options={"verify_signature": False})
    assert claims["aud"] == COMMERCE
    assert claims["appid"] == claims["azp"] == sandbox_server.client_id
    assert claims["tid"] == sandbox_server.tenant_id
    assert claims["iss"] == f"https://sts.windows.net/{sandbox_server.tenant_id}/"
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert claims["oid"] and claims["jti"]
    assert jwt.get_unverified_header(first["access_token"])["alg"] == "RS256"


async def test_msal_reports_a_wrong_secret_like_entra(sandbox_server: Sandbox) -> None:
    (result,) = await msal_token(sandbox_server, "not-the-secret")
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215:")
    assert result["error_codes"] == [7000215]
    assert result["correlation_id"]
    assert "not-the-secret" not in str(result)
    assert sandbox_server.stats.token_requests[sandbox_server.client_id] == 1


async def test_discovery_document_names_the_token_endpoint(
    sandbox_server: Sandbox, http: aiohttp.ClientSession
) -> None:
    url = f"{sandbox_server.authority}/v2.0/.well-known/openid-configuration"
    async with http.get(url) as response:
        assert response.status == 200
        config = await response.json()
    assert config["token_endpoint"] == f"{sandbox_server.authority}/oauth2/v2.0/token"
    async with http.get(config["jwks_uri"]) as response:
        keys = (await response.json())["keys"]
    assert [k["kty"] for k in keys] == ["RSA"]


async def test_unknown_tenant_fails_discovery(sandbox_server: Sandbox, http: aiohttp.ClientSession) -> None:
    url = f"{sandbox_server.authority_host}/contoso.invalid/v2.0/.well-known/openid-configuration"
    async with http.get(url) as response:
        assert response.status == 400
        assert (await response.json())["error_codes"] == [90002]


async def test_unknown_client_is_401(sandbox_server: Sandbox, http: aiohttp.ClientSession) -> None:
    answer = await fetch_token(http, sandbox_server, client_id="00000000-0000-0000-0000-00000000beef")
    assert answer.status == 401
    assert answer.body["error"] == "unauthorized_client"
    assert set(answer.body) >= {"error", "error_description", "error_codes", "correlation_id"}


async def test_scope_must_end_with_default(sandbox_server: Sandbox, http: aiohttp.ClientSession) -> None:
    answer = await fetch_token(http, sandbox_server, scope=f"{COMMERCE}/user_impersonation")
    assert answer.status == 400
    assert answer.body["error"] == "invalid_scope"


async def test_http_basic_client_authentication(sandbox_server: Sandbox, http: aiohttp.ClientSession) -> None:
    sandbox_server.register_app("a b+c", "s3cret:with/colon", relying_party=False)
    credentials = base64.b64encode(b"a+b%2Bc:s3cret%3Awith%2Fcolon").decode()
    form = {"grant_type": "client_credentials", "scope": "https://fno.example/.default"}
    async with http.post(
        f"{sandbox_server.authority}/oauth2/v2.0/token",
        data=form,
        headers={"Authorization": f"Basic {credentials}"},
    ) as response:
        assert response.status == 200
        token = (await response.json())["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["appid"] == "a b+c" and claims["aud"] == "https://fno.example"
    assert sandbox_server.stats.token_requests["a b+c"] == 1


async def test_token_lifetime_is_configurable() -> None:
    async with Sandbox(now=NOW, token_lifetime_seconds=120) as short:
        connector = aiohttp.TCPConnector(ssl=short.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as client:
            answer = await fetch_token(client, short)
    assert answer.body["expires_in"] == answer.body["ext_expires_in"] == 120


def protected_route(audience: str) -> Any:
    """An extension like the F&O stand-in: a route that checks Bearer tokens for its own audience."""

    def add_routes(app: web.Application, sandbox: Sandbox) -> None:
        async def whoami(request: web.Request) -> web.Response:
            claims = sandbox.verify_token(request, audience=audience, scheme="Bearer")
            return web.json_response({"appid": claims["appid"]})

        app.router.add_get("/protected/whoami", whoami)

    return add_routes


async def test_verify_token_serves_extensions_with_their_own_audience() -> None:
    audience = "https://fno.example"
    async with Sandbox(now=NOW, extensions=[protected_route(audience)]) as sandbox:
        connector = aiohttp.TCPConnector(ssl=sandbox.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as client:
            right = (await fetch_token(client, sandbox, scope=f"{audience}/.default")).body["access_token"]
            commerce = (await fetch_token(client, sandbox)).body["access_token"]
            url = f"{sandbox.base_url}/protected/whoami"
            cases = {
                f"Bearer {right}": 200,
                f"id_token {right}": 401,
                f"Bearer {commerce}": 401,
                f"Bearer {right[:-4]}AAAA": 401,
            }
            for header, status in cases.items():
                async with client.get(url, headers={"Authorization": header}) as response:
                    assert response.status == status, header[:12]
                    if status == 401:
                        assert response.headers["WWW-Authenticate"].startswith("Bearer")
                    else:
                        assert (await response.json()) == {"appid": sandbox.client_id}
            async with client.get(url) as response:
                assert response.status == 401
        assert sandbox.stats.requests["GET /protected/whoami"] == 5


@pytest.mark.parametrize("grant_type", ["password", ""])
async def test_only_client_credentials_grant(
    sandbox_server: Sandbox, http: aiohttp.ClientSession, grant_type: str
) -> None:
    form = {
        "grant_type": grant_type,
        "client_id": sandbox_server.client_id,
        "client_secret": sandbox_server.client_secret,
        "scope": SCOPE,
    }
    async with http.post(f"{sandbox_server.authority}/oauth2/v2.0/token", data=form) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "unsupported_grant_type"


async def test_v1_endpoint_takes_a_resource(sandbox_server: Sandbox, http: aiohttp.ClientSession) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": sandbox_server.client_id,
        "client_secret": sandbox_server.client_secret,
        "resource": COMMERCE,
    }
    async with http.post(f"{sandbox_server.authority}/oauth2/token", data=form) as response:
        assert response.status == 200
        assert response.headers["request-id"]
        body = await response.json()
    assert body["resource"] == COMMERCE and body["expires_in"] == "3600"
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["aud"] == COMMERCE


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    issuer = TokenIssuer("5f3a8c1e-2b7d-4e9a-8c61-0d4b7e2f9a13", lifetime_seconds=3600)
    token = issuer.issue(App(client_id="c1", secret="s1", object_id="o1"), COMMERCE)
    claims = issuer.verify(token, audience=COMMERCE)
    decoded: list[str] = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append("x") or real_decode(*a, **k))
    assert issuer.verify(token, audience=COMMERCE) == claims and decoded == []  # remembered
    with pytest.raises(TokenRejectedError, match="audience"):
        issuer.verify(token, audience="https://another.example.com")
    with pytest.raises(TokenRejectedError):
        issuer.verify(token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), audience=COMMERCE)
    # The lifetime is checked on every use, remembered or not (with the 5 s leeway).
    monkeypatch.setattr(entra.time, "time", lambda: claims["exp"] + 5)
    with pytest.raises(TokenRejectedError, match="expired"):
        issuer.verify(token, audience=COMMERCE)
