"""Fixtures for the sandbox's own tests: a running sandbox at a fixed instant, an HTTPS client
that trusts only its CA, and helpers that speak Retail Server's wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from sandbox.server import Sandbox

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
COMMERCE = "https://commerce.dynamics.com"


@pytest.fixture
async def sandbox_server() -> AsyncIterator[Sandbox]:
    async with Sandbox(seed=42, now=NOW) as running:
        yield running


@pytest.fixture
async def http(sandbox_server: Sandbox) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=sandbox_server.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any


async def fetch_token(
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    *,
    client_id: str | None = None,
    secret: str | None = None,
    scope: str = f"{COMMERCE}/.default",
) -> Answer:
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id or sandbox.client_id,
        "client_secret": secret or sandbox.client_secret,
        "scope": scope,
    }
    url = f"{sandbox.authority}/oauth2/v2.0/token"
    async with http.post(url, data=form) as response:
        return Answer(response.status, response.headers, await response.json())


async def app_token(http: aiohttp.ClientSession, sandbox: Sandbox, **kwargs: Any) -> str:
    answer = await fetch_token(http, sandbox, **kwargs)
    assert answer.status == 200, answer.body
    token: str = answer.body["access_token"]
    return token


@dataclass
class RetailServer:
    """Calls the Retail Server stand-in the way the connector does, with every part overridable."""

    http: aiohttp.ClientSession
    sandbox: Sandbox
    token: str

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        oun: str | None = "128",
        api_version: str | None = "7.3",
        authorization: str | None = None,
        query: Mapping[str, str] | None = None,
    ) -> Answer:
        params = dict(query or {})
        if api_version is not None:
            params["api-version"] = api_version
        headers = {"Authorization": authorization or f"id_token {self.token}"}
        if authorization == "":
            del headers["Authorization"]
        if oun is not None:
            headers["OUN"] = oun
        url = f"{self.sandbox.retail_server_url}/Commerce/{path}"
        async with self.http.request(method, url, params=params, headers=headers, json=json) as response:
            body = (
                await response.json()
                if response.content_type == "application/json"
                else await response.text()
            )
            return Answer(response.status, response.headers, body)

    async def search(
        self, criteria: Mapping[str, Any], *, oun: str = "128", query: Mapping[str, str] | None = None
    ) -> Answer:
        body = {"cartSearchCriteria": dict(criteria)}
        return await self.call("POST", "Carts/Search", json=body, oun=oun, query=query)


@pytest.fixture
async def retail(http: aiohttp.ClientSession, sandbox_server: Sandbox) -> RetailServer:
    return RetailServer(http, sandbox_server, await app_token(http, sandbox_server))
