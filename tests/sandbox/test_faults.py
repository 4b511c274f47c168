"""Fault injection: statuses a given number of times, latency, hangs and resets, on any route."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from sandbox.faults import FaultInjector
from sandbox.server import Sandbox
from tests.sandbox.conftest import NOW, RetailServer

SEARCH = "/rs/Commerce/Carts/Search"


async def test_status_twice_then_success(retail: RetailServer, sandbox_server: Sandbox) -> None:
    sandbox_server.faults.add(SEARCH, status=503, times=2, headers={"Retry-After": "1"})
    statuses = []
    for _ in range(3):
        answer = await retail.search({}, query={"$top": "1"})
        statuses.append(answer.status)
        if answer.status == 503:
            assert answer.headers["Retry-After"] == "1"
            assert answer.headers["request-id"]
    assert statuses == [503, 503, 200]
    assert sandbox_server.stats.requests[f"POST {SEARCH}"] == 3
    assert sandbox_server.faults.active == []


async def test_every_request_until_cleared(retail: RetailServer, sandbox_server: Sandbox) -> None:
    sandbox_server.faults.add("/rs/Commerce/", status=429, times=None, body='{"Message": "slow down"}')
    for _ in range(3):
        answer = await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration")
        assert (answer.status, answer.body) == (429, {"Message": "slow down"})
    sandbox_server.faults.clear()
    assert (await retail.call("POST", "OrgUnits/GetOrgUnitConfiguration")).status == 200


async def test_method_restricts_the_route(retail: RetailServer, sandbox_server: Sandbox) -> None:
    sandbox_server.faults.add("GET /rs/Commerce/Products", status=500)
    products = await retail.call(
        "POST", "Products/GetByIds", json={"channelId": 5637144592, "productIds": []}
    )
    assert products.status == 200
    media = await retail.call("GET", "Products(1)/GetMediaLocations(channelId=5637144592,catalogId=0)")
    assert media.status == 500


async def test_latency_then_the_real_answer(retail: RetailServer, sandbox_server: Sandbox) -> None:
    sandbox_server.faults.add(SEARCH, latency=0.05)
    answer = await retail.search({}, query={"$top": "1"})
    assert answer.status == 200 and len(answer.body["value"]) == 1


async def test_timeout_outlasts_the_client(retail: RetailServer, sandbox_server: Sandbox) -> None:
    sandbox_server.faults.add(SEARCH, timeout=True)
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.2):
            await retail.search({})
    assert (await retail.search({}, query={"$top": "1"})).status == 200


async def test_reset_drops_the_connection(retail: RetailServer, sandbox_server: Sandbox) -> None:
    sandbox_server.faults.add(SEARCH, reset=True)
    with pytest.raises(aiohttp.ClientConnectionError):
        await retail.search({})
    assert (await retail.search({}, query={"$top": "1"})).status == 200


async def test_token_endpoint_faults_reach_the_client(
    sandbox_server: Sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox_server.faults.add(f"POST /entra/{sandbox_server.tenant_id}/oauth2/v2.0/token", status=500)
    async with http.post(f"{sandbox_server.authority}/oauth2/v2.0/token", data={}) as response:
        assert response.status == 500
    assert sandbox_server.stats.token_requests == {}


async def test_faults_cover_routes_added_by_extensions() -> None:
    def add_routes(app: web.Application, sandbox: Sandbox) -> None:
        async def ping(request: web.Request) -> web.Response:
            return web.json_response({"pong": True})

        app.router.add_get("/ext/ping", ping)

    async with Sandbox(now=NOW, extensions=[add_routes]) as sandbox:
        sandbox.faults.add("/ext", status=502)
        connector = aiohttp.TCPConnector(ssl=sandbox.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.get(f"{sandbox.base_url}/ext/ping") as first:
                assert first.status == 502
            async with http.get(f"{sandbox.base_url}/ext/ping") as second:
                assert second.status == 200 and await second.json() == {"pong": True}


async def test_a_streamed_body_is_chunked_json_of_about_the_size(
    retail: RetailServer, sandbox_server: Sandbox
) -> None:
    fault = sandbox_server.faults.add(SEARCH, stream_bytes=300_000)
    answer = await retail.search({})
    assert answer.status == 200 and "Content-Length" not in answer.headers
    assert answer.headers["Transfer-Encoding"] == "chunked"
    size = len(json.dumps(answer.body, separators=(",", ":")))
    assert 300_000 - 65_536 < size <= 300_000 and fault.bytes_sent == size
    assert (await retail.search({}, query={"$top": "1"})).body["value"][0]["Id"]


def test_routes_and_times_are_validated() -> None:
    faults = FaultInjector()
    with pytest.raises(ValueError, match="route"):
        faults.add("Carts/Search", status=500)
    with pytest.raises(ValueError, match="times"):
        faults.add("/rs", status=500, times=0)
    with pytest.raises(ValueError, match="stream_bytes"):
        faults.add("/rs", stream_bytes=-1)
    first = faults.add("/rs", status=500)
    faults.add("POST /rs/Commerce/Carts", status=503)
    assert faults.take("POST", "/rs/Commerce/Carts/Search") is first
    assert faults.take("GET", "/rs/Commerce/Carts/Search") is None
    assert [f.status for f in faults.active] == [503]


class _Counted:
    """An extension route that counts what it processed, to tell "processed" from "answered"."""

    def __init__(self) -> None:
        self.processed = 0

    def add_routes(self, app: web.Application, sandbox: Sandbox) -> None:
        async def accept(request: web.Request) -> web.Response:
            self.processed += 1
            return web.Response(status=202)

        app.router.add_post("/ext/accept", accept)


@pytest.mark.parametrize("mode", ["timeout_after", "reset_after"])
async def test_after_modes_process_the_request_then_lose_the_answer(mode: str) -> None:
    counted = _Counted()
    async with Sandbox(now=NOW, extensions=[counted.add_routes]) as sandbox:
        sandbox.faults.add("POST /ext/accept", **{mode: True})
        connector = aiohttp.TCPConnector(ssl=sandbox.client_ssl_context())
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            expected = asyncio.TimeoutError if mode == "timeout_after" else aiohttp.ClientConnectionError
            with pytest.raises(expected):
                async with http.post(f"{sandbox.base_url}/ext/accept", data=b"{}"):
                    pass
            assert counted.processed == 1  # the stand-in took it; the client never heard
            async with http.post(f"{sandbox.base_url}/ext/accept", data=b"{}") as again:
                assert again.status == 202
        assert counted.processed == 2


def test_after_modes_cannot_be_combined_with_a_stop() -> None:
    faults = FaultInjector()
    with pytest.raises(ValueError, match="let the request through"):
        faults.add("/rs", status=500, reset_after=True)
    with pytest.raises(ValueError, match="let the request through"):
        faults.add("/rs", timeout=True, timeout_after=True)
